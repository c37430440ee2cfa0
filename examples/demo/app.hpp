// app.hpp - the demo application: hendrix's phone-calls example, independent of any server.
//
// The app sees a neutral request (method, target, headers) and answers a neutral response
// (status, headers, body, chunked flag); it defers work on the request's
// `crosstown::response_scope&`, which the server's adapter created and reports to. The
// servers (servers.hpp: Boost.Beast, RESTinio, cpp-httplib) translate to and from their own
// types; `phone_calls_app.hpp` is the Beast handler used by demo_server.hpp.
//
// Endpoints (any other target is a 404; a known target with another method is a 405 with
// `Allow`; GET targets also answer HEAD):
//   POST /calls?n=100  202 at once; places n simulated phone calls through the app's
//                      `call_placer` (`&ms=2`: each call takes 2 ms; `&us=500`: 500 us; the
//                      default is the placer's). n: decimal 0..`max_calls` [10,000]
//                      (default 100), ms: 0..`max_call_us`/1000, us: 0..`max_call_us` [5 s];
//                      ms and us together, a sign, hex, an exponent, an empty value, a
//                      repeated or unknown parameter are a 400 naming the parameter, a value
//                      over its bound a 413; either defers nothing. When the placer cannot
//                      take the calls (`call_placer::admits` false: runtime full or shut
//                      down, lane full) the answer is 503 with Retry-After, nothing deferred.
//   GET  /missing      404; the visit log it deferred is skipped (default no-go 4xx,5xx)
//   POST /audit        500; an `always` audit task runs, a default task is skipped
//   GET  /moved        302; a task with the custom no-go "5xx,400-405,302" is skipped, a
//                      default task (302 is not in 4xx,5xx) runs
//   GET  /stream       200, chunked: a headers-phase task and a response-phase task
//   GET  /metrics      the runtime's, the lanes' and the app's counters in Prometheus text
//
// Placing calls (`call_placer`, the seam where `--redis` hands calls elsewhere):
//   - `awaitable_call_placer` (the default): each call is an awaitable task - an async wait of
//     its latency on the task clock, failing with probability `failure_rate` (seeded,
//     deterministic for one sequence of attempts) - in the lane `telephony`
//     (`max_in_flight` [100] running, `capacity` [50,000] waiting), with a per-attempt
//     `timeout` [2 s] and a retry policy [3 attempts, backoff 100 ms doubling to 2 s, jitter
//     0.5, every failure retried]. It admits a request while the runtime accepts work and the
//     lane has room for all its calls, so what waits is bounded by the lane's capacity.
//   - `blocking_call_placer` (`--blocking-calls`): each call sleeps on a pool thread, as the
//     demo did before; admitted while `runtime::accepting()`.
//
// A request may carry `X-Request-Id`; the app then keeps an `exchange` for it - what the
// transport accepted of the response and when its calls started - for the demo's timeline.
// At most `max_records` [1024] are kept; the oldest is forgotten first (counted in
// `records_evicted()`), so distinct ids cannot grow memory without bound.
//
// Thread-safe: handlers run on the servers' threads, calls on the pool or the I/O executor.
// The placer, its clock and the app must outlive the runtime's tasks (declare them first).
#pragma once

#include <crosstown/crosstown.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace crosstown_demo {

struct write_record;  // demo_server.hpp: what the Beast transport accepted of a response

/// Steady-clock nanoseconds since its epoch (the clock demo_server.hpp records writes on).
std::int64_t steady_now_ns() noexcept;

/// A request as the app sees it, whatever the server.
struct app_request {
  std::string method;  ///< "GET", "POST", ...
  std::string target;  ///< path and query
  std::vector<std::pair<std::string, std::string>> headers;
  /// The first header named `name` (case-insensitive), null if none.
  const std::string* header(std::string_view name) const;
};

/// The app's answer, translated by the server's glue.
struct app_response {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool chunked = false;  ///< stream it: header first, then the body in chunks
  /// The first header named `name` (case-insensitive), empty if none.
  std::string header(std::string_view name) const;
};

/// One request as the app saw it.
struct exchange {
  std::string target;
  std::atomic<int> status{0};    ///< set before the response is written
  std::atomic<int> deferred{0};  ///< tasks the handler deferred
  /// The Beast transport's progress on the response (null on other servers).
  std::shared_ptr<const write_record> written;
  std::atomic<std::int64_t> first_task_ns{0};  ///< steady-clock ns; 0: no task started
  std::atomic<int> started{0};                 ///< tasks started (a retried call once)

  void task_started() noexcept;
};

/// The app's bounds on its input and its memory.
struct app_limits {
  /// Most calls one POST /calls may defer (beyond: 413).
  std::uint32_t max_calls = 10'000;
  /// Longest simulated call, in microseconds (beyond: 413).
  std::uint32_t max_call_us = 5'000'000;
  /// Most `X-Request-Id` records kept; the oldest goes first.
  std::size_t max_records = 1024;
};

/// What one POST /calls asks of each call.
struct call_params {
  /// Simulated latency; negative: the placer's default.
  std::chrono::microseconds latency{-1};
  /// Called when a call starts (its first attempt); may be empty.
  std::function<void()> on_start{};
};

/// Places a request's calls on its scope. The seam for other back ends (e.g. Redis).
class call_placer {
 public:
  virtual ~call_placer() = default;
  /// Whether `n` more calls can be taken now (false: the app answers 503). Advisory.
  virtual bool admits(std::uint64_t n) const = 0;
  /// Defers `n` calls on `scope`; none starts before the response went out.
  virtual void place(crosstown::response_scope& scope, std::uint64_t n,
                     const call_params& params) = 0;
  /// Extra Prometheus text for /metrics (the placer's own counters); may be empty.
  virtual std::string prometheus() const { return {}; }
};

