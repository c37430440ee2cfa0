// The demo application's handlers, tested the way an application team would test its own:
// with crosstown::testkit only - the harness (no threads, sockets or sleeps), the awaitable
// driver (virtual time), the synchronous mode and the matchers. The app is server-independent
// (`calls_app::handle` takes a neutral request and the response scope), so a test calls it
// with the harness's scope; no server is started (servers_test.cpp serves it for real).
#include "app.hpp"

#include <crosstown/testing/awaitable.hpp>
#include <crosstown/testing/harness.hpp>
#include <crosstown/testing/matchers.hpp>
#include <crosstown/testing/sync_mode.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>

namespace {

using namespace crosstown::testkit;
using crosstown::response_scope;
using crosstown::task_phase;
using crosstown::task_state;
using crosstown_demo::app_request;
using crosstown_demo::app_response;
using crosstown_demo::awaitable_call_placer;
using crosstown_demo::awaitable_call_settings;
using crosstown_demo::blocking_call_placer;
using crosstown_demo::calls_app;
using request_type = app_request;
using response_type = app_response;
using namespace std::chrono_literals;
using ::testing::Contains;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

// Simulated calls take no time: nothing in these tests sleeps.
constexpr std::chrono::microseconds instant{0};

namespace verb {
constexpr const char* get = "GET";
constexpr const char* post = "POST";
}  // namespace verb

request_type make_request(const char* method, const std::string& target,
                          const std::string& id = "") {
  request_type req{method, target, {}};
  if (!id.empty()) req.headers.emplace_back("X-Request-Id", id);
  return req;
}

// Calls the app's handler as a server does, with the harness's scope.
response_type handle(harness& h, calls_app& app, const request_type& req) {
  return h.call([&](response_scope& scope) { return app.handle(req, scope); });
}

// The blocking variant (--blocking-calls): each call is a pool task.
class DemoAppTest : public ::testing::Test {
 protected:
  harness h;
  blocking_call_placer placer{h.rt(), instant};
  calls_app app{h.rt(), placer};
};

TEST_F(DemoAppTest, PostCallsAnswers202AndPlacesTheCallsOnlyAfterTheResponse) {
  const request_type req = make_request(verb::post, "/calls?n=5", "r1");
  const response_type res = handle(h, app, req);

  EXPECT_EQ(res.status, 202);
  EXPECT_THAT(res.body, HasSubstr("queued 5 calls"));
  EXPECT_THAT(h.deferred(), SizeIs(5));
  EXPECT_THAT(h.deferred(), Each(WaitsFor(task_phase::response_sent)));
  EXPECT_EQ(h.ran(), 0u);
  ASSERT_NE(app.find("r1"), nullptr);
  EXPECT_EQ(app.find("r1")->deferred.load(), 5);
  EXPECT_EQ(app.find("r1")->started.load(), 0) << "no call may be placed before the 202 is sent";

  h.respond(res.status);
  EXPECT_EQ(h.queued(), 5u);
  EXPECT_EQ(app.find("r1")->started.load(), 0) << "released, not yet run";

  EXPECT_TRUE(h.next_task());
  EXPECT_EQ(app.find("r1")->started.load(), 1);
  EXPECT_EQ(h.run_all(), 4u);
  EXPECT_EQ(app.find("r1")->started.load(), 5);
  EXPECT_THAT(h.history(), SizeIs(5));
  EXPECT_THAT(h.history(), Each(RanAfterResponse()));
}

TEST_F(DemoAppTest, PostCallsStillPlacesTheCallsWhenTheClientVanishes) {
  // The app decided to place the calls; the default rule runs them after a failed delivery.
  const request_type req = make_request(verb::post, "/calls?n=3");
  const response_type res = handle(h, app, req);
  h.fail_delivery(res.status, "connection reset by peer");
  EXPECT_EQ(h.run_all(), 3u);
  EXPECT_THAT(h.history(), Each(RanAfterResponse()));
}

TEST_F(DemoAppTest, GetMissingAnswers404AndSkipsTheVisitLog) {
  const request_type req = make_request(verb::get, "/missing", "r2");
  const response_type res = handle(h, app, req);

  EXPECT_EQ(res.status, 404);
  EXPECT_THAT(h.deferred(), ElementsAre(IsNamed("visit-log")));
  h.respond(res.status);
  EXPECT_EQ(h.run_all(), 0u);
  ASSERT_NE(h.find("visit-log"), nullptr);
  EXPECT_THAT(*h.find("visit-log"), SkippedByStatus(404));
  EXPECT_EQ(app.find("r2")->started.load(), 0);
}

TEST_F(DemoAppTest, AuditRunsItsAlwaysTaskOn500AndSkipsTheDefaultOne) {
  const request_type req = make_request(verb::post, "/audit", "r3");
  const response_type res = handle(h, app, req);

  EXPECT_EQ(res.status, 500);
  ASSERT_THAT(h.deferred(), SizeIs(2));
  EXPECT_THAT(h.deferred()[0], IsNamed("audit"));
  EXPECT_TRUE(h.deferred()[0].always);
  EXPECT_FALSE(h.deferred()[1].always);

  h.respond(res.status);
  EXPECT_EQ(h.run_all(), 1u);
  EXPECT_THAT(*h.find("audit"), RanAfterResponse());
  EXPECT_THAT(h.history(), Contains(SkippedByStatus(500)));
  EXPECT_EQ(app.find("r3")->started.load(), 1);
}

TEST_F(DemoAppTest, MovedSkipsTheTaskWithTheCustomNoGoOn302) {
  const request_type req = make_request(verb::get, "/moved", "r4");
  const response_type res = handle(h, app, req);

  EXPECT_EQ(res.status, 302);
  EXPECT_EQ(res.header("Location"), "/calls");
  ASSERT_THAT(h.deferred(), SizeIs(2));
  EXPECT_TRUE(h.deferred()[0].no_go.contains(302));
  EXPECT_TRUE(h.deferred()[0].no_go.contains(403));
  EXPECT_FALSE(h.deferred()[0].no_go.contains(406));
  EXPECT_FALSE(h.deferred()[1].no_go.contains(302)) << "default no-go is 4xx,5xx";

  h.respond(res.status);
  EXPECT_EQ(h.run_all(), 1u);
  EXPECT_THAT(h.history(), SizeIs(2));
  EXPECT_THAT(h.history(), Contains(SkippedByStatus(302)));
  EXPECT_THAT(h.history(), Contains(RanAfterResponse()));
  EXPECT_EQ(app.find("r4")->started.load(), 1);
}

TEST_F(DemoAppTest, StreamReleasesItsHeadersPhaseTaskBeforeTheBodyIsSent) {
  const request_type req = make_request(verb::get, "/stream");
  const response_type res = handle(h, app, req);

  EXPECT_EQ(res.status, 200);
  EXPECT_TRUE(res.chunked);
  EXPECT_THAT(h.deferred(),
              ElementsAre(WaitsFor(task_phase::headers_sent), WaitsFor(task_phase::response_sent)));
  h.scope().status_known(res.status);
  h.scope().headers_sent();
  EXPECT_EQ(h.queued(), 1u) << "only the headers-phase task is released by the header";
  EXPECT_THAT(h.deferred(), ElementsAre(WaitsFor(task_phase::response_sent)));
  h.scope().response_sent();
  EXPECT_EQ(h.run_all(), 2u);
  EXPECT_THAT(h.history(), Each(EndedAs(task_state::ran)));
}

TEST_F(DemoAppTest, MetricsReportsTheRuntimesCounters) {
  const request_type calls = make_request(verb::post, "/calls?n=2");
  h.respond(handle(h, app, calls).status);
  h.run_all();
  const request_type missing = make_request(verb::get, "/missing");
  h.respond(handle(h, app, missing).status);

  const request_type metrics = make_request(verb::get, "/metrics");
  const response_type res = handle(h, app, metrics);
  EXPECT_EQ(res.status, 200);
  EXPECT_THAT(h.deferred(), IsEmpty());
  EXPECT_THAT(res.body, HasSubstr("crosstown_tasks_registered_total 3\n"));
  EXPECT_THAT(res.body, HasSubstr("crosstown_tasks_total{state=\"ran\"} 2\n"));
  EXPECT_THAT(res.body, HasSubstr("crosstown_tasks_total{state=\"skipped_by_status\"} 1\n"));
}

// The demo's coroutine session style passes the scope explicitly and calls the same handler
// from inside a coroutine; the app itself has no coroutine handler, so this runs the handler
// the way that session does.
TEST_F(DemoAppTest, HandlerCalledFromACoroutineSessionDefersOnTheExplicitScope) {
  const request_type req = make_request(verb::post, "/calls?n=4");
  const int status = h.call_awaitable([&](response_scope& scope) -> boost::asio::awaitable<int> {
    co_return app.handle(req, scope).status;
  });
  EXPECT_EQ(status, 202);
  EXPECT_THAT(h.deferred(), SizeIs(4));
  EXPECT_EQ(h.ran(), 0u);
  h.respond(status);
  EXPECT_EQ(h.run_all(), 4u);
  EXPECT_THAT(h.history(), Each(RanAfterResponse()));
}

// A whole suite can instead run deferred work inline, in registration order, at response
// completion - on the runtime the app itself uses - with the status rules kept.
class DemoAppSyncTest : public ::testing::Test {
 protected:
  // Reports a complete response for `req` on a fresh scope of `rt`, as the server would.
  response_type serve(const request_type& req) {
    response_scope scope(rt);
    response_type res = app.handle(req, scope);
    EXPECT_THAT(sync.executed(), SizeIs(executed_before)) << "ran before the response was sent";
    scope.status_known(res.status);
    scope.headers_sent();
    scope.response_sent();
    executed_before = sync.executed().size();
    return res;
  }

