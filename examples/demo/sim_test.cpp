// The demo app's own simulator suite: the real demo server (its sessions on crosstown::sim's
// stream and timer), the real phone-calls handler and the real crosstown::beast writes, for
// 1,000 seeds, with the app's own checks at the end of each run; and four bugs planted in
// copies of it, each caught within 1,000 seeds by the invariant it breaks.
#include "demo_server.hpp"
#include "demo_sim.hpp"

#include <crosstown/metrics.hpp>

#include <crosstown/sim/gtest.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <string>

#ifndef CROSSTOWN_DEMO_SIM_RUNS
#define CROSSTOWN_DEMO_SIM_RUNS 1000
#endif

namespace {

namespace sim = crosstown::sim;
using crosstown_demo::demo_bug;

sim::app_seeds_result run_demo(crosstown_demo::demo_sim_options options, std::uint64_t runs) {
  const crosstown_demo::demo_sim_parts parts = crosstown_demo::make_demo_sim(options);
  return sim::run_app_test(crosstown_demo::demo_sim_config(), parts.server, parts.client,
                           parts.check, runs);
}

TEST(DemoSim, DemoAppHoldsEveryInvariantAndItsOwnChecksForAThousandSeeds) {
  const auto started = std::chrono::steady_clock::now();
  const sim::app_seeds_result r = run_demo({}, sim::app_seed_count(CROSSTOWN_DEMO_SIM_RUNS));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::cout << r.runs << " seeds, " << r.responses << " responses, " << r.tasks_ran << " tasks in "
            << seconds << " s (with the I7 rerun of each seed)\n";
  EXPECT_TRUE(r.ok()) << (r.failure ? sim::describe(*r.failure) : "");
  EXPECT_GT(r.responses, r.runs);  // responses went out
  EXPECT_GT(r.tasks_ran, r.runs);  // and the app's deferred work ran
}

TEST(DemoSim, CoroutineSessionsHoldToo) {
  const sim::app_seeds_result r =
      run_demo({.style = crosstown_demo::session_style::coroutine}, sim::app_seed_count(200));
  EXPECT_TRUE(r.ok()) << (r.failure ? sim::describe(*r.failure) : "");
  EXPECT_GT(r.responses, r.runs);
}

TEST(DemoSim, PlantedCopyWithoutABugHolds) {
  const sim::app_seeds_result r =
      run_demo({.bug = demo_bug::control, .style = std::nullopt}, sim::app_seed_count(200));
  EXPECT_TRUE(r.ok()) << (r.failure ? sim::describe(*r.failure) : "");
}

// The demo's calls under the simulator are the production placer's: awaitable tasks in the
// "telephony" lane, timed out, failed and retried on virtual time by the fake API.
TEST(DemoSim, CallsTimeOutFailRetryAndWaitInTheirLaneOnVirtualTime) {
  crosstown_demo::demo_sim_parts parts = crosstown_demo::make_demo_sim({});
  std::uint64_t ran = 0;
  std::uint64_t timed_out = 0;
  std::uint64_t failed = 0;
  std::uint64_t retries = 0;
  std::uint64_t waited = 0;
  std::uint64_t most_in_flight = 0;
  const sim::app_check check = [&, own = parts.check](sim::app_env& env) {
    own(env);
    const crosstown::metrics_snapshot m = env.runtime().metrics();
    ran += m.count(crosstown::task_state::ran);
    timed_out += m.count(crosstown::task_state::timed_out);
    failed += m.count(crosstown::task_state::failed);
    retries += m.retries;
    for (const crosstown::lane_snapshot& l : env.runtime().lane_metrics()) {
      if (l.name != "telephony") continue;
      waited += l.waited;
      most_in_flight = std::max<std::uint64_t>(most_in_flight, l.options.max_in_flight);
    }
  };
  const sim::app_seeds_result r = sim::run_app_test(crosstown_demo::demo_sim_config(), parts.server,
                                                    parts.client, check, sim::app_seed_count(100));
  EXPECT_TRUE(r.ok()) << (r.failure ? sim::describe(*r.failure) : "");
  EXPECT_GT(ran, 0U);
  EXPECT_GT(timed_out, 0U) << "slow calls time out";
  EXPECT_GT(failed, 0U) << "calls the API failed three times";
  EXPECT_GT(retries, timed_out + failed) << "failed attempts are retried";
  EXPECT_GT(waited, 0U) << "calls wait in the telephony lane";
  EXPECT_EQ(most_in_flight, 8U);
}

void expect_caught(const sim::app_seeds_result& r, const std::string& invariant) {
  ASSERT_FALSE(r.ok()) << "not caught in " << r.runs << " seeds";
  EXPECT_EQ(r.failure->first->invariant, invariant) << sim::describe(*r.failure);
  if (std::getenv("SHOW_STORY") != nullptr) std::cout << sim::describe(*r.failure);
  EXPECT_NE(r.failure->replay.find("CROSSTOWN_SIM_SEED=" + std::to_string(r.failure->seed)),
            std::string::npos);
  EXPECT_FALSE(r.failure->story.empty());
}

// Planted bugs: 1,000 seeds at most each (the search stops at the first failure).
TEST(DemoSim, KeepAliveWriteHandedThePreviousRequestsScopeIsCaughtAsI5) {
  expect_caught(
      run_demo({.bug = demo_bug::stale_scope, .style = crosstown_demo::session_style::callback},
               1000),
      "I5 isolation");
}

TEST(DemoSim, HandlerReportingResponseSentBeforeWritingIsCaughtAsI1) {
  expect_caught(run_demo({.bug = demo_bug::sent_before_write, .style = std::nullopt}, 1000),
                "I1 after");
}

TEST(DemoSim, SessionIgnoringAWriteErrorBreaksTheDeliveryRule) {
  expect_caught(run_demo({.bug = demo_bug::ignore_write_error,
                          .style = crosstown_demo::session_style::callback},
                         1000),
                "I3 delivery");
}

TEST(DemoSim, SameThreadTaskBlockingTheIoThreadIsCaughtAsI7) {
  expect_caught(run_demo({.bug = demo_bug::blocking_task, .style = std::nullopt}, 1000),
                "I7 no drag");
}

}  // namespace
