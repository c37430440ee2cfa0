// Properties over the simulator (crosstown::sim): for random seeds, scenarios, scheduling
// strategies and fault rates, played by the scenario's Beast server on the real adapter, the
// oracle finds no violation of I1-I8, and a run is a pure function of its seed and
// configuration.
//
// Every world is kept small (few connections, requests and tasks) so that one property stays
// within a few seconds under TSan at CI's budget. A failure prints the drawn configuration
// and a crosstown-sim command that comes close to it (the CLI has no flag for every knob the
// property draws; the RC_PARAMS reproduce string printed by RapidCheck replays it exactly).
#include <crosstown/sim/simulation.hpp>
#include <crosstown/sim/trace.hpp>

#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <algorithm>
#include <cstdint>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace sim = crosstown::sim;

std::string describe(const sim::run_config& c) {
  std::ostringstream out;
  out << "scenario " << c.world.name << ", seed " << c.seed << ", strategy "
      << sim::to_string(c.strategy.kind) << " (pct depth " << c.strategy.pct_depth << ")"
      << ", connections " << c.world.connections << ", requests " << c.world.requests << ", tasks "
      << c.world.min_tasks << "-" << c.world.max_tasks << ", reset rate " << c.world.reset_rate
      << ", stall rate " << c.world.stall_rate << ", fault run rate " << c.world.fault_run_rate
      << ", fault hit rate " << c.world.fault_hit_rate << "\n  near: crosstown-sim --scenario "
      << c.world.name << " --seed " << c.seed << " --runs 1 --strategy "
      << sim::to_string(c.strategy.kind) << " --pct-depth " << c.strategy.pct_depth
      << " --connections " << c.world.connections << " --requests " << c.world.requests
      << " --tasks " << c.world.max_tasks << " --reset-rate " << c.world.reset_rate
      << " --stall-rate " << c.world.stall_rate << " --fault-rate " << c.world.fault_run_rate
      << " --fault-hit-rate " << c.world.fault_hit_rate;
  return out.str();
}

double percent(int p) { return static_cast<double>(p) / 100.0; }

// One small world: a built-in scenario, scaled down, with drawn seed, strategy and faults.
// rc::gen::inRange scales with RapidCheck's size (small sizes give values near the minimum);
// the resize to the nominal size 100 draws seeds and sizes from their whole ranges every time.
rc::Gen<sim::run_config> small_run() {
  return rc::gen::resize(
      100, rc::gen::exec([] {
        sim::run_config c;
        const auto names = sim::scenario_names();
        const auto name = *rc::gen::elementOf(names);
        c.world = *sim::scenario_by_name(name);
        c.seed = *rc::gen::inRange<std::uint64_t>(1, 1'000'000'000);
        c.strategy.kind = *rc::gen::element(sim::strategy_kind::random, sim::strategy_kind::fifo,
                                            sim::strategy_kind::pct);
        c.strategy.pct_depth = *rc::gen::inRange<std::uint32_t>(1, 5);
        c.strategy.pct_steps = 3000;
        // Scaled down from the scenario (never up), so a property stays cheap.
        c.world.connections =
            *rc::gen::inRange<std::uint32_t>(1, std::min(c.world.connections, 4u) + 1);
        c.world.requests = *rc::gen::inRange<std::uint32_t>(1, std::min(c.world.requests, 8u) + 1);
        c.world.min_tasks = 0;
        c.world.max_tasks = *rc::gen::inRange<std::uint32_t>(0, 7);
        c.world.reset_rate = percent(*rc::gen::element(0, 5, 30, 70, 100));
        c.world.stall_rate = percent(*rc::gen::element(0, 5, 30, 70, 100));
        c.world.fault_run_rate = percent(*rc::gen::element(0, 20, 50, 100));
        c.world.fault_hit_rate = percent(*rc::gen::element(0, 5, 30, 100));
        c.keep_trace = true;
        return c;
      }));
}

std::string failure(const sim::run_config& c, const sim::run_result& r) {
  return describe(c) + "\n" + r.first->invariant + ": " + r.first->message + "\n" + r.story;
}

}  // namespace

