// Suite 5 - simulator speed: simulated requests per second, oracle on, one thread.
//
// Every variant runs seeded simulations of the phone-calls scenario (8 connections, 16
// requests per run) with exactly 10 deferred tasks per request (min_tasks = max_tasks = 10)
// and the crosstown-sim defaults otherwise: the random strategy, keep_trace on and
// keep_journal off (run_config's defaults, which the CLI does not change), the oracle checking
// I1-I6 on every event. One iteration is one seed; iteration i of every variant uses seed
// 1 + i, so the variants simulate the same worlds. Any violation stops the benchmark with an
// error (the figures would not be of a correct run).
//
//   checked      what `crosstown-sim --scenario phone-calls --tasks 10` does per seed:
//                `run_checked` with the I7 no-drag rerun (the same seed without deferred work,
//                completion times compared) and the I8 determinism rerun on every 100th seed
//                (`--determinism-every 100`). The target applies here: >= 100 000 simulated
//                requests/s. As in the CLI, only the requests of the checked run count; the
//                reruns are overhead.
//   run_once     baseline 1: `run_once`, the oracle's I1-I6 only, no cross-run checks. The
//                ratio checked / run_once is the price of I7 and I8.
//   no_defer     baseline 2: `run_once` of the same seeds with run_config::defer_tasks = false
//                - the handler draws the same choices but defers nothing; the oracle still
//                watches the transport and the lifecycle. The ratio run_once / no_defer is the
//                price of 10 deferred tasks per request and their checks.
//
// Every run is played by the one simulated server: the scenario's Beast server over
// sim_stream, reading with http::async_read and writing with
// crosstown::beast::async_write_response, run by run_app and judged from the wire.
//
// What is timed: everything `run_checked` / `run_once` does - building the world (runtime,
// scheduler, connections, oracle), the simulation, the final checks, and returning the
// run_result (trace, completions, schedule) and destroying it. Left out: process start-up,
// the CLI's argument parsing, its aggregation of the per-run metrics and its printing (a few
// additions per run). The rate is per CPU second of the benchmark thread (Google Benchmark's
// default for rate counters), which a shared machine disturbs less than wall time. A run
// starts no thread (the world's runtime has a pool, whose threads start with its first
// batch, and the world never hands it one), so this thread's CPU time is the whole cost.
// `crosstown-sim --tasks 10` prints the same rate as `requests per CPU s` (README,
// "Simulator"). A run's requests are those that started (a reset connection may leave a few
// unsent).
//
// Counters: `requests_per_second` (rate, simulated requests of the checked run),
// `tasks_per_request` (tasks registered with the core, to confirm the 10),
// `steps_per_request` (scheduler steps of the checked run, reruns excluded) and
// `allocs_per_request` (heap allocations on this thread, reruns included; the counting
// operator new of support/alloc_counter.cpp is linked in, as in every suite).
#include "support/alloc_counter.hpp"
#include "support/summary.hpp"

#include <crosstown/sim/simulation.hpp>

#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <vector>

namespace {

using namespace crosstown::sim;

constexpr std::uint32_t tasks_per_request = 10;
constexpr std::uint64_t determinism_every = 100;  // crosstown-sim's default

enum class variant { checked, run_once, no_defer };

run_config phone_calls() {
  run_config cfg;
  cfg.world = *scenario_by_name("phone-calls");
  cfg.world.min_tasks = cfg.world.max_tasks = tasks_per_request;
  // As crosstown-sim sets it (used by the pct strategy only).
  cfg.strategy.pct_steps = std::uint64_t{cfg.world.requests} * (cfg.world.max_tasks * 3 + 40);
  return cfg;
}

template <variant V>
void simulate(benchmark::State& state) {
  run_config cfg = phone_calls();
  if constexpr (V == variant::no_defer) cfg.defer_tasks = false;
  std::uint64_t seed = 1;
  std::uint64_t requests = 0, tasks = 0, steps = 0;
  const std::uint64_t allocs_before = crosstown_bench::thread_allocs().allocations;
  for (auto _ : state) {
    cfg.seed = seed;
    run_result r;
    if constexpr (V == variant::checked) {
      r = run_checked(cfg, {.no_drag = true, .determinism = (seed - 1) % determinism_every == 0});
    } else {
      r = run_once(cfg);
    }
    if (!r.ok()) {
      state.SkipWithError(
          ("seed " + std::to_string(seed) + ": " + r.first->invariant + ": " + r.first->message)
              .c_str());
      break;
    }
    requests += r.requests;
    tasks += r.metrics.registered;
    steps += r.steps;
    ++seed;
  }
  const std::uint64_t allocs = crosstown_bench::thread_allocs().allocations - allocs_before;
  const double per = requests > 0 ? static_cast<double>(requests) : 1.0;
  state.counters["requests_per_second"] =
      benchmark::Counter(static_cast<double>(requests), benchmark::Counter::kIsRate);
  state.counters["tasks_per_request"] = static_cast<double>(tasks) / per;
  state.counters["steps_per_request"] = static_cast<double>(steps) / per;
  state.counters["allocs_per_request"] = static_cast<double>(allocs) / per;
}

}  // namespace

BENCHMARK(simulate<variant::checked>)
    ->Name("sim/phone_calls/tasks:10/checked")
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(simulate<variant::run_once>)
    ->Name("sim/phone_calls/tasks:10/run_once")
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(simulate<variant::no_defer>)
    ->Name("sim/phone_calls/tasks:10/no_defer")
    ->Unit(benchmark::kMicrosecond);

int main(int argc, char** argv) {
  using crosstown_bench::comparison;
  const std::string base = "sim/phone_calls/tasks:10/";
  const std::vector<comparison> comparisons{
      {.label = "simulated requests/s, oracle on, I7+I8 (as the CLI)",
       .subject = base + "checked",
       .baseline = "",
       .metric = "requests_per_second",
       .op = ">=",
       .bound = 100000,
       .note = "target of suite 5: >= 100 000 simulated requests/s, phone-calls, 10 tasks/request"},
      {.label = "simulated requests/s, oracle I1-I6 only (run_once)",
       .subject = base + "run_once",
       .baseline = "",
       .metric = "requests_per_second"},
      {.label = "simulated requests/s, no deferred work (no_defer)",
       .subject = base + "no_defer",
       .baseline = "",
       .metric = "requests_per_second"},
      {.label = "checked / no_defer rate",
       .subject = base + "checked",
       .baseline = base + "no_defer",
       .metric = "requests_per_second",
       .note = "the whole cost of deferred work, its checks and the I7/I8 reruns"},
      {.label = "run_once / no_defer rate",
       .subject = base + "run_once",
       .baseline = base + "no_defer",
       .metric = "requests_per_second",
       .note = "the cost of 10 deferred tasks per request and their I1-I6 checks"},
      {.label = "checked / run_once rate",
       .subject = base + "checked",
       .baseline = base + "run_once",
       .metric = "requests_per_second",
       .note = "the cost of the cross-run checks (I7 rerun every seed, I8 every 100th)"},
  };
  return crosstown_bench::run_suite(argc, argv, "simulator", comparisons);
}
