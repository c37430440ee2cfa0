// Suite 4 - no drag on responses: the Beast demo server under load from a client in the same
// binary.
//
// Server: examples/demo's `crosstown_demo::server` (callback sessions; one response_scope per
// request from the connection's connection_scope; responses written with
// crosstown::beast::async_write_response) on 127.0.0.1, port 0, its io_context run by ONE
// thread. Deferred tasks go to a `crosstown::runtime` pool of 2 threads. Every request is
// `GET /work`; every response a 200 "ok\n". The handlers (the `variant`s below):
//
//   a_defer        defers 100 short tasks on the request's scope: they run on the runtime's
//                  pool after the response's last byte was written.
//   a_defer_nice19 the same, with the runtime's workers at niceness 19
//                  (`runtime_options::worker_nice`), so they yield the CPU to the I/O thread.
//   a_defer_idle   the same, with the runtime's workers in the lowest scheduling class
//                  (`runtime_options::worker_lowest_priority`: SCHED_IDLE on Linux).
//                  The a variants' runtimes are unbounded (`queue_capacity = unbounded`): a
//                  closed-loop round defers 80,000 tasks, more than the default bound, and a
//                  rejected task would never count down the round's work.
//   b_no_work      the same handler with no deferred work (the request's scope is still
//                  created, told the status and the write, and ended).
//   c_post_before  the naive alternative: `asio::post`s the 100 tasks to a 2-thread
//                  asio::thread_pool (the runtime's pool size) from the handler, before the
//                  response is written.
//   d_inline       the naive alternative: runs the 100 tasks in the handler, on the I/O thread,
//                  before the response.
//
// A short task is real CPU work: FNV-1a over 2 KiB with a per-task seed (a few microseconds;
// `task_us` is its cost measured on the benchmark thread at startup, machine otherwise as it
// is), the same closure in a, c and d. Each task then decrements a shared count of unfinished
// tasks, so the end of the work can be awaited.
//
// Client, same process: 8 keep-alive connections on its own io_context and ONE thread, one
// request in flight per connection (no pipelining). The request bytes are pre-serialized. Two
// load modes, each a benchmark family with the same six variants:
//
//   no_drag/<variant>       CLOSED LOOP, saturating: each connection sends its requests back
//                           to back (the next request is written as soon as the previous
//                           response has been read). The server never idles, so in a and c
//                           the deferred work competes with serving for the 2 cores.
//   no_drag_rate/<variant>  OPEN LOOP, fixed arrival rate R (default 1000 requests/s in all;
//                           environment variable CROSSTOWN_NO_DRAG_RATE overrides it):
//                           connection c (0..7) sends its k-th request of a round at the
//                           scheduled time t0 + (8k + c) / R - each connection every 8 / R,
//                           the connections staggered by 1 / R. The client thread waits for
//                           that time on a steady_timer; a connection that is behind (its
//                           previous response came after its next scheduled time) sends at
//                           once. At 1000 req/s even d (100 x task_us ~ 270 us of tasks per
//                           request on the I/O thread) keeps the I/O thread 27 % busy: the
//                           machine has spare capacity, which is the question "no drag" asks -
//                           does deferring work after the response add latency to responses
//                           when there is room to run it?
//
// Timed: one iteration is one round - closed loop: each connection sends 100 requests (800 in
// all); fixed rate: each sends 125 (1000 in all, 1 s at 1000 req/s; 25 each when
// --benchmark_min_time is below 0.1 s, so the smoke test stays short) - then the benchmark
// thread waits (condition variable, never a sleep) until every task of the round has finished.
// So the iteration's real time, and `req_per_s`, include the deferred work: a variant cannot
// look fast by leaving a backlog behind (at a fixed rate both are ~R unless the server falls
// behind). Latency of a request, on the client thread, to the completion of the read of its
// response's last byte - closed loop: from just before its bytes are written to the socket;
// fixed rate: from its SCHEDULED send time, so a request sent late because the previous one
// on its connection was slow is charged for the wait (no coordinated omission). Both include
// the client's own queueing (one thread for 8 connections; at a fixed rate also its timer
// wake-up), alike for every variant.
//
// Counters, per run (the summary takes the median over repetitions):
//   req_per_s    requests / (time until the round's responses were read AND its tasks ran)
//   resp_per_s   requests / (time until the round's last response was read) - the rate the
//                clients saw; in a and c the round's tasks may still be running then
//   p50_us, p99_us, mean_us, max_us   over every request of the run's timed rounds
//   io_cpu_us    CPU time of the server's I/O thread per request (its thread CPU clock, read
//                around each round): the cost each variant puts on the thread that writes the
//                responses, whatever the scheduler does with the other threads
//   task_us      one short task, measured alone at startup
//   offered_per_s     fixed rate only: R
//   send_lag_p99_us   fixed rate only: p99 of (actual send - scheduled send), the client's
//                     timer wake-up plus any falling behind; large values mean the load
//                     generator (or the server) could not keep up with R
//
// Left out of the timing: starting the runtime, pools, server and client threads, connecting,
// one warm-up round per run (closed loop, 20 requests per connection in both modes; untimed,
// samples discarded), stopping and joining everything. At a fixed rate, the round's first
// scheduled send is 1 ms after the round starts, inside the timed span.
//
// Machine: with 2 cores, the server's I/O thread, the runtime's 2 workers (in c: the asio
// pool's 2 workers instead), the client's thread and the (mostly waiting) benchmark thread
// share them; nothing is pinned. In the closed loop, the 100 tasks of a request in a and c
// (~100 x task_us of CPU) compete with the server and the client for those cores, while b
// does none of that work: there the a/b ratio measures CPU contention as much as any drag from
// crosstown itself. a/c isolates the hand-off's placement (after vs. before the response) at
// equal work, and io_cpu_us shows what each variant costs the I/O thread itself. At a fixed
// rate the cores are mostly idle, so the a/b ratio there is the one that answers "does
// deferring add latency to responses?". Other processes on a shared machine add their own
// contention: `--benchmark_enable_random_interleaving=true` spreads it over the variants
// rather than letting it land on whichever ran during a busy spell.
//
// Target (suite 4): a's p99 latency within 1.10x of b's - reported for both modes, the
// fixed-rate one ("4a/4b p99 at fixed rate") being the target proper. c/b and d/b show how far
// the naive alternatives fall behind (report only).
//
// Latency samples: `--crosstown_latency_csv=DIR` (or the environment variable
// CROSSTOWN_LATENCY_CSV=DIR) writes DIR/no_drag_<variant>.csv (closed loop) and
// DIR/no_drag_rate_<variant>.csv (fixed rate), `repetition,latency_us`, one line per timed
// request of every reported run (the iteration-count estimation runs Google Benchmark makes
// before the first repetition are left out). benchmarks/plot_latency.py draws them, one SVG
// per mode.
#include "demo_server.hpp"
#include "support/summary.hpp"

