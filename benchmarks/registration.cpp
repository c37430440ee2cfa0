// Suite 1 - registration: the cost, per task, of deferring a small closure inside a handler.
//
// Subject: `response_scope::defer` of a closure (8 or 48 bytes, both stored inline), B tasks
// per scope for B = 1, 10, 100. Baseline: `emplace_back` of a `std::function<void()>` holding
// the same closure into a `std::vector` reserved for B.
//
// What is timed (registration only): the B calls, nothing else. Scopes (and the baseline's
// reserved vectors) are created before the clock starts and ended after it stops, in blocks
// of about 2048 tasks so that pausing the clock costs well under a nanosecond per task. The
// scope's task list grows inside the timed region (the baseline's vector does not: it is
// reserved), so the subject's figure includes that amortized growth.
//
// `*_lifecycle` variants time everything per scope instead: create the scope, defer B tasks,
// status 200, response sent (tasks run on the reporting thread, via a redirection to the
// same-thread executor), end. Their baseline: a vector<std::function> reserved, filled, each
// run, destroyed. Reported, no target.
//
// Counters: `allocs_per_task` - heap allocations on this thread in the timed region, per task;
// `allocs_per_scope` - the same per scope; `growth_allocs_per_scope` - what the scope's
// task-list growth alone accounts for (room for `response_scope::initial_capacity` tasks at the
// first defer, then libstdc++ doubles); and
// `other_allocs_per_task` - what is left per task, the figure the zero-allocation target is
// about.
#include "support/alloc_counter.hpp"
#include "support/closures.hpp"
#include "support/summary.hpp"

#include <crosstown/binding.hpp>
#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace {

using crosstown_bench::closure_48;
using crosstown_bench::small_closure;
using crosstown_bench::thread_allocs;

constexpr std::int64_t tasks_per_block = 2048;

std::uint64_t value = 42;

template <class Closure>
Closure make_closure() {
  if constexpr (std::is_same_v<Closure, small_closure>) {
    return small_closure{&value};
  } else {
    return closure_48{{1, 2, 3, 4, 5, 6}};
  }
}

// Allocations a scope's task list makes while growing to n tasks: room for
// `initial_capacity` at the first defer, then push_back's own growth.
std::int64_t growth_allocations(std::int64_t n) {
  std::vector<int> v;
  std::int64_t count = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    if (v.capacity() == 0) v.reserve(crosstown::response_scope::initial_capacity);
    if (v.size() == v.capacity()) ++count;
    if (i == 0) ++count;  // the reserve
    v.push_back(0);
  }
  return count;
}

crosstown::runtime& shared_runtime() {
  static crosstown::runtime rt({.threads = 1});
  return rt;
}

void set_counters(benchmark::State& state, std::int64_t per_scope, std::int64_t tasks,
                  std::int64_t scopes, std::uint64_t allocations, bool has_growth) {
  state.SetItemsProcessed(tasks);
  const double t = static_cast<double>(std::max<std::int64_t>(tasks, 1));
  const double s = static_cast<double>(std::max<std::int64_t>(scopes, 1));
  const double growth = has_growth ? static_cast<double>(growth_allocations(per_scope)) : 0.0;
  state.counters["allocs_per_task"] = static_cast<double>(allocations) / t;
  state.counters["allocs_per_scope"] = static_cast<double>(allocations) / s;
  state.counters["growth_allocs_per_scope"] = growth;
  state.counters["other_allocs_per_task"] =
      (static_cast<double>(allocations) - growth * static_cast<double>(scopes)) / t;
}

