// Rules of one response scope: phases, status and delivery rules, order, names, isolation.
#include <crosstown/response_scope.hpp>

#include <crosstown/manual_executor.hpp>
#include <crosstown/runtime.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using crosstown::defer_options;
using crosstown::manual_executor;
using crosstown::response_scope;
using crosstown::runtime;
using crosstown::task_phase;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A runtime whose tasks, in these tests, all go to a manual executor: nothing runs until the
// test says so, and everything runs on the test's thread.
class ResponseScopeTest : public ::testing::Test {
 protected:
  runtime rt_{{.threads = 1}};
  manual_executor manual_;
  std::vector<std::string> log_;

  auto note(std::string what) {
    return [this, what = std::move(what)] { log_.push_back(what); };
  }
  defer_options on_manual(defer_options o = {}) {
    o.executor = manual_;
    return o;
  }
};

TEST_F(ResponseScopeTest, TasksDoNotRunBeforeTheirPhase) {
  response_scope scope(rt_);
  scope.defer(note("after response"), on_manual());
  scope.status_known(200);
  scope.headers_sent();
  EXPECT_EQ(manual_.pending(), 0u) << "released at headers_sent, before the last byte";
  EXPECT_EQ(scope.pending(), 1u);
  scope.response_sent();
  EXPECT_EQ(manual_.pending(), 1u);
  EXPECT_TRUE(log_.empty()) << "handed over, not run: the executor decides when";
  manual_.run_all();
  EXPECT_THAT(log_, ElementsAre("after response"));
}

TEST_F(ResponseScopeTest, DefaultNoGoSkips4xxAnd5xx) {
  for (int status : {200, 204, 301, 302, 399, 400, 404, 499, 500, 503, 599, 600}) {
    response_scope scope(rt_);
    scope.defer(note(std::to_string(status)), on_manual());
    scope.status_known(status);
    scope.response_sent();
  }
  manual_.run_all();
  EXPECT_THAT(log_, ElementsAre("200", "204", "301", "302", "399", "600"));
  EXPECT_EQ(rt_.metrics().count(crosstown::task_state::skipped_by_status), 6u);
}

TEST_F(ResponseScopeTest, CustomNoGoSpecIsHonoured) {
  for (int status : {200, 302, 303, 400, 405, 406, 500, 599}) {
    response_scope scope(rt_);
    scope.defer(note(std::to_string(status)), on_manual({.no_go = "5xx,400-405,302"}));
    scope.status_known(status);
    scope.response_sent();
  }
  manual_.run_all();
  EXPECT_THAT(log_, ElementsAre("200", "303", "406"));
}

TEST_F(ResponseScopeTest, AlwaysRunsOn500) {
  response_scope scope(rt_);
  scope.defer(note("always"), on_manual({.always = true}));
  scope.defer(note("default"), on_manual());
  scope.status_known(500);
  scope.response_sent();
  manual_.run_all();
  EXPECT_THAT(log_, ElementsAre("always"));
}

TEST_F(ResponseScopeTest, SameThreadTasksRunInRegistrationOrderOnTheCompletingThread) {
  response_scope scope(rt_);
  std::vector<std::thread::id> threads;
  for (int i = 0; i < 10; ++i) {
    scope.defer(
        [&, i] {
          log_.push_back(std::to_string(i));
          threads.push_back(std::this_thread::get_id());
        },
        {.same_thread = true});
  }
  scope.status_known(200);
  EXPECT_TRUE(log_.empty());
  scope.response_sent();
  EXPECT_THAT(log_, ElementsAre("0", "1", "2", "3", "4", "5", "6", "7", "8", "9"));
  for (auto id : threads) EXPECT_EQ(id, std::this_thread::get_id());
}