#include <crosstown/runtime.hpp>

#include <benchmark/benchmark.h>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include <pthread.h>
#include <time.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

namespace {

namespace demo = crosstown_demo;
namespace net = demo::net;
namespace http = demo::http;
namespace beast = demo::beast;
using demo::tcp;
using clock_type = std::chrono::steady_clock;

constexpr int tasks_per_request = 100;
constexpr std::size_t pool_threads = 2;
constexpr int connections = 8;
constexpr int requests_per_connection = 100;  // per round (= iteration)
constexpr int warm_up_per_connection = 20;
// Open-loop (fixed rate) mode: requests per connection per round, normally and when a tiny
// --benchmark_min_time asks for a smoke run (see main); and the default total rate.
constexpr int rate_requests_per_connection = 125;       // 1000 per round: 1 s at 1000 req/s
constexpr int rate_requests_per_connection_smoke = 25;  // 200 per round: 0.2 s at 1000 req/s
constexpr double default_rate_per_s = 1000;
double rate_per_s = default_rate_per_s;                  // CROSSTOWN_NO_DRAG_RATE
int rate_per_connection = rate_requests_per_connection;  // set once in main
constexpr std::size_t hash_bytes = 2048;

// ---- the short task ------------------------------------------------------------------------

std::array<unsigned char, hash_bytes> hash_input = [] {
  std::array<unsigned char, hash_bytes> bytes{};
  std::uint32_t x = 2463534242U;
  for (unsigned char& b : bytes) {  // xorshift32: arbitrary, fixed bytes
    x ^= x << 13U;
    x ^= x >> 17U;
    x ^= x << 5U;
    b = static_cast<unsigned char>(x);
  }
  return bytes;
}();

// FNV-1a: one multiply per byte in a dependency chain, so it cannot be vectorized away.
std::uint64_t hash_work(std::uint64_t seed) {
  std::uint64_t h = 14695981039346656037ULL ^ seed;
  for (const unsigned char b : hash_input) {
    h ^= b;
    h *= 1099511628211ULL;
  }
  return h;
}

// Counts unfinished tasks; `wait_idle` returns once there are none.
class work_tracker {
 public:
  void add(std::int64_t n) { pending_.fetch_add(n, std::memory_order_acq_rel); }
  void done() {
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard lock(mutex_);
      idle_.notify_all();
    }
  }
  void wait_idle() {
    std::unique_lock lock(mutex_);
    idle_.wait(lock, [this] { return pending_.load(std::memory_order_acquire) == 0; });
  }

