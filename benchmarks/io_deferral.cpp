// Suite 6 - I/O-bound deferral: each request defers 100 calls of 2 ms simulated latency (an
// Asio steady timer), offered at a fixed rate for a fixed window of wall time.
//
//   awaitable_lane   crosstown: each call an awaitable task in a lane ("api", max_in_flight
//                    512), on the runtime's own io_context (one I/O thread).
//   blocking_pool    crosstown: each call a blocking task (sleep 2 ms) on a 4-thread pool, the
//                    way the demo placed calls before awaitable tasks existed.
//   co_spawn_floor   the floor: the same coroutines `co_spawn`ed directly on an io_context run
//                    by one thread - no scope, no rules, no accounting.
//
// Per run: `calls_per_second` = calls completed within the window / window; `offered_per_second`;
// `backlog_max` = most calls handed over and not finished seen at any request; `backlog_end`
// at the end of the window. The window is wall time, paced with sleep_until: this suite
// measures a rate, not a cost per operation. Target: awaitable_lane >= 0.8 of co_spawn_floor in
// calls/s, backlog bounded while the lane sustains the offered rate.
//
// Memory: `memory/awaitable_task` and `memory/co_spawn` hold 10,000 calls suspended on timers
// (all on the benchmark thread, on an io_context it polls) and report the heap bytes in use per
// in-flight call (`heap_bytes_per_call`, from glibc's mallinfo2: Asio allocates coroutine
// frames with aligned_alloc, which the operator-new counter does not see; that counter's
// share is `new_bytes_per_call`).
#include "support/alloc_counter.hpp"
#include "support/summary.hpp"

#include <crosstown/awaitable_task.hpp>
#include <crosstown/lane.hpp>
#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>

#include <benchmark/benchmark.h>
#include <malloc.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using wall = std::chrono::steady_clock;

constexpr int calls_per_request = 100;
constexpr auto call_latency = 2ms;
constexpr auto window = 1s;

std::atomic<std::uint64_t> completed{0};

asio::awaitable<void> simulated_call(std::chrono::nanoseconds latency) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  timer.expires_after(latency);
  co_await timer.async_wait(asio::use_awaitable);
  completed.fetch_add(1, std::memory_order_relaxed);
}

struct run_figures {
  std::uint64_t calls = 0;
  std::uint64_t backlog_max = 0;
  std::uint64_t backlog_end = 0;
};

// Offers `rate` requests per second for the window; `request()` places one request's calls,
// `backlog()` reads what is handed over and unfinished.
template <class Request, class Backlog>
run_figures offer(double rate, Request request, Backlog backlog) {
  completed.store(0);
  run_figures out;
  const auto period =
      std::chrono::duration_cast<wall::duration>(std::chrono::duration<double>(1.0 / rate));
  const wall::time_point start = wall::now();
  const wall::time_point end = start + window;
  for (wall::time_point next = start; next < end; next += period) {
    std::this_thread::sleep_until(next);
    request();
    out.backlog_max = std::max<std::uint64_t>(out.backlog_max, backlog());
  }
  std::this_thread::sleep_until(end);
  out.calls = completed.load();
  out.backlog_end = backlog();
  return out;
}

void report(benchmark::State& state, double rate, const run_figures& f) {
  const double seconds = std::chrono::duration<double>(window).count();
  state.counters["calls_per_second"] = static_cast<double>(f.calls) / seconds;
  state.counters["offered_per_second"] = rate * calls_per_request;
  state.counters["backlog_max"] = static_cast<double>(f.backlog_max);
  state.counters["backlog_end"] = static_cast<double>(f.backlog_end);
}

void respond(crosstown::response_scope& s) {
  s.status_known(202);
  s.response_sent();
}

void awaitable_lane(benchmark::State& state) {
  const double rate = static_cast<double>(state.range(0));
  for (auto _ : state) {
    crosstown::runtime rt({.threads = 2, .io_threads = 1});
    rt.lane("api", {.max_in_flight = 512, .capacity = 1'000'000});
    const run_figures f = offer(
        rate,
        [&] {
          crosstown::response_scope s(rt);
          for (int i = 0; i < calls_per_request; ++i) {
            s.defer([] { return simulated_call(call_latency); }, {.lane = "api"});
          }
          respond(s);
        },
        [&] {
          const auto m = rt.metrics();
          return m.queued + m.in_flight;
        });
    report(state, rate, f);
    rt.drain_for(10s);
  }
}

void blocking_pool(benchmark::State& state) {
  const double rate = static_cast<double>(state.range(0));
  for (auto _ : state) {
    crosstown::runtime rt({.threads = 4,
                           .on_lost = [](const crosstown::task_info&, crosstown::task_state) {},
                           .shutdown_timeout = 50ms});
    const run_figures f = offer(
        rate,
        [&] {
          crosstown::response_scope s(rt);
          for (int i = 0; i < calls_per_request; ++i) {
            s.defer([] {
              std::this_thread::sleep_for(call_latency);
              completed.fetch_add(1, std::memory_order_relaxed);
            });
          }
          respond(s);
        },
        [&] {
          const auto m = rt.metrics();
          return m.queued + m.in_flight;
        });
    report(state, rate, f);
    // The backlog is dropped (counted) by the shutdown timeout rather than waited for.
  }
}

