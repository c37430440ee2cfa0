// The demo application's handlers, tested the way an application team would test its own:
// with crosstown::testkit only - the harness (no threads, sockets or sleeps), the synchronous
// mode and the matchers. The handler `phone_calls_app::operator()` takes a `request_context`
// (request, response scope, write record, connection id), so a test builds one around the
// harness's scope; no server is started.
#include "phone_calls_app.hpp"

#include <crosstown/testing/harness.hpp>
#include <crosstown/testing/matchers.hpp>
#include <crosstown/testing/sync_mode.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>

namespace {

using namespace crosstown::testkit;
using crosstown::response_scope;
using crosstown::task_phase;
using crosstown::task_state;
using crosstown_demo::phone_calls_app;
using crosstown_demo::request_context;
using crosstown_demo::request_type;
using crosstown_demo::response_type;
using crosstown_demo::http::verb;
using ::testing::Contains;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

// Simulated calls take no time: nothing in these tests sleeps.
constexpr std::chrono::microseconds instant{0};

request_type make_request(verb method, const std::string& target, const std::string& id = "") {
  request_type req{method, target, 11};
  if (!id.empty()) req.set("X-Request-Id", id);
  return req;
}

// Calls the app's handler as the demo server does, with the harness's scope.
response_type handle(harness& h, phone_calls_app& app, const request_type& req) {
  return h.call([&](response_scope& scope) {
    request_context context{req, scope, nullptr, 1};
    return app(context);
  });
}

class DemoAppTest : public ::testing::Test {
 protected:
  harness h;
  phone_calls_app app{h.rt(), instant};
};

TEST_F(DemoAppTest, PostCallsAnswers202AndPlacesTheCallsOnlyAfterTheResponse) {
  const request_type req = make_request(verb::post, "/calls?n=5", "r1");
  const response_type res = handle(h, app, req);

  EXPECT_EQ(res.result_int(), 202);
  EXPECT_THAT(res.body(), HasSubstr("queued 5 calls"));
  EXPECT_THAT(h.deferred(), SizeIs(5));
  EXPECT_THAT(h.deferred(), Each(WaitsFor(task_phase::response_sent)));
  EXPECT_EQ(h.ran(), 0u);
  ASSERT_NE(app.find("r1"), nullptr);
  EXPECT_EQ(app.find("r1")->deferred.load(), 5);
  EXPECT_EQ(app.find("r1")->started.load(), 0) << "no call may be placed before the 202 is sent";

  h.respond(res.result_int());
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
  h.fail_delivery(res.result_int(), "connection reset by peer");
  EXPECT_EQ(h.run_all(), 3u);
  EXPECT_THAT(h.history(), Each(RanAfterResponse()));
}

TEST_F(DemoAppTest, GetMissingAnswers404AndSkipsTheVisitLog) {
  const request_type req = make_request(verb::get, "/missing", "r2");
  const response_type res = handle(h, app, req);

  EXPECT_EQ(res.result_int(), 404);
  EXPECT_THAT(h.deferred(), ElementsAre(IsNamed("visit-log")));
  h.respond(res.result_int());
  EXPECT_EQ(h.run_all(), 0u);
  ASSERT_NE(h.find("visit-log"), nullptr);
  EXPECT_THAT(*h.find("visit-log"), SkippedByStatus(404));
  EXPECT_EQ(app.find("r2")->started.load(), 0);
}

TEST_F(DemoAppTest, AuditRunsItsAlwaysTaskOn500AndSkipsTheDefaultOne) {
  const request_type req = make_request(verb::post, "/audit", "r3");
  const response_type res = handle(h, app, req);

  EXPECT_EQ(res.result_int(), 500);
  ASSERT_THAT(h.deferred(), SizeIs(2));
  EXPECT_THAT(h.deferred()[0], IsNamed("audit"));
  EXPECT_TRUE(h.deferred()[0].always);
  EXPECT_FALSE(h.deferred()[1].always);

  h.respond(res.result_int());
  EXPECT_EQ(h.run_all(), 1u);
  EXPECT_THAT(*h.find("audit"), RanAfterResponse());
  EXPECT_THAT(h.history(), Contains(SkippedByStatus(500)));
  EXPECT_EQ(app.find("r3")->started.load(), 1);
}

TEST_F(DemoAppTest, MovedSkipsTheTaskWithTheCustomNoGoOn302) {
  const request_type req = make_request(verb::get, "/moved", "r4");
  const response_type res = handle(h, app, req);

  EXPECT_EQ(res.result_int(), 302);
  EXPECT_EQ(res[crosstown_demo::http::field::location], "/calls");
  ASSERT_THAT(h.deferred(), SizeIs(2));
  EXPECT_TRUE(h.deferred()[0].no_go.contains(302));
  EXPECT_TRUE(h.deferred()[0].no_go.contains(403));
  EXPECT_FALSE(h.deferred()[0].no_go.contains(406));
  EXPECT_FALSE(h.deferred()[1].no_go.contains(302)) << "default no-go is 4xx,5xx";

  h.respond(res.result_int());
  EXPECT_EQ(h.run_all(), 1u);
  EXPECT_THAT(h.history(), SizeIs(2));
  EXPECT_THAT(h.history(), Contains(SkippedByStatus(302)));
  EXPECT_THAT(h.history(), Contains(RanAfterResponse()));
  EXPECT_EQ(app.find("r4")->started.load(), 1);
}

TEST_F(DemoAppTest, StreamReleasesItsHeadersPhaseTaskBeforeTheBodyIsSent) {
  const request_type req = make_request(verb::get, "/stream");
  const response_type res = handle(h, app, req);

  EXPECT_EQ(res.result_int(), 200);
  EXPECT_TRUE(res.chunked());
  EXPECT_THAT(h.deferred(),
              ElementsAre(WaitsFor(task_phase::headers_sent), WaitsFor(task_phase::response_sent)));
  h.scope().status_known(res.result_int());
  h.scope().headers_sent();
  EXPECT_EQ(h.queued(), 1u) << "only the headers-phase task is released by the header";
  EXPECT_THAT(h.deferred(), ElementsAre(WaitsFor(task_phase::response_sent)));
  h.scope().response_sent();
  EXPECT_EQ(h.run_all(), 2u);
  EXPECT_THAT(h.history(), Each(EndedAs(task_state::ran)));
}

TEST_F(DemoAppTest, MetricsReportsTheRuntimesCounters) {
  const request_type calls = make_request(verb::post, "/calls?n=2");
  h.respond(handle(h, app, calls).result_int());
  h.run_all();
  const request_type missing = make_request(verb::get, "/missing");
  h.respond(handle(h, app, missing).result_int());

  const request_type metrics = make_request(verb::get, "/metrics");
  const response_type res = handle(h, app, metrics);
  EXPECT_EQ(res.result_int(), 200);
  EXPECT_THAT(h.deferred(), IsEmpty());
  EXPECT_THAT(res.body(), HasSubstr("crosstown_tasks_registered_total 3\n"));
  EXPECT_THAT(res.body(), HasSubstr("crosstown_tasks_total{state=\"ran\"} 2\n"));
  EXPECT_THAT(res.body(), HasSubstr("crosstown_tasks_total{state=\"skipped_by_status\"} 1\n"));
}

// The demo's coroutine session style passes the scope explicitly and calls the same handler
// from inside a coroutine; the app itself has no coroutine handler, so this runs the handler
// the way that session does.
TEST_F(DemoAppTest, HandlerCalledFromACoroutineSessionDefersOnTheExplicitScope) {
  const request_type req = make_request(verb::post, "/calls?n=4");
  const int status = h.call_awaitable([&](response_scope& scope) -> boost::asio::awaitable<int> {
    request_context context{req, scope, nullptr, 1};
    co_return app(context).result_int();
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
    request_context context{req, scope, nullptr, 1};
    response_type res = app(context);
    EXPECT_THAT(sync.executed(), SizeIs(executed_before)) << "ran before the response was sent";
    scope.status_known(res.result_int());
    scope.headers_sent();
    scope.response_sent();
    executed_before = sync.executed().size();
    return res;
  }

  crosstown::runtime rt{{.threads = 1}};
  phone_calls_app app{rt, instant};
  run_deferred_synchronously sync{rt};
  std::size_t executed_before = 0;
};

TEST_F(DemoAppSyncTest, CallsRunInlineInRegistrationOrderAtResponseCompletion) {
  const response_type res = serve(make_request(verb::post, "/calls?n=5", "s1"));
  EXPECT_EQ(res.result_int(), 202);
  EXPECT_EQ(app.find("s1")->started.load(), 5) << "ran inline, no pool thread involved";
  const auto executed = sync.executed();
  ASSERT_THAT(executed, SizeIs(5));
  for (std::size_t i = 0; i < executed.size(); ++i) EXPECT_EQ(executed[i].index, i);
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::ran), 5u);
}

TEST_F(DemoAppSyncTest, A404StillSkipsTheVisitLog) {
  const response_type res = serve(make_request(verb::get, "/missing", "s2"));
  EXPECT_EQ(res.result_int(), 404);
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

}  // namespace
