// Seeded runs of the built-in scenarios on the one simulated server (a Beast server over
// sim_stream writing with the real adapter): zero violations, determinism, replay, no drag,
// faults and the liveness phase.
//
// Run counts: CROSSTOWN_SIM_RUNS (environment) is the total over the four scenarios; without
// it, CROSSTOWN_SIM_DEFAULT_RUNS (set by tests/sim/CMakeLists.txt: 10000 normally, fewer in
// sanitizer builds). Every failure prints the seed and the replay command.
#include <crosstown/sim/simulation.hpp>

#include <crosstown/fault.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#ifndef CROSSTOWN_SIM_DEFAULT_RUNS
#define CROSSTOWN_SIM_DEFAULT_RUNS 10000
#endif

namespace {

using namespace crosstown::sim;
using ::testing::HasSubstr;

std::uint64_t total_runs() {
  if (const char* env = std::getenv("CROSSTOWN_SIM_RUNS")) {
    const auto n = std::strtoull(env, nullptr, 10);
    if (n > 0) return n;
  }
  return CROSSTOWN_SIM_DEFAULT_RUNS;
}

run_config config_for(const std::string& scenario_name, std::uint64_t seed) {
  run_config cfg;
  cfg.seed = seed;
  cfg.world = *scenario_by_name(scenario_name);
  return cfg;
}

std::string replay_line(const std::string& scenario_name, const run_result& r) {
  return "seed " + std::to_string(r.seed) + ": " + r.first->invariant + ": " + r.first->message +
         "\n" + r.story + "replay: crosstown-sim --scenario " + scenario_name + " --seed " +
         std::to_string(r.seed) + " --runs 1";
}

// Share of the total run count per scenario (phone-calls runs are ~10x heavier).
void runs_keep_every_invariant(const std::string& name, double share) {
  const auto runs = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(total_runs() * share));
  std::uint64_t tasks = 0, requests = 0;
  for (std::uint64_t seed = 1; seed <= runs; ++seed) {
    const run_result r =
        run_checked(config_for(name, seed), {.no_drag = true, .determinism = seed % 10 == 1});
    ASSERT_TRUE(r.ok()) << replay_line(name, r);
    tasks += r.metrics.registered;
    requests += r.requests;
  }
  EXPECT_GT(requests, 0u);
  EXPECT_GT(tasks, 0u);
  std::printf("%s: %llu runs, %llu requests, %llu tasks, no violation\n", name.c_str(),
              static_cast<unsigned long long>(runs), static_cast<unsigned long long>(requests),
              static_cast<unsigned long long>(tasks));
}

TEST(Simulation, PhoneCallsRunsKeepEveryInvariant) {
  runs_keep_every_invariant("phone-calls", 0.1);
}
TEST(Simulation, SlowReadersRunsKeepEveryInvariant) {
  runs_keep_every_invariant("slow-readers", 0.3);
}
TEST(Simulation, ResetsRunsKeepEveryInvariant) { runs_keep_every_invariant("resets", 0.3); }
TEST(Simulation, KeepAliveRunsKeepEveryInvariant) { runs_keep_every_invariant("keep-alive", 0.3); }

TEST(Simulation, OtherStrategiesKeepEveryInvariant) {
  for (auto kind : {strategy_kind::fifo, strategy_kind::pct}) {
    for (std::uint64_t seed = 1; seed <= 50; ++seed) {
      run_config cfg = config_for("resets", seed);
      cfg.strategy.kind = kind;
      cfg.strategy.pct_steps = 3000;
      const run_result r = run_checked(cfg);
      ASSERT_TRUE(r.ok()) << to_string(kind) << " " << replay_line("resets", r);
    }
  }
}

TEST(Simulation, SameSeedGivesAnIdenticalJournalOnASample) {
  for (const std::string& name : scenario_names()) {
    for (std::uint64_t seed = 1; seed <= 10; ++seed) {
      const run_result r =
          run_checked(config_for(name, seed), {.no_drag = false, .determinism = true});
      ASSERT_TRUE(r.ok()) << replay_line(name, r);
    }
  }
}

TEST(Simulation, DifferentSeedsDivergeAndTheFirstDifferenceIsNamed) {
  run_config a = config_for("keep-alive", 1), b = config_for("keep-alive", 2);
  a.keep_journal = b.keep_journal = true;
  const run_result ra = run_once(a), rb = run_once(b);
  EXPECT_NE(ra.digest, rb.digest);
  const auto diff = first_divergence(ra.log, rb.log);
  ASSERT_TRUE(diff.has_value());
  EXPECT_THAT(*diff, HasSubstr("record "));
}

TEST(Simulation, ReplayOfARecordedScheduleGivesTheSameRun) {
  run_config cfg = config_for("keep-alive", 5);
  cfg.keep_journal = true;
  const run_result recorded = run_once(cfg);
  run_config again = cfg;
  again.strategy = {.kind = strategy_kind::replay, .schedule = recorded.schedule};
  const run_result replayed = run_once(again);
  EXPECT_EQ(replayed.trace.size(), recorded.trace.size());
  EXPECT_EQ(replayed.completions, recorded.completions);
  EXPECT_EQ(replayed.metrics, recorded.metrics);
}

