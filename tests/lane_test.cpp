// Tests for crosstown/lane.hpp: a lane's limit holds for awaitable and blocking tasks alike,
// waiting tasks start in the order they reached it, the bound rejects (counted, reported), and
// the per-lane metrics add up - also in Prometheus text. Deterministic: a manual executor, an
// io_context and a manual clock stepped by the test.

#include <crosstown/lane.hpp>

#include <crosstown/awaitable_task.hpp>
#include <crosstown/manual_executor.hpp>
#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>
#include <crosstown/testing/awaitable.hpp>
#include <crosstown/testing/harness.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using boost::asio::awaitable;
using crosstown::response_scope;
using crosstown::runtime;
using crosstown::task_state;
using crosstown::testkit::awaitable_driver;

void respond(response_scope& s, int status = 200) {
  s.status_known(status);
  s.response_sent();
}

class LaneTest : public ::testing::Test {
 protected:
  std::vector<std::pair<std::string, task_state>> lost_;
  runtime rt_{{.threads = 1,
               .on_error = [](const crosstown::task_failure&) {},
               .on_lost = [this](const crosstown::task_info& t,
                                 task_state s) { lost_.emplace_back(std::string(t.name), s); }}};
  awaitable_driver io_{rt_};
};

TEST_F(LaneTest, AtMostMaxInFlightAwaitableTasksRunTheRestWaitInOrder) {
  crosstown::lane lane = rt_.lane("telephony", {.max_in_flight = 2});
  std::vector<int> started;
  response_scope s(rt_);
  for (int i = 0; i < 5; ++i) {
    s.defer(
        [&, i]() -> awaitable<void> {
          started.push_back(i);
          co_await io_.clock().wait(1s);
        },
        {.lane = "telephony"});
  }
  respond(s);
  io_.poll();
  EXPECT_EQ(started, (std::vector<int>{0, 1}));
  EXPECT_EQ(lane.snapshot().in_flight, 2u);
  EXPECT_EQ(lane.snapshot().waiting, 3u);
  EXPECT_EQ(rt_.metrics().queued, 3u) << "waiting in the lane still counts as queued";
  io_.advance(1s);
  EXPECT_EQ(started, (std::vector<int>{0, 1, 2, 3}));
  io_.advance(1s);
  io_.advance(1s);
  EXPECT_EQ(started, (std::vector<int>{0, 1, 2, 3, 4}));
  const crosstown::lane_snapshot l = lane.snapshot();
  EXPECT_EQ(l.in_flight, 0u);
  EXPECT_EQ(l.waiting, 0u);
  EXPECT_EQ(l.admitted, 5u);
  EXPECT_EQ(l.waited, 3u);
  EXPECT_EQ(l.waited_time, 1s + 1s + 2s) << "on the task clock";
  EXPECT_EQ(l.count(task_state::ran), 5u);
}

TEST_F(LaneTest, LimitHoldsForBlockingTasksWhichWaitAndAreHandedBackToTheirExecutor) {
  crosstown::manual_executor manual;
  crosstown::lane lane = rt_.lane("db", {.max_in_flight = 1});
  std::vector<std::string> log;
  response_scope s(rt_);
  s.defer(
      [&] {
        log.push_back("first starts");
        manual.run_one();  // the second reaches the lane while the first holds the slot
        log.push_back("second waits: " + std::to_string(lane.snapshot().waiting));
      },
      {.executor = manual, .lane = "db"});
  s.defer([&] { log.push_back("second runs"); }, {.executor = manual, .lane = "db"});
  respond(s);
  manual.run_one();
  EXPECT_EQ(manual.pending(), 1u) << "the freed slot hands the waiting task back to its executor";
  manual.run_all();
  EXPECT_EQ(log, (std::vector<std::string>{"first starts", "second waits: 1", "second runs"}));
  EXPECT_EQ(lane.snapshot().count(task_state::ran), 2u);
}

TEST_F(LaneTest, AwaitableAndBlockingTasksShareOneLimit) {
  crosstown::manual_executor manual;
  crosstown::lane lane = rt_.lane("mixed", {.max_in_flight = 1});
  bool blocking_ran = false;
  response_scope s(rt_);
  s.defer([&]() -> awaitable<void> { co_await io_.clock().wait(1s); }, {.lane = "mixed"});
  s.defer([&] { blocking_ran = true; }, {.executor = manual, .lane = "mixed"});
  respond(s);
  io_.poll();
  manual.run_all();
  EXPECT_FALSE(blocking_ran) << "the awaitable holds the only slot";
  EXPECT_EQ(lane.snapshot().waiting, 1u);
  io_.advance(1s);
  manual.run_all();
  EXPECT_TRUE(blocking_ran);
}

