// crosstown-demo: the phone-calls server (app.hpp) on Boost.Beast, RESTinio or cpp-httplib, and
// a client that shows its timeline.
//
//   crosstown-demo [client] [--coroutine] [--requests N] [call options]
//       starts the server on 127.0.0.1 (any free port), sends the demo's requests with a Beast
//       client and prints a timeline: when each response's last byte was written, when its
//       first deferred task started, which tasks were skipped; then measures the gap between
//       "last byte written" and "first task started" over N requests (default 1000) on 16
//       keep-alive connections, shuts down gracefully (SIGTERM to itself) and prints the
//       final counters. Exit status 0 iff every rule held and every task is accounted for.
//   crosstown-demo serve [--server beast|restinio|httplib] [--port N] [--coroutine]
//                        [--deadline-ms D] [--idle-timeout-ms T] [--header-timeout-ms T]
//                        [--body-timeout-ms T] [--write-timeout-ms T] [--max-connections N]
//                        [--queue-capacity N] [call options]
//       runs the server alone until SIGINT/SIGTERM (Beast by default; the session and timeout
//       options are Beast's, the client mode always runs Beast), e.g. for
//       curl -X POST 'http://127.0.0.1:8080/calls?n=100'; curl http://127.0.0.1:8080/metrics
//       It prints "listening on 127.0.0.1:PORT" once it accepts (--port 0: any free port).
//
// Call options: each call of POST /calls is an awaitable task (an async wait of its latency,
// failing with probability P) in the lane `telephony`, with a timeout and retries:
//   --call-ms M [2]            default latency of a call (a request's ms= or us= overrides it)
//   --call-failure-rate P [0]  probability that an attempt fails, 0..1, seeded (--seed S [1])
//   --lane-limit N [100]       calls in flight at once; --lane-capacity N [50000] may wait
//   --call-timeout-ms T [2000] per attempt (0: none); --call-attempts A [3] attempts in all,
//                              backoff 100 ms doubling to 2 s, jitter 0.5
//   --blocking-calls           the old variant instead: each call sleeps on a pool thread
//   --redis ADDRESS            (serve) hand each call to Redis Streams at unix:/path or
//                              host:port instead; `crosstown-worker --redis ADDRESS` runs them
//                              (redis_calls.hpp; scripts/redis-demo.sh shows it end to end)
//
// Shutdown (both modes), bounded by the deadline D (default 10 s) from the first signal: stop
// accepting, let responses in progress finish (cut off after min(5 s, D/2)), drain deferred
// tasks until D, drop what is still queued (each task counted dropped_at_shutdown), and wait
// at most a margin of 1 s more for tasks still running - a task that does not return is
// reported and abandoned (the process exits without it). A second SIGINT/SIGTERM makes the
// deadline "now": connections close at once, the queue is dropped, the margin still applies.
// Either way the last lines are a summary of the unfinished work (counts by state and the
// first few names, never one line per task) and the final counters.
#include "app.hpp"
#include "demo_client.hpp"
#include "servers.hpp"
#if CROSSTOWN_DEMO_WITH_REDIS
#include "redis_calls.hpp"
#endif

#include <crosstown/crosstown.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>

#include <unistd.h>
#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <future>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

namespace demo = crosstown_demo;
namespace net = boost::asio;
using clock_type = std::chrono::steady_clock;

const std::int64_t program_start_ns = demo::steady_now_ns();
/// Beyond the deadline, how long shutdown waits for tasks that are still running.
constexpr auto shutdown_margin = std::chrono::seconds(1);

double ms_at(std::int64_t ns) { return static_cast<double>(ns - program_start_ns) / 1e6; }

struct options {
  bool serve = false;
  bool coroutine = false;
  unsigned short port = 0;
  int requests = 1000;
  std::chrono::milliseconds deadline = std::chrono::seconds(10);
  demo::serve_settings server;
  demo::server_kind kind = demo::server_kind::beast;
  std::size_t queue_capacity = 100'000;
  bool blocking_calls = false;
  demo::awaitable_call_settings calls;
  std::string redis;  // --redis: calls go to Redis Streams (serve mode)
};

