// crosstown/restinio/adapter.hpp - RESTinio (0.6) responses that report their lifecycle.
//
// RESTinio tells a handler when its response's bytes went out: `done(write_status_cb_t)` and
// `flush(write_status_cb_t)` of a response builder take a callback that RESTinio calls once -
// with a clear error after the write of the group's last byte completed, with the write's
// error, with `write_was_not_executed` when the connection was already closed, or with
// `write_group_destroyed_passively`. The adapter reports from that callback:
//
//     adapter.begin(req)          request started: a response_scope from the connection's scope
//     ex->done(builder)           status_known(status of builder.header()), then builder.done;
//                                 its callback: response_sent() or delivery_failed(ec.message())
//     ex->flush(chunked builder)  the first flush carries the headers: status_known, and its
//                                 callback headers_sent() (or delivery_failed)
//     connection closed           connection_scope::closed(), from the connection_state_listener
//
// Use one `crosstown::restinio::adapter` per server as the traits' connection state listener
// (`using connection_state_listener_t = crosstown::restinio::adapter;`, and
// `settings.connection_state_listener(adapter_ptr)`), so each connection gets a
// `crosstown::connection_scope` that closes when RESTinio reports the connection closed
// (after it has destroyed that connection's pending write groups). Without the listener, a
// request's scope is made from the runtime (its end stands for the close) and the request is
// counted in `counters().untracked_connections`.
//
// A request is an `exchange`, held by `std::shared_ptr`: keep it while the response is
// produced (also asynchronously, on another thread - RESTinio's builders may be completed from
// any thread); the write callback holds it until the outcome was reported, then the scope ends
// when the last reference goes. Handlers take the scope explicitly: `ex->scope().defer(...)`.
//
// `adapter.wrap(handler)` turns `handler(req, ex, route_params...)` into a RESTinio handler
// that begins the exchange and keeps the server's own error paths visible to the scope: a
// handler that throws is answered `500` through the exchange (RESTinio itself would close the
// connection without a response), one that returns `request_rejected()` is answered `501` as
// RESTinio would. Use it for the router's routes and its `non_matched_request_handler`.
//
// Threading: every callback runs on the connection's thread (an Asio thread of the server);
// the scope is thread-safe. Nothing escapes a write callback: RESTinio closes the connection if
// one throws, so the adapter catches everything there (counted in `callback_errors`).
//
// Build: RESTinio on Boost.Asio (`RESTINIO_USE_BOOST_ASIO`, set by crosstown::restinio), with
// {fmt} and http-parser.
#pragma once

#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>

#include <restinio/all.hpp>

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

namespace crosstown::restinio {

namespace rs = ::restinio;

class adapter;

/// What the adapter counted (relaxed atomics; a snapshot).
struct adapter_counters {
  std::uint64_t responses_sent = 0;         ///< reported response_sent
  std::uint64_t delivery_failed = 0;        ///< reported delivery_failed
  std::uint64_t untracked_connections = 0;  ///< scopes made without a connection scope
  std::uint64_t callback_errors = 0;        ///< exceptions caught inside write callbacks
  std::uint64_t open_connections = 0;       ///< connections accepted and not yet closed
};

struct adapter_options {
  /// Called once per exchange: on the connection's thread right after its outcome was
  /// reported, before its scope ends - or, for an exchange that ended without a write
  /// reporting one, just after its scope ended. Exceptions are caught and counted.
  std::function<void(const rs::request_t&, const response_scope&)> on_outcome{};
};

/// One request: its scope and the reporting writes. Create with `adapter::begin`.
class exchange : public std::enable_shared_from_this<exchange> {
 public:
  exchange(adapter& owner, rs::request_handle_t req, std::shared_ptr<connection_scope> connection);
  exchange(const exchange&) = delete;
  exchange& operator=(const exchange&) = delete;
  /// Reports the outcome hook if no write did, then the scope ends.
  ~exchange();

  response_scope& scope() noexcept { return *scope_; }
  const rs::request_handle_t& request() const noexcept { return req_; }
  /// True once done() or the first flush() was called.
  bool responding() const noexcept { return responding_.load(std::memory_order_acquire); }