// Registration into a response scope, directly (`scope.defer`) or through the thread-local
// binding (`crosstown::defer`).
template <class Closure, bool Bound>
void crosstown_defer(benchmark::State& state) {
  const std::int64_t per_scope = state.range(0);
  const std::int64_t block = std::max<std::int64_t>(1, tasks_per_block / per_scope);
  crosstown::runtime& rt = shared_runtime();
  auto scopes =
      std::make_unique<std::optional<crosstown::response_scope>[]>(static_cast<std::size_t>(block));
  std::int64_t tasks = 0;
  std::uint64_t allocations = 0;
  for (auto _ : state) {
    state.PauseTiming();
    for (std::int64_t k = 0; k < block; ++k) {
      if (scopes[k]) scopes[k]->status_known(500);  // ends below with its tasks skipped
      scopes[k].emplace(rt);
    }
    state.ResumeTiming();
    const std::uint64_t before = thread_allocs().allocations;
    for (std::int64_t k = 0; k < block; ++k) {
      crosstown::response_scope& scope = *scopes[k];
      if constexpr (Bound) {
        crosstown::scope_binding binding(scope);
        for (std::int64_t i = 0; i < per_scope; ++i) crosstown::defer(make_closure<Closure>());
      } else {
        for (std::int64_t i = 0; i < per_scope; ++i) scope.defer(make_closure<Closure>());
      }
    }
    allocations += thread_allocs().allocations - before;
    tasks += block * per_scope;
  }
  for (std::int64_t k = 0; k < block; ++k) {  // after the loop: not timed
    if (scopes[k]) scopes[k]->status_known(500);
    scopes[k].reset();
  }
  set_counters(state, per_scope, tasks, tasks / per_scope, allocations, true);
}

template <class Closure>
void baseline_emplace(benchmark::State& state) {
  const std::int64_t per_scope = state.range(0);
  const std::int64_t block = std::max<std::int64_t>(1, tasks_per_block / per_scope);
  std::vector<std::vector<std::function<void()>>> lists(static_cast<std::size_t>(block));
  std::int64_t tasks = 0;
  std::uint64_t allocations = 0;
  for (auto _ : state) {
    state.PauseTiming();
    for (auto& list : lists) {
      list.clear();
      list.reserve(static_cast<std::size_t>(per_scope));
    }
    state.ResumeTiming();
    const std::uint64_t before = thread_allocs().allocations;
    for (auto& list : lists) {
      for (std::int64_t i = 0; i < per_scope; ++i) list.emplace_back(make_closure<Closure>());
    }
    allocations += thread_allocs().allocations - before;
    benchmark::ClobberMemory();
    tasks += block * per_scope;
  }
  set_counters(state, per_scope, tasks, tasks / per_scope, allocations, false);
}

// A second, stricter baseline: the least any thread-safe registration must do, since a handler
// may defer while the adapter reports events on another thread. Per task: lock a std::mutex,
// emplace a crosstown::task into a reserved vector, bump a relaxed atomic counter (the
// runtime's `registered` metric), unlock. No options, no names, no phases: a floor, not a
// design. Reported beside the target so the distance to it can be read.
template <class Closure>
void floor_locked_emplace(benchmark::State& state) {
  const std::int64_t per_scope = state.range(0);
  const std::int64_t block = std::max<std::int64_t>(1, tasks_per_block / per_scope);
  struct locked_list {
    std::mutex mutex;
    std::vector<crosstown::task> tasks;
  };
  std::vector<locked_list> lists(static_cast<std::size_t>(block));
  std::atomic<std::uint64_t> registered{0};
  std::int64_t tasks = 0;
  std::uint64_t allocations = 0;
  for (auto _ : state) {
    state.PauseTiming();
    for (auto& list : lists) {
      list.tasks.clear();
      list.tasks.reserve(static_cast<std::size_t>(per_scope));
    }
    state.ResumeTiming();
    const std::uint64_t before = thread_allocs().allocations;
    for (auto& list : lists) {
      for (std::int64_t i = 0; i < per_scope; ++i) {
        std::lock_guard lock(list.mutex);
        list.tasks.emplace_back(make_closure<Closure>());
        registered.fetch_add(1, std::memory_order_relaxed);
      }
    }
    allocations += thread_allocs().allocations - before;
    benchmark::ClobberMemory();
    tasks += block * per_scope;
  }
  set_counters(state, per_scope, tasks, tasks / per_scope, allocations, false);
}

template <class Closure>
void crosstown_lifecycle(benchmark::State& state) {
  const std::int64_t per_scope = state.range(0);
  crosstown::runtime& rt = shared_runtime();
  rt.redirect_all_to(crosstown::same_thread_executor::instance());
  std::int64_t tasks = 0;
  std::uint64_t allocations = 0;
  for (auto _ : state) {
    const std::uint64_t before = thread_allocs().allocations;
    {
      crosstown::response_scope scope(rt);
      for (std::int64_t i = 0; i < per_scope; ++i) scope.defer(make_closure<Closure>());
      scope.status_known(200);
      scope.response_sent();
    }
    allocations += thread_allocs().allocations - before;
    tasks += per_scope;
  }
  rt.redirect_all_to({});
  set_counters(state, per_scope, tasks, tasks / per_scope, allocations, false);
}