  crosstown::runtime rt{{.threads = 1}};
  blocking_call_placer placer{rt, instant};
  calls_app app{rt, placer};
  run_deferred_synchronously sync{rt};
  std::size_t executed_before = 0;
};

TEST_F(DemoAppSyncTest, CallsRunInlineInRegistrationOrderAtResponseCompletion) {
  const response_type res = serve(make_request(verb::post, "/calls?n=5", "s1"));
  EXPECT_EQ(res.status, 202);
  EXPECT_EQ(app.find("s1")->started.load(), 5) << "ran inline, no pool thread involved";
  const auto executed = sync.executed();
  ASSERT_THAT(executed, SizeIs(5));
  for (std::size_t i = 0; i < executed.size(); ++i) EXPECT_EQ(executed[i].index, i);
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::ran), 5u);
}

TEST_F(DemoAppSyncTest, A404StillSkipsTheVisitLog) {
  const response_type res = serve(make_request(verb::get, "/missing", "s2"));
  EXPECT_EQ(res.status, 404);
  EXPECT_THAT(sync.executed(), IsEmpty());
  EXPECT_EQ(app.find("s2")->started.load(), 0);
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::skipped_by_status), 1u);
}

TEST_F(DemoAppSyncTest, AuditAndMovedKeepTheirRules) {
  serve(make_request(verb::post, "/audit"));
  EXPECT_THAT(sync.executed(),
              ElementsAre(Field(&crosstown::inline_executor::record::name, "audit")));
  serve(make_request(verb::get, "/moved"));
  EXPECT_THAT(sync.executed(), SizeIs(2)) << "302: the default task runs, the custom no-go skips";
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::skipped_by_status), 2u);
}