[[noreturn]] void usage(const char* why = nullptr) {
  if (why != nullptr) std::fprintf(stderr, "crosstown-demo: %s\n", why);
  std::fprintf(
      stderr,
      "usage: crosstown-demo [client] [--coroutine] [--requests N] [call options]\n"
      "       crosstown-demo serve [--server beast|restinio|httplib] [--port N]\n"
      "              [--coroutine] [--deadline-ms D] [--idle-timeout-ms T]\n"
      "              [--header-timeout-ms T] [--body-timeout-ms T] [--write-timeout-ms T]\n"
      "              [--max-connections N] [--queue-capacity N] [call options]\n"
      "call options: [--call-ms M] [--call-failure-rate P] [--seed S] [--lane-limit N]\n"
      "              [--lane-capacity N] [--call-timeout-ms T] [--call-attempts A]\n"
      "              [--blocking-calls] [--redis unix:/path|host:port (serve only)]\n");
  std::exit(2);
}

// A decimal number for option `name`, 1..max (a clear error otherwise).
long long number_arg(const char* name, const char* text, long long max) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < 0 || v > max) {
    std::fprintf(stderr, "crosstown-demo: %s wants a number 0-%lld, got \"%s\"\n", name, max, text);
    std::exit(2);
  }
  return v;
}