template <class Closure>
void baseline_lifecycle(benchmark::State& state) {
  const std::int64_t per_scope = state.range(0);
  std::int64_t tasks = 0;
  std::uint64_t allocations = 0;
  for (auto _ : state) {
    const std::uint64_t before = thread_allocs().allocations;
    {
      std::vector<std::function<void()>> list;
      list.reserve(static_cast<std::size_t>(per_scope));
      for (std::int64_t i = 0; i < per_scope; ++i) list.emplace_back(make_closure<Closure>());
      for (auto& fn : list) fn();
    }
    allocations += thread_allocs().allocations - before;
    tasks += per_scope;
  }
  set_counters(state, per_scope, tasks, tasks / per_scope, allocations, false);
}

void batches(benchmark::internal::Benchmark* b) {
  b->ArgName("per_scope")->Arg(1)->Arg(10)->Arg(100);
}

// Scale within one scope: N named tasks (each a distinct name), or N tasks each with its own
// distinct no-go set, registered into one scope, then skipped by its end. Timed per scope;
// Google Benchmark fits the growth (`_BigO` / `_RMS` rows): it must come out O(N), i.e. a
// `defer` that is amortised O(1) whatever the names and sets (issue 10, item 6).
void named_in_one_scope(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::vector<std::string> names(n);
  for (std::size_t i = 0; i < n; ++i) names[i] = "task-" + std::to_string(i);
  crosstown::runtime& rt = shared_runtime();
  for (auto _ : state) {
    crosstown::response_scope scope(rt);
    for (std::size_t i = 0; i < n; ++i) scope.defer(small_closure{&value}, {.name = names[i]});
    state.PauseTiming();
    scope.status_known(500);
    scope.end();
    state.ResumeTiming();
  }
  state.SetComplexityN(state.range(0));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
}

void distinct_no_go_sets_in_one_scope(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::vector<crosstown::status_set> sets(n);
  for (std::size_t i = 0; i < n; ++i) {
    for (int bit = 0; bit < 17; ++bit) {
      if ((i >> bit) & 1U) sets[i].insert(100 + bit);
    }
  }
  crosstown::runtime& rt = shared_runtime();
  for (auto _ : state) {
    crosstown::response_scope scope(rt);
    for (std::size_t i = 0; i < n; ++i) scope.defer(small_closure{&value}, {.no_go = sets[i]});
    state.PauseTiming();
    scope.status_known(999);
    scope.end();
    state.ResumeTiming();
  }
  state.SetComplexityN(state.range(0));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
}

void scale(benchmark::internal::Benchmark* b) {
  b->ArgName("tasks")->RangeMultiplier(4)->Range(1'000, 100'000);
  b->Unit(benchmark::kMillisecond)->Complexity(benchmark::oN);
}

BENCHMARK(crosstown_defer<small_closure, false>)->Name("defer/closure8")->Apply(batches);
BENCHMARK(baseline_emplace<small_closure>)->Name("std_function/closure8")->Apply(batches);
BENCHMARK(crosstown_defer<closure_48, false>)->Name("defer/closure48")->Apply(batches);
BENCHMARK(baseline_emplace<closure_48>)->Name("std_function/closure48")->Apply(batches);
BENCHMARK(floor_locked_emplace<small_closure>)->Name("locked_floor/closure8")->Apply(batches);
BENCHMARK(floor_locked_emplace<closure_48>)->Name("locked_floor/closure48")->Apply(batches);
BENCHMARK(crosstown_defer<small_closure, true>)->Name("defer_bound/closure8")->Apply(batches);
BENCHMARK(crosstown_lifecycle<small_closure>)->Name("lifecycle/closure8")->Apply(batches);
BENCHMARK(baseline_lifecycle<small_closure>)
    ->Name("std_function_lifecycle/closure8")
    ->Apply(batches);
BENCHMARK(named_in_one_scope)->Name("scale/named")->Apply(scale);
BENCHMARK(distinct_no_go_sets_in_one_scope)->Name("scale/distinct_no_go_sets")->Apply(scale);