// ---- awaitable calls (the default placer): lane, timeout, retries, on virtual time ----------

class DemoAwaitableCallsTest : public ::testing::Test {
 protected:
  // Builds the placer and the app with `settings` (each test says what it relies on).
  void make(awaitable_call_settings settings) {
    placer = std::make_unique<awaitable_call_placer>(h.rt(), io.clock(), std::move(settings));
    app = std::make_unique<calls_app>(h.rt(), *placer);
  }
  // POST /calls?... through the harness: responds as the server would and hands the calls to
  // the driver's io_context; runs what is ready.
  response_type post_and_release(const std::string& target, const std::string& id = "") {
    const response_type res = handle(h, *app, make_request(verb::post, target, id));
    h.respond(res.status);
    h.run_all();
    io.poll();
    return res;
  }
  // Steps virtual time from timer to timer until nothing waits (bounded).
  void run_out_the_clock() {
    for (int i = 0; i < 100 && io.advance_to_next(); ++i) {
    }
  }
  std::uint64_t count(task_state s) { return h.rt().metrics().count(s); }

  // Declared before the harness and the driver: the calls in flight reference neither.
  std::unique_ptr<awaitable_call_placer> placer;
  std::unique_ptr<calls_app> app;
  harness h;
  awaitable_driver io{h.rt()};
};