 private:
  std::atomic<std::int64_t> pending_{0};
  std::mutex mutex_;
  std::condition_variable idle_;
};

// The task deferred in a, posted in c and called in d: 16 bytes, stored inline by
// crosstown::task.
struct short_task {
  work_tracker* tracker;
  std::uint64_t seed;
  void operator()() const {
    benchmark::DoNotOptimize(hash_work(seed));
    tracker->done();
  }
};

double task_us = 0;  // measured once in main

double measure_task_us() {
  work_tracker tracker;
  std::vector<double> per_task;
  for (int batch = 0; batch < 21; ++batch) {
    tracker.add(tasks_per_request);
    const auto t0 = clock_type::now();
    for (int i = 0; i < tasks_per_request; ++i) {
      short_task{&tracker, static_cast<std::uint64_t>(i)}();
    }
    per_task.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count() /
                       tasks_per_request);
  }
  std::sort(per_task.begin(), per_task.end());
  return per_task[per_task.size() / 2];
}

// ---- variants ------------------------------------------------------------------------------

enum class variant : std::uint8_t { defer, defer_nice, defer_idle, none, post_before, run_inline };

const char* key_of(variant v) {
  switch (v) {
    case variant::defer: return "a_defer";
    case variant::defer_nice: return "a_defer_nice19";
    case variant::defer_idle: return "a_defer_idle";
    case variant::none: return "b_no_work";
    case variant::post_before: return "c_post_before";
    case variant::run_inline: return "d_inline";
  }
  return "?";
}

// ---- latency samples kept for the CSV ------------------------------------------------------

struct recorded_run {
  benchmark::IterationCount iterations;
  std::vector<double> latencies_us;
};

std::string csv_dir;                                        // empty: samples are not kept
std::map<std::string, std::vector<recorded_run>> recorded;  // benchmark thread only

// ---- the server ----------------------------------------------------------------------------

// The demo server with its io_context on one thread of its own.
class running_server {
 public:
  running_server(crosstown::runtime& rt, demo::handler app) : server_(ioc_, rt, std::move(app)) {
    server_.start();
    thread_ = std::thread([this] { ioc_.run(); });
  }
  running_server(const running_server&) = delete;
  running_server& operator=(const running_server&) = delete;
  ~running_server() {
    server_.stop();  // closes the listener and the idle connections; run() then returns
    thread_.join();
  }

  unsigned short port() const { return server_.port(); }

  // CPU time the I/O thread has used so far, in seconds (0 if the clock is unavailable).
  double io_cpu_seconds() {
    clockid_t clock{};
    timespec ts{};
    if (pthread_getcpuclockid(thread_.native_handle(), &clock) != 0) return 0;
    if (clock_gettime(clock, &ts) != 0) return 0;
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
  }

 private:
  net::io_context ioc_;
  demo::server server_;
  std::thread thread_;
};

// ---- the client ----------------------------------------------------------------------------

constexpr std::string_view request_bytes =
    "GET /work HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: crosstown-bench\r\n\r\n";

// N keep-alive connections driven by one thread. `run_round` makes each connection send its
// requests back to back and returns when every response has been read.
class load_client {
 public:
  struct round_result {
    clock_type::time_point last_response;
    std::string error;  // empty: every response was a 200
  };

  load_client(unsigned short port, int n) : work_(net::make_work_guard(ioc_)) {
    const tcp::endpoint server(net::ip::make_address("127.0.0.1"), port);
    for (int i = 0; i < n; ++i) {
      auto c = std::make_unique<connection>(ioc_);
      c->socket.connect(server);
      c->socket.set_option(tcp::no_delay(true));
      connections_.push_back(std::move(c));
    }
    thread_ = std::thread([this] { ioc_.run(); });
  }
  load_client(const load_client&) = delete;
  load_client& operator=(const load_client&) = delete;
  ~load_client() {
    net::post(ioc_, [this] {
      for (auto& c : connections_) {
        demo::error_code ignored;
        c->socket.shutdown(tcp::socket::shutdown_both, ignored);
        c->socket.close(ignored);
      }
    });
    work_.reset();
    thread_.join();
  }