// A probability for option `name`, 0..1 (a clear error otherwise).
double rate_arg(const char* name, const char* text) {
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(text, &end);
  if (errno != 0 || end == text || *end != '\0' || !(v >= 0 && v <= 1)) {
    std::fprintf(stderr, "crosstown-demo: %s wants a probability 0-1, got \"%s\"\n", name, text);
    std::exit(2);
  }
  return v;
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "client" && i == 1) {
      o.serve = false;
    } else if (arg == "serve" && i == 1) {
      o.serve = true;
    } else if (arg == "--coroutine") {
      o.coroutine = true;
    } else if (arg == "--port" && i + 1 < argc) {
      o.port = static_cast<unsigned short>(number_arg("--port", argv[++i], 65535));
    } else if (arg == "--requests" && i + 1 < argc) {
      o.requests = static_cast<int>(std::max(1LL, number_arg("--requests", argv[++i], 1'000'000)));
    } else if (arg == "--deadline-ms" && i + 1 < argc) {
      o.deadline = std::chrono::milliseconds(number_arg("--deadline-ms", argv[++i], 3'600'000));
    } else if (arg == "--idle-timeout-ms" && i + 1 < argc) {
      o.server.idle_timeout =
          std::chrono::milliseconds(number_arg(arg.data(), argv[++i], 86'400'000));
    } else if (arg == "--header-timeout-ms" && i + 1 < argc) {
      o.server.header_timeout =
          std::chrono::milliseconds(number_arg(arg.data(), argv[++i], 86'400'000));
    } else if (arg == "--body-timeout-ms" && i + 1 < argc) {
      o.server.body_timeout =
          std::chrono::milliseconds(number_arg(arg.data(), argv[++i], 86'400'000));
    } else if (arg == "--write-timeout-ms" && i + 1 < argc) {
      o.server.write_timeout =
          std::chrono::milliseconds(number_arg(arg.data(), argv[++i], 86'400'000));
    } else if (arg == "--max-connections" && i + 1 < argc) {
      o.server.max_connections =
          static_cast<std::size_t>(number_arg(arg.data(), argv[++i], 1'000'000));
    } else if (arg == "--queue-capacity" && i + 1 < argc) {
      o.queue_capacity = static_cast<std::size_t>(number_arg(arg.data(), argv[++i], 100'000'000));
    } else if (arg == "--server" && i + 1 < argc) {
      const std::string_view name = argv[++i];
      const auto kind = demo::parse_server_kind(name);
      if (!kind) {
        std::fprintf(stderr,
                     "crosstown-demo: --server wants beast, restinio or httplib, got \"%s\"\n",
                     argv[i]);
        std::exit(2);
      }
      if (!demo::server_available(*kind)) {
        std::fprintf(stderr, "crosstown-demo: --server %s: this build has no %s adapter\n", argv[i],
                     argv[i]);
        std::exit(2);
      }
      o.kind = *kind;
    } else if (arg == "--blocking-calls") {
      o.blocking_calls = true;
    } else if (arg == "--redis" && i + 1 < argc) {
      o.redis = argv[++i];
    } else if (arg == "--call-ms" && i + 1 < argc) {
      o.calls.latency = std::chrono::milliseconds(number_arg(arg.data(), argv[++i], 5'000));
    } else if (arg == "--call-failure-rate" && i + 1 < argc) {
      o.calls.failure_rate = rate_arg(arg.data(), argv[++i]);
    } else if (arg == "--seed" && i + 1 < argc) {
      o.calls.seed = static_cast<std::uint64_t>(number_arg(arg.data(), argv[++i], 1LL << 62));
    } else if (arg == "--lane-limit" && i + 1 < argc) {
      o.calls.lane_options.max_in_flight =
          static_cast<std::size_t>(std::max(1LL, number_arg(arg.data(), argv[++i], 1'000'000)));
    } else if (arg == "--lane-capacity" && i + 1 < argc) {
      o.calls.lane_options.capacity =
          static_cast<std::size_t>(std::max(1LL, number_arg(arg.data(), argv[++i], 100'000'000)));
    } else if (arg == "--call-timeout-ms" && i + 1 < argc) {
      o.calls.timeout = std::chrono::milliseconds(number_arg(arg.data(), argv[++i], 3'600'000));
    } else if (arg == "--call-attempts" && i + 1 < argc) {
      o.calls.retry.max_attempts =
          static_cast<std::uint32_t>(std::max(1LL, number_arg(arg.data(), argv[++i], 100)));
    } else {
      usage();
    }
  }
  if (!o.redis.empty()) {
#if CROSSTOWN_DEMO_WITH_REDIS
    if (!o.serve) usage("--redis is for serve mode (the workers run the calls)");
#else
    usage("--redis: this build has no crosstown::redis (hiredis was not found)");
#endif
  }
  return o;
}