TEST_F(DemoAwaitableCallsTest, CallsWaitForTheResponseThenRunAsAwaitableTasksInTheLane) {
  make({.latency = 10ms, .timeout = 0s});
  const response_type res = handle(h, *app, make_request(verb::post, "/calls?n=3", "a1"));
  EXPECT_EQ(res.status, 202);
  EXPECT_THAT(h.deferred(), SizeIs(3));
  EXPECT_THAT(h.deferred(), Each(WaitsFor(task_phase::response_sent)));
  io.poll();
  EXPECT_EQ(app->find("a1")->started.load(), 0) << "no call may start before the 202 is sent";
  h.respond(202);
  h.run_all();
  io.poll();
  EXPECT_EQ(app->find("a1")->started.load(), 3);
  EXPECT_EQ(placer->lane().snapshot().in_flight, 3u);
  io.advance(9ms);
  EXPECT_EQ(count(task_state::ran), 0u) << "each call lasts its 10 ms latency";
  io.advance(1ms);
  EXPECT_EQ(count(task_state::ran), 3u);
  EXPECT_EQ(placer->lane().snapshot().count(task_state::ran), 3u);
}

TEST_F(DemoAwaitableCallsTest, MsAndUsSetTheLatencyAndAreExclusive) {
  make({.latency = 10ms, .timeout = 0s});
  post_and_release("/calls?n=1&ms=30");
  io.advance(29ms);
  EXPECT_EQ(count(task_state::ran), 0u);
  io.advance(1ms);
  EXPECT_EQ(count(task_state::ran), 1u);
  post_and_release("/calls?n=1&us=500");
  io.advance(500us);
  EXPECT_EQ(count(task_state::ran), 2u);
  const response_type both = handle(h, *app, make_request(verb::post, "/calls?n=1&ms=1&us=1"));
  EXPECT_EQ(both.status, 400);
  EXPECT_THAT(both.body, HasSubstr("ms and us"));
  EXPECT_THAT(h.deferred(), IsEmpty());
  const response_type big = handle(h, *app, make_request(verb::post, "/calls?n=1&ms=5001"));
  EXPECT_EQ(big.status, 413);
}

TEST_F(DemoAwaitableCallsTest, ACallThatAlwaysFailsIsRetriedUpToItsAttemptsAndCounted) {
  make({.latency = 10ms,
        .timeout = 1s,
        .retry = {.max_attempts = 3, .base = 100ms, .cap = 1s, .jitter = 0, .retry_if = {}},
        .failure_rate = 1.0});
  post_and_release("/calls?n=1", "f1");
  run_out_the_clock();
  EXPECT_EQ(count(task_state::failed), 1u) << "one terminal state for the call";
  EXPECT_EQ(count(task_state::ran), 0u);
  EXPECT_EQ(h.rt().metrics().retries, 2u);
  EXPECT_EQ(placer->attempts(), 3u);
  EXPECT_EQ(placer->failed_attempts(), 3u);
  EXPECT_EQ(app->find("f1")->started.load(), 1) << "a retried call starts once";
  const response_type metrics = handle(h, *app, make_request(verb::get, "/metrics"));
  EXPECT_THAT(metrics.body, HasSubstr("crosstown_demo_call_attempts_total 3\n"));
  EXPECT_THAT(metrics.body, HasSubstr("crosstown_demo_call_failures_total 3\n"));
  EXPECT_THAT(metrics.body, HasSubstr("lane=\"telephony\""));
}

TEST_F(DemoAwaitableCallsTest, ACallWhoseFirstAttemptFailsIsRetriedAndThenRuns) {
  // A seed whose first draw fails and second succeeds, found with the same draw the app uses.
  std::uint64_t seed = 0;
  for (std::uint64_t s = 1; s < 1000 && seed == 0; ++s) {
    const crosstown_demo::failure_draw d(0.5, s);
    if (d.fails_at(0) && !d.fails_at(1)) seed = s;
  }
  ASSERT_NE(seed, 0u);
  make({.latency = 10ms,
        .timeout = 1s,
        .retry = {.max_attempts = 3, .base = 100ms, .cap = 1s, .jitter = 0, .retry_if = {}},
        .failure_rate = 0.5,
        .seed = seed});
  post_and_release("/calls?n=1");
  io.advance(10ms);
  EXPECT_EQ(placer->failed_attempts(), 1u) << "the first attempt failed";
  EXPECT_EQ(count(task_state::ran), 0u) << "waiting its backoff";
  io.advance(100ms);  // the backoff (jitter 0): the second attempt starts
  EXPECT_EQ(placer->attempts(), 2u);
  io.advance(10ms);
  EXPECT_EQ(count(task_state::ran), 1u);
  EXPECT_EQ(count(task_state::failed), 0u);
  EXPECT_EQ(h.rt().metrics().retries, 1u);
}

