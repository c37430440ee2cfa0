// demo_server.hpp - a small Boost.Beast HTTP/1.1 server using crosstown::beast.
//
// The server behind `crosstown-demo`, also started in-process by tests/beast. It accepts on
// one address, runs one session per connection - callback style (Beast's `do_x`/`on_x`) or
// `asio::awaitable` coroutine style, chosen in `server_options` - and for each request:
//   1. reads it (a malformed request gets a 400 and the connection closes; no scope is
//      created, so no deferred work exists for it),
//   2. creates the request's `crosstown::response_scope` from the connection's
//      `crosstown::connection_scope`,
//   3. calls the application `handler` with the request and the scope,
//   4. writes the response with crosstown::beast (whole, or header then body when the
//      handler set `chunked(true)`), which reports status, headers sent, response sent or
//      delivery failed to the scope, and ends the scope.
// Keep-alive and pipelined requests are served in order, each with its own scope.
//
// Each response's transport progress is recorded in a `write_record` by the stream itself, as
// each write completes and before the adapter reports it, so a task can check that the whole
// response had been accepted by the transport before it started.
//
// Threading: run the io_context on ONE thread; sessions, the listener and `stop()`'s work all
// run there. The handler runs there too and must not block. `stop()` may be called from any
// thread (or a signal handler's completion). The runtime must outlive the server and the
// io_context's handlers.
//
// Graceful stop: the listener closes; idle keep-alive connections close at once; a connection
// in the middle of a request finishes writing its response, then closes. Once every
// connection is gone the io_context runs out of work; the caller then drains the runtime.
#pragma once

#include <crosstown/beast/write.hpp>
#include <crosstown/crosstown.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>

namespace crosstown_demo {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using error_code = beast::error_code;
using request_type = http::request<http::string_body>;
using response_type = http::response<http::string_body>;
using clock_type = std::chrono::steady_clock;

/// What the transport has accepted of one response. Written by the server's I/O thread as each
/// write completes - before crosstown hears of it - and readable from any thread.
struct write_record {
  /// Bytes of the response accepted so far.
  std::atomic<std::uint64_t> bytes{0};
  /// When the last write completed, in steady-clock nanoseconds since its epoch (0: none).
  std::atomic<std::int64_t> last_write_ns{0};
  /// The value of `server_options::sequence` taken at the last write completion (0: none).
  std::atomic<std::uint64_t> last_write_sequence{0};
};

inline std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now().time_since_epoch())
      .count();
}

/// A Beast rate policy that limits nothing and records completed writes into the current
/// response's `write_record`. Used on the I/O thread only.
class write_recorder {
 public:
  explicit write_recorder(std::atomic<std::uint64_t>* sequence = nullptr) noexcept
      : sequence_(sequence) {}

  /// Records later writes into `record` (null: records nothing).
  void track(std::shared_ptr<write_record> record) noexcept { current_ = std::move(record); }

 private:
  friend class boost::beast::rate_policy_access;
  static constexpr std::size_t all = (std::numeric_limits<std::size_t>::max)();

  std::size_t available_read_bytes() const noexcept { return all; }
  std::size_t available_write_bytes() const noexcept { return all; }
  void transfer_read_bytes(std::size_t) const noexcept {}
  void transfer_write_bytes(std::size_t n) noexcept {
    if (!current_) return;
    current_->bytes.fetch_add(n, std::memory_order_relaxed);
    current_->last_write_ns.store(now_ns(), std::memory_order_relaxed);
    if (sequence_ != nullptr) {
      current_->last_write_sequence.store(sequence_->fetch_add(1) + 1, std::memory_order_relaxed);
    }
  }
  void on_timer() const noexcept {}

  std::shared_ptr<write_record> current_;
  std::atomic<std::uint64_t>* sequence_;
};

using stream_type = beast::basic_stream<tcp, net::any_io_executor, write_recorder>;

