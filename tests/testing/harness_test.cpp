// crosstown::testkit used the way an application's test suite would use it.
#include <crosstown/testing/harness.hpp>

#include <crosstown/testing/matchers.hpp>
#include <crosstown/testing/recorder.hpp>
#include <crosstown/testing/sync_mode.hpp>

#include <crosstown/binding.hpp>

#include <boost/asio/awaitable.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

namespace {

using crosstown::testkit::AllRanAfterResponse;
using crosstown::testkit::EndedAs;
using crosstown::testkit::harness;
using crosstown::testkit::IsNamed;
using crosstown::testkit::RanAfterResponse;
using crosstown::testkit::SkippedByDelivery;
using crosstown::testkit::SkippedByStatus;
using crosstown::testkit::WaitsFor;
using ::testing::Contains;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

// Application code under test: deep inside, it defers through the thread-local binding.
struct phone_service {
  std::vector<int> dialled;
  void place_calls(int n) {
    for (int i = 0; i < n; ++i) {
      crosstown::defer([this, i] { dialled.push_back(i); }, {.name = "call-" + std::to_string(i)});
    }
  }
};

int handle_calls(phone_service& service, int n) {
  if (n <= 0) return 400;
  service.place_calls(n);
  return 202;
}

TEST(Harness, DeferredTasksWaitForTheResponseAndRunOneAtATime) {
  harness h;
  phone_service service;
  const int status = h.call([&] { return handle_calls(service, 3); });
  EXPECT_EQ(status, 202);
  EXPECT_THAT(h.deferred(), SizeIs(3));
  EXPECT_THAT(h.deferred(), Contains(IsNamed("call-1")));
  EXPECT_THAT(h.deferred(), Each(WaitsFor(crosstown::task_phase::response_sent)));
  EXPECT_THAT(service.dialled, IsEmpty());

  h.respond(status);
  EXPECT_EQ(h.queued(), 3u);
  EXPECT_THAT(service.dialled, IsEmpty()) << "released, but the test decides when they run";
  ASSERT_TRUE(h.next_task());
  EXPECT_THAT(service.dialled, ElementsAre(0));
  EXPECT_EQ(h.run_all(), 2u);
  EXPECT_THAT(service.dialled, ElementsAre(0, 1, 2));
  EXPECT_THAT(h.history(), SizeIs(3));
  EXPECT_THAT(h.history(), Each(RanAfterResponse()));
}

TEST(Harness, A404SkipsTheDeferredWork) {
  harness h;
  phone_service service;
  h.call([&] { service.place_calls(2); });
  h.respond(404);
  EXPECT_EQ(h.run_all(), 0u);
  EXPECT_THAT(service.dialled, IsEmpty());
  ASSERT_NE(h.find("call-0"), nullptr);
  EXPECT_THAT(*h.find("call-0"), SkippedByStatus(404));
  EXPECT_THAT(*h.find("call-0"), Not(RanAfterResponse()));
}

TEST(Harness, RanAfterResponseRejectsATaskReleasedWhenTheHeadersWentOut) {
  harness h;
  h.call([&](crosstown::response_scope& scope) {
    scope.defer([] {}, {.name = "early", .phase = crosstown::task_phase::headers_sent});
    scope.defer([] {}, {.name = "late"});
  });
  h.scope().status_known(200);
  h.scope().headers_sent();
  EXPECT_EQ(h.queued(), 1u);
  h.scope().response_sent();
  EXPECT_EQ(h.run_all(), 2u);
  // Both ran, after respond's events - but only "late" was released by the last byte.
  EXPECT_THAT(*h.find("early"), EndedAs(crosstown::task_state::ran));
  EXPECT_THAT(*h.find("early"), Not(RanAfterResponse()));
  EXPECT_THAT(*h.find("late"), RanAfterResponse());
}

TEST(Harness, RespondStillTellsTheHeadersPhaseFromTheLastByte) {
  harness h;
  h.call([&](crosstown::response_scope& scope) {
    scope.defer([] {}, {.name = "early", .phase = crosstown::task_phase::headers_sent});
    scope.defer([] {}, {.name = "late"});
  });
  h.respond(200);  // headers sent, then the last byte, in one call
  EXPECT_EQ(h.run_all(), 2u);
  EXPECT_THAT(*h.find("early"), Not(RanAfterResponse()));
  EXPECT_THAT(*h.find("late"), RanAfterResponse());
}

TEST(Harness, MatcherFailuresDescribeTheRecord) {
  harness h;
  h.call([&] { crosstown::defer([] {}, {.name = "call-0"}); });
  h.respond(404);
  const crosstown::testkit::task_record& record = *h.find("call-0");
  EXPECT_EQ(::testing::DescribeMatcher<crosstown::testkit::task_record>(RanAfterResponse()),
            "ran after its response");
  EXPECT_EQ(::testing::PrintToString(record),
            "{\"call-0\" (request 1, task 0): skipped_by_status, status 404, never released}");
}

TEST(Harness, DeliveryFailureFollowsEachTasksRule) {
  harness h;
  int ran = 0;
  h.call([&](crosstown::response_scope& scope) {
    scope.defer([&] { ++ran; }, {.name = "default"});
    scope.defer([&] { ++ran; }, {.name = "strict", .require_delivery = true});
  });
  h.fail_delivery(200, "client reset");
  h.run_all();
  EXPECT_EQ(ran, 1);
  EXPECT_THAT(*h.find("default"), RanAfterResponse());
  EXPECT_THAT(*h.find("strict"), SkippedByDelivery());
}

TEST(Harness, EachCallIsANewRequestAndEndsThePreviousOne) {
  harness h;
  int ran = 0;
  h.call([&] { crosstown::defer([&] { ++ran; }, {.name = "first"}); });
  h.call([&] { crosstown::defer([&] { ++ran; }, {.name = "second"}); });
  EXPECT_THAT(*h.find("first"), SkippedByStatus(500)) << "ended without a response";
  h.respond(200);
  h.run_all();
  EXPECT_EQ(ran, 1);
  EXPECT_THAT(*h.find("second"), RanAfterResponse());
}

TEST(Harness, ConnectionPhaseTasksRunWhenTheConnectionCloses) {
  harness h;
  int ran = 0;
  h.call([&] {
    crosstown::defer([&] { ++ran; },
                     {.name = "cleanup", .phase = crosstown::task_phase::connection_closed});
  });
  h.respond(200);
  h.end_request();
  EXPECT_EQ(h.run_all(), 0u);
  h.close_connection();
  EXPECT_EQ(h.run_all(), 1u);
  EXPECT_EQ(ran, 1);
}

TEST(Harness, ThrowingTasksAreRecordedAsFailed) {
  harness h;
  h.call([&] { crosstown::defer([] { throw std::runtime_error("x"); }, {.name = "boom"}); });
  h.respond(200);
  h.run_all();
  EXPECT_THAT(*h.find("boom"), EndedAs(crosstown::task_state::failed));
  EXPECT_EQ(h.metrics().count(crosstown::task_state::failed), 1u);
}

boost::asio::awaitable<int> coroutine_handler(crosstown::response_scope& scope, int& ran) {
  scope.defer([&ran] { ++ran; }, {.name = "from-coroutine"});
  co_return 201;
}

TEST(Harness, CoroutineHandlersGetTheScopeExplicitly) {
  harness h;
  int ran = 0;
  const int status = h.call_awaitable(
      [&](crosstown::response_scope& scope) { return coroutine_handler(scope, ran); });
  EXPECT_EQ(status, 201);
  EXPECT_THAT(h.deferred(), ElementsAre(IsNamed("from-coroutine")));
  h.respond(status);
  h.run_all();
  EXPECT_EQ(ran, 1);
}

TEST(SyncMode, RunsDeferredWorkInlineAtCompletionWithTheRulesKept) {
  crosstown::runtime rt({.threads = 1});
  crosstown::testkit::run_deferred_synchronously sync{rt};
  std::vector<std::string> log;
  {
    crosstown::response_scope ok(rt);
    ok.defer([&] { log.push_back("ok-1"); });
    ok.defer([&] { log.push_back("ok-2"); });
    ok.status_known(200);
    EXPECT_THAT(log, IsEmpty()) << "still waits for the response";
    ok.response_sent();
    EXPECT_THAT(log, ElementsAre("ok-1", "ok-2")) << "ran inline, in order, at completion";
  }
  {
    crosstown::response_scope missing(rt);
    missing.defer([&] { log.push_back("404"); });
    missing.defer([&] { log.push_back("404-always"); }, {.always = true});
    missing.status_known(404);
    missing.response_sent();
  }
  EXPECT_THAT(log, ElementsAre("ok-1", "ok-2", "404-always")) << "a 404 still skips";
  EXPECT_THAT(sync.executed(), SizeIs(3));
}

TEST(Recorder, CapturesDeferralsMadeOutsideAnyRequest) {
  std::vector<int> sent;
  {
    crosstown::testkit::deferral_recorder recorder;
    for (int i = 0; i < 3; ++i) crosstown::defer([&, i] { sent.push_back(i); });
    EXPECT_THAT(recorder.recorded(), SizeIs(3));
    EXPECT_THAT(sent, IsEmpty());
    EXPECT_EQ(recorder.run_all(), 3u);
    EXPECT_THAT(sent, ElementsAre(0, 1, 2));
  }
  crosstown::defer([&] { sent.push_back(9); });  // no recorder: runs now, as by default
  EXPECT_THAT(sent, ElementsAre(0, 1, 2, 9));
}

TEST(Recorder, RunAllWithAFailingStatusKeepsTheStatusRule) {
  crosstown::testkit::deferral_recorder recorder;
  int ran = 0;
  crosstown::defer([&] { ++ran; });
  crosstown::defer([&] { ++ran; }, {.always = true});
  EXPECT_EQ(recorder.run_all(503), 1u);
  EXPECT_EQ(ran, 1);
}

// ---- issue 10, items 7-9 -------------------------------------------------------------------

TEST(Recorder, DeferralsMadeAfterRunAllRunAtOnce) {
  std::vector<std::string> log;
  {
    crosstown::testkit::deferral_recorder recorder;
    crosstown::defer([&] { log.push_back("before"); });
    EXPECT_EQ(recorder.run_all(), 1u);
    crosstown::defer([&] { log.push_back("after"); });
    EXPECT_THAT(log, ElementsAre("before", "after")) << "queued instead of run at once";
    crosstown::defer([&] { log.push_back("skipped"); }, {.no_go = "2xx"});
    EXPECT_THAT(recorder.recorded(), IsEmpty());
    EXPECT_EQ(recorder.run_all(), 0u);
    EXPECT_EQ(recorder.metrics().count(crosstown::task_state::dropped_at_shutdown), 0u);
  }
  EXPECT_THAT(log, ElementsAre("before", "after")) << "still the 200's rules";
}

TEST(Harness, RecordsLearnTheStatusWhenTheTestDrivesTheScopeItself) {
  harness h;
  h.call([](crosstown::response_scope& scope) {
    scope.defer([] {}, {.name = "ok"});
    scope.defer([] {}, {.no_go = "201", .name = "skipped"});
    scope.defer([] {}, {.name = "cancelled"});
    scope.cancel("cancelled");
  });
  h.scope().status_known(201);
  h.scope().headers_sent();
  h.scope().response_sent();
  h.run_all();
  EXPECT_EQ(h.find("ok")->status, 201);
  EXPECT_THAT(*h.find("skipped"), SkippedByStatus(201));
  EXPECT_EQ(h.find("cancelled")->status, 201) << "settled before the status was known";
  EXPECT_THAT(*h.find("ok"), RanAfterResponse());
  EXPECT_EQ(::testing::PrintToString(*h.find("skipped")),
            "{\"skipped\" (request 1, task 1): skipped_by_status, status 201, never released}");
  EXPECT_EQ(::testing::PrintToString(*h.find("ok")),
            "{\"ok\" (request 1, task 0): ran, status 201, released after the response}");
}

TEST(Harness, AllRanAfterResponseFailsOnAnEmptyHistory) {
  harness h;
  h.call([] { return 202; });
  h.respond(202);
  EXPECT_THAT(h.history(), Each(RanAfterResponse())) << "the trap: passes on nothing";
  EXPECT_THAT(h.history(), Not(AllRanAfterResponse()));
  EXPECT_THAT(h.history(), Not(AllRanAfterResponse(3)));
  EXPECT_THAT(h.history(), Not(AllRanAfterResponse(0))) << "a count of 0 proves nothing";
  EXPECT_EQ(::testing::DescribeMatcher<std::vector<crosstown::testkit::task_record>>(
                AllRanAfterResponse(3)),
            "is 3 task(s), all of which ran after their response");
}

TEST(Harness, AllRanAfterResponseCountsTheTasksAndChecksEachOne) {
  phone_service service;
  harness h;
  const int status = h.call([&] { return handle_calls(service, 3); });
  h.respond(status);
  h.run_all();
  EXPECT_THAT(h.history(), AllRanAfterResponse(3));
  EXPECT_THAT(h.history(), AllRanAfterResponse());
  EXPECT_THAT(h.history(), Not(AllRanAfterResponse(4)));
  harness headers_only;
  headers_only.call(
      [] { crosstown::defer([] {}, {.phase = crosstown::task_phase::headers_sent}); });
  headers_only.respond(200);
  headers_only.run_all();
  EXPECT_THAT(headers_only.history(), Not(AllRanAfterResponse(1)));
}

TEST(Harness, ADeferralFromAHelperThreadDuringCallFailsTheTestAndIsRecorded) {
  harness h;
  bool ran = false;
  EXPECT_NONFATAL_FAILURE_ON_ALL_THREADS(h.call([&] {
    std::thread helper([&] { crosstown::defer([&] { ran = true; }, {.name = "escapee"}); });
    helper.join();
    return 200;
  }),
                                         "escaped the harness");
  EXPECT_FALSE(ran) << "the escaped task ran during the handler";
  const auto escaped = h.escaped();
  ASSERT_EQ(escaped.size(), 1u);
  EXPECT_EQ(escaped[0].name, "escapee");
  EXPECT_EQ(escaped[0].request_id, h.scope().id());
  EXPECT_FALSE(escaped[0].on_handler_thread);
  // Outside a call, crosstown::defer with no scope is the application's business again.
  crosstown::defer([&] { ran = true; });
  EXPECT_TRUE(ran);
}

}  // namespace