// The callgrind driver (`registration --crosstown_callgrind`): each form of defer in a function
// of its own that nothing inlines, called twice with a fresh scope for 100 defers each, so that
//   valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*callgrind_defer_*'
// followed by `build/<preset>/benchmarks/registration --crosstown_callgrind`, counts exactly
// the call sites and `defer` (callgrind_annotate --inclusive=yes; divide each function's
// count by 200). The scopes are made and ended outside the counted functions.
constexpr int callgrind_tasks = 100;

[[gnu::noinline]] void callgrind_defer_plain8(crosstown::response_scope& s) {
  for (int i = 0; i < callgrind_tasks; ++i) s.defer(small_closure{&value});
}
[[gnu::noinline]] void callgrind_defer_plain48(crosstown::response_scope& s) {
  for (int i = 0; i < callgrind_tasks; ++i) s.defer(closure_48{{1, 2, 3, 4, 5, 6}});
}
[[gnu::noinline]] void callgrind_defer_options8(crosstown::response_scope& s) {
  for (int i = 0; i < callgrind_tasks; ++i) s.defer(small_closure{&value}, {.always = true});
}
[[gnu::noinline]] void callgrind_defer_options48(crosstown::response_scope& s) {
  for (int i = 0; i < callgrind_tasks; ++i) {
    s.defer(closure_48{{1, 2, 3, 4, 5, 6}}, {.always = true});
  }
}

int callgrind_driver() {
  crosstown::runtime& rt = shared_runtime();
  for (auto* fn : {&callgrind_defer_plain8, &callgrind_defer_plain48, &callgrind_defer_options8,
                   &callgrind_defer_options48}) {
    for (int round = 0; round < 2; ++round) {  // the second round is the warm one
      crosstown::response_scope scope(rt);
      fn(scope);
      scope.status_known(500);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--crosstown_callgrind") return callgrind_driver();
  }
  using crosstown_bench::comparison;
  std::vector<comparison> comparisons;
  for (const char* closure : {"closure8", "closure48"}) {
    for (int n : {1, 10, 100}) {
      const std::string arg = "/" + std::string(closure) + "/per_scope:" + std::to_string(n);
      // The target is on cost per task (<= 2x the baseline's), i.e. a rate ratio >= 0.5.
      comparisons.push_back({.label = "defer/std::function rate, " + std::string(closure) + ", " +
                                      std::to_string(n) + "/scope",
                             .subject = "defer" + arg,
                             .baseline = "std_function" + arg,
                             .metric = "items_per_second",
                             .op = ">=",
                             .bound = 0.5});
    }
  }
  comparisons.back().note =
      "rate ratio >= 0.5 <=> cost per task <= 2x the baseline's (target of suite 1)";
  for (const char* closure : {"closure8", "closure48"}) {
    for (int n : {1, 10, 100}) {
      const std::string arg = "/" + std::string(closure) + "/per_scope:" + std::to_string(n);
      comparisons.push_back({.label = "defer/thread-safe floor rate, " + std::string(closure) +
                                      ", " + std::to_string(n) + "/scope",
                             .subject = "defer" + arg,
                             .baseline = "locked_floor" + arg,
                             .metric = "items_per_second"});
    }
  }
  comparisons.back().note =
      "floor: mutex + emplace of a task + relaxed atomic add per task (no target)";
  for (const char* closure : {"closure8", "closure48"}) {
    for (int n : {1, 10, 100}) {
      const std::string name = "defer/" + std::string(closure) + "/per_scope:" + std::to_string(n);
      comparisons.push_back({.label = "defer " + std::string(closure) + ", " + std::to_string(n) +
                                      "/scope: allocations per task beyond list growth",
                             .subject = name,
                             .baseline = "",
                             .metric = "other_allocs_per_task",
                             .op = "<=",
                             .bound = 0});
    }
  }
  for (int n : {1, 10, 100}) {
    const std::string arg = "/closure8/per_scope:" + std::to_string(n);
    comparisons.push_back(
        {.label = "defer_bound/std::function rate, closure8, " + std::to_string(n) + "/scope",
         .subject = "defer_bound" + arg,
         .baseline = "std_function" + arg,
         .metric = "items_per_second"});
    comparisons.push_back(
        {.label = "lifecycle/std::function rate, closure8, " + std::to_string(n) + "/scope",
         .subject = "lifecycle" + arg,
         .baseline = "std_function_lifecycle" + arg,
         .metric = "items_per_second"});
  }
  return crosstown_bench::run_suite(argc, argv, "registration", comparisons);
}
