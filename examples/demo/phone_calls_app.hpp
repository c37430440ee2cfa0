// phone_calls_app.hpp - the demo application: hendrix's phone-calls example in C++.
//
// Endpoints (any other target is a 404):
//   POST /calls?n=100  202 at once; defers n simulated phone calls on the runtime's pool
//                      (`&us=500`: each call takes 500 us instead of the default)
//   GET  /missing      404; the visit log it deferred is skipped (default no-go 4xx,5xx)
//   POST /audit        500; an `always` audit task runs, a default task is skipped
//   GET  /moved        302; a task with the custom no-go "5xx,400-405,302" is skipped, a
//                      default task (302 is not in 4xx,5xx) runs
//   GET  /stream       200, chunked: a headers-phase task and a response-phase task
//   GET  /metrics      the runtime's counters in Prometheus text format
//
// A request may carry `X-Request-Id`; the app then keeps an `exchange` for it - what the
// transport accepted of the response and when its tasks started - for the demo's timeline.
// Thread-safe: the handler runs on the server's I/O thread, the tasks on the pool.
#pragma once

#include "demo_server.hpp"

#include <crosstown/crosstown.hpp>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
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

class phone_calls_app {
 public:
  /// `call_duration`: how long one simulated call keeps a pool thread busy.
  explicit phone_calls_app(crosstown::runtime& rt,
                           std::chrono::microseconds call_duration = std::chrono::milliseconds(2))
      : rt_(rt), call_duration_(call_duration) {}

  /// Lets /metrics include the server's counters.
  void observe(const server* s) { server_.store(s); }

  /// The handler, for `server`.
  response_type operator()(request_context& context) {
    const request_type& req = context.request;
    const std::string_view target = req.target();
    const std::string_view path = target.substr(0, target.find('?'));
    auto record = track(context);

    if (req.method() == http::verb::post && path == "/calls") {
      const int n = query_int(target, "n", 100);
      const std::chrono::microseconds pause(
          query_int(target, "us", static_cast<int>(call_duration_.count())));
      for (int i = 0; i < n; ++i) {
        context.scope.defer([record, pause] {
          if (record) record->task_started();
          place_call(pause);
        });
      }
      return finish(
          record, n,
          text_response(req, http::status::accepted, "queued " + std::to_string(n) + " calls\n"));
    }
    if (req.method() == http::verb::post && path == "/audit") {
      context.scope.defer(
          [record] {
            if (record) record->task_started();
          },
          {.always = true, .name = "audit"});
      context.scope.defer([record] {
        if (record) record->task_started();
      });
      return finish(record, 2,
                    text_response(req, http::status::internal_server_error, "audit failed\n"));
    }
    if (path == "/moved") {
      context.scope.defer(
          [record] {
            if (record) record->task_started();
          },
          {.no_go = "5xx,400-405,302"});
      context.scope.defer([record] {
        if (record) record->task_started();
      });
      response_type res = text_response(req, http::status::found, "moved to /calls\n");
      res.set(http::field::location, "/calls");
      return finish(record, 2, std::move(res));
    }
    if (path == "/stream") {
      context.scope.defer(
          [record] {
            if (record) record->task_started();
          },
          {.phase = crosstown::task_phase::headers_sent});
      context.scope.defer([record] {
        if (record) record->task_started();
      });
      response_type res = text_response(req, http::status::ok, std::string(64 * 1024, 's'));
      res.chunked(true);
      return finish(record, 2, std::move(res));
    }
    if (req.method() == http::verb::get && path == "/metrics") {
      const server* s = server_.load();
      response_type res = text_response(
          req, http::status::ok, prometheus_text(rt_.metrics(), s ? s->stats() : server_stats{}));
      res.set(http::field::content_type, "text/plain; version=0.0.4");
      return finish(record, 0, std::move(res));
    }
    // Deferred before the handler finds out there is nothing here: skipped by the 404.
    context.scope.defer(
        [record] {
          if (record) record->task_started();
        },
        {.name = "visit-log"});
    return finish(record, 1, text_response(req, http::status::not_found, "not found\n"));
  }

  /// The exchange recorded for `X-Request-Id: id`, if any.
  std::shared_ptr<const exchange> find(const std::string& id) const {
    std::lock_guard lock(mutex_);
    auto it = exchanges_.find(id);
    return it == exchanges_.end() ? nullptr : it->second;
  }

 private:
  static void place_call(std::chrono::microseconds pause) {
    // Stands in for a call to a telephony API. A wait inside a task is fine in a demo.
    if (pause.count() > 0) std::this_thread::sleep_for(pause);
  }

  static int query_int(std::string_view target, std::string_view key, int fallback) {
    const std::string needle = std::string(key) + "=";
    const auto at = target.find(needle);
    if (at == std::string_view::npos) return fallback;
    const char* first = target.data() + at + needle.size();
    int value = fallback;
    std::from_chars(first, target.data() + target.size(), value);
    return value;
  }

  std::shared_ptr<exchange> track(request_context& context) {
    const auto id = context.request.find("X-Request-Id");
    if (id == context.request.end()) return nullptr;
    auto record = std::make_shared<exchange>();
    record->target = std::string(context.request.target());
    record->written = context.written;
    std::lock_guard lock(mutex_);
    exchanges_[std::string(id->value())] = record;
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
  std::atomic<const server*> server_{nullptr};
  mutable std::mutex mutex_;
  std::map<std::string, std::shared_ptr<exchange>> exchanges_;  // guarded by mutex_
};

}  // namespace crosstown_demo