TEST_F(DemoAwaitableCallsTest, ACallPastItsTimeoutEndsTimedOut) {
  make({.latency = 5s, .timeout = 1s, .retry = {.max_attempts = 1}});
  post_and_release("/calls?n=1");
  io.advance(999ms);
  EXPECT_EQ(count(task_state::timed_out), 0u);
  io.advance(1ms);
  EXPECT_EQ(count(task_state::timed_out), 1u);
  EXPECT_EQ(count(task_state::ran), 0u);
  EXPECT_EQ(placer->attempts(), 1u);
}

TEST_F(DemoAwaitableCallsTest, TheLaneLimitHolds) {
  make({.latency = 10ms, .lane_options = {.max_in_flight = 2, .capacity = 100}, .timeout = 0s});
  post_and_release("/calls?n=5");
  std::uint64_t most = 0;
  for (int step = 0; step < 10 && count(task_state::ran) < 5; ++step) {
    const crosstown::lane_snapshot s = placer->lane().snapshot();
    EXPECT_LE(s.in_flight, 2u);
    EXPECT_EQ(s.in_flight + s.waiting + count(task_state::ran), 5u);
    most = std::max(most, s.in_flight);
    io.advance(10ms);
  }
  EXPECT_EQ(most, 2u);
  EXPECT_EQ(count(task_state::ran), 5u);
  EXPECT_EQ(placer->lane().snapshot().waited, 3u) << "three calls had to wait for a slot";
}

TEST_F(DemoAwaitableCallsTest, CallsAre503WithRetryAfterWhenTheLaneCannotHoldThem) {
  make({.latency = 10ms, .lane_options = {.max_in_flight = 1, .capacity = 2}, .timeout = 0s});
  EXPECT_EQ(post_and_release("/calls?n=3").status, 202) << "one runs, two wait: it fits";
  ASSERT_EQ(placer->lane().snapshot().waiting, 2u);
  const response_type busy = handle(h, *app, make_request(verb::post, "/calls?n=1", "b1"));
  EXPECT_EQ(busy.status, 503);
  EXPECT_EQ(busy.header("Retry-After"), "1");
  EXPECT_THAT(h.deferred(), IsEmpty()) << "the 503 deferred nothing";
  EXPECT_EQ(app->refused_busy(), 1u);
  EXPECT_EQ(count(task_state::rejected_by_overflow), 0u) << "refused before, not rejected after";
  h.respond(busy.status);
  io.advance(10ms);  // one call done: a slot frees up, a waiting call takes it
  EXPECT_EQ(post_and_release("/calls?n=1").status, 202);
}

TEST_F(DemoAwaitableCallsTest, CallsAre503WhenTheRuntimeIsNotAccepting) {
  make({});
  h.rt().shutdown(crosstown::runtime::clock::now());
  ASSERT_FALSE(h.rt().accepting());
  const response_type busy = handle(h, *app, make_request(verb::post, "/calls?n=1"));
  EXPECT_EQ(busy.status, 503);
  EXPECT_EQ(busy.header("Retry-After"), "1");
  EXPECT_THAT(h.deferred(), IsEmpty());
}

TEST_F(DemoAppTest, BlockingCallsAre503WhenTheRuntimeIsNotAccepting) {
  h.rt().shutdown(crosstown::runtime::clock::now());
  const response_type busy = handle(h, app, make_request(verb::post, "/calls?n=1"));
  EXPECT_EQ(busy.status, 503);
  EXPECT_EQ(busy.header("Retry-After"), "1");
  EXPECT_THAT(h.deferred(), IsEmpty());
  EXPECT_EQ(app.refused_busy(), 1u);
}

TEST(DemoCallSettings, AFailureRateOutsideZeroToOneIsRefusedNamingIt) {
  harness h;
  crosstown::testkit::manual_task_clock clock;
  try {
    awaitable_call_placer placer(h.rt(), clock, {.failure_rate = 1.5});
    ADD_FAILURE() << "a failure rate of 1.5 was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("failure rate"));
  }
}

TEST(DemoCallSettings, TheSameSeedGivesTheSameFailures) {
  crosstown_demo::failure_draw a(0.3, 42);
  crosstown_demo::failure_draw b(0.3, 42);
  int failures = 0;
  for (int i = 0; i < 1000; ++i) {
    const bool fa = a.next();
    EXPECT_EQ(fa, b.next());
    failures += fa ? 1 : 0;
  }
  EXPECT_GT(failures, 200);
  EXPECT_LT(failures, 400);
}

}  // namespace