TEST(Simulation, ResponsesCompleteAtTheSameVirtualTimeWithoutDeferredWork) {
  run_config cfg = config_for("phone-calls", 3);
  const run_result with = run_once(cfg);
  cfg.defer_tasks = false;
  const run_result without = run_once(cfg);
  ASSERT_TRUE(with.ok()) << with.first->message;
  EXPECT_GT(with.metrics.registered, 0u);
  EXPECT_EQ(without.metrics.registered, 0u);
  EXPECT_FALSE(with.completions.empty());
  EXPECT_EQ(with.completions, without.completions);
}

TEST(Simulation, InjectedFaultsFireAreCountedAndDoNotCountAsViolations) {
  std::uint64_t fired = 0, dropped = 0;
  for (std::uint64_t seed = 1; seed <= 30; ++seed) {
    run_config cfg = config_for("resets", seed);
    cfg.world.fault_run_rate = 1.0;
    cfg.world.fault_hit_rate = 0.3;
    const run_result r = run_checked(cfg);
    ASSERT_TRUE(r.ok()) << replay_line("resets", r);
    fired += r.faults.count("hand_off.execute_throws")
                 ? r.faults.at("hand_off.execute_throws").fired
                 : 0;
    dropped += r.metrics.count(crosstown::task_state::rejected_by_executor);
    EXPECT_EQ(r.metrics.unfinished(), 0u);
  }
  EXPECT_GT(fired, 0u);
  EXPECT_GT(dropped, 0u) << "a refused batch is counted rejected_by_executor, never lost silently";
}

TEST(Simulation, LivenessPhaseRunsTheTasksOfClientsThatStoppedReading) {
  std::uint64_t ran = 0;
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    run_config cfg = config_for("slow-readers", seed);
    cfg.world.stall_rate = 1.0;
    cfg.world.stall_forever_rate = 1.0;
    cfg.world.reset_rate = 0.0;
    const run_result r = run_checked(cfg);
    ASSERT_TRUE(r.ok()) << replay_line("slow-readers", r);
    ran += r.metrics.count(crosstown::task_state::ran);
    EXPECT_EQ(r.metrics.unfinished(), 0u);
  }
  EXPECT_GT(ran, 0u);
}

TEST(Simulation, LivenessReportsTasksThatNeverRanByName) {
  // Too small a budget: responses blocked by stalled clients cannot finish after healing.
  run_config cfg = config_for("slow-readers", 1);
  cfg.world.stall_rate = 1.0;
  cfg.world.stall_forever_rate = 1.0;
  cfg.world.reset_rate = 0.0;
  cfg.world.min_tasks = 3;
  cfg.liveness_budget = std::chrono::nanoseconds(1);
  const run_result r = run_once(cfg);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.first->invariant, "I3 once");
  EXPECT_THAT(r.first->message, HasSubstr("never ran within the liveness budget"));
  EXPECT_THAT(r.first->message, HasSubstr("request "));
}

TEST(Simulation, TheHandlerDefersWhatTheScenarioDrawsAndTasksRun) {
  std::uint64_t ran = 0, skipped = 0, cancelled = 0, failed = 0;
  for (std::uint64_t seed = 1; seed <= 5; ++seed) {
    const run_result r = run_once(config_for("phone-calls", seed));
    ASSERT_TRUE(r.ok()) << replay_line("phone-calls", r);
    EXPECT_EQ(r.metrics.unfinished(), 0u);
    ran += r.metrics.count(crosstown::task_state::ran);
    skipped += r.metrics.count(crosstown::task_state::skipped_by_status);
    cancelled += r.metrics.count(crosstown::task_state::cancelled);
    failed += r.metrics.count(crosstown::task_state::failed);
  }
  EXPECT_GT(ran, 0u);
  EXPECT_GT(skipped, 0u);    // no-go statuses
  EXPECT_GT(cancelled, 0u);  // names that replace and cancel
  EXPECT_GT(failed, 0u);     // tasks that throw
}

TEST(Simulation, InjectedFaultsExcuseOnlyTheTasksTheyLoseNotAPlantedDrop) {
  // A dropped job hidden among the tasks that injected faults lose is still caught.
  run_config planted = config_for("resets", 1);
  planted.world.fault_run_rate = 1.0;
  planted.world.fault_hit_rate = 0.3;
  planted.planted = mutation::drop_job;
  bool caught = false;
  for (std::uint64_t seed = 1; seed <= 20 && !caught; ++seed) {
    planted.seed = seed;
    const run_result r = run_once(planted);
    caught = !r.ok() && r.first->invariant == "I3 once";
  }
  EXPECT_TRUE(caught) << "a dropped job hidden among injected faults";
}

TEST(Simulation, TheSameSeedOfResetsGivesTheSameJournalAndAReplayableSchedule) {
  run_config cfg = config_for("resets", 5);
  cfg.keep_journal = true;
  const run_result a = run_once(cfg), b = run_once(cfg);
  EXPECT_EQ(a.digest, b.digest);
  EXPECT_FALSE(first_divergence(a.log, b.log).has_value());
  run_config again = cfg;
  again.strategy = {.kind = strategy_kind::replay, .schedule = a.schedule};
  const run_result replayed = run_once(again);
  ASSERT_TRUE(replayed.ok()) << replayed.first->message;
  EXPECT_EQ(replayed.trace.size(), a.trace.size());
  EXPECT_EQ(replayed.completions, a.completions);
  EXPECT_EQ(replayed.metrics, a.metrics);
  run_config other = cfg;
  other.seed = 6;
  EXPECT_NE(run_once(other).digest, a.digest);
}

}  // namespace
