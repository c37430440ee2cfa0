// crosstown/httplib/adapter.hpp - cpp-httplib (0.11) servers that report each response's
// lifecycle.
//
// cpp-httplib serves each connection on one thread of its task queue and, per request, calls
// in this order on that thread: the pre-routing handler, the route handler, the error handler
// (for 4xx/5xx), the post-routing handler (before the header is written), then writes the
// header (ignoring the result), writes the body, calls the logger (always, with no outcome),
// and destroys the Response, whose content provider's releaser gets `bool success`: whether
// the provider's body was written completely. `adapter::install(server)` hooks in there:
//
//     pre-routing       request started: a response_scope from the connection's scope
//     route handler     the application: `crosstown::httplib::adapter::scope(req).defer(...)`
//     post-routing      status_known(res.status) - the final one, after the error handler -
//                       and the body moves into a content provider (the bytes on the wire do
//                       not change) whose first successful write reports headers_sent
//     ~Response         the provider's releaser: response_sent() if the body was written
//                       completely, delivery_failed(...) if not
//     connection ends   connection_scope::closed(), from a wrapper around new_task_queue
//
// A response with its own content provider (set_content_provider, chunked providers) keeps
// it: the adapter wraps the provider and its releaser the same way.
//
// Limits - a response whose delivery cpp-httplib does not report is reported "sent" from the
// logger, after its writes, without proof that they succeeded, and counted in
// `counters().unverified` (and per cause):
//   - HEAD: no body is written, so no provider runs; the header write's result is ignored.
//   - Range requests (a `Range` header): cpp-httplib applies the range after post-routing
//     (206, 416 and multipart bodies are decided there), so neither the status the scope saw
//     (the handler's, typically 200) nor the provider's success covers what was sent.
//   - An empty body (204, 304, a 404 with no text...): the provider must have a positive
//     length, and the header write's result is ignored.
//   - A body cpp-httplib may compress (the request accepts gzip or br and the content type is
//     text/*, JSON, XML, JavaScript or SVG): cpp-httplib compresses `res.body` only, never a
//     provider, so moving the body would change the bytes on the wire; it stays a body.
// A client reset during an unverified response is therefore not detected: its tasks run as
// if it had been delivered (`require_delivery` tasks included).
//
// Threading: every hook runs on the connection's thread; the current request's state lives in
// that thread (so `scope(req)` works in handlers, not on other threads - take the
// `response_scope&` there and pass it along). A server whose task queue the adapter did not
// wrap (new_task_queue replaced after install) still works, with scopes made from the runtime
// (the end of each response stands for the close), counted in `counters().untracked`.
//
// Nothing thrown escapes a hook into cpp-httplib; exceptions from crosstown (misuse) and from
// the user's chained hooks are caught and counted in `counters().hook_errors`.
#pragma once

#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>

#include <httplib.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

namespace crosstown::httplib {

namespace hl = ::httplib;

/// What the adapter counted.
struct adapter_counters {
  std::uint64_t responses_sent = 0;    ///< the provider wrote the whole body: response_sent
  std::uint64_t delivery_failed = 0;   ///< the provider did not complete: delivery_failed
  std::uint64_t unverified = 0;        ///< reported sent from the logger without proof (all causes)
  std::uint64_t unverified_head = 0;   ///< ... because the request was a HEAD
  std::uint64_t unverified_range = 0;  ///< ... because the request had a Range header
  std::uint64_t unverified_empty = 0;  ///< ... because the body was empty
  std::uint64_t unverified_compressed = 0;  ///< ... because cpp-httplib may compress the body
  std::uint64_t untracked = 0;              ///< scopes made without a connection scope
  std::uint64_t hook_errors = 0;            ///< exceptions caught inside hooks
};

struct adapter_options {
  /// Called once per response, on the connection's thread, right after its outcome was
  /// reported (before its scope ends). Exceptions are caught and counted.
  std::function<void(const hl::Request&, const response_scope&)> on_outcome{};
};

/// The user's own hooks, chained by `install` (cpp-httplib holds one of each).
struct chained_hooks {
  hl::Server::HandlerWithResponse pre_routing{};  ///< after the scope was created
  hl::Server::Handler post_routing{};             ///< before the status is reported
  hl::Logger logger{};                            ///< after the outcome was reported
};

class adapter {
 public:
  explicit adapter(runtime& rt, adapter_options options = {});
  adapter(const adapter&) = delete;
  adapter& operator=(const adapter&) = delete;
  ~adapter();

  /// Installs the hooks on `server` (before it listens): pre-routing, post-routing and logger
  /// (chaining `user`'s), and wraps its `new_task_queue` so each connection has a
  /// connection_scope. The adapter must outlive the server's listening.
  void install(hl::Server& server, chained_hooks user = {});

  /// The scope of `req`, the request being handled on this thread. Throws std::logic_error
  /// if `req` is not the current request of an installed adapter on this thread.
  static response_scope& scope(const hl::Request& req);

  adapter_counters counters() const noexcept;
  runtime& owner() const noexcept { return rt_; }

  struct state;  // internal: counters and hooks shared with the connection threads

 private:
  runtime& rt_;
  std::shared_ptr<state> state_;
};

}  // namespace crosstown::httplib