// Waits (demo only: polling is fine here) until `done` or the deadline.
template <class Predicate>
bool wait_for(Predicate done, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto deadline = clock_type::now() + timeout;
  while (!done()) {
    if (clock_type::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

bool settled(crosstown::runtime& rt) {
  const crosstown::metrics_snapshot m = rt.metrics();
  return m.unfinished() == 0;
}

void print_counters(const crosstown::metrics_snapshot& m, std::uint64_t abandoned = 0) {
  std::cout << "counters: " << m << "\n";
  // Balanced: every registered task is in a terminal state, or - only when shutdown gave up
  // on a task that did not return - still running and abandoned with the process.
  const bool balanced = m.unfinished() == abandoned && m.queued == 0;
  std::printf("every task accounted for: %s", balanced ? "yes" : "NO");
  if (abandoned != 0) {
    std::printf(" (%llu still running, abandoned at exit)",
                static_cast<unsigned long long>(abandoned));
  }
  std::printf("\n");
  std::fflush(stdout);
}

// What on_lost saw, summarised: counts by state and the first few names.
class lost_tally {
 public:
  void add_error() noexcept { errors_.fetch_add(1, std::memory_order_relaxed); }
  std::uint64_t errors() const noexcept { return errors_.load(); }
  void add(const crosstown::task_info& t, crosstown::task_state s) {
    std::lock_guard lock(mutex_);
    ++count_[static_cast<std::size_t>(s)];
    if (first_.size() < shown) first_.push_back(t.describe());
  }
  void print() const {
    std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < count_.size(); ++i) {
      if (count_[i] == 0) continue;
      const auto s = static_cast<crosstown::task_state>(i);
      // `running`: a task still running when shutdown gave up on it (abandoned).
      std::printf("  %s%s: %llu\n", std::string(crosstown::to_string(s)).c_str(),
                  s == crosstown::task_state::running ? " (abandoned)" : "",
                  static_cast<unsigned long long>(count_[i]));
    }
    print_names(first_, total_locked());
  }
  static void print_names(const std::vector<std::string>& names, std::uint64_t total) {
    if (names.empty()) return;
    std::printf("  first %zu:", std::min<std::size_t>(names.size(), shown));
    for (std::size_t i = 0; i < names.size() && i < shown; ++i)
      std::printf(" %s", names[i].c_str());
    if (total > shown)
      std::printf(" ... (%llu more)", static_cast<unsigned long long>(total - shown));
    std::printf("\n");
  }

 private:
  static constexpr std::size_t shown = 5;
  std::uint64_t total_locked() const {
    std::uint64_t t = 0;
    for (const auto c : count_) t += c;
    return t;
  }
  mutable std::mutex mutex_;
  // Indexed by task_state: the terminal states, and `running` for abandoned tasks.
  std::array<std::uint64_t, static_cast<std::size_t>(crosstown::last_task_state) + 1> count_{};
  std::vector<std::string> first_;
  std::atomic<std::uint64_t> errors_{0};  // failures reported to on_error (failed, timed out)
};

// Signals and the shutdown deadline, shared by the signal handler (I/O thread) and the thread
// that shuts down.
class shutdown_control {
 public:
  explicit shutdown_control(std::chrono::milliseconds deadline) : deadline_(deadline) {}

  // Arms the handler on `signals` (runs on the I/O thread): the first signal stops the server
  // gracefully, the second aborts it and makes the deadline now.
  void watch(net::signal_set& signals, demo::running_server& server) {
    signals.async_wait([this, &signals, &server](const boost::system::error_code& ec, int signal) {
      if (ec) return;
      std::lock_guard lock(mutex_);
      if (!signalled_) {
        signalled_ = true;
        until_ = clock_type::now() + deadline_;
        std::printf(
            "\nsignal %d: stop accepting, finish responses in flight, drain deferred "
            "tasks (deadline %lld ms + %lld ms margin); another signal stops at once\n",
            signal, static_cast<long long>(deadline_.count()),
            static_cast<long long>(
                std::chrono::duration_cast<std::chrono::milliseconds>(shutdown_margin).count()));
        server.stop();
      } else {
        forced_ = true;
        until_ = clock_type::now();
        std::printf("\nsignal %d again: stopping now\n", signal);
        server.abort();
      }
      std::fflush(stdout);
      changed_.notify_all();
      watch(signals, server);
    });
  }

  // Waits for the first signal.
  void wait_signalled() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return signalled_; });
  }
  clock_type::time_point until() const {
    std::lock_guard lock(mutex_);
    return until_;
  }
  bool forced() const {
    std::lock_guard lock(mutex_);
    return forced_;
  }
  // Waits until `done()` or the deadline (moved earlier by a second signal).
  template <class Done>
  bool wait_until_deadline(Done done) {
    std::unique_lock lock(mutex_);
    for (;;) {
      if (done()) return true;
      const auto limit = std::min(until_, clock_type::now() + std::chrono::milliseconds(20));
      if (clock_type::now() >= until_) return done();
      changed_.wait_until(lock, limit);
    }
  }

 private:
  const std::chrono::milliseconds deadline_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool signalled_ = false;                                        // guarded by mutex_
  bool forced_ = false;                                           // guarded by mutex_
  clock_type::time_point until_ = clock_type::time_point::max();  // guarded by mutex_
};