  // Closed loop: each connection sends `per_connection` requests back to back. Appends one
  // latency (us) per request - actual send to last byte read - to `latencies_us`, which must
  // have the capacity for them (a reallocation would stall the client thread inside the
  // measurement).
  round_result run_round(int per_connection, std::vector<double>& latencies_us) {
    return run(per_connection, 0, latencies_us, nullptr);
  }

  // Open loop at `rate` requests/s in all: connection c (0 <= c < n) sends its k-th request at
  // the scheduled time t0 + (k * n + c) / rate, or at once if it is behind (its previous
  // response came later than that). Latency (us) is measured from the SCHEDULED time to the
  // last byte read, so a late send counts against the server (no coordinated omission).
  // `send_lags_us` gets, per request, how late it was actually written (actual - scheduled).
  round_result run_rate_round(int per_connection, double rate, std::vector<double>& latencies_us,
                              std::vector<double>& send_lags_us) {
    return run(per_connection, rate, latencies_us, &send_lags_us);
  }

 private:
  struct connection {
    explicit connection(net::io_context& ioc) : socket(ioc), timer(ioc) {}
    tcp::socket socket;
    net::steady_timer timer;
    beast::flat_buffer buffer;
    http::response<http::string_body> response;
    clock_type::time_point sent;   // latency origin: actual send (closed), scheduled (open)
    clock_type::time_point first;  // open loop: this connection's first scheduled send
    int sent_count = 0;            // open loop: requests sent this round
    int left = 0;
  };

  round_result run(int per_connection, double rate, std::vector<double>& latencies_us,
                   std::vector<double>* send_lags_us) {
    {
      std::lock_guard lock(mutex_);
      round_done_ = false;
    }
    net::post(ioc_, [this, per_connection, rate, &latencies_us, send_lags_us] {
      latencies_ = &latencies_us;
      send_lags_ = send_lags_us;
      active_ = connections_.size();
      error_.clear();
      if (rate > 0) {
        // Every connection sends once per n / rate, the connections staggered by 1 / rate.
        period_ = std::chrono::duration_cast<clock_type::duration>(
            std::chrono::duration<double>(static_cast<double>(connections_.size()) / rate));
        const auto stagger = std::chrono::duration_cast<clock_type::duration>(
            std::chrono::duration<double>(1.0 / rate));
        const clock_type::time_point t0 = clock_type::now() + std::chrono::milliseconds(1);
        for (std::size_t i = 0; i < connections_.size(); ++i) {
          connection& c = *connections_[i];
          c.left = per_connection;
          c.sent_count = 0;
          c.first = t0 + stagger * static_cast<int>(i);
          schedule(c);
        }
      } else {
        period_ = {};
        for (auto& c : connections_) {
          c->left = per_connection;
          send(*c);
        }
      }
    });
    std::unique_lock lock(mutex_);
    round_done_cv_.wait(lock, [this] { return round_done_; });
    return {last_response_, error_};
  }

  // Client thread only, from here on.

  // Open loop: sends the connection's next request at its scheduled time (at once if late).
  void schedule(connection& c) {
    const clock_type::time_point at = c.first + period_ * c.sent_count;
    ++c.sent_count;
    if (clock_type::now() >= at) return send_at(c, at);
    c.timer.expires_at(at);
    c.timer.async_wait([this, &c, at](demo::error_code ec) {
      if (ec) return finish(c, "timer: " + ec.message());
      send_at(c, at);
    });
  }

  void send_at(connection& c, clock_type::time_point scheduled) {
    const clock_type::time_point now = clock_type::now();
    send_lags_->push_back(std::chrono::duration<double, std::micro>(now - scheduled).count());
    c.sent = scheduled;
    write(c);
  }

  void send(connection& c) {
    c.sent = clock_type::now();
    write(c);
  }

  void write(connection& c) {
    net::async_write(c.socket, net::buffer(request_bytes.data(), request_bytes.size()),
                     [this, &c](demo::error_code ec, std::size_t) { on_written(c, ec); });
  }

  void on_written(connection& c, demo::error_code ec) {
    if (ec) return finish(c, "write: " + ec.message());
    c.response = {};
    http::async_read(c.socket, c.buffer, c.response,
                     [this, &c](demo::error_code ec_read, std::size_t) { on_read(c, ec_read); });
  }

