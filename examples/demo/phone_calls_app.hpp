// phone_calls_app.hpp - the phone-calls app (app.hpp) as a handler of the Beast demo server.
//
// `phone_calls_app` is what `crosstown_demo::server` (demo_server.hpp) calls for each request:
// it translates the Beast request into an `app_request` (method, target, headers), lets the
// server-independent `calls_app` answer and defer on the request's scope, and translates the
// `app_response` back (status, headers, body, `chunked`). It keeps the transport's
// `write_record` of each response in the request's exchange, for the demo's timeline.
//
// Declarations only: the definitions are compiled once, in crosstown_demo_core
// (beast_glue.cpp). Thread-safe like calls_app.
#pragma once

#include "app.hpp"
#include "demo_server.hpp"

#include <chrono>
#include <memory>
#include <string>

namespace crosstown_demo {

/// The neutral request for a Beast request (every header copied).
app_request to_app_request(const request_type& request);
/// The Beast response for the app's answer to `request`.
response_type to_beast_response(const request_type& request, app_response response);

class phone_calls_app {
 public:
  /// Blocking calls of `call_duration` on the runtime's pool (the `--blocking-calls` variant).
  explicit phone_calls_app(crosstown::runtime& rt,
                           std::chrono::microseconds call_duration = std::chrono::milliseconds(2),
                           app_limits limits = {});
  /// Calls placed by `placer` (which must outlive the app).
  phone_calls_app(crosstown::runtime& rt, call_placer& placer, app_limits limits = {});

  /// The handler, for `server`.
  response_type operator()(request_context& context);

  /// Lets /metrics include the server's counters.
  void observe(const server* s);

  calls_app& app() noexcept { return app_; }
  const app_limits& limits() const noexcept { return app_.limits(); }
  std::uint64_t records_evicted() const { return app_.records_evicted(); }
  std::size_t records() const { return app_.records(); }
  std::uint64_t refused_busy() const noexcept { return app_.refused_busy(); }
  std::shared_ptr<const exchange> find(const std::string& id) const { return app_.find(id); }

 private:
  std::unique_ptr<blocking_call_placer> owned_placer_;  // the first constructor's
  calls_app app_;
};

}  // namespace crosstown_demo
