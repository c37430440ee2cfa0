// Mutation checks: plant a bug in the simulated adapter (or executor) and require the oracle
// to report the matching invariant within 1000 seeded runs. A simulator that cannot catch
// planted bugs proves nothing. Each test prints how many runs it needed.
#include <crosstown/sim/simulation.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>

namespace {

using namespace crosstown::sim;

struct caught {
  std::uint64_t runs = 0;
  std::optional<violation> found;
  std::uint64_t seed = 0;
};

caught hunt(mutation m, const std::string& scenario_name, strategy_kind kind,
            std::uint64_t max_runs = 1000, server_kind server = server_kind::imitation) {
  caught out;
  for (std::uint64_t seed = 1; seed <= max_runs; ++seed) {
    run_config cfg;
    cfg.seed = seed;
    cfg.world = *scenario_by_name(scenario_name);
    cfg.world.max_tasks = std::min<std::uint32_t>(cfg.world.max_tasks, 8);
    cfg.world.min_tasks = std::min(cfg.world.min_tasks, cfg.world.max_tasks);
    cfg.strategy.kind = kind;
    cfg.planted = m;
    cfg.server = server;
    const run_result r = run_checked(cfg);
    ++out.runs;
    if (!r.ok()) {
      out.found = r.first;
      out.seed = seed;
      break;
    }
  }
  std::printf("mutation %s (%s, %s, %s): %s after %llu run(s)\n", std::string(to_string(m)).c_str(),
              scenario_name.c_str(), std::string(to_string(kind)).c_str(),
              std::string(to_string(server)).c_str(),
              out.found ? out.found->invariant.c_str() : "NOT CAUGHT",
              static_cast<unsigned long long>(out.runs));
  return out;
}

void expect_caught(mutation m, const std::string& scenario_name, strategy_kind kind,
                   const std::string& invariant, server_kind server = server_kind::imitation) {
  const caught c = hunt(m, scenario_name, kind, 1000, server);
  ASSERT_TRUE(c.found.has_value()) << to_string(m) << " was not caught in 1000 runs";
  EXPECT_EQ(c.found->invariant, invariant) << c.found->message;
}

TEST(Mutation, ResponseSentAtHeadersTimeBreaksI1) {
  expect_caught(mutation::sent_at_headers, "phone-calls", strategy_kind::random, "I1 after");
  expect_caught(mutation::sent_at_headers, "keep-alive", strategy_kind::fifo, "I1 after");
}

TEST(Mutation, ReportingStatus200WhateverTheHandlerChoseBreaksI2) {
  expect_caught(mutation::status_200, "phone-calls", strategy_kind::random, "I2 status");
  expect_caught(mutation::status_200, "resets", strategy_kind::pct, "I2 status");
}

TEST(Mutation, CompletingOneResponseReleasingAnotherBreaksI5) {
  expect_caught(mutation::cross_release, "phone-calls", strategy_kind::random, "I5 isolation");
  expect_caught(mutation::cross_release, "keep-alive", strategy_kind::fifo, "I5 isolation");
}

TEST(Mutation, AnExecutorThatDropsAJobBreaksI3) {
  expect_caught(mutation::drop_job, "phone-calls", strategy_kind::random, "I3 once");
  expect_caught(mutation::drop_job, "resets", strategy_kind::fifo, "I3 once");
}

TEST(Mutation, TheUnmutatedSimulatorPassesTheSameHunts) {
  for (auto kind : {strategy_kind::random, strategy_kind::fifo}) {
    const caught c = hunt(mutation::none, "keep-alive", kind, 100);
    EXPECT_FALSE(c.found.has_value()) << c.found->invariant << ": " << c.found->message;
  }
}

// The same planted bugs in the scenario's server on the real adapter (scenario_server.hpp):
// the session reports response_sent() after the header write, tells the scope 200, completes
// one response's write with another's scope; the simulated workers drop every 13th job.
constexpr server_kind adapter = server_kind::adapter;

TEST(MutationOnAdapter, ASessionReportingResponseSentAfterTheHeaderBreaksI1) {
  expect_caught(mutation::sent_at_headers, "phone-calls", strategy_kind::random, "I1 after",
                adapter);
  expect_caught(mutation::sent_at_headers, "keep-alive", strategy_kind::fifo, "I1 after", adapter);
}

TEST(MutationOnAdapter, ASessionTellingTheScope200BreaksI2) {
  expect_caught(mutation::status_200, "phone-calls", strategy_kind::random, "I2 status", adapter);
  expect_caught(mutation::status_200, "resets", strategy_kind::pct, "I2 status", adapter);
}

TEST(MutationOnAdapter, AWriteCompletingAnotherResponsesScopeBreaksI5) {
  expect_caught(mutation::cross_release, "phone-calls", strategy_kind::random, "I5 isolation",
                adapter);
  expect_caught(mutation::cross_release, "keep-alive", strategy_kind::fifo, "I5 isolation",
                adapter);
}

TEST(MutationOnAdapter, SimulatedWorkersThatDropAJobBreakI3) {
  expect_caught(mutation::drop_job, "phone-calls", strategy_kind::random, "I3 once", adapter);
  expect_caught(mutation::drop_job, "resets", strategy_kind::fifo, "I3 once", adapter);
}

TEST(MutationOnAdapter, TheUnmutatedScenarioServerPassesTheSameHunts) {
  for (auto kind : {strategy_kind::random, strategy_kind::fifo}) {
    const caught c = hunt(mutation::none, "keep-alive", kind, 10, adapter);
    EXPECT_FALSE(c.found.has_value()) << c.found->invariant << ": " << c.found->message;
  }
}

}  // namespace
