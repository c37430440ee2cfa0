// Rules of one response scope: phases, status and delivery rules, order, names, isolation.
#include <crosstown/response_scope.hpp>

#include <crosstown/manual_executor.hpp>
#include <crosstown/runtime.hpp>

#include <algorithm>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <crosstown/detail/position_index.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <future>
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

// ---- no user code under the scope's lock (issue 10, item 1) --------------------------------

// Runs `scenario` on a thread of its own and says whether it returned within a generous
// deadline. A deadlock leaves that thread blocked: it is detached, and the test fails.
bool returns_in_time(std::function<void()> scenario) {
  std::packaged_task<void()> run(std::move(scenario));
  std::future<void> done = run.get_future();
  std::thread worker(std::move(run));
  if (done.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
    worker.detach();
    return false;
  }
  worker.join();
  done.get();
  return true;
}

// A move-only capture whose destructor calls into the scope, as a capture holding a
// reference-counted request object might.
struct calls_scope_when_destroyed {
  response_scope* scope;
  std::size_t* seen_pending;
  explicit calls_scope_when_destroyed(response_scope* s, std::size_t* seen)
      : scope(s), seen_pending(seen) {}
  calls_scope_when_destroyed(calls_scope_when_destroyed&& other) noexcept
      : scope(std::exchange(other.scope, nullptr)), seen_pending(other.seen_pending) {}
  calls_scope_when_destroyed& operator=(calls_scope_when_destroyed&&) = delete;
  ~calls_scope_when_destroyed() {
    if (scope != nullptr) *seen_pending = scope->pending();
  }
};

TEST(ResponseScopeLocking, ClosureDestroyedBecauseItsStatusSkipsItMayCallIntoItsScope) {
  runtime rt({.threads = 1});
  std::size_t seen = 99;
  EXPECT_TRUE(returns_in_time([&] {
    response_scope scope(rt);
    scope.defer([p = calls_scope_when_destroyed{&scope, &seen}] {});
    scope.status_known(404);
    scope.response_sent();
  })) << "deadlock: the closure was destroyed under the scope's lock";
  EXPECT_EQ(seen, 0u);
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::skipped_by_status), 1u);
}

TEST(ResponseScopeLocking, ClosureDestroyedBecauseDeliveryFailedMayCallIntoItsScope) {
  runtime rt({.threads = 1});
  std::size_t seen = 99;
  EXPECT_TRUE(returns_in_time([&] {
    response_scope scope(rt);
    scope.defer([p = calls_scope_when_destroyed{&scope, &seen}] {}, {.require_delivery = true});
    scope.status_known(200);
    scope.delivery_failed("reset");
  }));
  EXPECT_EQ(seen, 0u);
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::skipped_by_delivery), 1u);
}

TEST(ResponseScopeLocking, ClosureDestroyedByCancelMayCallIntoItsScope) {
  runtime rt({.threads = 1});
  std::size_t seen = 99;
  EXPECT_TRUE(returns_in_time([&] {
    response_scope scope(rt);
    scope.defer([] {}, {.name = "other"});
    scope.defer([p = calls_scope_when_destroyed{&scope, &seen}] {}, {.name = "mail"});
    EXPECT_TRUE(scope.cancel("mail"));
    scope.status_known(404);
  }));
  EXPECT_EQ(seen, 1u) << "the cancelled task no longer counts as pending";
}

TEST(ResponseScopeLocking, ClosureReplacedByNameMayCallIntoItsScope) {
  runtime rt({.threads = 1});
  std::size_t seen = 99;
  EXPECT_TRUE(returns_in_time([&] {
    response_scope scope(rt);
    scope.defer([p = calls_scope_when_destroyed{&scope, &seen}] {}, {.name = "mail"});
    scope.defer([] {}, {.name = "mail"});
    scope.status_known(404);
  }));
  EXPECT_EQ(seen, 1u) << "only the replacement is pending";
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::cancelled), 1u);
}

TEST(ResponseScopeLocking, SettledHookMayCallIntoTheScopeOfTheTask) {
  std::atomic<response_scope*> current{nullptr};
  std::vector<std::size_t> pending_seen;
  runtime rt({.threads = 1, .on_settled = [&](const crosstown::task_info&, crosstown::task_state) {
                if (response_scope* s = current.load()) pending_seen.push_back(s->pending());
              }});
  // The one task that runs goes to a manual executor, run on this thread after the scope: the
  // three that settle without running (replaced, cancelled, skipped) are the ones observed.
  manual_executor manual;
  EXPECT_TRUE(returns_in_time([&] {
    response_scope scope(rt);
    current = &scope;
    scope.defer([] {}, {.name = "a"});
    scope.defer([] {}, {.executor = manual, .name = "a"});  // replaces: cancelled
    scope.defer([] {}, {.name = "b"});
    EXPECT_TRUE(scope.cancel("b"));
    scope.defer([] {}, {.no_go = "2xx"});
    scope.status_known(200);
    scope.response_sent();  // the last skipped by status
    current = nullptr;
  })) << "deadlock: on_settled was called under the scope's lock";
  EXPECT_EQ(pending_seen.size(), 3u);
  EXPECT_EQ(manual.run_all(), 1u);
}

