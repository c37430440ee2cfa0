// Tests for crosstown/awaitable_task.hpp: awaitable tasks keep every rule of the hand-off, run
// as coroutines until they complete, time out through Asio cancellation, and blocking tasks
// report their overruns. Deterministic: an io_context and a manual clock the test steps
// (crosstown/testing/awaitable.hpp); the threaded tests at the end wait with deadlines only.

#include <crosstown/awaitable_task.hpp>

#include <crosstown/lane.hpp>
#include <crosstown/manual_executor.hpp>
#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>
#include <crosstown/testing/awaitable.hpp>
#include <crosstown/testing/harness.hpp>
#include <crosstown/testing/sync_mode.hpp>

#include <gtest/gtest.h>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "test_support.hpp"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using boost::asio::awaitable;
using crosstown::response_scope;
using crosstown::runtime;
using crosstown::task_state;
using crosstown::testkit::awaitable_driver;

// What the hooks saw, in order.
struct observed {
  std::mutex mutex;
  std::vector<crosstown::task_failure> failures;
  std::vector<std::pair<std::string, task_state>> lost;
  std::vector<std::pair<std::string, task_state>> settled;

  crosstown::runtime_options options() {
    return {.threads = 1,
            .on_error =
                [this](const crosstown::task_failure& f) {
                  std::lock_guard lock(mutex);
                  failures.push_back(f);
                  failures.back().task.name = {};  // the view dies with the task
                  failure_names.emplace_back(f.task.name);
                },
            .on_lost =
                [this](const crosstown::task_info& t, task_state s) {
                  std::lock_guard lock(mutex);
                  lost.emplace_back(std::string(t.name), s);
                },
            .on_settled =
                [this](const crosstown::task_info& t, task_state s) {
                  std::lock_guard lock(mutex);
                  settled.emplace_back(std::string(t.name), s);
                }};
  }
  std::vector<std::string> failure_names;
};

void respond(response_scope& s, int status = 200) {
  s.status_known(status);
  s.response_sent();
}

class AwaitableTaskTest : public ::testing::Test {
 protected:
  observed seen_;
  runtime rt_{seen_.options()};
  awaitable_driver io_{rt_};
};

TEST_F(AwaitableTaskTest, RunsAsACoroutineOnlyAfterTheResponseWasSent) {
  int step = 0;
  response_scope s(rt_);
  s.defer([&]() -> awaitable<void> {
    step = 1;
    co_await io_.clock().wait(10ms);
    step = 2;
  });
  io_.poll();
  EXPECT_EQ(step, 0) << "started before the response was sent";
  respond(s);
  EXPECT_EQ(step, 0) << "the coroutine starts on the I/O executor, not in the hand-off";
  io_.poll();
  EXPECT_EQ(step, 1);
  EXPECT_EQ(rt_.metrics().count(task_state::running), 1u) << "running while suspended";
  io_.advance(10ms);
  EXPECT_EQ(step, 2);
  const auto m = rt_.metrics();
  EXPECT_EQ(m.count(task_state::ran), 1u);
  EXPECT_EQ(m.in_flight, 0u);
  EXPECT_EQ(m.registered, m.terminal());
}

TEST_F(AwaitableTaskTest, ThrowingCoroutineIsFailedAndReportedWithItsName) {
  response_scope s(rt_);
  s.defer(
      [&]() -> awaitable<void> {
        co_await io_.clock().wait(1ms);
        throw std::runtime_error("line busy");
      },
      {.name = "call-7"});
  respond(s);
  io_.advance(1ms);
  EXPECT_EQ(rt_.metrics().count(task_state::failed), 1u);
  ASSERT_EQ(seen_.failures.size(), 1u);
  EXPECT_EQ(seen_.failure_names[0], "call-7");
  EXPECT_EQ(seen_.failures[0].message, "line busy");
}

TEST_F(AwaitableTaskTest, StatusRuleSkipsAnAwaitableTaskWhichNeverStarts) {
  bool started = false;
  response_scope s(rt_);
  s.defer([&]() -> awaitable<void> {
    started = true;
    co_return;
  });
  respond(s, 404);
  io_.poll();
  EXPECT_FALSE(started);
  EXPECT_EQ(rt_.metrics().count(task_state::skipped_by_status), 1u);
}