TEST_F(ResponseScopeTest, OneResponseIsOneHandOffPerExecutorInRegistrationOrder) {
  manual_executor other;
  response_scope scope(rt_);
  for (int i = 0; i < 100; ++i) {
    defer_options o;
    o.executor = (i % 3 == 0) ? other : manual_;
    scope.defer(note(std::to_string(i)), std::move(o));
  }
  scope.status_known(200);
  scope.response_sent();
  EXPECT_EQ(manual_.handoffs(), 1u);
  EXPECT_EQ(other.handoffs(), 1u);
  EXPECT_EQ(manual_.pending() + other.pending(), 100u);
  manual_.run_all();
  for (std::size_t i = 1; i < log_.size(); ++i) {
    EXPECT_LT(std::stoi(log_[i - 1]), std::stoi(log_[i])) << "out of order at " << i;
  }
}

TEST_F(ResponseScopeTest, SameThreadBatchRunsAfterTheOtherHandOffs) {
  response_scope scope(rt_);
  scope.defer([&] { log_.push_back("same-thread, pending=" + std::to_string(manual_.pending())); },
              {.same_thread = true});
  scope.defer(note("pool"), on_manual());
  scope.status_known(200);
  scope.response_sent();
  EXPECT_THAT(log_, ElementsAre("same-thread, pending=1"));
}

TEST_F(ResponseScopeTest, LaterTaskWithTheSameNameReplacesTheEarlier) {
  response_scope scope(rt_);
  scope.defer(note("first"), on_manual({.name = "mail"}));
  scope.defer(note("other"), on_manual());
  scope.defer(note("second"), on_manual({.name = "mail"}));
  EXPECT_EQ(scope.pending(), 2u);
  scope.status_known(200);
  scope.response_sent();
  manual_.run_all();
  EXPECT_THAT(log_, ElementsAre("other", "second"));
  EXPECT_EQ(rt_.metrics().count(crosstown::task_state::cancelled), 1u);
}

TEST_F(ResponseScopeTest, CancelByNameRemovesOnlyThatTask) {
  response_scope scope(rt_);
  scope.defer(note("keep"), on_manual({.name = "keep"}));
  scope.defer(note("drop"), on_manual({.name = "drop"}));
  EXPECT_TRUE(scope.cancel("drop"));
  EXPECT_FALSE(scope.cancel("drop")) << "already cancelled";
  EXPECT_FALSE(scope.cancel("unknown"));
  EXPECT_FALSE(scope.cancel("")) << "unnamed tasks cannot be cancelled by the empty name";
  scope.status_known(200);
  scope.response_sent();
  manual_.run_all();
  EXPECT_THAT(log_, ElementsAre("keep"));
  EXPECT_EQ(rt_.metrics().count(crosstown::task_state::cancelled), 1u);
}

TEST_F(ResponseScopeTest, DeliveryFailureStillRunsTasksByDefault) {
  response_scope scope(rt_);
  scope.defer(note("default"), on_manual());
  scope.status_known(200);
  scope.headers_sent();
  scope.delivery_failed("connection reset by peer");
  manual_.run_all();
  EXPECT_THAT(log_, ElementsAre("default"));
  EXPECT_EQ(scope.failure_reason(), "connection reset by peer");
}

TEST_F(ResponseScopeTest, RequireDeliverySkipsTasksWhenDeliveryFails) {
  response_scope scope(rt_);
  scope.defer(note("needs delivery"), on_manual({.require_delivery = true}));
  scope.defer(note("runs anyway"), on_manual());
  scope.status_known(200);
  scope.delivery_failed("timeout");
  manual_.run_all();
  EXPECT_THAT(log_, ElementsAre("runs anyway"));
  EXPECT_EQ(rt_.metrics().count(crosstown::task_state::skipped_by_delivery), 1u);
}

TEST_F(ResponseScopeTest, RequireDeliveryRunsWhenDelivered) {
  response_scope scope(rt_);
  scope.defer(note("needs delivery"), on_manual({.require_delivery = true}));
  scope.status_known(201);
  scope.response_sent();
  manual_.run_all();
  EXPECT_THAT(log_, ElementsAre("needs delivery"));
}