  void on_read(connection& c, demo::error_code ec) {
    const clock_type::time_point now = clock_type::now();
    if (ec) return finish(c, "read: " + ec.message());
    if (c.response.result() != http::status::ok) {
      return finish(c, "status " + std::to_string(c.response.result_int()));
    }
    latencies_->push_back(std::chrono::duration<double, std::micro>(now - c.sent).count());
    last_response_ = now;
    if (--c.left > 0) return period_ == clock_type::duration{} ? send(c) : schedule(c);
    finish(c, {});
  }

  void finish(connection&, const std::string& error) {
    if (!error.empty() && error_.empty()) error_ = error;
    if (--active_ > 0) return;
    std::lock_guard lock(mutex_);
    round_done_ = true;
    round_done_cv_.notify_one();
  }

  net::io_context ioc_;
  net::executor_work_guard<net::io_context::executor_type> work_;
  std::vector<std::unique_ptr<connection>> connections_;
  std::thread thread_;

  // Written by the client thread during a round, read by the caller after it (the mutex
  // handshake orders them).
  std::vector<double>* latencies_ = nullptr;
  std::vector<double>* send_lags_ = nullptr;  // open loop only
  clock_type::duration period_{};             // open loop: per connection; zero: closed loop
  std::size_t active_ = 0;
  clock_type::time_point last_response_{};
  std::string error_;

  std::mutex mutex_;
  std::condition_variable round_done_cv_;
  bool round_done_ = false;  // guarded by mutex_
};

// ---- the benchmark -------------------------------------------------------------------------