TEST_F(AwaitableTaskTest, AwaitableAndBlockingTasksOfAResponseStartInHandOffOrder) {
  std::vector<int> order;
  crosstown::manual_executor manual;
  response_scope s(rt_);
  for (int i = 0; i < 5; ++i) {
    s.defer([&order, i]() -> awaitable<void> {
      order.push_back(i);
      co_return;
    });
  }
  s.defer([&order] { order.push_back(99); }, {.executor = manual});
  respond(s);
  io_.poll();
  manual.run_all();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4, 99}));
}

TEST_F(AwaitableTaskTest, CancelByNameAndReplacementApplyToAwaitableTasks) {
  std::vector<std::string> ran;
  response_scope s(rt_);
  auto make = [&](std::string tag) {
    return [&ran, tag]() -> awaitable<void> {
      ran.push_back(tag);
      co_return;
    };
  };
  s.defer(make("first"), {.name = "mail"});
  s.defer(make("second"), {.name = "mail"});  // replaces "first"
  s.defer(make("third"), {.name = "sms"});
  EXPECT_TRUE(s.cancel("sms"));
  respond(s);
  io_.poll();
  EXPECT_EQ(ran, std::vector<std::string>{"second"});
  EXPECT_EQ(rt_.metrics().count(task_state::cancelled), 2u);
}

TEST_F(AwaitableTaskTest, ExecutorOrSameThreadOnAnAwaitableTaskIsRefused) {
  crosstown::manual_executor manual;
  response_scope s(rt_);
  auto body = []() -> awaitable<void> { co_return; };
  EXPECT_THROW(s.defer(body, {.executor = manual}), std::invalid_argument);
  EXPECT_THROW(s.defer(body, {.same_thread = true}), std::invalid_argument);
  EXPECT_THROW(s.defer(body, {.timeout = -1ms}), std::invalid_argument);
  EXPECT_THROW(s.defer(body, {.lane = "nowhere"}), std::invalid_argument);
  EXPECT_EQ(s.pending(), 0u) << "a refused defer leaves the scope as it was";
}

TEST_F(AwaitableTaskTest, ThousandsInFlightOnOneThread) {
  constexpr int n = 5000;
  int done = 0;
  response_scope s(rt_);
  for (int i = 0; i < n; ++i) {
    s.defer([&]() -> awaitable<void> {
      co_await io_.clock().wait(1s);
      ++done;
    });
  }
  respond(s);
  io_.poll();
  EXPECT_EQ(rt_.metrics().in_flight, static_cast<std::uint64_t>(n));
  EXPECT_EQ(io_.clock().waiting(), static_cast<std::size_t>(n));
  io_.advance(1s);
  EXPECT_EQ(done, n);
  EXPECT_EQ(rt_.metrics().count(task_state::ran), static_cast<std::uint64_t>(n));
}

TEST_F(AwaitableTaskTest, TimeoutCancelsThePendingOperationAndEndsTimedOut) {
  bool saw_cancellation = false;
  response_scope s(rt_);
  s.defer(
      [&]() -> awaitable<void> {
        try {
          co_await io_.clock().wait(10s);
        } catch (const boost::system::system_error& e) {
          saw_cancellation = e.code() == boost::asio::error::operation_aborted;
          throw;
        }
      },
      {.name = "slow", .timeout = 2s});
  respond(s);
  io_.advance(1999ms);
  EXPECT_EQ(rt_.metrics().in_flight, 1u) << "still inside its timeout";
  io_.advance(1ms);
  EXPECT_TRUE(saw_cancellation) << "the coroutine's own wait must be cancelled";
  EXPECT_EQ(rt_.metrics().count(task_state::timed_out), 1u);
  EXPECT_EQ(rt_.metrics().count(task_state::failed), 0u);
  ASSERT_EQ(seen_.failures.size(), 1u);
  EXPECT_EQ(seen_.failure_names[0], "slow");
  EXPECT_THROW(std::rethrow_exception(seen_.failures[0].error), crosstown::task_timed_out);
  EXPECT_EQ(io_.clock().waiting(), 0u);
}

TEST_F(AwaitableTaskTest, TaskFinishingWithinItsTimeoutRanAndItsTimerIsCancelled) {
  response_scope s(rt_);
  s.defer([&]() -> awaitable<void> { co_await io_.clock().wait(1s); }, {.timeout = 2s});
  respond(s);
  io_.advance(1s);
  EXPECT_EQ(rt_.metrics().count(task_state::ran), 1u);
  EXPECT_EQ(io_.clock().waiting(), 0u) << "the timeout's timer outlived the task";
  EXPECT_TRUE(seen_.failures.empty());
}