// After the server stopped: drains deferred work until the deadline, drops the rest, waits the
// margin for running tasks, prints the summary and the final counters. Returns the exit
// status (0: everything finished). Never returns if a task would not: exits the process.
int drain_and_report(crosstown::runtime& rt, shutdown_control& control, const lost_tally& lost) {
  const auto until = control.until();
  std::printf("draining deferred tasks...\n");
  std::fflush(stdout);
  bool complete = false;
  while (!complete) {
    const auto slice = std::min(until, clock_type::now() + std::chrono::milliseconds(50));
    complete = rt.drain(slice).complete;
    if (complete || clock_type::now() >= control.until()) break;
  }
  // Drop what is still queued. The pool abandons a task still running shortly after (it
  // cannot be stopped; it reports it to on_lost as `running`); should shutdown itself not
  // return within the margin, the process exits without it.
  auto stopped = std::async(std::launch::async, [&rt] { return rt.shutdown(clock_type::now()); });
  const bool returned = stopped.wait_for(shutdown_margin) == std::future_status::ready;
  if (returned) stopped.get();
  const crosstown::metrics_snapshot m = rt.metrics();
  if (complete) {
    std::printf("drain: complete\n");
  } else {
    std::printf("drain: INCOMPLETE at the deadline%s\n", control.forced() ? " (forced)" : "");
    lost.print();
    if (m.in_flight != 0) {
      std::printf("  still running at exit: %llu (abandoned)\n",
                  static_cast<unsigned long long>(m.in_flight));
    }
  }
  if (lost.errors() != 0) {
    std::printf("failed or timed-out tasks reported to on_error: %llu\n",
                static_cast<unsigned long long>(lost.errors()));
  }
  for (const crosstown::lane_snapshot& l : rt.lane_metrics()) {
    std::printf("lane %s: %llu admitted, %llu of them waited (%.1f ms in all), retries %llu\n",
                l.name.c_str(), static_cast<unsigned long long>(l.admitted),
                static_cast<unsigned long long>(l.waited),
                std::chrono::duration<double, std::milli>(l.waited_time).count(),
                static_cast<unsigned long long>(m.retries));
  }
  print_counters(m, m.in_flight);
  if (!returned) std::_Exit(1);  // shutdown is stuck: a thread that cannot be joined
  return complete && m.unfinished() == 0 ? 0 : 1;
}

crosstown::runtime_options runtime_options_for(const options& o, lost_tally& lost,
                                               crosstown::task_clock& clock) {
  return {.threads = 4,
          .queue_capacity = o.queue_capacity,
          .overflow = crosstown::overflow_policy::reject,
          // Failed calls are expected (--call-failure-rate): counted in the metrics, not one
          // stderr line each.
          .on_error = [&lost](const crosstown::task_failure&) { lost.add_error(); },
          // Counted and summarised at the end, not one stderr line per task.
          .on_lost = [&lost](const crosstown::task_info& t,
                             crosstown::task_state s) { lost.add(t, s); },
          .clock = &clock};
}

// How POST /calls places its calls: awaitable tasks in the lane (default) or blocking ones.
std::unique_ptr<demo::call_placer> make_placer(const options& o, crosstown::runtime& rt,
                                               crosstown::task_clock& clock) {
#if CROSSTOWN_DEMO_WITH_REDIS
  if (!o.redis.empty()) {
    try {
      return std::make_unique<demo::redis_call_placer>(rt, o.redis, o.calls.latency);
    } catch (const std::invalid_argument& e) {
      std::fprintf(stderr, "crosstown-demo: --redis: %s\n", e.what());
      std::exit(2);
    }
  }
#endif
  if (o.blocking_calls) return std::make_unique<demo::blocking_call_placer>(rt, o.calls.latency);
  return std::make_unique<demo::awaitable_call_placer>(rt, clock, o.calls);
}