  /// Completes the response: reports its status, then `builder.done(...)`; the callback
  /// reports sent/failed, then calls `then(ec)` (exceptions caught).
  template <class Output>
  rs::request_handling_status_t done(rs::response_builder_t<Output>& builder,
                                     rs::write_status_cb_t then = {});
  template <class Output>
  rs::request_handling_status_t done(rs::response_builder_t<Output>&& builder,
                                     rs::write_status_cb_t then = {}) {
    return done(builder, std::move(then));
  }

  /// Flushes a chunked (or user-controlled) response; the first flush carries the headers and
  /// reports `headers_sent` from its callback.
  template <class Output>
  void flush(rs::response_builder_t<Output>& builder, rs::write_status_cb_t then = {});

 private:
  friend class adapter;
  template <class Builder>
  void report_status(const Builder& builder);
  rs::write_status_cb_t callback(bool last, rs::write_status_cb_t then);
  void on_written(bool last, const rs::asio_ns::error_code& ec) noexcept;
  void report_outcome() noexcept;

  adapter& owner_;
  rs::request_handle_t req_;
  std::shared_ptr<connection_scope> connection_;  // declared before scope_: outlives it
  std::optional<response_scope> scope_;
  std::atomic<bool> responding_{false};
  std::atomic<bool> status_reported_{false};
  std::atomic<bool> headers_reported_{false};
  std::atomic<bool> outcome_reported_{false};
};

/// One per server: the connection registry (RESTinio's connection state listener), the
/// options and the counters. Thread-safe. Must outlive the server and every exchange.
class adapter {
 public:
  explicit adapter(runtime& rt, adapter_options options = {})
      : rt_(rt), options_(std::move(options)) {}
  adapter(const adapter&) = delete;
  adapter& operator=(const adapter&) = delete;
  /// Closes the connection scopes still open (the server must have stopped).
  ~adapter() {
    std::map<rs::connection_id_t, std::shared_ptr<connection_scope>> left;
    {
      std::lock_guard lock(mutex_);
      left.swap(connections_);
    }
    for (auto& [id, c] : left) c->closed();
  }

  /// Request started: the exchange of `req`, its scope made from the connection's scope.
  std::shared_ptr<exchange> begin(const rs::request_handle_t& req) {
    std::shared_ptr<connection_scope> connection;
    {
      std::lock_guard lock(mutex_);
      const auto it = connections_.find(req->connection_id());
      if (it != connections_.end()) connection = it->second;
    }
    if (!connection) untracked_.fetch_add(1, std::memory_order_relaxed);
    return std::make_shared<exchange>(*this, req, std::move(connection));
  }

  /// A RESTinio handler: begins the exchange, calls `handler(req, ex, params...)`, and answers
  /// the server's own error paths through the exchange (500 on an exception, 501 on
  /// `request_rejected()`), so the scope sees the status the client gets.
  template <class Handler>
  auto wrap(Handler handler) {
    return [this, handler = std::move(handler)](rs::request_handle_t req,
                                                auto&&... params) -> rs::request_handling_status_t {
      const std::shared_ptr<exchange> ex = begin(req);
      try {
        const rs::request_handling_status_t status =
            handler(req, ex, std::forward<decltype(params)>(params)...);
        if (status == rs::request_rejected() && !ex->responding()) {
          return ex->done(req->create_response(rs::status_not_implemented()).connection_close());
        }
        return status;
      } catch (const std::exception& e) {
        if (ex->responding()) throw;  // a response is on its way; RESTinio closes
        return ex->done(req->create_response(rs::status_internal_server_error())
                            .append_header(rs::http_field::content_type, "text/plain")
                            .set_body(std::string("internal error: ") + e.what() + "\n"));
      }
    };
  }

  /// RESTinio's connection state listener hook (traits' connection_state_listener_t).
  void state_changed(const rs::connection_state::notice_t& notice) noexcept {
    const rs::connection_state::cause_t cause = notice.cause();
    try {
      if (std::holds_alternative<rs::connection_state::accepted_t>(cause)) {
        auto c = std::make_shared<connection_scope>(rt_);
        std::lock_guard lock(mutex_);
        connections_.emplace(notice.connection_id(), std::move(c));
        return;
      }
    } catch (...) {
      callback_errors_.fetch_add(1, std::memory_order_relaxed);  // bad_alloc: untracked
      return;
    }
    // closed, or upgraded to a WebSocket: the HTTP connection is over.
    std::shared_ptr<connection_scope> c;
    {
      std::lock_guard lock(mutex_);
      const auto it = connections_.find(notice.connection_id());
      if (it == connections_.end()) return;
      c = std::move(it->second);
      connections_.erase(it);
    }
    c->closed();  // outside the lock: hands over held tasks
  }