/// A deterministic stream of "does this attempt fail?" draws: attempt k fails when
/// splitmix64(seed + k) / 2^64 < rate. The same seed and order give the same outcomes.
class failure_draw {
 public:
  explicit failure_draw(double rate = 0, std::uint64_t seed = 1) noexcept
      : rate_(rate), seed_(seed) {}
  /// The k-th draw (0-based), without advancing.
  bool fails_at(std::uint64_t k) const noexcept;
  /// The next draw. Thread-safe.
  bool next() noexcept { return fails_at(drawn_.fetch_add(1, std::memory_order_relaxed)); }
  double rate() const noexcept { return rate_; }

 private:
  double rate_;
  std::uint64_t seed_;
  std::atomic<std::uint64_t> drawn_{0};
};

/// What a simulated call throws when its draw says it fails.
class call_failed : public std::runtime_error {
 public:
  call_failed() : std::runtime_error("simulated telephony API failure") {}
};

struct awaitable_call_settings {
  std::chrono::microseconds latency = std::chrono::milliseconds(2);  ///< default per call
  std::string lane = "telephony";
  crosstown::lane_options lane_options{.max_in_flight = 100, .capacity = 50'000};
  std::chrono::nanoseconds timeout = std::chrono::seconds(2);  ///< per attempt; 0: none
  crosstown::retry_policy retry{.max_attempts = 3,
                                .base = std::chrono::milliseconds(100),
                                .cap = std::chrono::seconds(2),
                                .jitter = 0.5,
                                .retry_if = {}};
  double failure_rate = 0;  ///< 0..1, per attempt
  std::uint64_t seed = 1;
};

/// Calls as awaitable tasks in a lane, with a timeout and retries (see the top).
class awaitable_call_placer final : public call_placer {
 public:
  /// `clock`: what calls wait on - the runtime's task clock (runtime_options::clock, or the
  /// test's manual clock). Throws std::invalid_argument for a failure rate outside 0..1.
  awaitable_call_placer(crosstown::runtime& rt, crosstown::task_clock& clock,
                        awaitable_call_settings settings = {});

  bool admits(std::uint64_t n) const override;
  void place(crosstown::response_scope& scope, std::uint64_t n, const call_params& params) override;
  std::string prometheus() const override;

  const awaitable_call_settings& settings() const noexcept { return settings_; }
  crosstown::lane lane() const noexcept { return lane_; }
  std::uint64_t attempts() const noexcept { return stats_->attempts.load(); }
  std::uint64_t failed_attempts() const noexcept { return stats_->failures.load(); }

  struct stats {
    std::atomic<std::uint64_t> attempts{0};
    std::atomic<std::uint64_t> failures{0};  ///< attempts the draw failed
    failure_draw draw;
    explicit stats(double rate, std::uint64_t seed) : draw(rate, seed) {}
  };

 private:
  crosstown::runtime& rt_;
  crosstown::task_clock& clock_;
  const awaitable_call_settings settings_;
  crosstown::lane lane_;
  std::shared_ptr<stats> stats_;  // shared with the calls in flight
};

/// Calls as blocking tasks on the runtime's pool, each sleeping through its latency.
class blocking_call_placer final : public call_placer {
 public:
  explicit blocking_call_placer(crosstown::runtime& rt,
                                std::chrono::microseconds latency = std::chrono::milliseconds(2))
      : rt_(rt), latency_(latency) {}
  bool admits(std::uint64_t n) const override;
  void place(crosstown::response_scope& scope, std::uint64_t n, const call_params& params) override;

 private:
  crosstown::runtime& rt_;
  std::chrono::microseconds latency_;
};

/// The server's own counters, for /metrics.
struct server_counters {
  std::uint64_t requests = 0;
  std::uint64_t bad_requests = 0;
};

/// The phone-calls app, server-independent.
class calls_app {
 public:
  calls_app(crosstown::runtime& rt, call_placer& placer, app_limits limits = {});

  /// Handles one request: builds the response and defers work on `scope`. `written`: the
  /// transport's record of this response, kept in its exchange (null when the server has
  /// none).
  app_response handle(const app_request& request, crosstown::response_scope& scope,
                      std::shared_ptr<const write_record> written = nullptr);

  const app_limits& limits() const noexcept { return limits_; }
  /// Records forgotten to keep at most `max_records`.
  std::uint64_t records_evicted() const;
  /// Records kept now.
  std::size_t records() const;
  /// POST /calls answered 503 because the placer could not take the calls.
  std::uint64_t refused_busy() const noexcept { return refused_busy_.load(); }
  /// The exchange recorded for `X-Request-Id: id`, if any.
  std::shared_ptr<const exchange> find(const std::string& id) const;
  /// Lets /metrics include the server's counters (empty: none). Set before serving.
  void observe(std::function<server_counters()> counters) { counters_ = std::move(counters); }

 private:
  app_response calls(const app_request& req, crosstown::response_scope& scope,
                     std::shared_ptr<const write_record> written);
  app_response metrics() const;
  std::shared_ptr<exchange> track(const app_request& req,
                                  std::shared_ptr<const write_record> written);

  crosstown::runtime& rt_;
  call_placer& placer_;
  const app_limits limits_;
  std::function<server_counters()> counters_;
  std::atomic<std::uint64_t> refused_busy_{0};
  mutable std::mutex mutex_;
  std::map<std::string, std::shared_ptr<exchange>> exchanges_;  // guarded by mutex_
  std::deque<std::string> order_;                               // insertion order; mutex_
  std::uint64_t evicted_ = 0;                                   // guarded by mutex_
};

}  // namespace crosstown_demo