TEST_F(ResponseScopeTest, ScopeEndedWithoutResponseCountsAs500) {
  {
    response_scope scope(rt_);
    scope.defer(note("default"), on_manual());
    scope.defer(note("always"), on_manual({.always = true}));
    scope.defer(note("always, needs delivery"),
                on_manual({.always = true, .require_delivery = true}));
  }
  manual_.run_all();
  EXPECT_THAT(log_, ElementsAre("always"));
  const auto m = rt_.metrics();
  EXPECT_EQ(m.count(crosstown::task_state::skipped_by_status), 1u);
  EXPECT_EQ(m.count(crosstown::task_state::skipped_by_delivery), 1u);
}

TEST_F(ResponseScopeTest, ScopeEndedBeforeHeadersCountsAs500EvenWithAStatus) {
  response_scope scope(rt_);
  scope.defer(note("default"), on_manual());
  scope.status_known(200);
  scope.end();
  EXPECT_EQ(scope.status(), 500);
  EXPECT_EQ(scope.delivery_state(), crosstown::delivery::failed);
  EXPECT_EQ(rt_.metrics().count(crosstown::task_state::skipped_by_status), 1u);
}

TEST_F(ResponseScopeTest, ScopeEndedAfterHeadersKeepsItsStatusAndCountsAsUndelivered) {
  response_scope scope(rt_);
  scope.defer(note("default"), on_manual());
  scope.defer(note("needs delivery"), on_manual({.require_delivery = true}));
  scope.status_known(200);
  scope.headers_sent();
  scope.end();
  EXPECT_EQ(scope.status(), 200);
  manual_.run_all();
  EXPECT_THAT(log_, ElementsAre("default"));
}

TEST_F(ResponseScopeTest, DeliveryFailureWithNoStatusCountsAs500) {
  response_scope scope(rt_);
  scope.defer(note("default"), on_manual());
  scope.delivery_failed("client went away");
  EXPECT_EQ(scope.status(), 500);
  EXPECT_EQ(rt_.metrics().count(crosstown::task_state::skipped_by_status), 1u);
}

TEST_F(ResponseScopeTest, HeadersPhaseTasksAreReleasedAtHeadersSent) {
  response_scope scope(rt_);
  scope.defer(note("headers"), on_manual({.phase = task_phase::headers_sent}));
  scope.defer(note("response"), on_manual());
  scope.status_known(200);
  scope.headers_sent();
  manual_.run_all();
  EXPECT_THAT(log_, ElementsAre("headers"));
  scope.response_sent();
  manual_.run_all();
  EXPECT_THAT(log_, ElementsAre("headers", "response"));
}

TEST_F(ResponseScopeTest, HeadersPhaseTaskNeedingDeliveryIsSkippedWhenHeadersNeverWentOut) {
  response_scope scope(rt_);
  scope.defer(note("headers"),
              on_manual({.phase = task_phase::headers_sent, .require_delivery = true}));
  scope.status_known(200);
  scope.delivery_failed("reset before the first byte");
  EXPECT_EQ(manual_.pending(), 0u);
  EXPECT_EQ(rt_.metrics().count(crosstown::task_state::skipped_by_delivery), 1u);
}

TEST_F(ResponseScopeTest, ConnectionPhaseTasksWaitForTheConnectionToClose) {
  crosstown::connection_scope connection(rt_);
  {
    response_scope first(connection);
    first.defer(note("first closed"), on_manual({.phase = task_phase::connection_closed}));
    first.defer(note("first sent"), on_manual());
    first.status_known(200);
    first.response_sent();
  }
  {
    response_scope second(connection);
    second.defer(note("second closed"), on_manual({.phase = task_phase::connection_closed}));
    second.status_known(404);  // skipped at the end of its scope, never held
    second.response_sent();
  }
  manual_.run_all();
  EXPECT_THAT(log_, ElementsAre("first sent"));
  EXPECT_EQ(connection.held(), 1u);
  connection.closed();
  manual_.run_all();
  EXPECT_THAT(log_, ElementsAre("first sent", "first closed"));
  EXPECT_EQ(rt_.metrics().count(crosstown::task_state::skipped_by_status), 1u);
}