TEST_F(AwaitableTaskTest, FailureBeforeTheTimeoutIsFailedAtOnceNotAfterTheTimeout) {
  response_scope s(rt_);
  s.defer(
      []() -> awaitable<void> {
        throw std::runtime_error("no route");
        co_return;
      },
      {.timeout = 5s});
  respond(s);
  io_.poll();
  EXPECT_EQ(rt_.metrics().count(task_state::failed), 1u);
}

TEST_F(AwaitableTaskTest, FactoryThrowingBeforeItsCoroutineExistsIsFailed) {
  // Not a coroutine: the factory throws while making the awaitable.
  auto factory = []() -> awaitable<void> { throw std::runtime_error("no connection"); };
  response_scope s(rt_);
  s.defer(factory);
  s.defer(factory, {.timeout = 1s});
  respond(s);
  io_.poll();
  EXPECT_EQ(rt_.metrics().count(task_state::failed), 2u);
  EXPECT_EQ(rt_.metrics().count(task_state::dropped_at_shutdown), 0u);
  ASSERT_EQ(seen_.failures.size(), 2u);
  EXPECT_EQ(seen_.failures[1].message, "no connection");
}

TEST_F(AwaitableTaskTest, BlockingOverrunIsReportedWhileTheTaskRunsAndCounted) {
  crosstown::manual_executor manual;
  bool running = false;
  bool reported_while_running = false;
  response_scope s(rt_);
  s.defer(
      [&] {
        running = true;
        io_.advance(3s);  // time passes while the blocking task holds its thread
        reported_while_running = !seen_.failures.empty();
        running = false;
      },
      {.executor = manual, .name = "report", .timeout = 2s});
  respond(s);
  manual.run_all();
  EXPECT_TRUE(reported_while_running);
  ASSERT_EQ(seen_.failures.size(), 1u);
  EXPECT_EQ(seen_.failure_names[0], "report");
  EXPECT_THROW(std::rethrow_exception(seen_.failures[0].error), crosstown::task_overrun);
  const auto m = rt_.metrics();
  EXPECT_EQ(m.overruns, 1u);
  EXPECT_EQ(m.count(task_state::ran), 1u) << "a blocking task cannot be stopped: it ran";
}

TEST_F(AwaitableTaskTest, BlockingTaskWithinItsTimeoutReportsNothingLater) {
  crosstown::manual_executor manual;
  response_scope s(rt_);
  s.defer([] {}, {.executor = manual, .timeout = 2s});
  respond(s);
  manual.run_all();
  io_.advance(5s);
  EXPECT_TRUE(seen_.failures.empty());
  EXPECT_EQ(rt_.metrics().overruns, 0u);
  EXPECT_EQ(io_.clock().waiting(), 0u);
}

TEST(AwaitableTaskShutdown, SuspendedCoroutinesAreDroppedAndCountedWhenTheirContextGoes) {
  observed seen;
  runtime rt(seen.options());
  {
    awaitable_driver io(rt);
    response_scope s(rt);
    s.defer([&]() -> awaitable<void> { co_await io.clock().wait(1h); }, {.name = "never"});
    respond(s);
    io.poll();
    EXPECT_EQ(rt.metrics().in_flight, 1u);
  }
  const auto m = rt.metrics();
  EXPECT_EQ(m.count(task_state::dropped_at_shutdown), 1u);
  EXPECT_EQ(m.registered, m.terminal());
  ASSERT_EQ(seen.lost.size(), 1u);
  EXPECT_EQ(seen.lost[0],
            (std::pair<std::string, task_state>{"never", task_state::dropped_at_shutdown}));
}

TEST(AwaitableTaskHarness, HarnessStepsAwaitableTasksWithTheRulesKept) {
  crosstown::testkit::harness h;
  awaitable_driver io(h.rt());
  h.call([&](response_scope& s) {
    s.defer([&]() -> awaitable<void> { co_await io.clock().wait(5s); },
            {.name = "call", .timeout = 1s});
  });
  h.respond(202);
  EXPECT_EQ(h.queued(), 1u);
  h.run_all();  // hands the job to its coroutine
  io.advance(1s);
  ASSERT_NE(h.find("call"), nullptr);
  EXPECT_EQ(h.find("call")->state, task_state::timed_out);
  EXPECT_TRUE(h.find("call")->after_response);
}