const char* calls_description(const options& o) {
  if (!o.redis.empty()) return "durable calls handed to Redis Streams";
  return o.blocking_calls ? "blocking calls on the pool" : "awaitable calls in lane telephony";
}

void observe(demo::calls_app& app, const demo::running_server& server) {
  app.observe([&server] {
    const demo::server_status s = server.status();
    return demo::server_counters{s.requests, s.bad_requests};
  });
}

int serve(const options& o) {
  lost_tally lost;
  crosstown::steady_task_clock clock;  // outlives the runtime's calls
  crosstown::runtime rt(runtime_options_for(o, lost, clock));
  const auto placer = make_placer(o, rt, clock);
  demo::calls_app app(rt, *placer);
  demo::serve_settings settings = o.server;
  settings.port = o.port;
  settings.coroutine = o.coroutine;
  settings.stop_grace = std::min(settings.stop_grace.value_or(std::chrono::seconds(5)),
                                 std::chrono::milliseconds(o.deadline / 2));
  const auto server = demo::start_server(o.kind, rt, app, settings);
  observe(app, *server);
  net::io_context signal_io;
  net::signal_set signals(signal_io, SIGINT, SIGTERM);
  shutdown_control control(o.deadline);
  control.watch(signals, *server);
  const unsigned port = server->port();
  std::printf(
      "crosstown-demo serving on http://127.0.0.1:%u (%s%s, %s); Ctrl-C to stop\n"
      "listening on 127.0.0.1:%u\n"
      // cpp-httplib answers 400 to a POST without Content-Length: -d '' sends one.
      "  curl -X POST -d '' 'http://127.0.0.1:%u/calls?n=100'\n"
      "  curl http://127.0.0.1:%u/missing\n"
      "  curl http://127.0.0.1:%u/metrics\n",
      port, std::string(demo::to_string(o.kind)).c_str(),
      o.kind != demo::server_kind::beast
          ? ""
          : (o.coroutine ? ", coroutine sessions" : ", callback sessions"),
      calls_description(o), port, port, port, port);
  std::fflush(stdout);
  std::thread signal_thread([&signal_io] { signal_io.run(); });
  control.wait_signalled();
  // The server's connections end within its grace (or at once on a second signal).
  control.wait_until_deadline([&] { return server->status().active_connections == 0; });
  const int status = drain_and_report(rt, control, lost);
  net::post(signal_io, [&signals] { signals.cancel(); });
  signal_thread.join();
  return status;
}

struct check {
  bool ok = true;
  void require(bool condition, const char* what) {
    if (!condition) {
      std::printf("  FAILED: %s\n", what);
      ok = false;
    }
  }
};

double percentile(std::vector<double>& sorted, double p) {
  const auto at = static_cast<std::size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(at, sorted.size() - 1)];
}

