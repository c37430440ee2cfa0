// Mutation checks: plant a bug in the scenario's server (its session on the real adapter, or
// its simulated workers) and require the oracle to report the matching invariant within 1000
// seeded runs. A simulator that cannot catch planted bugs proves nothing. Each test prints
// how many runs it needed.
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
            std::uint64_t max_runs = 1000) {
  caught out;
  for (std::uint64_t seed = 1; seed <= max_runs; ++seed) {
    run_config cfg;
    cfg.seed = seed;
    cfg.world = *scenario_by_name(scenario_name);
    cfg.world.max_tasks = std::min<std::uint32_t>(cfg.world.max_tasks, 8);
    cfg.world.min_tasks = std::min(cfg.world.min_tasks, cfg.world.max_tasks);
    cfg.strategy.kind = kind;
    cfg.planted = m;
    const run_result r = run_checked(cfg);
    ++out.runs;
    if (!r.ok()) {
      out.found = r.first;
      out.seed = seed;
      break;
    }
  }
  std::printf("mutation %s (%s, %s): %s after %llu run(s)\n", std::string(to_string(m)).c_str(),
              scenario_name.c_str(), std::string(to_string(kind)).c_str(),
              out.found ? out.found->invariant.c_str() : "NOT CAUGHT",
              static_cast<unsigned long long>(out.runs));
  return out;
}

void expect_caught(mutation m, const std::string& scenario_name, strategy_kind kind,
                   const std::string& invariant) {
  const caught c = hunt(m, scenario_name, kind, 1000);
  ASSERT_TRUE(c.found.has_value()) << to_string(m) << " was not caught in 1000 runs";
  EXPECT_EQ(c.found->invariant, invariant) << c.found->message;
}

// The planted bugs (scenario_server.hpp): the session reports response_sent() after the
// header write, tells the scope 200, completes one response's write with another's scope;
// the simulated workers drop every 13th job.

TEST(Mutation, ASessionReportingResponseSentAfterTheHeaderBreaksI1) {
  expect_caught(mutation::sent_at_headers, "phone-calls", strategy_kind::random, "I1 after");
  expect_caught(mutation::sent_at_headers, "keep-alive", strategy_kind::fifo, "I1 after");
}

TEST(Mutation, ASessionTellingTheScope200BreaksI2) {
  expect_caught(mutation::status_200, "phone-calls", strategy_kind::random, "I2 status");
  expect_caught(mutation::status_200, "resets", strategy_kind::pct, "I2 status");
}

TEST(Mutation, AWriteCompletingAnotherResponsesScopeBreaksI5) {
  expect_caught(mutation::cross_release, "phone-calls", strategy_kind::random, "I5 isolation");
  expect_caught(mutation::cross_release, "keep-alive", strategy_kind::fifo, "I5 isolation");
}

TEST(Mutation, SimulatedWorkersThatDropAJobBreakI3) {
  expect_caught(mutation::drop_job, "phone-calls", strategy_kind::random, "I3 once");
  expect_caught(mutation::drop_job, "resets", strategy_kind::fifo, "I3 once");
}

TEST(Mutation, TheUnmutatedScenarioServerPassesTheSameHunts) {
  for (auto kind : {strategy_kind::random, strategy_kind::fifo}) {
    const caught c = hunt(mutation::none, "keep-alive", kind, 100);
    EXPECT_FALSE(c.found.has_value()) << c.found->invariant << ": " << c.found->message;
  }
}

}  // namespace