TEST_F(ResponseScopeTest, ConnectionPhaseWithoutAConnectionIsReleasedAtScopeEnd) {
  response_scope scope(rt_);
  scope.defer(note("closed"), on_manual({.phase = task_phase::connection_closed}));
  scope.status_known(200);
  scope.response_sent();
  EXPECT_EQ(manual_.pending(), 0u);
  scope.end();
  manual_.run_all();
  EXPECT_THAT(log_, ElementsAre("closed"));
}

TEST_F(ResponseScopeTest, ScopeEndingAfterItsConnectionClosedHandsOverAtOnce) {
  crosstown::connection_scope connection(rt_);
  response_scope scope(connection);
  scope.defer(note("closed"), on_manual({.phase = task_phase::connection_closed}));
  scope.status_known(200);
  scope.response_sent();
  connection.closed();
  EXPECT_EQ(manual_.pending(), 0u);
  scope.end();
  manual_.run_all();
  EXPECT_THAT(log_, ElementsAre("closed"));
}

TEST_F(ResponseScopeTest, TwoInterleavedScopesOnOneThreadDoNotReleaseEachOthersTasks) {
  response_scope a(rt_);
  response_scope b(rt_);
  a.defer(note("a1"), on_manual());
  b.defer(note("b1"), on_manual());
  a.defer(note("a2"), on_manual());
  b.status_known(200);
  a.status_known(200);
  b.defer(note("b2"), on_manual());
  a.headers_sent();
  b.response_sent();
  manual_.run_all();
  EXPECT_THAT(log_, ElementsAre("b1", "b2"));
  EXPECT_EQ(a.pending(), 2u);
  a.response_sent();
  manual_.run_all();
  EXPECT_THAT(log_, ElementsAre("b1", "b2", "a1", "a2"));
}

TEST_F(ResponseScopeTest, TaskRegisteredAfterItsPhaseIsJudgedAndHandedOverAtOnce) {
  response_scope scope(rt_);
  scope.defer(note("early"), on_manual());
  scope.status_known(200);
  scope.response_sent();
  scope.defer(note("late"), on_manual());
  EXPECT_EQ(manual_.pending(), 2u);
  manual_.run_all();
  EXPECT_THAT(log_, ElementsAre("early", "late"));
}

TEST_F(ResponseScopeTest, TaskRegisteredAfterItsPhaseStillObeysTheStatusRule) {
  response_scope scope(rt_);
  scope.status_known(404);
  scope.response_sent();
  scope.defer(note("late default"), on_manual());
  scope.defer(note("late always"), on_manual({.always = true}));
  manual_.run_all();
  EXPECT_THAT(log_, ElementsAre("late always"));
}

TEST_F(ResponseScopeTest, TaskRegisteredAfterEndIsJudgedLikeAnyLateTask) {
  response_scope scope(rt_);
  scope.status_known(200);
  scope.response_sent();
  scope.end();
  scope.defer(note("after end"), on_manual({.phase = task_phase::connection_closed}));
  manual_.run_all();
  EXPECT_THAT(log_, ElementsAre("after end"));
}

TEST_F(ResponseScopeTest, SameThreadTaskMayDeferOnItsOwnScope) {
  response_scope scope(rt_);
  scope.defer(
      [&] {
        log_.push_back("outer");
        scope.defer(note("inner"), {.same_thread = true});
      },
      {.same_thread = true});
  scope.status_known(200);
  scope.response_sent();
  EXPECT_THAT(log_, ElementsAre("outer", "inner"));
}

TEST_F(ResponseScopeTest, SameThreadTaskEndingItsOwnScopeDoesNotDeadlock) {
  response_scope scope(rt_);
  scope.defer(
      [&] {
        scope.end();
        log_.push_back("ended");
      },
      {.same_thread = true});
  scope.status_known(200);
  scope.response_sent();
  EXPECT_THAT(log_, ElementsAre("ended"));
  EXPECT_TRUE(scope.ended());
}