// I1-I6 (oracle, throughout the run and at the end) and I7 (the same run without deferred work
// completes every response at the same virtual time).
RC_GTEST_PROP(SimProp, OracleFindsNoViolationInSmallRandomWorlds, ()) {
  const sim::run_config c = *small_run();
  RC_TAG(c.world.name);
  const sim::run_result r = sim::run_checked(c, {.no_drag = true, .determinism = false});
  if (!r.ok()) RC_FAIL(failure(c, r));
  RC_ASSERT(r.metrics.unfinished() == 0u);
  std::uint64_t fired = 0;
  for (const auto& [site, counts] : r.faults) fired += counts.fired;
  RC_CLASSIFY(fired > 0, "a core fault fired");
  RC_CLASSIFY(r.metrics.count(crosstown::task_state::ran) > 0, "tasks ran");
  RC_CLASSIFY(r.metrics.count(crosstown::task_state::skipped_by_status) +
                      r.metrics.count(crosstown::task_state::skipped_by_delivery) >
                  0,
              "tasks skipped");
}

// I8 as the simulator checks it (journals of two identical runs), and as a user sees it: two
// runs of the same seed and configuration give the same text trace, digest, schedule,
// completions and counters.
RC_GTEST_PROP(SimProp, SameSeedAndConfigGiveTheSameTrace, ()) {
  const sim::run_config c = *small_run();
  RC_TAG(c.world.name);
  const sim::run_result checked = sim::run_checked(c, {.no_drag = false, .determinism = true});
  if (!checked.ok()) RC_FAIL(failure(c, checked));

  const sim::run_result a = sim::run_once(c);
  const sim::run_result b = sim::run_once(c);
  RC_ASSERT(a.digest == b.digest);
  RC_ASSERT(a.digest == checked.digest);
  RC_ASSERT(sim::text_trace(a.trace) == sim::text_trace(b.trace));
  RC_ASSERT(a.schedule == b.schedule);
  RC_ASSERT(a.completions == b.completions);
  RC_ASSERT(a.metrics == b.metrics);
  RC_ASSERT(a.end_ns == b.end_ns);
}

// The recorded scheduling decisions replay the same run (the basis of `--strategy replay`).
RC_GTEST_PROP(SimProp, ReplayingTheRecordedScheduleGivesTheSameTrace, ()) {
  const sim::run_config c = *small_run();
  RC_TAG(c.world.name);
  const sim::run_result recorded = sim::run_once(c);
  sim::run_config again = c;
  again.strategy = {.kind = sim::strategy_kind::replay, .schedule = recorded.schedule};
  const sim::run_result replayed = sim::run_once(again);
  if (!replayed.ok()) RC_FAIL(failure(again, replayed));
  RC_ASSERT(sim::text_trace(replayed.trace) == sim::text_trace(recorded.trace));
  RC_ASSERT(replayed.metrics == recorded.metrics);
}

// The worlds above are small; they must still be large enough for the oracle to catch the
// simulator's planted bugs (else the properties would pass vacuously).
TEST(SimProp, SmallWorldsStillCatchEveryPlantedBug) {
  for (const auto planted : {sim::mutation::sent_at_headers, sim::mutation::status_200,
                             sim::mutation::cross_release, sim::mutation::drop_job}) {
    bool caught = false;
    for (std::uint64_t seed = 1; seed <= 200 && !caught; ++seed) {
      for (const std::string& name : sim::scenario_names()) {
        sim::run_config c;
        c.seed = seed;
        c.world = *sim::scenario_by_name(name);
        c.world.connections = std::min(c.world.connections, 4u);
        c.world.requests = std::min(c.world.requests, 8u);
        c.world.max_tasks = 6;
        c.planted = planted;
        if (!sim::run_checked(c, {.no_drag = false, .determinism = false}).ok()) {
          caught = true;
          break;
        }
      }
    }
    EXPECT_TRUE(caught) << "mutation " << sim::to_string(planted) << " not caught";
  }
}