TEST(AwaitableTaskSyncMode, SynchronousModeStartsAwaitableTasksAtTheResponseWithTheRulesKept) {
  runtime rt({.threads = 1});
  awaitable_driver io(rt);
  crosstown::testkit::run_deferred_synchronously sync(rt);
  int done = 0;
  auto call = [&]() -> awaitable<void> {
    co_await io.clock().wait(1s);
    ++done;
  };
  {
    response_scope s(rt);
    s.defer(call);
    respond(s, 404);  // still skipped
  }
  {
    response_scope s(rt);
    s.defer(call);
    respond(s);
  }
  EXPECT_EQ(rt.metrics().count(task_state::skipped_by_status), 1u);
  EXPECT_EQ(rt.metrics().in_flight, 1u) << "started inline at the response, now suspended";
  io.advance(1s);
  EXPECT_EQ(done, 1);
  EXPECT_EQ(rt.metrics().count(task_state::ran), 1u);
}

// The ids of this process's threads with that name (Linux).
std::size_t threads_named(const std::string& wanted) {
  std::size_t n = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    std::ifstream comm(entry.path() / "comm");
    std::string name;
    if (std::getline(comm, name) && name == wanted) ++n;
  }
  return n;
}

TEST(AwaitableTaskThreads, RuntimeStartsItsIoThreadOnlyForTheFirstAwaitableTask) {
  std::atomic<int> ran{0};
  {
    runtime rt({.threads = 1, .io_threads = 2});
    {
      response_scope s(rt);
      s.defer([] {});
      respond(s);
    }
    ASSERT_TRUE(rt.drain_for(crosstown::test_support::deadline).complete);
    EXPECT_EQ(threads_named("crosstown-io"), 0u) << "no awaitable task, no I/O thread";
    {
      response_scope s(rt);
      s.defer([&]() -> awaitable<void> {
        co_await boost::asio::post(boost::asio::use_awaitable);
        ++ran;
      });
      respond(s);
    }
    ASSERT_TRUE(rt.drain_for(crosstown::test_support::deadline).complete);
    EXPECT_EQ(ran.load(), 1);
    EXPECT_EQ(threads_named("crosstown-io"), 2u);
  }
  // pthread_join returns when the thread has cleared its id, which is before the kernel has
  // finished its exit and dropped it from /proc/self/task: the listing may lag the join by a
  // moment, so it is awaited (bounded), never assumed.
  const auto until = crosstown::test_support::clock_type::now() + crosstown::test_support::deadline;
  while (threads_named("crosstown-io") != 0 && crosstown::test_support::clock_type::now() < until) {
    std::this_thread::yield();
  }
  EXPECT_EQ(threads_named("crosstown-io"), 0u) << "the runtime joins its I/O threads";
}