TEST_F(ResponseScopeTest, SettingBothSameThreadAndAnExecutorIsRejected) {
  response_scope scope(rt_);
  try {
    scope.defer([] {}, {.executor = manual_, .same_thread = true});
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("same_thread"));
    EXPECT_THAT(e.what(), HasSubstr("executor"));
  }
  EXPECT_EQ(rt_.metrics().registered, 0u) << "a rejected registration is not counted";
}

TEST_F(ResponseScopeTest, AnEmptyTaskIsRejected) {
  response_scope scope(rt_);
  EXPECT_THROW(scope.defer(crosstown::task{}), std::invalid_argument);
}

TEST_F(ResponseScopeTest, AdapterMisuseIsReportedWithTheCallsNamed) {
  response_scope scope(rt_);
  EXPECT_THROW(scope.status_known(99), std::invalid_argument);
  EXPECT_THROW(scope.status_known(1000), std::invalid_argument);
  try {
    scope.headers_sent();
    FAIL() << "expected std::logic_error";
  } catch (const std::logic_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("headers_sent() before status_known()"));
  }
  scope.status_known(200);
  scope.status_known(201);  // may change until the headers go out
  scope.headers_sent();
  scope.status_known(201);  // the same status again is harmless
  try {
    scope.status_known(500);
    FAIL() << "expected std::logic_error";
  } catch (const std::logic_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("can no longer change"));
  }
  scope.response_sent();
  EXPECT_THROW(scope.delivery_failed(), std::logic_error);
  scope.end();
  EXPECT_THROW(scope.response_sent(), std::logic_error);
}

TEST_F(ResponseScopeTest, EveryTaskEndsInExactlyOneCountedState) {
  {
    response_scope scope(rt_);
    scope.defer(note("runs"), on_manual());
    scope.defer(note("skipped"), on_manual({.no_go = "2xx"}));
    scope.defer(note("cancelled"), on_manual({.name = "c"}));
    scope.cancel("c");
    scope.defer(note("needs delivery"), on_manual({.require_delivery = true}));
    scope.defer([] { throw std::runtime_error("boom"); }, on_manual());
    scope.status_known(200);
    scope.delivery_failed("reset");
  }
  manual_.run_all();
  const auto m = rt_.metrics();
  EXPECT_EQ(m.registered, 5u);
  EXPECT_EQ(m.count(crosstown::task_state::ran), 1u);
  EXPECT_EQ(m.count(crosstown::task_state::failed), 1u);
  EXPECT_EQ(m.count(crosstown::task_state::skipped_by_status), 1u);
  EXPECT_EQ(m.count(crosstown::task_state::skipped_by_delivery), 1u);
  EXPECT_EQ(m.count(crosstown::task_state::cancelled), 1u);
  EXPECT_EQ(m.unfinished(), 0u);
}

// Registration on one thread while the adapter reports the lifecycle on another: every task
// is handed over exactly once, in registration order, whichever side wins each race.
TEST(ResponseScopeConcurrency, RegistrationRacingTheResponseLosesNothingAndKeepsOrder) {
  runtime rt({.threads = 1});
  for (int round = 0; round < 50; ++round) {
    manual_executor manual;
    std::vector<int> ran;
    {
      response_scope scope(rt);
      scope.status_known(200);
      std::atomic<bool> go{false};
      std::thread handler([&] {
        while (!go.load()) {
        }
        for (int i = 0; i < 200; ++i) {
          defer_options o;
          o.executor = manual;
          scope.defer([&ran, i] { ran.push_back(i); }, std::move(o));
        }
      });
      go.store(true);
      scope.response_sent();
      handler.join();
    }
    manual.run_all();
    ASSERT_EQ(ran.size(), 200u) << "round " << round;
    for (int i = 0; i < 200; ++i)
      ASSERT_EQ(ran[static_cast<std::size_t>(i)], i) << "round " << round;
  }
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::ran), 50u * 200u);
}

}  // namespace
