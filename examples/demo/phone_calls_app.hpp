// phone_calls_app.hpp - the demo application: hendrix's phone-calls example in C++.
//
// Endpoints (any other target is a 404; a known target with another method is a 405 with
// `Allow`; GET targets also answer HEAD):
//   POST /calls?n=100  202 at once; defers n simulated phone calls on the runtime's pool
//                      (`&us=500`: each call takes 500 us instead of the default).
//                      n: decimal 0..`max_calls` [10,000] (default 100), us: decimal
//                      0..`max_call_us` [5 s]; anything else - a sign, hex, an exponent, an
//                      empty value, a repeated or unknown parameter - is a 400 naming the
//                      parameter, a value over its bound a 413; either defers nothing. When
//                      the runtime cannot take the work (`runtime::accepting()` false:
//                      pool full or shut down) the answer is 503 with Retry-After, nothing
//                      deferred.
//   GET  /missing      404; the visit log it deferred is skipped (default no-go 4xx,5xx)
//   POST /audit        500; an `always` audit task runs, a default task is skipped
//   GET  /moved        302; a task with the custom no-go "5xx,400-405,302" is skipped, a
//                      default task (302 is not in 4xx,5xx) runs
//   GET  /stream       200, chunked: a headers-phase task and a response-phase task
//   GET  /metrics      the runtime's counters in Prometheus text format
//
// A request may carry `X-Request-Id`; the app then keeps an `exchange` for it - what the
// transport accepted of the response and when its tasks started - for the demo's timeline.
// At most `max_records` [1024] are kept; the oldest is forgotten first (counted in
// `records_evicted()`), so distinct ids cannot grow memory without bound.
//
// Each endpoint is one small function taking the request's context; the calls themselves
// are `place_call` tasks deferred on the scope.
// Thread-safe: the handler runs on the server's I/O thread, the tasks on the pool.
#pragma once

#include "demo_server.hpp"

#include <crosstown/crosstown.hpp>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>

namespace crosstown_demo {

/// One request as the app saw it.
struct exchange {
  std::string target;
  std::atomic<int> status{0};    ///< set before the response is written
  std::atomic<int> deferred{0};  ///< tasks the handler deferred
  std::shared_ptr<const write_record> written;
  std::atomic<std::int64_t> first_task_ns{0};  ///< steady-clock ns; 0: no task started
  std::atomic<int> started{0};                 ///< tasks started

  void task_started() noexcept {
    std::int64_t unset = 0;
    first_task_ns.compare_exchange_strong(unset, now_ns());
    started.fetch_add(1);
  }
};

/// The runtime's counters (and the server's) in Prometheus text exposition format.
inline std::string prometheus_text(const crosstown::metrics_snapshot& m, const server_stats& s) {
  std::ostringstream out;
  out << crosstown::to_prometheus(m)
      << "# HELP crosstown_demo_requests_total Requests handled.\n"
         "# TYPE crosstown_demo_requests_total counter\n"
         "crosstown_demo_requests_total "
      << s.requests << "\n"
      << "# HELP crosstown_demo_bad_requests_total Malformed requests answered with 400.\n"
         "# TYPE crosstown_demo_bad_requests_total counter\n"
         "crosstown_demo_bad_requests_total "
      << s.bad_requests << "\n";
  return out.str();
}

/// The app's bounds on its input and its memory.
struct app_limits {
  /// Most calls one POST /calls may defer (beyond: 413).
  std::uint32_t max_calls = 10'000;
  /// Longest simulated call, in microseconds (beyond: 413).
  std::uint32_t max_call_us = 5'000'000;
  /// Most `X-Request-Id` records kept; the oldest goes first.
  std::size_t max_records = 1024;
};

/// A query string's parameters, parsed strictly: `key=value` items separated by `&`, each
/// key once. `error` names what was wrong.
struct query_params {
  std::map<std::string, std::string, std::less<>> values;
  std::string error;