TEST_F(LaneTest, TaskBeyondCapacityIsRejectedCountedAndReported) {
  crosstown::lane lane = rt_.lane("small", {.max_in_flight = 1, .capacity = 2});
  response_scope s(rt_);
  for (int i = 0; i < 4; ++i) {
    s.defer([&]() -> awaitable<void> { co_await io_.clock().wait(1s); },
            {.name = "t" + std::to_string(i), .lane = "small"});
  }
  respond(s);
  EXPECT_EQ(rt_.metrics().count(task_state::rejected_by_overflow), 1u);
  ASSERT_EQ(lost_.size(), 1u);
  EXPECT_EQ(lost_[0], (std::pair<std::string, task_state>{"t3", task_state::rejected_by_overflow}));
  EXPECT_EQ(lane.snapshot().count(task_state::rejected_by_overflow), 1u);
  for (int i = 0; i < 3; ++i) io_.advance(1s);
  EXPECT_EQ(rt_.metrics().count(task_state::ran), 3u);
  const auto m = rt_.metrics();
  EXPECT_EQ(m.registered, m.terminal());
}

TEST_F(LaneTest, CompletedCountsEveryTerminalStateOfTheLanesTasks) {
  crosstown::lane lane = rt_.lane("states", {.max_in_flight = 3});
  response_scope s(rt_);
  s.defer([]() -> awaitable<void> { co_return; }, {.lane = "states"});
  s.defer(
      []() -> awaitable<void> {
        throw std::runtime_error("boom");
        co_return;
      },
      {.lane = "states"});
  s.defer([&]() -> awaitable<void> { co_await io_.clock().wait(1h); },
          {.lane = "states", .timeout = 1s});
  respond(s);
  io_.advance(1s);
  const crosstown::lane_snapshot l = lane.snapshot();
  EXPECT_EQ(l.count(task_state::ran), 1u);
  EXPECT_EQ(l.count(task_state::failed), 1u);
  EXPECT_EQ(l.count(task_state::timed_out), 1u);
  EXPECT_EQ(l.in_flight, 0u);
}

TEST_F(LaneTest, BadLanesAndUnknownLaneNamesAreRefusedNamingTheProblem) {
  rt_.lane("ok", {.max_in_flight = 2});
  EXPECT_NO_THROW(rt_.lane("ok", {.max_in_flight = 2})) << "the same lane again is fine";
  auto message = [&](auto fn) {
    try {
      fn();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no exception");
  };
  EXPECT_NE(message([&] { rt_.lane("ok", {.max_in_flight = 3}); }).find("exists"),
            std::string::npos);
  EXPECT_NE(message([&] { rt_.lane("", {}); }).find("name"), std::string::npos);
  EXPECT_NE(message([&] { rt_.lane("a b", {}); }).find("\"a b\""), std::string::npos);
  EXPECT_NE(message([&] { rt_.lane("z", {.max_in_flight = 0}); }).find("max_in_flight"),
            std::string::npos);
  EXPECT_NE(message([&] { rt_.lane("z", {.capacity = 0}); }).find("capacity"), std::string::npos);
  response_scope s(rt_);
  EXPECT_NE(message([&] { s.defer([] {}, {.lane = "missing"}); }).find("\"missing\""),
            std::string::npos);
  EXPECT_EQ(s.pending(), 0u);
}

TEST_F(LaneTest, PrometheusTextCarriesEachLanesFamilies) {
  rt_.lane("telephony", {.max_in_flight = 20, .capacity = 500});
  response_scope s(rt_);
  s.defer([]() -> awaitable<void> { co_return; }, {.lane = "telephony"});
  respond(s);
  io_.poll();
  const std::string text = crosstown::to_prometheus(rt_.metrics(), rt_.lane_metrics());
  for (const char* line : {
           "crosstown_tasks_total{state=\"timed_out\"} 0",
           "# TYPE crosstown_lane_in_flight gauge",
           "crosstown_lane_in_flight{lane=\"telephony\"} 0",
           "crosstown_lane_waiting{lane=\"telephony\"} 0",
           "crosstown_lane_max_in_flight{lane=\"telephony\"} 20",
           "crosstown_lane_capacity{lane=\"telephony\"} 500",
           "crosstown_lane_admitted_total{lane=\"telephony\"} 1",
           "crosstown_lane_wait_seconds_total{lane=\"telephony\"} 0",
           "crosstown_lane_tasks_total{lane=\"telephony\",state=\"ran\"} 1",
           "crosstown_task_retries_total 0",
       }) {
    EXPECT_NE(text.find(line), std::string::npos) << "missing: " << line << "\n" << text;
  }
}

TEST(LaneHarness, HarnessStepsATaskWaitingInALane) {
  crosstown::testkit::harness h;
  awaitable_driver io(h.rt());
  h.rt().lane("one", {.max_in_flight = 1});
  h.call([&](response_scope& s) {
    for (const char* name : {"a", "b"}) {
      s.defer([&]() -> awaitable<void> { co_await io.clock().wait(1s); },
              {.name = name, .lane = "one"});
    }
  });
  h.respond(200);
  h.run_all();
  io.poll();
  EXPECT_EQ(h.rt().lane_metrics().at(0).waiting, 1u);
  io.advance(1s);
  ASSERT_NE(h.find("a"), nullptr);
  EXPECT_EQ(h.find("a")->state, task_state::ran);
  EXPECT_EQ(h.find("b"), nullptr) << "b started only when a ended";
  io.advance(1s);
  ASSERT_NE(h.find("b"), nullptr);
  EXPECT_EQ(h.find("b")->state, task_state::ran);
}

}  // namespace