// Measures "first task started" minus "last byte written" over n requests.
void measure_gap(unsigned short port, demo::calls_app& app, crosstown::runtime& rt, int n,
                 check& c) {
  constexpr int connections = 16;
  std::vector<std::thread> threads;
  for (int t = 0; t < connections; ++t) {
    threads.emplace_back([&, t] {
      demo::http_client cl(port);
      for (int i = t; i < n; i += connections) {
        cl.send("POST", "/calls?n=1&us=0", "gap-" + std::to_string(i));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  c.require(wait_for([&] { return settled(rt); }), "gap-run tasks finished");

  std::vector<double> gaps_us;
  int early = 0;
  for (int i = 0; i < n; ++i) {
    auto x = app.find("gap-" + std::to_string(i));
    if (!x || x->started.load() != 1) continue;
    const std::int64_t gap = x->first_task_ns.load() - demo::last_write_ns(*x);
    if (gap < 0) ++early;
    gaps_us.push_back(static_cast<double>(gap) / 1e3);
  }
  c.require(gaps_us.size() == static_cast<std::size_t>(n), "every gap-run task ran");
  c.require(early == 0, "no task started before its response's last byte was written");
  if (gaps_us.empty()) return;
  std::sort(gaps_us.begin(), gaps_us.end());
  std::printf(
      "\nlast byte written -> first task started, %d requests on %d keep-alive connections:\n"
      "  median %.1f us   p99 %.1f us   max %.1f us   (started early: %d)\n",
      n, connections, percentile(gaps_us, 0.5), percentile(gaps_us, 0.99), gaps_us.back(), early);
}

int run_client(const options& o) {
  lost_tally lost;
  crosstown::steady_task_clock clock;  // outlives the runtime's calls
  crosstown::runtime rt(runtime_options_for(o, lost, clock));
  const auto placer = make_placer(o, rt, clock);
  demo::calls_app app(rt, *placer);
  demo::serve_settings settings = o.server;
  settings.coroutine = o.coroutine;
  // The timeline reads the Beast transport's write records: the client mode runs Beast.
  const auto server = demo::start_server(demo::server_kind::beast, rt, app, settings);
  observe(app, *server);
  net::io_context signal_io;
  net::signal_set signals(signal_io, SIGINT, SIGTERM);
  shutdown_control control(o.deadline);
  control.watch(signals, *server);
  std::thread signal_thread([&signal_io] { signal_io.run(); });
  const unsigned short port = server->port();

  std::printf(
      "crosstown-demo: server on 127.0.0.1:%u (beast, %s sessions, %s), client in the same "
      "process\n\n",
      port, o.coroutine ? "coroutine" : "callback", calls_description(o));
  check c;
  {
    demo::http_client cl(port);

    // 1. POST /calls?n=100: 202 at once, 100 calls after the last byte.
    const auto res = cl.send("POST", "/calls?n=100", "calls");
    const auto received_ns = demo::steady_now_ns();
    auto x = app.find("calls");
    c.require(res.status == 202 && x != nullptr, "POST /calls answered 202");
    if (x) {
      c.require(wait_for([&] { return x->started.load() == 100; }), "100 calls started");
      const std::int64_t written = demo::last_write_ns(*x);
      std::printf("POST /calls?n=100  -> %d\n", res.status);
      std::printf(
          "  t=%9.3f ms  server: write of the response's last byte completed (%llu "
          "bytes)\n",
          ms_at(written), static_cast<unsigned long long>(demo::bytes_written(*x)));
      std::printf(
          "  t=%9.3f ms  client: has read the whole response (may precede the line "
          "above: the kernel hands the bytes over before the server's completion runs)\n",
          ms_at(received_ns));
      std::printf("  t=%9.3f ms  first deferred call started (t+%.3f ms after the last byte)\n",
                  ms_at(x->first_task_ns.load()),
                  static_cast<double>(x->first_task_ns.load() - written) / 1e6);
      std::printf("               %d of 100 calls ran, none before the last byte\n\n",
                  x->started.load());
      c.require(x->first_task_ns.load() >= written, "calls started after the last byte");
    }
    c.require(wait_for([&] { return settled(rt); }), "calls settled");

    // 2. GET /missing: 404, deferred work skipped.
    const auto before = rt.metrics();
    const auto missing = cl.send("GET", "/missing", "missing");
    c.require(wait_for([&] { return settled(rt) && rt.metrics().registered > before.registered; }),
              "404 settled");
    const auto after = rt.metrics();
    std::printf(
        "GET /missing       -> %d   %llu deferred task skipped by status, %llu ran\n",
        missing.status,
        static_cast<unsigned long long>(after.count(crosstown::task_state::skipped_by_status) -
                                        before.count(crosstown::task_state::skipped_by_status)),
        static_cast<unsigned long long>(after.count(crosstown::task_state::ran) -
                                        before.count(crosstown::task_state::ran)));
    c.require(
        missing.status == 404 &&
            after.count(crosstown::task_state::ran) == before.count(crosstown::task_state::ran) &&
            after.count(crosstown::task_state::skipped_by_status) ==
                before.count(crosstown::task_state::skipped_by_status) + 1,
        "404 skipped its task");

    // 3. POST /audit: 500, the `always` task runs, the default one is skipped.
    const auto audit = cl.send("POST", "/audit", "audit");
    auto ax = app.find("audit");
    c.require(ax && wait_for([&] { return ax->started.load() == 1 && settled(rt); }),
              "audit task ran");
    std::printf("POST /audit        -> %d   `always` audit task ran; default task skipped\n",
                audit.status);

    // 4. GET /moved: 302 with a custom no-go spec.
    const auto before_moved = rt.metrics();
    const auto moved = cl.send("GET", "/moved", "moved");
    auto mx = app.find("moved");
    c.require(mx && wait_for([&] {
                return mx->started.load() == 1 && settled(rt) &&
                       rt.metrics().registered == before_moved.registered + 2;
              }),
              "302: default task ran");
    c.require(rt.metrics().count(crosstown::task_state::skipped_by_status) ==
                  before_moved.count(crosstown::task_state::skipped_by_status) + 1,
              "302: custom no-go task skipped");
    std::printf(
        "GET /moved         -> %d   task with no-go \"5xx,400-405,302\" skipped; "
        "default task ran\n",
        moved.status);

    // 5. GET /stream: chunked, written with a serializer.
    const auto stream = cl.send("GET", "/stream", "stream");
    auto sx = app.find("stream");
    c.require(sx && wait_for([&] { return sx->started.load() == 2; }), "stream tasks ran");
    std::printf(
        "GET /stream        -> %d   chunked %zu bytes; headers-phase and "
        "response-phase tasks ran\n",
        stream.status, stream.body.size());

    // 6. A malformed request: 400, no deferred work.
    const auto before_bad = rt.metrics();
    demo::http_client raw(port);
    const auto bad = raw.send_raw("GARBAGE / HTTP/1.1\r\nHost x\r\n\r\n");
    std::printf("malformed request  -> %d   tasks registered for it: %llu\n", bad.status,
                static_cast<unsigned long long>(rt.metrics().registered - before_bad.registered));
    c.require(bad.status == 400 && rt.metrics().registered == before_bad.registered,
              "malformed request: 400, nothing deferred");

    // 7. GET /metrics.
    const auto metrics = cl.send("GET", "/metrics", "metrics");
    std::printf("GET /metrics       -> %d   (Prometheus text; first lines:)\n", metrics.status);
    const std::string& body = metrics.body;
    std::size_t shown = 0;
    for (std::size_t at = 0; at < body.size() && shown < 6;) {
      const std::size_t end = body.find('\n', at);
      const std::string line = body.substr(at, end - at);
      if (line.rfind('#', 0) != 0) {
        std::printf("    %s\n", line.c_str());
        ++shown;
      }
      at = end == std::string::npos ? body.size() : end + 1;
    }
  }

  measure_gap(port, app, rt, o.requests, c);

  std::printf("\nshutting down gracefully (SIGTERM)\n");
  std::fflush(stdout);
  std::raise(SIGTERM);
  control.wait_signalled();
  control.wait_until_deadline([&] { return server->status().active_connections == 0; });
  const demo::server_status s = server->status();
  std::printf("server: %llu connections, %llu requests, %llu bad requests\n",
              static_cast<unsigned long long>(s.connections),
              static_cast<unsigned long long>(s.requests),
              static_cast<unsigned long long>(s.bad_requests));
  const bool drained = drain_and_report(rt, control, lost) == 0;
  net::post(signal_io, [&signals] { signals.cancel(); });
  signal_thread.join();
  std::printf("%s\n", c.ok && drained ? "demo: OK" : "demo: FAILED");
  return c.ok && drained ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const options o = parse(argc, argv);
    return o.serve ? serve(o) : run_client(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "crosstown-demo: %s\n", e.what());
    return 1;
  }
}