  adapter_counters counters() const {
    adapter_counters c;
    c.responses_sent = sent_.load(std::memory_order_relaxed);
    c.delivery_failed = failed_.load(std::memory_order_relaxed);
    c.untracked_connections = untracked_.load(std::memory_order_relaxed);
    c.callback_errors = callback_errors_.load(std::memory_order_relaxed);
    std::lock_guard lock(mutex_);
    c.open_connections = connections_.size();
    return c;
  }

  runtime& owner() const noexcept { return rt_; }

 private:
  friend class exchange;

  runtime& rt_;
  const adapter_options options_;
  mutable std::mutex mutex_;
  std::map<rs::connection_id_t, std::shared_ptr<connection_scope>> connections_;  // mutex_
  std::atomic<std::uint64_t> sent_{0};
  std::atomic<std::uint64_t> failed_{0};
  std::atomic<std::uint64_t> untracked_{0};
  std::atomic<std::uint64_t> callback_errors_{0};
};

// --- exchange ------------------------------------------------------------------------------

inline exchange::exchange(adapter& owner, rs::request_handle_t req,
                          std::shared_ptr<connection_scope> connection)
    : owner_(owner), req_(std::move(req)), connection_(std::move(connection)) {
  if (connection_) {
    scope_.emplace(*connection_);
  } else {
    scope_.emplace(owner_.rt_);
  }
}

inline exchange::~exchange() {
  scope_->end();     // scope ended: with no outcome reported, it counts as a failure
  report_outcome();  // for an exchange no write reported
  scope_.reset();    // then the connection reference goes
}

template <class Builder>
void exchange::report_status(const Builder& builder) {
  responding_.store(true, std::memory_order_release);
  // Once: the first flush (or done) sends the header, so the builder's status is final then;
  // a later report could race with that flush's headers_sent on the connection's thread.
  if (status_reported_.exchange(true, std::memory_order_acq_rel)) return;
  if (scope_->ended() || scope_->delivery_state() != delivery::pending) return;
  scope_->status_known(static_cast<int>(builder.header().status_code().raw_code()));
}

template <class Output>
rs::request_handling_status_t exchange::done(rs::response_builder_t<Output>& builder,
                                             rs::write_status_cb_t then) {
  report_status(builder);
  return builder.done(callback(/*last=*/true, std::move(then)));
}

template <class Output>
void exchange::flush(rs::response_builder_t<Output>& builder, rs::write_status_cb_t then) {
  report_status(builder);
  builder.flush(callback(/*last=*/false, std::move(then)));
}

inline rs::write_status_cb_t exchange::callback(bool last, rs::write_status_cb_t then) {
  return [self = shared_from_this(), last,
          then = std::move(then)](const rs::asio_ns::error_code& ec) noexcept {
    self->on_written(last, ec);
    if (then) {
      try {
        then(ec);
      } catch (...) {
        self->owner_.callback_errors_.fetch_add(1, std::memory_order_relaxed);
      }
    }
  };
}

inline void exchange::on_written(bool last, const rs::asio_ns::error_code& ec) noexcept {
  try {
    if (scope_->ended() || scope_->delivery_state() != delivery::pending) return;
    if (ec) {
      scope_->delivery_failed(ec.message());
      owner_.failed_.fetch_add(1, std::memory_order_relaxed);
      report_outcome();
    } else if (last) {
      scope_->response_sent();
      owner_.sent_.fetch_add(1, std::memory_order_relaxed);
      report_outcome();
    } else if (!headers_reported_.exchange(true, std::memory_order_acq_rel)) {
      scope_->headers_sent();
    }
  } catch (...) {
    owner_.callback_errors_.fetch_add(1, std::memory_order_relaxed);
  }
}

inline void exchange::report_outcome() noexcept {
  if (outcome_reported_.exchange(true, std::memory_order_acq_rel)) return;
  if (!owner_.options_.on_outcome) return;
  try {
    owner_.options_.on_outcome(*req_, *scope_);
  } catch (...) {
    owner_.callback_errors_.fetch_add(1, std::memory_order_relaxed);
  }
}

}  // namespace crosstown::restinio