double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const auto i = static_cast<std::size_t>(q * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

enum class load : std::uint8_t { closed_loop, fixed_rate };

void run_variant(benchmark::State& state, variant v, load mode) {
  work_tracker tracker;  // declared first: outlives every pool that runs tasks
  // a_defer_nice19: the same runtime with its workers at niceness 19 (runtime_options::
  // worker_nice), so the deferred work yields the CPU to the I/O thread.
  // a_defer_idle: the workers in the lowest scheduling class (SCHED_IDLE).
  crosstown::runtime rt({.threads = pool_threads,
                         .queue_capacity = crosstown::unbounded,
                         .worker_nice = v == variant::defer_nice ? 19 : 0,
                         .worker_lowest_priority = v == variant::defer_idle});
  std::optional<net::thread_pool> naive_pool;
  if (v == variant::post_before) naive_pool.emplace(pool_threads);

  std::uint64_t next_seed = 0;  // I/O thread only
  demo::handler app = [&](demo::request_context& context) {
    const std::uint64_t seed = next_seed;
    next_seed += tasks_per_request;
    switch (v) {
      case variant::defer:
      case variant::defer_nice:
      case variant::defer_idle:
        tracker.add(tasks_per_request);
        for (int i = 0; i < tasks_per_request; ++i) {
          context.scope.defer(short_task{&tracker, seed + static_cast<std::uint64_t>(i)});
        }
        break;
      case variant::none: break;
      case variant::post_before:
        tracker.add(tasks_per_request);
        for (int i = 0; i < tasks_per_request; ++i) {
          net::post(*naive_pool, short_task{&tracker, seed + static_cast<std::uint64_t>(i)});
        }
        break;
      case variant::run_inline:
        tracker.add(tasks_per_request);
        for (int i = 0; i < tasks_per_request; ++i) {
          short_task{&tracker, seed + static_cast<std::uint64_t>(i)}();
        }
        break;
    }
    return demo::text_response(context.request, http::status::ok, "ok\n");
  };

  const int per_connection =
      mode == load::closed_loop ? requests_per_connection : rate_per_connection;
  const auto per_round = static_cast<std::size_t>(connections * per_connection);
  std::vector<double> latencies_us;
  latencies_us.reserve(static_cast<std::size_t>(state.max_iterations) * per_round);
  std::vector<double> send_lags_us;  // fixed rate only
  if (mode == load::fixed_rate) {
    send_lags_us.reserve(static_cast<std::size_t>(state.max_iterations) * per_round);
  }
  double work_seconds = 0;      // round start -> every task finished
  double response_seconds = 0;  // round start -> last response read
  double io_cpu_seconds = 0;    // CPU used by the server's I/O thread during the rounds
  std::string error;
  {
    running_server server(rt, std::move(app));
    load_client client(server.port(), connections);

    std::vector<double> warm_up;
    warm_up.reserve(static_cast<std::size_t>(connections * warm_up_per_connection));
    error = client.run_round(warm_up_per_connection, warm_up).error;
    tracker.wait_idle();
    if (!error.empty()) state.SkipWithError(error.c_str());  // the loop then does not run

    for (auto _ : state) {
      const double io_cpu_start = server.io_cpu_seconds();
      const clock_type::time_point start = clock_type::now();
      const load_client::round_result round =
          mode == load::closed_loop
              ? client.run_round(per_connection, latencies_us)
              : client.run_rate_round(per_connection, rate_per_s, latencies_us, send_lags_us);
      tracker.wait_idle();
      const clock_type::time_point end = clock_type::now();
      io_cpu_seconds += server.io_cpu_seconds() - io_cpu_start;
      if (!round.error.empty()) {
        error = round.error;
        state.SkipWithError(error.c_str());
        break;
      }
      work_seconds += std::chrono::duration<double>(end - start).count();
      response_seconds += std::chrono::duration<double>(round.last_response - start).count();
    }
  }  // the client closes its connections; the server stops, its I/O thread is joined
  rt.drain(crosstown::runtime::clock::time_point::max());
  if (naive_pool) naive_pool->join();
  if (!error.empty()) return;

  const auto requests = static_cast<double>(latencies_us.size());
  if (!csv_dir.empty()) {
    const std::string key = (mode == load::fixed_rate ? "rate_" : "") + std::string(key_of(v));
    recorded[key].push_back({state.iterations(), latencies_us});
  }
  std::sort(latencies_us.begin(), latencies_us.end());
  double sum = 0;
  for (const double x : latencies_us) sum += x;
  state.counters["req_per_s"] = work_seconds > 0 ? requests / work_seconds : 0;
  state.counters["resp_per_s"] = response_seconds > 0 ? requests / response_seconds : 0;
  state.counters["p50_us"] = percentile(latencies_us, 0.50);
  state.counters["p99_us"] = percentile(latencies_us, 0.99);
  state.counters["mean_us"] = requests > 0 ? sum / requests : 0;
  state.counters["max_us"] = latencies_us.empty() ? 0 : latencies_us.back();
  state.counters["io_cpu_us"] = requests > 0 ? io_cpu_seconds * 1e6 / requests : 0;
  state.counters["task_us"] = task_us;
  if (mode == load::fixed_rate) {
    std::sort(send_lags_us.begin(), send_lags_us.end());
    state.counters["offered_per_s"] = rate_per_s;
    state.counters["send_lag_p99_us"] = percentile(send_lags_us, 0.99);
  }
}

void no_drag(benchmark::State& state, variant v) { run_variant(state, v, load::closed_loop); }
void no_drag_rate(benchmark::State& state, variant v) { run_variant(state, v, load::fixed_rate); }

void configure(benchmark::internal::Benchmark* b) {
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}

// Writes the samples of the reported runs: those with the largest iteration count (the
// estimation runs before the first repetition have fewer iterations; repetitions reuse it).
void write_csvs() {
  for (const auto& [key, runs] : recorded) {
    benchmark::IterationCount reported = 0;
    for (const recorded_run& r : runs) reported = std::max(reported, r.iterations);
    const std::string path = csv_dir + "/no_drag_" + key + ".csv";
    std::FILE* f = std::fopen(path.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "no_drag: cannot write %s\n", path.c_str());
      continue;
    }
    std::fprintf(f, "repetition,latency_us\n");
    int repetition = 0;
    for (const recorded_run& r : runs) {
      if (r.iterations != reported) continue;
      for (const double x : r.latencies_us) std::fprintf(f, "%d,%.3f\n", repetition, x);
      ++repetition;
    }
    std::fclose(f);
    std::printf("latency samples: %s (%d runs)\n", path.c_str(), repetition);
  }
}

}  // namespace

BENCHMARK_CAPTURE(no_drag, a_defer, variant::defer)->Apply(configure);
BENCHMARK_CAPTURE(no_drag, a_defer_nice19, variant::defer_nice)->Apply(configure);
BENCHMARK_CAPTURE(no_drag, a_defer_idle, variant::defer_idle)->Apply(configure);
BENCHMARK_CAPTURE(no_drag, b_no_work, variant::none)->Apply(configure);
BENCHMARK_CAPTURE(no_drag, c_post_before, variant::post_before)->Apply(configure);
BENCHMARK_CAPTURE(no_drag, d_inline, variant::run_inline)->Apply(configure);
BENCHMARK_CAPTURE(no_drag_rate, a_defer, variant::defer)->Apply(configure);
BENCHMARK_CAPTURE(no_drag_rate, a_defer_nice19, variant::defer_nice)->Apply(configure);
BENCHMARK_CAPTURE(no_drag_rate, a_defer_idle, variant::defer_idle)->Apply(configure);
BENCHMARK_CAPTURE(no_drag_rate, b_no_work, variant::none)->Apply(configure);
BENCHMARK_CAPTURE(no_drag_rate, c_post_before, variant::post_before)->Apply(configure);
BENCHMARK_CAPTURE(no_drag_rate, d_inline, variant::run_inline)->Apply(configure);