  static query_params parse(std::string_view target) {
    query_params q;
    const auto at = target.find('?');
    if (at == std::string_view::npos) return q;
    std::string_view rest = target.substr(at + 1);
    while (!rest.empty()) {
      const auto amp = rest.find('&');
      const std::string_view item = rest.substr(0, amp);
      rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
      if (item.empty()) continue;
      const auto eq = item.find('=');
      const std::string key(item.substr(0, eq));
      if (q.values.count(key) != 0) {
        q.error = "query parameter " + key + " given twice";
        return q;
      }
      q.values[key] =
          eq == std::string_view::npos ? std::string{} : std::string(item.substr(eq + 1));
    }
    return q;
  }
};

/// Why a number from the query was refused.
enum class number_error : std::uint8_t { none, invalid, too_large };

/// A decimal number 0..max, digits only (no sign, hex, exponent or spaces).
inline number_error parse_bounded(std::string_view text, std::uint64_t max, std::uint64_t& out) {
  if (text.empty() || text.size() > 19) {
    return text.empty() ? number_error::invalid
                        : (text.find_first_not_of("0123456789") == std::string_view::npos
                               ? number_error::too_large
                               : number_error::invalid);
  }
  std::uint64_t value = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return number_error::invalid;
    value = value * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (value > max) return number_error::too_large;
  out = value;
  return number_error::none;
}

class phone_calls_app {
 public:
  /// `call_duration`: how long one simulated call keeps a pool thread busy.
  explicit phone_calls_app(crosstown::runtime& rt,
                           std::chrono::microseconds call_duration = std::chrono::milliseconds(2),
                           app_limits limits = {})
      : rt_(rt), call_duration_(call_duration), limits_(limits) {}

  const app_limits& limits() const noexcept { return limits_; }
  /// Records forgotten to keep at most `max_records`.
  std::uint64_t records_evicted() const {
    std::lock_guard lock(mutex_);
    return evicted_;
  }
  /// Records kept now.
  std::size_t records() const {
    std::lock_guard lock(mutex_);
    return exchanges_.size();
  }
  /// POST /calls answered 503 because the runtime could not take the work.
  std::uint64_t refused_busy() const noexcept { return refused_busy_.load(); }

  /// Lets /metrics include the server's counters.
  void observe(const server* s) { server_.store(s); }

  /// The handler, for `server`.
  response_type operator()(request_context& context) {
    const request_type& req = context.request;
    const std::string_view target = req.target();
    const std::string_view path = target.substr(0, target.find('?'));
    const http::verb method = req.method();
    const bool get = method == http::verb::get || method == http::verb::head;

    if (path == "/calls")
      return method == http::verb::post ? calls(context) : not_allowed(req, "POST");
    if (path == "/audit")
      return method == http::verb::post ? audit(context) : not_allowed(req, "POST");
    if (path == "/moved") return get ? moved(context) : not_allowed(req, "GET, HEAD");
    if (path == "/stream") return get ? stream(context) : not_allowed(req, "GET, HEAD");
    if (path == "/metrics") return get ? metrics(context) : not_allowed(req, "GET, HEAD");
    return missing(context);
  }

  /// The exchange recorded for `X-Request-Id: id`, if any.
  std::shared_ptr<const exchange> find(const std::string& id) const {
    std::lock_guard lock(mutex_);
    auto it = exchanges_.find(id);
    return it == exchanges_.end() ? nullptr : it->second;
  }

 private:
  // POST /calls?n=100[&us=500]
  response_type calls(request_context& context) {
    const request_type& req = context.request;
    const query_params q = query_params::parse(req.target());
    if (!q.error.empty()) return refuse(req, http::status::bad_request, q.error);
    std::uint64_t n = 100;
    auto pause = static_cast<std::uint64_t>(call_duration_.count());
    for (const auto& [key, value] : q.values) {
      std::uint64_t* out = key == "n" ? &n : key == "us" ? &pause : nullptr;
      if (out == nullptr) {
        return refuse(req, http::status::bad_request, "unknown query parameter " + key);
      }
      const std::uint64_t max = key == "n" ? limits_.max_calls : limits_.max_call_us;
      switch (parse_bounded(value, max, *out)) {
        case number_error::none: break;
        case number_error::invalid:
          return refuse(req, http::status::bad_request,
                        "query parameter " + key + " must be a decimal number 0-" +
                            std::to_string(max) + ", got \"" + value + "\"");
        case number_error::too_large:
          return refuse(req, http::status::payload_too_large,
                        "query parameter " + key + " is over its limit of " + std::to_string(max) +
                            ", got " + value);
      }
    }
    // Admission: a runtime that cannot take the work gets none (the client may retry).
    if (!rt_.accepting()) {
      refused_busy_.fetch_add(1, std::memory_order_relaxed);
      response_type res = text_response(req, http::status::service_unavailable,
                                        "busy: deferred work is backed up, retry later\n");
      res.set(http::field::retry_after, "1");
      return res;
    }
    auto record = track(context);
    const std::chrono::microseconds us(pause);
    for (std::uint64_t i = 0; i < n; ++i) {
      context.scope.defer([record, us] {
        if (record) record->task_started();
        place_call(us);
      });
    }
    return finish(
        record, static_cast<int>(n),
        text_response(req, http::status::accepted, "queued " + std::to_string(n) + " calls\n"));
  }