/// What a handler gets for one request.
struct request_context {
  const request_type& request;
  /// The request's scope: defer work here (coroutine-safe; no thread binding needed).
  crosstown::response_scope& scope;
  /// The transport's progress on this request's response, filled in while it is written.
  std::shared_ptr<const write_record> written;
  /// Connection number, from 1, in accept order.
  std::uint64_t connection_id;
};

/// The application: builds the response and defers work on `context.scope`. Runs on the I/O
/// thread; a handler that throws gets a 500. Set `chunked(true)` on the response to have it
/// streamed (header first, then the body as chunks).
using handler = std::function<response_type(request_context& context)>;

enum class session_style : std::uint8_t { callback, coroutine };

struct server_options {
  std::string address = "127.0.0.1";
  /// 0: any free port (see `server::port()`).
  unsigned short port = 0;
  session_style style = session_style::callback;
  /// Ticked at each completed write and stored in the response's `write_record`; null: not.
  std::atomic<std::uint64_t>* sequence = nullptr;
  /// SO_SNDBUF for accepted connections; 0: the system default.
  int send_buffer_size = 0;
};

/// Server counters; read from any thread.
struct server_stats {
  std::uint64_t connections = 0;
  std::uint64_t requests = 0;
  std::uint64_t bad_requests = 0;
  std::uint64_t delivery_failures = 0;
};

/// A plain-text response to `request`.
inline response_type text_response(const request_type& request, http::status status,
                                   std::string body) {
  response_type res{status, request.version()};
  res.set(http::field::server, "crosstown-demo");
  res.set(http::field::content_type, "text/plain; charset=utf-8");
  res.body() = std::move(body);
  return res;
}

namespace detail {

// One live connection, as the server sees it. Touched on the I/O thread only.
struct connection_slot {
  bool busy = false;            // a request is being handled or its response written
  bool stop = false;            // close after the response in progress
  std::function<void()> close;  // closes the socket at once
};

struct server_state {
  server_state(net::io_context& ioc, crosstown::runtime& rt, handler h, server_options o)
      : runtime(rt), app(std::move(h)), options(std::move(o)), acceptor(ioc) {}

  crosstown::runtime& runtime;
  const handler app;
  const server_options options;
  tcp::acceptor acceptor;
  std::list<std::weak_ptr<connection_slot>> connections;  // I/O thread only
  bool stopping = false;                                  // I/O thread only
  std::atomic<std::uint64_t> connection_count{0};
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::uint64_t> bad_requests{0};
  std::atomic<std::uint64_t> delivery_failures{0};

  std::shared_ptr<connection_slot> add_connection() {
    connections.remove_if([](const std::weak_ptr<connection_slot>& w) { return w.expired(); });
    auto slot = std::make_shared<connection_slot>();
    connections.push_back(slot);
    return slot;
  }
};

inline bool is_parse_error(const error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_method).category();
}

// Calls the application and finishes the response's framing.
inline response_type respond(server_state& state, request_context& context) {
  state.requests.fetch_add(1, std::memory_order_relaxed);
  response_type res;
  try {
    res = state.app(context);
  } catch (const std::exception& e) {
    res = text_response(context.request, http::status::internal_server_error,
                        std::string("handler failed: ") + e.what() + "\n");
  }
  res.version(context.request.version());
  res.keep_alive(context.request.keep_alive() && !state.stopping);
  if (!res.chunked()) res.prepare_payload();
  return res;
}

inline response_type bad_request(const error_code& ec) {
  response_type res{http::status::bad_request, 11};
  res.set(http::field::server, "crosstown-demo");
  res.set(http::field::content_type, "text/plain; charset=utf-8");
  res.body() = "bad request: " + ec.message() + "\n";
  res.keep_alive(false);
  res.prepare_payload();
  return res;
}

// Beast's async server session, with crosstown's few lines added.
class callback_session : public std::enable_shared_from_this<callback_session> {
 public:
  callback_session(tcp::socket&& socket, std::shared_ptr<server_state> state,
                   std::shared_ptr<connection_slot> slot, std::uint64_t id)
      : state_(std::move(state)),
        slot_(std::move(slot)),
        stream_(write_recorder(state_->options.sequence), std::move(socket)),
        connection_(state_->runtime),
        id_(id) {}