int main(int argc, char** argv) {
  // --crosstown_latency_csv=DIR (taken out before Google Benchmark sees the arguments).
  if (const char* env = std::getenv("CROSSTOWN_LATENCY_CSV")) csv_dir = env;
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    constexpr std::string_view flag = "--crosstown_latency_csv=";
    if (std::string_view(argv[i]).substr(0, flag.size()) == flag) {
      csv_dir = argv[i] + flag.size();
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  argv[argc] = nullptr;
  // CROSSTOWN_NO_DRAG_RATE: total requests/s of the fixed-rate benchmarks.
  if (const char* env = std::getenv("CROSSTOWN_NO_DRAG_RATE")) {
    char* end = nullptr;
    const double rate = std::strtod(env, &end);
    if (end == env || *end != '\0' || !(rate > 0) || rate > 1e6) {
      std::fprintf(stderr, "no_drag: CROSSTOWN_NO_DRAG_RATE=%s is not a rate in (0, 1e6]\n", env);
      return 1;
    }
    rate_per_s = rate;
  }
  // A tiny --benchmark_min_time (the smoke test's 0.01) asks for a quick run: the fixed-rate
  // rounds are then 200 requests (0.2 s at 1000 req/s) instead of 1000.
  for (int i = 1; i < argc; ++i) {
    constexpr std::string_view flag = "--benchmark_min_time=";
    if (std::string_view(argv[i]).substr(0, flag.size()) == flag &&
        std::strtod(argv[i] + flag.size(), nullptr) < 0.1) {
      rate_per_connection = rate_requests_per_connection_smoke;
    }
  }
  if (!csv_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(csv_dir, ec);
    if (ec) {
      std::fprintf(stderr, "no_drag: cannot create %s: %s\n", csv_dir.c_str(),
                   ec.message().c_str());
      return 1;
    }
  }

  task_us = measure_task_us();
  std::printf("short task: FNV-1a over %zu bytes, %.2f us each here; %d per request\n", hash_bytes,
              task_us, tasks_per_request);
  std::printf("fixed-rate mode: %.0f requests/s over %d connections, %d requests per round\n",
              rate_per_s, connections, connections * rate_per_connection);

  using crosstown_bench::comparison;
  auto run = [](const char* key) { return std::string("no_drag/") + key + "/real_time"; };
  const std::string a = run("a_defer");
  const std::string a10 = run("a_defer_nice19");
  const std::string ai = run("a_defer_idle");
  const std::string b = run("b_no_work");
  const std::string c = run("c_post_before");
  const std::string d = run("d_inline");
  auto rate_run = [](const char* key) { return std::string("no_drag_rate/") + key + "/real_time"; };
  const std::string ra = rate_run("a_defer");
  const std::string ra10 = rate_run("a_defer_nice19");
  const std::string rai = rate_run("a_defer_idle");
  const std::string rb = rate_run("b_no_work");
  const std::string rc = rate_run("c_post_before");
  const std::string rd = rate_run("d_inline");
  const int status = crosstown_bench::run_suite(
      argc, argv, "no drag on responses",
      {
          {.label = "4a defer / 4b no work, p99 latency",
           .subject = a,
           .baseline = b,
           .metric = "p99_us",
           .op = "<=",
           .bound = 1.10,
           .note = "target of suite 4: the p99 of a handler deferring 100 tasks within 1.10x "
                   "of the same handler deferring nothing"},
          {.label = "4a defer / 4b no work, p50 latency",
           .subject = a,
           .baseline = b,
           .metric = "p50_us"},
          {.label = "4a defer, workers at nice 19 / 4b no work, p99 latency",
           .subject = a10,
           .baseline = b,
           .metric = "p99_us",
           .op = "<=",
           .bound = 1.10,
           .note = "the same target, with runtime_options::worker_nice = 19"},
          {.label = "4a defer, workers at nice 19 / 4b no work, p50 latency",
           .subject = a10,
           .baseline = b,
           .metric = "p50_us"},
          {.label = "4a defer, workers at nice 19 / 4b no work, requests/s",
           .subject = a10,
           .baseline = b,
           .metric = "req_per_s"},
          {.label = "4a defer, SCHED_IDLE workers / 4b no work, p99 latency",
           .subject = ai,
           .baseline = b,
           .metric = "p99_us",
           .op = "<=",
           .bound = 1.5,
           .note = "closed-loop target of issue 11 (no drag), with "
                   "runtime_options::worker_lowest_priority"},
          {.label = "4a defer, SCHED_IDLE workers / 4b no work, p50 latency",
           .subject = ai,
           .baseline = b,
           .metric = "p50_us"},
          {.label = "4a defer, SCHED_IDLE workers / 4b no work, requests/s",
           .subject = ai,
           .baseline = b,
           .metric = "req_per_s"},
          {.label = "4a defer / 4b no work, requests/s",
           .subject = a,
           .baseline = b,
           .metric = "req_per_s"},
          {.label = "4c post before / 4b no work, p99 latency",
           .subject = c,
           .baseline = b,
           .metric = "p99_us"},
          {.label = "4c post before / 4b no work, p50 latency",
           .subject = c,
           .baseline = b,
           .metric = "p50_us"},
          {.label = "4c post before / 4b no work, requests/s",
           .subject = c,
           .baseline = b,
           .metric = "req_per_s"},
          {.label = "4d inline / 4b no work, p99 latency",
           .subject = d,
           .baseline = b,
           .metric = "p99_us"},
          {.label = "4d inline / 4b no work, p50 latency",
           .subject = d,
           .baseline = b,
           .metric = "p50_us"},
          {.label = "4d inline / 4b no work, requests/s",
           .subject = d,
           .baseline = b,
           .metric = "req_per_s"},
          {.label = "4a defer / 4b no work, I/O thread CPU per request",
           .subject = a,
           .baseline = b,
           .metric = "io_cpu_us"},
          {.label = "4c post before / 4b no work, I/O thread CPU per req.",
           .subject = c,
           .baseline = b,
           .metric = "io_cpu_us"},
          {.label = "4a defer / 4c post before, p99 latency",
           .subject = a,
           .baseline = c,
           .metric = "p99_us"},
          {.label = "4a defer / 4d inline, p99 latency",
           .subject = a,
           .baseline = d,
           .metric = "p99_us"},
          // Fixed arrival rate (open loop): the machine has spare capacity.
          {.label = "4a/4b p99 at fixed rate",
           .subject = ra,
           .baseline = rb,
           .metric = "p99_us",
           .op = "<=",
           .bound = 1.10,
           .note = "target of suite 4 at a fixed arrival rate (CROSSTOWN_NO_DRAG_RATE, default "
                   "1000 req/s): latency from each request's scheduled send time"},
          {.label = "4a/4b p50 at fixed rate", .subject = ra, .baseline = rb, .metric = "p50_us"},
          {.label = "4a nice 19/4b p99 at fixed rate",
           .subject = ra10,
           .baseline = rb,
           .metric = "p99_us",
           .op = "<=",
           .bound = 1.10,
           .note = "the same target, with runtime_options::worker_nice = 19"},
          {.label = "4a nice 19/4b p50 at fixed rate",
           .subject = ra10,
           .baseline = rb,
           .metric = "p50_us"},
          {.label = "4a SCHED_IDLE/4b p99 at fixed rate",
           .subject = rai,
           .baseline = rb,
           .metric = "p99_us",
           .op = "<=",
           .bound = 1.10,
           .note = "the same target, with runtime_options::worker_lowest_priority"},
          {.label = "4a SCHED_IDLE/4b p50 at fixed rate",
           .subject = rai,
           .baseline = rb,
           .metric = "p50_us"},
          {.label = "4c/4b p99 at fixed rate", .subject = rc, .baseline = rb, .metric = "p99_us"},
          {.label = "4c/4b p50 at fixed rate", .subject = rc, .baseline = rb, .metric = "p50_us"},
          {.label = "4d/4b p99 at fixed rate", .subject = rd, .baseline = rb, .metric = "p99_us"},
          {.label = "4d/4b p50 at fixed rate", .subject = rd, .baseline = rb, .metric = "p50_us"},
          {.label = "4a/4b I/O thread CPU per req. at fixed rate",
           .subject = ra,
           .baseline = rb,
           .metric = "io_cpu_us"},
      });
  if (!csv_dir.empty()) write_csvs();
  return status;
}