// ---- late registration does not wait behind a same-thread task (item 5) --------------------

TEST(ResponseScopeConcurrency, LateRegistrationIsHandedOverWhileASameThreadTaskRuns) {
  runtime rt({.threads = 1});
  manual_executor manual;
  response_scope scope(rt);
  std::mutex m;
  std::condition_variable cv;
  bool running = false;
  bool release = false;
  scope.defer(
      [&] {
        std::unique_lock lock(m);
        running = true;
        cv.notify_all();
        cv.wait(lock, [&] { return release; });
      },
      {.same_thread = true});
  scope.status_known(200);
  std::thread io([&] { scope.response_sent(); });  // runs the same-thread task, which blocks
  {
    std::unique_lock lock(m);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(20), [&] { return running; }));
  }
  scope.defer([] {}, {.executor = manual});
  const std::size_t handed_over = manual.pending();
  {
    std::lock_guard lock(m);
    release = true;
  }
  cv.notify_all();
  io.join();
  EXPECT_EQ(handed_over, 1u) << "the late task waited behind the running same-thread task";
  EXPECT_EQ(manual.run_all(), 1u);
}

TEST(ResponseScopeConcurrency, SameThreadTasksOfOneScopeStillRunOneAfterAnother) {
  // A late same-thread task registered while another runs is queued behind it, on the
  // thread running them, not run concurrently on the registering thread.
  runtime rt({.threads = 1});
  response_scope scope(rt);
  std::mutex m;
  std::condition_variable cv;
  bool running = false;
  bool release = false;
  std::vector<std::string> order;
  std::thread::id io_thread;
  std::thread::id late_ran_on;
  scope.defer(
      [&] {
        std::unique_lock lock(m);
        running = true;
        cv.notify_all();
        cv.wait(lock, [&] { return release; });
        order.push_back("first");
      },
      {.same_thread = true});
  scope.status_known(200);
  std::thread io([&] {
    io_thread = std::this_thread::get_id();
    scope.response_sent();
  });
  {
    std::unique_lock lock(m);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(20), [&] { return running; }));
  }
  scope.defer(
      [&] {
        late_ran_on = std::this_thread::get_id();
        order.push_back("late");
      },
      {.same_thread = true});
  {
    std::lock_guard lock(m);
    release = true;
  }
  cv.notify_all();
  io.join();
  EXPECT_THAT(order, ElementsAre("first", "late"));
  EXPECT_EQ(late_ran_on, io_thread);
}

// ---- named tasks and no-go sets: no quadratic cost, no hidden limit (item 6) ---------------

TEST(ResponseScopeScale, HundredThousandDistinctNoGoSetsInOneScopeAreEachHonoured) {
  // The 65,536th distinct set used to throw std::length_error. Task i's set holds code 100 + b
  // for each bit b of i: 100,000 distinct sets.
  runtime rt({.threads = 1});
  manual_executor manual;
  constexpr int n = 100'000;
  auto set_of = [](int i) {
    crosstown::status_set set;
    for (int bit = 0; bit < 17; ++bit) {
      if ((i >> bit) & 1) set.insert(100 + bit);
    }
    return set;
  };
  {
    response_scope scope(rt);
    for (int i = 0; i < n; ++i) scope.defer([] {}, {.executor = manual, .no_go = set_of(i)});
    EXPECT_EQ(scope.pending(), static_cast<std::size_t>(n));
    scope.status_known(105);  // skips exactly the tasks whose index has bit 5 set
    scope.response_sent();
  }
  std::size_t expected_skips = 0;
  for (int i = 0; i < n; ++i) expected_skips += (i >> 5) & 1;
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::skipped_by_status), expected_skips);
  EXPECT_EQ(manual.run_all(), n - expected_skips);
}

