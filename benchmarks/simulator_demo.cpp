// Suite 5 (the application) - the demo app under the simulator: simulated requests per
// second of the demo's own server, its real handler and the real crosstown::beast writes over
// `sim_stream`, one thread, oracle on.
//
// One iteration is one seed of `crosstown::sim::run_app` with `demo_sim_config()` and the
// parts of `make_demo_sim()` (examples/demo/demo_sim.hpp: 3 keep-alive connections, 1-4
// requests each, faults drawn from the seed) - what demo_sim_test runs 1,000 times in CI and
// `crosstown-sim --app demo` runs per seed. Iteration i of every variant uses seed 1 + i, so
// the variants simulate the same worlds. Any violation stops the benchmark with an error.
//
//   checked   run_app as the CLI and the test run it: the oracle's I1-I6 on every event, the
//             demo's own checks at the end, and the I7 no-drag rerun (the same seed with
//             every deferred task dropped, completion times compared). The target applies
//             here: >= 20 000 simulated requests/s. Only the checked run's requests count;
//             the rerun is overhead.
//   once      baseline: the same, without the I7 rerun (app_config::no_drag = false). The
//             ratio checked / once is the price of I7.
//
// What is timed: building the world (runtime, scheduler, network, the app and its server),
// the run, the checks and destroying it all. A simulated run starts no thread, so the
// benchmark thread's CPU time (Google Benchmark's default for rates) is the whole cost.
// Requests are the responses whose last byte the transport accepted (app_result::responses).
//
// Counters: `requests_per_second` (rate), `steps_per_request` (scheduler steps of the checked
// run), `tasks_per_request` (tasks that ran) and `allocs_per_request` (heap allocations on
// this thread, reruns included).
#include "support/alloc_counter.hpp"
#include "support/summary.hpp"

#include "demo_sim.hpp"

#include <crosstown/sim/app_test.hpp>

#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <vector>

namespace {

namespace sim = crosstown::sim;

template <bool NoDrag>
void demo_app(benchmark::State& state) {
  const crosstown_demo::demo_sim_parts parts = crosstown_demo::make_demo_sim();
  sim::app_config cfg = crosstown_demo::demo_sim_config();
  cfg.no_drag = NoDrag;
  std::uint64_t seed = 1;
  std::uint64_t requests = 0, steps = 0, tasks = 0;
  const std::uint64_t allocs_before = crosstown_bench::thread_allocs().allocations;
  for (auto _ : state) {
    cfg.seed = seed;
    const sim::app_result r = sim::run_app(cfg, parts.server, parts.client, parts.check);
    if (!r.ok()) {
      state.SkipWithError(sim::describe(r).c_str());
      break;
    }
    requests += r.responses;
    steps += r.steps;
    tasks += r.tasks_ran;
    ++seed;
  }
  const std::uint64_t allocs = crosstown_bench::thread_allocs().allocations - allocs_before;
  const double per = requests > 0 ? static_cast<double>(requests) : 1.0;
  state.counters["requests_per_second"] =
      benchmark::Counter(static_cast<double>(requests), benchmark::Counter::kIsRate);
  state.counters["steps_per_request"] = static_cast<double>(steps) / per;
  state.counters["tasks_per_request"] = static_cast<double>(tasks) / per;
  state.counters["allocs_per_request"] = static_cast<double>(allocs) / per;
}

}  // namespace

BENCHMARK(demo_app<true>)->Name("sim/demo_app/checked")->Unit(benchmark::kMicrosecond);
BENCHMARK(demo_app<false>)->Name("sim/demo_app/once")->Unit(benchmark::kMicrosecond);

int main(int argc, char** argv) {
  using crosstown_bench::comparison;
  const std::vector<comparison> comparisons{
      {.label = "demo app, simulated requests/s, oracle on, I7 (as the CLI and the test)",
       .subject = "sim/demo_app/checked",
       .baseline = "",
       .metric = "requests_per_second",
       .op = ">=",
       .bound = 20000,
       .note = "target of suite 5: >= 20 000 simulated requests/s for the demo app"},
      {.label = "demo app, simulated requests/s, without the I7 rerun",
       .subject = "sim/demo_app/once",
       .baseline = "",
       .metric = "requests_per_second"},
      {.label = "checked / once rate",
       .subject = "sim/demo_app/checked",
       .baseline = "sim/demo_app/once",
       .metric = "requests_per_second",
       .note = "the cost of the I7 no-drag rerun"},
  };
  return crosstown_bench::run_suite(argc, argv, "simulator_demo", comparisons);
}