// Threaded: requests from two threads defer awaitable tasks (two I/O threads) and blocking
// ones (the pool) through one lane; the lane's limit holds and every task is accounted (I6).
// Meaningful under ThreadSanitizer.
TEST(AwaitableTaskThreads, ConcurrentRequestsThroughALaneKeepTheLimitAndTheAccounting) {
  constexpr int per_thread = 200;
  constexpr std::uint64_t limit = 3;
  std::atomic<std::uint64_t> inside{0};
  std::atomic<std::uint64_t> peak{0};
  std::atomic<int> failed{0};
  auto enter = [&] {
    const std::uint64_t now = inside.fetch_add(1) + 1;
    std::uint64_t seen = peak.load();
    while (now > seen && !peak.compare_exchange_weak(seen, now)) {
    }
  };
  crosstown::metrics_snapshot m;
  crosstown::lane_snapshot lane_seen;
  {
    runtime rt({.threads = 2,
                .on_error = [&](const crosstown::task_failure&) { ++failed; },
                .io_threads = 2});
    rt.lane("api", {.max_in_flight = limit, .capacity = 100'000});
    auto requests = [&] {
      for (int i = 0; i < per_thread; ++i) {
        response_scope s(rt);
        s.defer(
            [&]() -> awaitable<void> {
              enter();
              co_await boost::asio::post(boost::asio::use_awaitable);
              inside.fetch_sub(1);
            },
            {.lane = "api"});
        s.defer(
            [&] {
              enter();
              inside.fetch_sub(1);
            },
            {.lane = "api"});
        s.defer(
            []() -> awaitable<void> {
              throw std::runtime_error("x");
              co_return;
            },
            {.lane = "api"});
        // A timeout that fires (the body's timer is cancelled from the timeout's side) and a
        // blocking task whose overrun watch is cancelled when it ends, both across threads.
        s.defer(
            []() -> awaitable<void> {
              boost::asio::steady_timer t(co_await boost::asio::this_coro::executor, 1h);
              co_await t.async_wait(boost::asio::use_awaitable);
            },
            {.lane = "api", .timeout = 1ms});
        s.defer([] {}, {.timeout = 1h});
        respond(s);
      }
    };
    std::thread a(requests);
    std::thread b(requests);
    a.join();
    b.join();
    ASSERT_TRUE(rt.drain_for(crosstown::test_support::deadline).complete);
    m = rt.metrics();
    lane_seen = rt.lane_metrics().at(0);
  }
  EXPECT_LE(peak.load(), limit);
  EXPECT_EQ(m.registered, 10u * per_thread);
  EXPECT_EQ(m.registered, m.terminal());
  EXPECT_EQ(m.count(task_state::ran), 6u * per_thread);
  EXPECT_EQ(m.count(task_state::failed), 2u * per_thread);
  EXPECT_EQ(m.count(task_state::timed_out), 2u * per_thread);
  EXPECT_EQ(m.overruns, 0u);
  EXPECT_EQ(failed.load(), 4 * per_thread) << "failures and timeouts are reported";
  EXPECT_EQ(lane_seen.admitted, 8u * per_thread);
  EXPECT_EQ(lane_seen.count(task_state::timed_out), 2u * per_thread);
  EXPECT_EQ(lane_seen.in_flight, 0u);
  EXPECT_EQ(lane_seen.count(task_state::ran), 4u * per_thread);
}

}  // namespace

// Several I/O threads and many tasks with timeouts, half of which time out: each attempt's
// body and its timer are cancelled across coroutines, and every task ends exactly once.
// Meaningful under ThreadSanitizer: the timeout race used to run on a strand wrapped in a
// shared, type-erased executor whose fence-based reference count was released from two I/O
// threads; each task now lives on one single-threaded io_context, so nothing is shared.
TEST(AwaitableTaskThreads, TimeoutsOnSeveralIoThreadsEndEachTaskOnceWithoutARace) {
  constexpr int requests = 60;
  constexpr int per_request = 6;
  std::atomic<int> reported{0};
  crosstown::metrics_snapshot m;
  {
    runtime rt({.threads = 2,
                .on_error = [&](const crosstown::task_failure&) { ++reported; },
                .io_threads = 3});
    auto defer_some = [&](int from) {
      for (int i = from; i < requests; i += 2) {
        response_scope s(rt);
        for (int k = 0; k < per_request; ++k) {
          if (k % 2 == 0) {
            // Times out: the timer wins and cancels the body's wait.
            s.defer(
                []() -> awaitable<void> {
                  boost::asio::steady_timer t(co_await boost::asio::this_coro::executor, 1h);
                  co_await t.async_wait(boost::asio::use_awaitable);
                },
                {.timeout = 1ms});
          } else {
            // Finishes in time: the body wins and cancels the timer.
            s.defer(
                []() -> awaitable<void> { co_await boost::asio::post(boost::asio::use_awaitable); },
                {.timeout = 1h});
          }
        }
        s.defer([] {}, {.timeout = 1h});  // a blocking task's overrun watch, cancelled
        respond(s);
      }
    };
    std::thread a(defer_some, 0);
    std::thread b(defer_some, 1);
    a.join();
    b.join();
    ASSERT_TRUE(rt.drain_for(crosstown::test_support::deadline).complete);
    m = rt.metrics();
  }
  EXPECT_EQ(m.registered, std::uint64_t{requests} * (per_request + 1));
  EXPECT_EQ(m.registered, m.terminal());
  EXPECT_EQ(m.count(task_state::timed_out), std::uint64_t{requests} * per_request / 2);
  EXPECT_EQ(m.count(task_state::ran), std::uint64_t{requests} * (per_request / 2 + 1));
  EXPECT_EQ(m.overruns, 0u);
  EXPECT_EQ(reported.load(), requests * per_request / 2) << "each timeout is reported once";
}