TEST(ResponseScopeScale, HundredThousandNamedTasksReplaceAndCancelByNameInOneScope) {
  runtime rt({.threads = 1});
  manual_executor manual;
  constexpr int n = 100'000;
  std::vector<int> ran;
  {
    response_scope scope(rt);
    for (int i = 0; i < n; ++i) {
      scope.defer([&ran, i] { ran.push_back(i); },
                  {.executor = manual, .name = "task-" + std::to_string(i)});
    }
    // Replace every even one, cancel every third; both look names up among 100k.
    for (int i = 0; i < n; i += 2) {
      scope.defer([&ran, i] { ran.push_back(n + i); },
                  {.executor = manual, .name = "task-" + std::to_string(i)});
    }
    for (int i = 0; i < n; i += 3) EXPECT_TRUE(scope.cancel("task-" + std::to_string(i)));
    EXPECT_FALSE(scope.cancel("task-" + std::to_string(n)));
    scope.status_known(200);
    scope.response_sent();
  }
  manual.run_all();
  std::vector<int> expected;
  for (int i = 1; i < n; i += 2) {
    if (i % 3 != 0) expected.push_back(i);  // odd, never replaced, not cancelled
  }
  for (int i = 0; i < n; i += 2) {
    if (i % 3 != 0) expected.push_back(n + i);  // the replacements, in their order
  }
  std::sort(expected.begin(), expected.end());
  std::vector<int> got = ran;
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, expected);
  const auto m = rt.metrics();
  EXPECT_EQ(m.count(crosstown::task_state::cancelled),
            static_cast<std::uint64_t>(n / 2 + (n + 2) / 3));
  EXPECT_EQ(m.registered, m.terminal());
}

TEST(ResponseScopeScale, NameIndexCostsAConstantNumberOfProbesPerOperation) {
  // The index the scope uses for names and no-go sets, driven as the scope drives it: the
  // number of slots visited per operation does not grow with the number of keys.
  auto probes_per_operation = [](std::uint32_t n) {
    crosstown::detail::position_index index;
    std::vector<std::string> keys;
    keys.reserve(n);
    for (std::uint32_t i = 0; i < n; ++i) keys.push_back("name-" + std::to_string(i));
    auto hash = [](const std::string& k) { return std::hash<std::string>{}(k); };
    std::size_t operations = 0;
    for (std::uint32_t i = 0; i < n; ++i) {
      EXPECT_FALSE(index.find(hash(keys[i]), [&](std::uint32_t p) { return keys[p] == keys[i]; }));
      index.reserve_one();
      index.insert(hash(keys[i]), i);
      operations += 2;
    }
    for (std::uint32_t i = 0; i < n; ++i) {
      const auto at =
          index.find(hash(keys[i]), [&](std::uint32_t p) { return keys[p] == keys[i]; });
      EXPECT_TRUE(at && *at == i);
      if (i % 2 == 0) {
        EXPECT_TRUE(index.erase(hash(keys[i]), i));
      }
      operations += i % 2 == 0 ? 2 : 1;
    }
    return static_cast<double>(index.probes()) / static_cast<double>(operations);
  };
  const double small = probes_per_operation(1'000);
  const double large = probes_per_operation(100'000);
  EXPECT_LT(small, 3.0);
  EXPECT_LT(large, 3.0) << "probes per operation grow with the number of names";
}

// ---- registration after end() (item 14) ----------------------------------------------------

TEST_F(ResponseScopeTest, DeferAfterEndIsAcceptedAndJudgedAtOnceOnEveryPhase) {
  crosstown::connection_scope connection(rt_);
  {
    response_scope scope(connection);
    scope.status_known(200);
    scope.response_sent();
    scope.end();
    EXPECT_THROW(scope.status_known(200), std::logic_error) << "events after end() are misuse";
    // Registration is not an event: a handler's thread may still be deferring when the
    // adapter ends the scope. Judged at once against the final outcome.
    scope.defer(note("headers"), on_manual({.phase = task_phase::headers_sent}));
    scope.defer(note("response"), on_manual());
    scope.defer(note("connection"), on_manual({.phase = task_phase::connection_closed}));
    scope.defer(note("needs 5xx"), on_manual({.no_go = "2xx"}));
    EXPECT_EQ(scope.pending(), 0u);
    EXPECT_EQ(manual_.pending(), 2u);
    EXPECT_EQ(connection.held(), 1u) << "the connection phase still waits for the close";
  }
  connection.closed();
  manual_.run_all();
  EXPECT_THAT(log_, ElementsAre("headers", "response", "connection"));
  EXPECT_EQ(rt_.metrics().count(crosstown::task_state::skipped_by_status), 1u);
}

TEST_F(ResponseScopeTest, DeferAfterAnEndWithoutResponseCountsAsThe500) {
  response_scope scope(rt_);
  scope.end();
  scope.defer(note("default"), on_manual());
  scope.defer(note("always"), on_manual({.always = true}));
  scope.defer(note("needs delivery"), on_manual({.always = true, .require_delivery = true}));
  manual_.run_all();
  EXPECT_THAT(log_, ElementsAre("always"));
  EXPECT_EQ(rt_.metrics().count(crosstown::task_state::skipped_by_delivery), 1u);
}

}  // namespace
