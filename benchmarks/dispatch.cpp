// Suite 2 - dispatch throughput: responses of 100 trivial tasks each, on a 2-thread pool.
//
// One iteration hands over R responses (R = 100, so 10 000 tasks) from the benchmark thread
// and waits until every task has run; the rate is tasks per second of wall time. Waiting uses
// `runtime::drain` for crosstown and an atomic count plus a condition variable for the
// baselines - never sleeps. Every variant runs the same 8-byte closure (a read, no shared
// writes), so the figures compare the machinery, not the work.
//
//   crosstown          per response: a response_scope, 100 `defer`s, status 200,
//                      `response_sent()` (one batch to the runtime's 2-thread pool), end.
//   asio_post_each     each task `boost::asio::post`ed to a 2-thread asio::thread_pool.
//   asio_post_batch    the batching limit: per response the 100 closures are collected in a
//                      reserved std::vector<std::function<void()>> (what a handler batching by
//                      hand must do) and one `post` runs them in a loop.
//   asio_post_loop     a stricter limit, for reference: one `post` per response whose handler
//                      calls the closure 100 times - nothing is stored per task.
//
// Targets: crosstown >= 3x asio_post_each's tasks/s; within 1.5x of the batching limit
// (tasks/s ratio >= 0.667). The benchmark thread plus two workers share the machine's cores:
// on a 2-core machine every variant is oversubscribed alike.
#include "support/closures.hpp"
#include "support/summary.hpp"

#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>

#include <benchmark/benchmark.h>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

namespace {

using crosstown_bench::small_closure;

constexpr int tasks_per_response = 100;
constexpr int pool_threads = 2;

std::uint64_t value = 7;

// Counts down to zero; the thread that reaches zero wakes the waiter.
class countdown {
 public:
  void reset(std::int64_t n) {
    std::lock_guard lock(mutex_);
    left_.store(n, std::memory_order_relaxed);
    done_ = false;
  }
  void count(std::int64_t n = 1) {
    if (left_.fetch_sub(n, std::memory_order_acq_rel) == n) {
      std::lock_guard lock(mutex_);
      done_ = true;
      cv_.notify_one();
    }
  }
  void wait() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return done_; });
  }

 private:
  std::atomic<std::int64_t> left_{0};
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;  // guarded by mutex_
};

void finish(benchmark::State& state, std::int64_t responses) {
  state.SetItemsProcessed(state.iterations() * responses * tasks_per_response);
  state.counters["responses_per_iteration"] = static_cast<double>(responses);
}

void crosstown_dispatch(benchmark::State& state) {
  const std::int64_t responses = state.range(0);
  crosstown::runtime rt({.threads = pool_threads});
  for (auto _ : state) {
    for (std::int64_t r = 0; r < responses; ++r) {
      crosstown::response_scope scope(rt);
      for (int i = 0; i < tasks_per_response; ++i) scope.defer(small_closure{&value});
      scope.status_known(200);
      scope.response_sent();
    }
    rt.drain(crosstown::runtime::clock::time_point::max());
  }
  finish(state, responses);
}

void asio_post_each(benchmark::State& state) {
  const std::int64_t responses = state.range(0);
  boost::asio::thread_pool pool(pool_threads);
  countdown done;
  for (auto _ : state) {
    done.reset(responses * tasks_per_response);
    for (std::int64_t r = 0; r < responses; ++r) {
      for (int i = 0; i < tasks_per_response; ++i) {
        boost::asio::post(pool, [fn = small_closure{&value}, &done] {
          fn();
          done.count();
        });
      }
    }
    done.wait();
  }
  pool.join();
  finish(state, responses);
}

void asio_post_batch(benchmark::State& state) {
  const std::int64_t responses = state.range(0);
  boost::asio::thread_pool pool(pool_threads);
  countdown done;
  for (auto _ : state) {
    done.reset(responses);
    for (std::int64_t r = 0; r < responses; ++r) {
      std::vector<std::function<void()>> batch;
      batch.reserve(tasks_per_response);
      for (int i = 0; i < tasks_per_response; ++i) batch.emplace_back(small_closure{&value});
      boost::asio::post(pool, [batch = std::move(batch), &done] {
        for (const auto& fn : batch) fn();
        done.count();
      });
    }
    done.wait();
  }
  pool.join();
  finish(state, responses);
}

void asio_post_loop(benchmark::State& state) {
  const std::int64_t responses = state.range(0);
  boost::asio::thread_pool pool(pool_threads);
  countdown done;
  for (auto _ : state) {
    done.reset(responses);
    for (std::int64_t r = 0; r < responses; ++r) {
      boost::asio::post(pool, [fn = small_closure{&value}, &done] {
        for (int i = 0; i < tasks_per_response; ++i) fn();
        done.count();
      });
    }
    done.wait();
  }
  pool.join();
  finish(state, responses);
}

void configure(benchmark::internal::Benchmark* b) {
  b->ArgName("responses")->Arg(100)->UseRealTime()->Unit(benchmark::kMicrosecond);
}

}  // namespace

BENCHMARK(crosstown_dispatch)->Name("crosstown")->Apply(configure);
BENCHMARK(asio_post_each)->Name("asio_post_each")->Apply(configure);
BENCHMARK(asio_post_batch)->Name("asio_post_batch")->Apply(configure);
BENCHMARK(asio_post_loop)->Name("asio_post_loop")->Apply(configure);

int main(int argc, char** argv) {
  const std::string arg = "/responses:100/real_time";
  return crosstown_bench::run_suite(
      argc, argv, "dispatch",
      {
          {.label = "crosstown/asio_post_each tasks/s",
           .subject = "crosstown" + arg,
           .baseline = "asio_post_each" + arg,
           .metric = "items_per_second",
           .op = ">=",
           .bound = 3.0},
          {.label = "crosstown/asio_post_batch tasks/s (batching limit)",
           .subject = "crosstown" + arg,
           .baseline = "asio_post_batch" + arg,
           .metric = "items_per_second",
           .op = ">=",
           .bound = 1.0 / 1.5,
           .note = ">= 0.667 <=> within 1.5x of the batching limit (target of suite 2)"},
          {.label = "crosstown/asio_post_loop tasks/s (no storage)",
           .subject = "crosstown" + arg,
           .baseline = "asio_post_loop" + arg,
           .metric = "items_per_second"},
      });
}
