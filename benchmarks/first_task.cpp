// Suite 3 - time to first task: from `response_sent()` to the first task starting, idle pool.
//
// Each iteration: create a scope, defer N tasks (N = 1 or 100), report status 200, let the
// pool go idle, then take t0 and call `response_sent()`; the first task to start records t1.
// The sample is t1 - t0 (manual time), so it includes the hand-off itself, the pool's wake-up
// of a parked worker and the job's start. The benchmark thread then waits on a condition
// variable for the tasks and `drain`s the runtime before the next sample.
//
// "Idle" means the workers are parked on their condition variable: before each sample the
// benchmark thread sleeps 200 us (outside the measurement) so that the previous sample's
// worker has gone back to sleep. Without it some samples would catch a worker still running
// and measure something else.
//
// Baseline: one `boost::asio::post` to an idle 1-thread `asio::thread_pool`; t0 before the
// post, t1 when the handler starts.
//
// Counters: p50_us, p99_us (of this run's samples - the summary then takes the median over
// repetitions), mean_us; `round_trip_p50_us`: until the posting thread has woken up again.
#include "support/closures.hpp"
#include "support/summary.hpp"

#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>

#include <benchmark/benchmark.h>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

constexpr auto idle_pause = std::chrono::microseconds(200);
constexpr int samples = 2000;

// Where the first task records its start; the last one wakes the benchmark thread.
struct probe {
  std::atomic<bool> started{false};
  clock_type::time_point first_start;
  std::atomic<int> left{0};
  std::mutex mutex;
  std::condition_variable cv;
  bool done = false;  // guarded by mutex

  void arm(int tasks) {
    started.store(false, std::memory_order_relaxed);
    left.store(tasks, std::memory_order_relaxed);
    std::lock_guard lock(mutex);
    done = false;
  }
  void on_task() {
    if (!started.exchange(true, std::memory_order_acq_rel)) first_start = clock_type::now();
    if (left.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard lock(mutex);
      done = true;
      cv.notify_one();
    }
  }
  void wait() {
    std::unique_lock lock(mutex);
    cv.wait(lock, [this] { return done; });
  }
};

struct probe_task {
  probe* p;
  void operator()() const { p->on_task(); }
};

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

double micros(clock_type::duration d) {
  return std::chrono::duration<double, std::micro>(d).count();
}

void report(benchmark::State& state, const std::vector<double>& start_us,
            const std::vector<double>& round_trip_us) {
  double sum = 0;
  for (double x : start_us) sum += x;
  state.counters["p50_us"] = percentile(start_us, 0.50);
  state.counters["p99_us"] = percentile(start_us, 0.99);
  state.counters["mean_us"] = start_us.empty() ? 0 : sum / static_cast<double>(start_us.size());
  state.counters["round_trip_p50_us"] = percentile(round_trip_us, 0.50);
}

void crosstown_first_task(benchmark::State& state) {
  const auto threads = static_cast<std::size_t>(state.range(0));
  const auto tasks = static_cast<int>(state.range(1));
  crosstown::runtime rt({.threads = threads});
  probe p;
  std::vector<double> start_us;
  std::vector<double> round_trip_us;
  start_us.reserve(samples);
  round_trip_us.reserve(samples);
  for (auto _ : state) {
    p.arm(tasks);
    std::optional<crosstown::response_scope> scope(std::in_place, rt);
    for (int i = 0; i < tasks; ++i) scope->defer(probe_task{&p});
    scope->status_known(200);
    std::this_thread::sleep_for(idle_pause);
    const clock_type::time_point t0 = clock_type::now();
    scope->response_sent();
    p.wait();
    const clock_type::time_point woke = clock_type::now();
    const auto latency = p.first_start - t0;
    state.SetIterationTime(std::chrono::duration<double>(latency).count());
    start_us.push_back(micros(latency));
    round_trip_us.push_back(micros(woke - t0));
    scope.reset();
    rt.drain(crosstown::runtime::clock::time_point::max());
  }
  report(state, start_us, round_trip_us);
}

void asio_first_task(benchmark::State& state) {
  boost::asio::thread_pool pool(1);
  probe p;
  std::vector<double> start_us;
  std::vector<double> round_trip_us;
  start_us.reserve(samples);
  round_trip_us.reserve(samples);
  for (auto _ : state) {
    p.arm(1);
    std::this_thread::sleep_for(idle_pause);
    const clock_type::time_point t0 = clock_type::now();
    boost::asio::post(pool, probe_task{&p});
    p.wait();
    const clock_type::time_point woke = clock_type::now();
    const auto latency = p.first_start - t0;
    state.SetIterationTime(std::chrono::duration<double>(latency).count());
    start_us.push_back(micros(latency));
    round_trip_us.push_back(micros(woke - t0));
  }
  pool.join();
  report(state, start_us, round_trip_us);
}

}  // namespace

BENCHMARK(crosstown_first_task)
    ->Name("crosstown")
    ->ArgNames({"threads", "tasks"})
    ->Args({1, 1})
    ->Args({2, 1})
    ->Args({2, 100})
    ->Iterations(samples)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(asio_first_task)
    ->Name("asio_post")
    ->Iterations(samples)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

int main(int argc, char** argv) {
  using crosstown_bench::comparison;
  const std::string baseline = "asio_post/iterations:2000/manual_time";
  std::vector<comparison> comparisons;
  for (const char* args : {"threads:1/tasks:1", "threads:2/tasks:1", "threads:2/tasks:100"}) {
    const std::string subject = std::string("crosstown/") + args + "/iterations:2000/manual_time";
    for (const char* metric : {"p50_us", "p99_us"}) {
      comparisons.push_back({.label = std::string(args) + " vs asio post, " + metric,
                             .subject = subject,
                             .baseline = baseline,
                             .metric = metric});
    }
  }
  return crosstown_bench::run_suite(argc, argv, "time to first task", comparisons);
}