void co_spawn_floor(benchmark::State& state) {
  const double rate = static_cast<double>(state.range(0));
  for (auto _ : state) {
    asio::io_context io;
    auto guard = asio::make_work_guard(io);
    std::thread runner([&] { io.run(); });
    std::atomic<std::uint64_t> spawned{0};
    const run_figures f = offer(
        rate,
        [&] {
          for (int i = 0; i < calls_per_request; ++i) {
            asio::co_spawn(io, simulated_call(call_latency), asio::detached);
          }
          spawned.fetch_add(calls_per_request, std::memory_order_relaxed);
        },
        [&] { return spawned.load() - completed.load(); });
    report(state, rate, f);
    guard.reset();
    runner.join();
  }
}

constexpr int memory_calls = 10'000;

// Bytes the C heap has handed out and not had back (glibc).
double heap_in_use() { return static_cast<double>(::mallinfo2().uordblks); }

void memory_awaitable_task(benchmark::State& state) {
  for (auto _ : state) {
    std::optional<asio::io_context> io(std::in_place);
    crosstown::awaitable_executor ex(io->get_executor());
    crosstown::runtime rt({.threads = 1,
                           .on_lost = [](const crosstown::task_info&, crosstown::task_state) {},
                           .shutdown_timeout = 0s,
                           .io_executor = &ex});
    rt.lane("api", {.max_in_flight = memory_calls, .capacity = memory_calls});
    const crosstown_bench::alloc_stats before = crosstown_bench::thread_allocs();
    const double heap_before = heap_in_use();
    {
      crosstown::response_scope s(rt);
      for (int i = 0; i < memory_calls; ++i) {
        s.defer([] { return simulated_call(1h); }, {.lane = "api"});
      }
      respond(s);
    }
    io->poll();
    const crosstown_bench::alloc_stats held = crosstown_bench::thread_allocs() - before;
    state.counters["heap_bytes_per_call"] = (heap_in_use() - heap_before) / memory_calls;
    state.counters["new_bytes_per_call"] =
        static_cast<double>(held.live_bytes) / static_cast<double>(memory_calls);
    state.counters["in_flight"] = static_cast<double>(rt.metrics().in_flight);
    io.reset();  // destroys the suspended calls (counted dropped) before the runtime
  }
}

void memory_co_spawn(benchmark::State& state) {
  for (auto _ : state) {
    std::optional<asio::io_context> io(std::in_place);
    const crosstown_bench::alloc_stats before = crosstown_bench::thread_allocs();
    const double heap_before = heap_in_use();
    for (int i = 0; i < memory_calls; ++i) {
      asio::co_spawn(*io, simulated_call(1h), asio::detached);
    }
    io->poll();
    const crosstown_bench::alloc_stats held = crosstown_bench::thread_allocs() - before;
    state.counters["heap_bytes_per_call"] = (heap_in_use() - heap_before) / memory_calls;
    state.counters["new_bytes_per_call"] =
        static_cast<double>(held.live_bytes) / static_cast<double>(memory_calls);
    io.reset();
  }
}

// 100 requests/s = 10,000 calls/s offered (about 20 in flight); 400/s = 40,000 calls/s.
BENCHMARK(awaitable_lane)
    ->Arg(100)
    ->Arg(400)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(blocking_pool)
    ->Arg(100)
    ->Arg(400)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(co_spawn_floor)
    ->Arg(100)
    ->Arg(400)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(memory_awaitable_task)->Name("memory/awaitable_task")->Iterations(1);
BENCHMARK(memory_co_spawn)->Name("memory/co_spawn")->Iterations(1);

}  // namespace

int main(int argc, char** argv) {
  std::vector<crosstown_bench::comparison> lines;
  for (const char* rate : {"100", "400"}) {
    const std::string arg = std::string("/") + rate + "/iterations:1/real_time";
    lines.push_back(
        {.label = std::string("awaitable lane / co_spawn floor calls/s at ") + rate + " req/s",
         .subject = "awaitable_lane" + arg,
         .baseline = "co_spawn_floor" + arg,
         .metric = "calls_per_second",
         .op = ">=",
         .bound = 0.8,
         .note = "target of issue 11"});
    lines.push_back(
        {.label = std::string("awaitable lane / blocking pool calls/s at ") + rate + " req/s",
         .subject = "awaitable_lane" + arg,
         .baseline = "blocking_pool" + arg,
         .metric = "calls_per_second"});
  }
  lines.push_back({.label = "heap bytes per in-flight call: awaitable task / co_spawn",
                   .subject = "memory/awaitable_task/iterations:1",
                   .baseline = "memory/co_spawn/iterations:1",
                   .metric = "heap_bytes_per_call"});
  return crosstown_bench::run_suite(argc, argv, "io_deferral", lines);
}