  // POST /audit: 500; an `always` audit task runs, a default one is skipped.
  response_type audit(request_context& context) {
    auto record = track(context);
    context.scope.defer(started(record), {.always = true, .name = "audit"});
    context.scope.defer(started(record));
    return finish(
        record, 2,
        text_response(context.request, http::status::internal_server_error, "audit failed\n"));
  }

  // GET /moved: 302 with a custom no-go spec.
  response_type moved(request_context& context) {
    auto record = track(context);
    context.scope.defer(started(record), {.no_go = "5xx,400-405,302"});
    context.scope.defer(started(record));
    response_type res = text_response(context.request, http::status::found, "moved to /calls\n");
    res.set(http::field::location, "/calls");
    return finish(record, 2, std::move(res));
  }

  // GET /stream: chunked; a headers-phase and a response-phase task.
  response_type stream(request_context& context) {
    auto record = track(context);
    context.scope.defer(started(record), {.phase = crosstown::task_phase::headers_sent});
    context.scope.defer(started(record));
    response_type res =
        text_response(context.request, http::status::ok, std::string(64 * 1024, 's'));
    res.chunked(true);
    return finish(record, 2, std::move(res));
  }

  // GET /metrics
  response_type metrics(request_context& context) {
    auto record = track(context);
    const server* s = server_.load();
    response_type res =
        text_response(context.request, http::status::ok,
                      prometheus_text(rt_.metrics(), s ? s->stats() : server_stats{}));
    res.set(http::field::content_type, "text/plain; version=0.0.4");
    return finish(record, 0, std::move(res));
  }

  // Anything else: deferred before the handler finds out there is nothing here, so skipped
  // by the 404.
  response_type missing(request_context& context) {
    auto record = track(context);
    context.scope.defer(started(record), {.name = "visit-log"});
    return finish(record, 1,
                  text_response(context.request, http::status::not_found, "not found\n"));
  }

  static response_type not_allowed(const request_type& req, std::string_view allow) {
    response_type res = text_response(req, http::status::method_not_allowed,
                                      "method not allowed; allowed: " + std::string(allow) + "\n");
    res.set(http::field::allow, allow);
    return res;
  }

  static response_type refuse(const request_type& req, http::status status,
                              const std::string& why) {
    return text_response(req, status, why + "\n");
  }

  static crosstown::task started(const std::shared_ptr<exchange>& record) {
    return [record] {
      if (record) record->task_started();
    };
  }

  static void place_call(std::chrono::microseconds pause) {
    // Stands in for a call to a telephony API. A wait inside a task is fine in a demo.
    if (pause.count() > 0) std::this_thread::sleep_for(pause);
  }

  std::shared_ptr<exchange> track(request_context& context) {
    const auto id = context.request.find("X-Request-Id");
    if (id == context.request.end()) return nullptr;
    auto record = std::make_shared<exchange>();
    record->target = std::string(context.request.target());
    record->written = context.written;
    std::shared_ptr<exchange> forgotten;  // destroyed outside the lock
    std::lock_guard lock(mutex_);
    auto [it, added] = exchanges_.insert_or_assign(std::string(id->value()), record);
    if (added) {
      order_.push_back(it->first);
      if (exchanges_.size() > limits_.max_records) {
        auto oldest = exchanges_.find(order_.front());
        forgotten = std::move(oldest->second);
        exchanges_.erase(oldest);
        order_.pop_front();
        ++evicted_;
      }
    }
    return record;
  }

  static response_type finish(const std::shared_ptr<exchange>& record, int deferred,
                              response_type res) {
    if (record) {
      record->status = res.result_int();
      record->deferred = deferred;
    }
    return res;
  }

  crosstown::runtime& rt_;
  const std::chrono::microseconds call_duration_;
  const app_limits limits_;
  std::atomic<const server*> server_{nullptr};
  std::atomic<std::uint64_t> refused_busy_{0};
  mutable std::mutex mutex_;
  std::map<std::string, std::shared_ptr<exchange>> exchanges_;  // guarded by mutex_
  std::deque<std::string> order_;                               // insertion order; mutex_
  std::uint64_t evicted_ = 0;                                   // guarded by mutex_
};

}  // namespace crosstown_demo
