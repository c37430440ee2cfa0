// Suite 6 (core part) - memory: bytes per response scope and heap allocations per request.
//
// Counted by the allocation hook (support/alloc_counter.hpp), per thread unless noted:
//
//   scope/tasks:N         bytes_per_scope = sizeof(response_scope) + heap bytes the scope
//                         holds after N defers (malloc usable size, so allocator rounding is
//                         included); heap_allocs = allocations made by construction and the N
//                         defers. The scope lives on the stack, as an adapter would keep it.
//   request/no_defer      allocations over a whole request that defers nothing: construct,
//                         status 200, headers sent, response sent, end. Target: zero.
//   request/tasks:100     allocations over a whole request of 100 tasks run on the 2-thread
//                         pool, counted on every thread (hand-off, pool queue, workers).
//   std_function/tasks:N  the registration baseline's footprint: sizeof(std::vector) plus a
//                         reserved vector of N std::function holding the same 8-byte closure.
//
// The clock is irrelevant here; the figures are the counters.
#include "support/alloc_counter.hpp"
#include "support/closures.hpp"
#include "support/summary.hpp"

#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>

#include <benchmark/benchmark.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace {

using crosstown_bench::alloc_stats;
using crosstown_bench::process_allocs;
using crosstown_bench::small_closure;
using crosstown_bench::thread_allocs;

std::uint64_t value = 3;

crosstown::runtime& shared_runtime() {
  static crosstown::runtime rt({.threads = 2});
  return rt;
}

void scope_footprint(benchmark::State& state) {
  const std::int64_t tasks = state.range(0);
  crosstown::runtime& rt = shared_runtime();
  alloc_stats held{};
  for (auto _ : state) {
    const alloc_stats before = thread_allocs();
    std::optional<crosstown::response_scope> scope(std::in_place, rt);
    for (std::int64_t i = 0; i < tasks; ++i) scope->defer(small_closure{&value});
    held = thread_allocs() - before;
    benchmark::DoNotOptimize(&*scope);
    scope->status_known(500);  // settles the tasks as skipped: nothing reaches the pool
  }
  state.counters["sizeof_scope"] = sizeof(crosstown::response_scope);
  state.counters["heap_bytes"] = static_cast<double>(held.live_bytes);
  state.counters["bytes_per_scope"] =
      static_cast<double>(sizeof(crosstown::response_scope)) + static_cast<double>(held.live_bytes);
  state.counters["heap_allocs"] = static_cast<double>(held.allocations);
  if (tasks > 0) {
    state.counters["bytes_per_task"] =
        static_cast<double>(held.live_bytes) / static_cast<double>(tasks);
  }
}

void baseline_footprint(benchmark::State& state) {
  const std::int64_t tasks = state.range(0);
  alloc_stats held{};
  for (auto _ : state) {
    const alloc_stats before = thread_allocs();
    std::vector<std::function<void()>> list;
    list.reserve(static_cast<std::size_t>(tasks));
    for (std::int64_t i = 0; i < tasks; ++i) list.emplace_back(small_closure{&value});
    held = thread_allocs() - before;
    benchmark::DoNotOptimize(list.data());
  }
  state.counters["heap_bytes"] = static_cast<double>(held.live_bytes);
  state.counters["bytes_per_scope"] =
      static_cast<double>(sizeof(std::vector<std::function<void()>>)) +
      static_cast<double>(held.live_bytes);
  state.counters["heap_allocs"] = static_cast<double>(held.allocations);
}

void request_no_defer(benchmark::State& state) {
  crosstown::runtime& rt = shared_runtime();
  std::uint64_t allocations = 0;
  for (auto _ : state) {
    const alloc_stats before = thread_allocs();
    {
      crosstown::response_scope scope(rt);
      scope.status_known(200);
      scope.headers_sent();
      scope.response_sent();
    }
    allocations += (thread_allocs() - before).allocations;
  }
  state.counters["allocs_per_request"] =
      static_cast<double>(allocations) / static_cast<double>(state.iterations());
}

void request_with_tasks(benchmark::State& state) {
  const std::int64_t tasks = state.range(0);
  crosstown::runtime& rt = shared_runtime();
  crosstown_bench::process_wide(true);
  alloc_stats total{};
  for (auto _ : state) {
    const alloc_stats before = process_allocs();
    {
      crosstown::response_scope scope(rt);
      for (std::int64_t i = 0; i < tasks; ++i) scope.defer(small_closure{&value});
      scope.status_known(200);
      scope.response_sent();
    }
    rt.drain(crosstown::runtime::clock::time_point::max());
    const alloc_stats d = process_allocs() - before;
    total.allocations += d.allocations;
    total.requested_bytes += d.requested_bytes;
  }
  crosstown_bench::process_wide(false);
  const auto n = static_cast<double>(state.iterations());
  state.counters["allocs_per_request"] = static_cast<double>(total.allocations) / n;
  state.counters["allocs_per_task"] =
      static_cast<double>(total.allocations) / n / static_cast<double>(tasks);
  state.counters["bytes_allocated_per_request"] = static_cast<double>(total.requested_bytes) / n;
}

}  // namespace

BENCHMARK(scope_footprint)->Name("scope")->ArgName("tasks")->Arg(0)->Arg(100);
BENCHMARK(baseline_footprint)->Name("std_function")->ArgName("tasks")->Arg(100);
BENCHMARK(request_no_defer)->Name("request/no_defer");
BENCHMARK(request_with_tasks)->Name("request")->ArgName("tasks")->Arg(100);

int main(int argc, char** argv) {
  return crosstown_bench::run_suite(
      argc, argv, "memory",
      {
          {.label = "bytes per scope, 0 tasks",
           .subject = "scope/tasks:0",
           .metric = "bytes_per_scope"},
          {.label = "bytes per scope, 100 tasks (vs vector<function>)",
           .subject = "scope/tasks:100",
           .baseline = "std_function/tasks:100",
           .metric = "bytes_per_scope"},
          {.label = "heap allocations, scope + 100 defers",
           .subject = "scope/tasks:100",
           .metric = "heap_allocs"},
          {.label = "heap allocations, request deferring nothing",
           .subject = "request/no_defer",
           .metric = "allocs_per_request",
           .op = "<=",
           .bound = 0},
          {.label = "heap allocations, request of 100 tasks (all threads)",
           .subject = "request/tasks:100",
           .metric = "allocs_per_request"},
      });
}