  void run() {
    slot_->close = [weak = weak_from_this()] {
      if (auto self = weak.lock()) self->stream_.close();
    };
    net::dispatch(stream_.get_executor(),
                  beast::bind_front_handler(&callback_session::do_read, shared_from_this()));
  }

 private:
  void do_read() {
    slot_->busy = false;
    if (slot_->stop) return do_close();
    parser_.emplace();
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&callback_session::on_read, shared_from_this()));
  }

  void on_read(error_code ec, std::size_t) {
    slot_->busy = true;
    if (ec == http::error::end_of_stream) return do_close();
    if (ec) {
      if (is_parse_error(ec)) return do_bad_request(ec);
      return;  // reset, aborted by stop(): the connection is gone
    }
    scope_.emplace(connection_);  // crosstown: the request has been read
    auto record = std::make_shared<write_record>();
    stream_.rate_policy().track(record);
    request_context context{parser_->get(), *scope_, record, id_};
    response_ = respond(*state_, context);
    if (response_.chunked()) {
      serializer_.emplace(response_);
      crosstown::beast::async_write_header(
          stream_, *serializer_, *scope_,
          beast::bind_front_handler(&callback_session::on_header, shared_from_this()));
    } else {
      crosstown::beast::async_write_response(
          stream_, response_, *scope_,
          beast::bind_front_handler(&callback_session::on_write, shared_from_this()));
    }
  }

  void on_header(error_code ec, std::size_t bytes) {
    if (ec) return on_write(ec, bytes);
    crosstown::beast::async_write_body(
        stream_, *serializer_, *scope_,
        beast::bind_front_handler(&callback_session::on_write, shared_from_this()));
  }

  void on_write(error_code ec, std::size_t) {
    const bool keep_alive = response_.keep_alive();
    stream_.rate_policy().track(nullptr);
    serializer_.reset();
    scope_.reset();  // crosstown: the response is done
    if (ec) {
      state_->delivery_failures.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (!keep_alive) return do_close();
    do_read();
  }

  void do_bad_request(error_code ec) {
    state_->bad_requests.fetch_add(1, std::memory_order_relaxed);
    response_ = bad_request(ec);
    http::async_write(
        stream_, response_,
        beast::bind_front_handler(&callback_session::on_bad_request_written, shared_from_this()));
  }

  void on_bad_request_written(error_code, std::size_t) { do_close(); }

  void do_close() {
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  std::shared_ptr<server_state> state_;
  std::shared_ptr<connection_slot> slot_;
  stream_type stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  crosstown::connection_scope connection_;  // declared before scope_: outlives it
  std::optional<crosstown::response_scope> scope_;
  response_type response_;
  std::optional<http::response_serializer<http::string_body>> serializer_;
  const std::uint64_t id_;
};

// The same session as a coroutine: the scope is a local passed explicitly.
inline net::awaitable<void> coroutine_session(stream_type stream,
                                              std::shared_ptr<server_state> state,
                                              std::shared_ptr<connection_slot> slot,
                                              std::uint64_t id) {
  slot->close = [&stream] { stream.close(); };
  struct forget_close {
    connection_slot& slot;
    ~forget_close() { slot.close = nullptr; }
  } forget{*slot};

  constexpr auto tuple_awaitable = net::as_tuple(net::use_awaitable);
  crosstown::connection_scope connection(state->runtime);
  beast::flat_buffer buffer;
  for (;;) {
    slot->busy = false;
    if (slot->stop) break;
    http::request_parser<http::string_body> parser;
    auto [ec, read] = co_await http::async_read(stream, buffer, parser, tuple_awaitable);
    slot->busy = true;
    if (ec == http::error::end_of_stream) break;
    if (ec) {
      if (!is_parse_error(ec)) co_return;
      state->bad_requests.fetch_add(1, std::memory_order_relaxed);
      response_type res = bad_request(ec);
      co_await http::async_write(stream, res, tuple_awaitable);
      break;
    }

    crosstown::response_scope scope(connection);
    auto record = std::make_shared<write_record>();
    stream.rate_policy().track(record);
    request_context context{parser.get(), scope, record, id};
    response_type res = respond(*state, context);
    error_code wec;
    if (res.chunked()) {
      http::response_serializer<http::string_body> sr(res);
      std::tie(wec, std::ignore) =
          co_await crosstown::beast::async_write_header(stream, sr, scope, tuple_awaitable);
      if (!wec) {
        std::tie(wec, std::ignore) =
            co_await crosstown::beast::async_write_body(stream, sr, scope, tuple_awaitable);
      }
    } else {
      std::tie(wec, std::ignore) =
          co_await crosstown::beast::async_write_response(stream, res, scope, tuple_awaitable);
    }
    stream.rate_policy().track(nullptr);
    if (wec) {
      state->delivery_failures.fetch_add(1, std::memory_order_relaxed);
      co_return;
    }
    if (!res.keep_alive()) break;
  }
  error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

inline void start_session(const std::shared_ptr<server_state>& state, tcp::socket socket) {
  if (state->options.send_buffer_size > 0) {
    error_code ignored;
    socket.set_option(net::socket_base::send_buffer_size(state->options.send_buffer_size), ignored);
  }
  const std::uint64_t id = state->connection_count.fetch_add(1) + 1;
  auto slot = state->add_connection();
  if (state->options.style == session_style::callback) {
    std::make_shared<callback_session>(std::move(socket), state, std::move(slot), id)->run();
    return;
  }
  auto executor = socket.get_executor();
  net::co_spawn(
      executor,
      coroutine_session(stream_type(write_recorder(state->options.sequence), std::move(socket)),
                        state, std::move(slot), id),
      [](const std::exception_ptr& e) {
        if (e) std::rethrow_exception(e);
      });
}

inline void do_accept(const std::shared_ptr<server_state>& state) {
  state->acceptor.async_accept(net::make_strand(state->acceptor.get_executor()),
                               [state](error_code ec, tcp::socket socket) {
                                 if (state->stopping || !state->acceptor.is_open()) return;
                                 if (!ec) start_session(state, std::move(socket));
                                 do_accept(state);
                               });
}

}  // namespace detail

/// The listener. See the file comment for its threading and shutdown rules.
class server {
 public:
  /// Binds and listens at once (so `port()` is known); accepts once `start()` is called.
  server(net::io_context& ioc, crosstown::runtime& rt, handler app, server_options options = {})
      : state_(
            std::make_shared<detail::server_state>(ioc, rt, std::move(app), std::move(options))) {
    const tcp::endpoint endpoint(net::ip::make_address(state_->options.address),
                                 state_->options.port);
    state_->acceptor.open(endpoint.protocol());
    state_->acceptor.set_option(net::socket_base::reuse_address(true));
    state_->acceptor.bind(endpoint);
    state_->acceptor.listen(net::socket_base::max_listen_connections);
  }
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  unsigned short port() const { return state_->acceptor.local_endpoint().port(); }

  /// Starts accepting connections.
  void start() {
    net::post(state_->acceptor.get_executor(), [state = state_] { detail::do_accept(state); });
  }

  /// Graceful stop; callable from any thread. Stops accepting, closes idle connections, lets
  /// responses in progress finish and closes their connections after them.
  void stop() {
    net::post(state_->acceptor.get_executor(), [state = state_] {
      if (state->stopping) return;
      state->stopping = true;
      error_code ignored;
      state->acceptor.close(ignored);
      for (const auto& weak : state->connections) {
        if (auto slot = weak.lock()) {
          slot->stop = true;
          if (!slot->busy && slot->close) slot->close();
        }
      }
    });
  }

  server_stats stats() const {
    return {state_->connection_count.load(), state_->requests.load(), state_->bad_requests.load(),
            state_->delivery_failures.load()};
  }

 private:
  std::shared_ptr<detail::server_state> state_;
};

}  // namespace crosstown_demo
