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
// Limits and timeouts (`server_options`, defaults in brackets; README "Demo server: limits and
// timeouts"): every wait runs on the session's stream timer (`basic_stream::expires_after`):
// idle keep-alive / first byte [30 s], header [10 s, from its first byte], body [30 s], each
// response write [30 s]; a timed-out connection is closed (counted in `timeouts`). At most
// `max_connections` [1024] are served at once; one more is answered 503 and closed. Accept
// failing for lack of descriptors (EMFILE/ENFILE, ENOBUFS, ENOMEM) backs off 10 ms doubling to
// 1 s instead of spinning. Header block [8 KiB] -> 431, body [1 MiB] -> 413, target
// [4 KiB] -> 414, an unknown method -> 501, HTTP/1.1 without exactly one Host, or a
// Transfer-Encoding whose final coding is not chunked -> 400; `Expect: 100-continue` is
// answered before the body is read (another expectation: 417). Each error response closes
// the connection after a short lingering read so the client sees it. HEAD responses carry no
// body, HTTP/1.0 clients never get chunked, every response has a Date.
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
// in the middle of a request finishes writing its response, then closes - or is cut off after
// `stop_grace` [5 s]. `abort()` closes every connection at once. Once every connection is gone
// the io_context runs out of the server's work (`stats().active_connections == 0`); the
// caller then drains the runtime.
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
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <exception>
#include <functional>
#include <future>
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

  /// Waiting for the first byte of a request, on a new or a kept-alive connection.
  std::chrono::milliseconds idle_timeout = std::chrono::seconds(30);
  /// From the first byte of a request until its header is complete (slow senders).
  std::chrono::milliseconds header_timeout = std::chrono::seconds(10);
  /// Reading the body, once the header is in.
  std::chrono::milliseconds body_timeout = std::chrono::seconds(30);
  /// Writing one response (a client that does not read).
  std::chrono::milliseconds write_timeout = std::chrono::seconds(30);
  /// After `stop()`, how long responses in progress may take before their connections close.
  std::chrono::milliseconds stop_grace = std::chrono::seconds(5);
  /// Connections served at once; one more is answered 503 and closed.
  std::size_t max_connections = 1024;
  /// Request line plus header fields, in bytes (beyond: 431).
  std::uint32_t max_header_bytes = 8 * 1024;
  /// Request body, in bytes (beyond: 413).
  std::uint64_t max_body_bytes = 1024 * 1024;
  /// Request target, in bytes (beyond: 414).
  std::size_t max_target_bytes = 4 * 1024;
  /// First and longest pause after accept fails for lack of descriptors or memory.
  std::chrono::milliseconds accept_backoff_min = std::chrono::milliseconds(10);
  std::chrono::milliseconds accept_backoff_max = std::chrono::seconds(1);
};

/// Server counters; read from any thread.
struct server_stats {
  std::uint64_t connections = 0;  ///< accepted and served
  std::uint64_t requests = 0;
  std::uint64_t bad_requests = 0;  ///< answered 4xx/5xx by the server itself (not the app)
  std::uint64_t delivery_failures = 0;
  std::uint64_t active_connections = 0;
  std::uint64_t rejected_connections = 0;  ///< over `max_connections`: 503 and closed
  std::uint64_t timeouts = 0;              ///< connections closed by a timeout
  std::uint64_t accept_errors = 0;         ///< accept failures that made the listener back off
};

/// The current time as an HTTP-date (RFC 9110 IMF-fixdate), cached per second and thread.
inline const std::string& http_date() {
  thread_local std::time_t cached_at = 0;
  thread_local std::string text;
  const std::time_t now = std::time(nullptr);
  if (now != cached_at || text.empty()) {
    std::tm tm{};
    gmtime_r(&now, &tm);
    char buf[40];
    const std::size_t n = std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    text.assign(buf, n);
    cached_at = now;
  }
  return text;
}

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

// A response the server itself gives (limits, malformed requests): it closes the connection.
inline response_type error_response(http::status status, std::string body, unsigned version = 11) {
  response_type res{status, version == 10 ? 10u : 11u};
  res.set(http::field::server, "crosstown-demo");
  res.set(http::field::date, http_date());
  res.set(http::field::content_type, "text/plain; charset=utf-8");
  res.body() = std::move(body);
  res.keep_alive(false);
  res.prepare_payload();
  return res;
}

// One live connection, as the server sees it. Touched on the I/O thread only.
struct connection_slot {
  bool busy = false;            // a request is being read or handled, or its response written
  bool stop = false;            // close after the response in progress
  std::function<void()> close;  // closes the socket at once
  std::size_t retained = 0;     // bytes of buffers the session holds while idle
};

struct server_state {
  server_state(net::io_context& ioc, crosstown::runtime& rt, handler h, server_options o)
      : runtime(rt),
        app(std::move(h)),
        options(std::move(o)),
        acceptor(ioc),
        backoff_timer(ioc),
        grace_timer(ioc) {}

  crosstown::runtime& runtime;
  const handler app;
  const server_options options;
  tcp::acceptor acceptor;
  net::steady_timer backoff_timer;  // accept back-off; I/O thread only
  net::steady_timer grace_timer;    // stop(): cuts off what is still busy; I/O thread only
  std::chrono::milliseconds backoff{0};
  std::list<std::weak_ptr<connection_slot>> connections;  // I/O thread only
  bool stopping = false;                                  // I/O thread only
  std::atomic<std::uint64_t> connection_count{0};
  std::atomic<std::uint64_t> active{0};
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::uint64_t> bad_requests{0};
  std::atomic<std::uint64_t> delivery_failures{0};
  std::atomic<std::uint64_t> rejected{0};
  std::atomic<std::uint64_t> timeouts{0};
  std::atomic<std::uint64_t> accept_errors{0};

  std::shared_ptr<connection_slot> add_connection() {
    connections.remove_if([](const std::weak_ptr<connection_slot>& w) { return w.expired(); });
    auto slot = std::make_shared<connection_slot>();
    connections.push_back(slot);
    active.fetch_add(1);
    return slot;
  }

  // A session ended (I/O thread). The last one during a stop lets the io_context finish.
  void connection_closed() {
    if (active.fetch_sub(1) == 1 && stopping) grace_timer.cancel();
  }

  void close_all() {
    for (const auto& weak : connections) {
      if (auto slot = weak.lock()) {
        slot->stop = true;
        if (slot->close) slot->close();
      }
    }
  }

  void count_read_error(const error_code& ec) {
    if (ec == beast::error::timeout) timeouts.fetch_add(1, std::memory_order_relaxed);
  }
};

inline bool is_parse_error(const error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_method).category();
}

// What a failed read means for the client: the response to give it, or none (the connection
// is gone: end of stream, reset, timeout, stop).
inline std::optional<response_type> read_error_response(const error_code& ec) {
  if (ec == http::error::header_limit) {
    return error_response(http::status::request_header_fields_too_large,
                          "request header fields too large\n");
  }
  if (ec == http::error::body_limit) {
    return error_response(http::status::payload_too_large, "request body too large\n");
  }
  if (is_parse_error(ec) && ec != http::error::end_of_stream &&
      ec != http::error::partial_message) {
    return error_response(http::status::bad_request, "bad request: " + ec.message() + "\n");
  }
  return std::nullopt;
}

inline bool iequals(std::string_view a, std::string_view b) { return beast::iequals(a, b); }

// Checks a request's header before its body is read: the error response if it is refused.
// Sets `send_continue` when the client waits for "100 Continue" before sending the body.
inline std::optional<response_type> check_header(const server_options& o,
                                                 const http::request_parser<http::string_body>& p,
                                                 bool& send_continue) {
  const auto& req = p.get();
  const unsigned version = req.version();
  send_continue = false;
  if (version != 10 && version != 11) {
    return error_response(http::status::http_version_not_supported, "HTTP version not supported\n");
  }
  if (req.method() == http::verb::unknown) {
    return error_response(http::status::not_implemented,
                          "method " + std::string(req.method_string()) + " not implemented\n",
                          version);
  }
  const std::size_t hosts = req.count(http::field::host);
  if (version == 11 && hosts != 1) {
    return error_response(http::status::bad_request,
                          hosts == 0 ? "bad request: HTTP/1.1 request without Host\n"
                                     : "bad request: more than one Host header\n",
                          version);
  }
  if (hosts > 1) {
    return error_response(http::status::bad_request, "bad request: more than one Host header\n",
                          version);
  }
  if (req.count(http::field::transfer_encoding) != 0) {
    // RFC 9112 6.1: a request whose final transfer coding is not chunked has no reliable
    // length; reading on would parse its body as the next request (smuggling).
    if (!p.chunked()) {
      return error_response(http::status::bad_request,
                            "bad request: Transfer-Encoding whose final coding is not chunked\n",
                            version);
    }
    if (req.count(http::field::content_length) != 0) {
      return error_response(http::status::bad_request,
                            "bad request: both Transfer-Encoding and Content-Length\n", version);
    }
  }
  if (req.target().size() > o.max_target_bytes) {
    return error_response(
        http::status::uri_too_long,
        "request target longer than " + std::to_string(o.max_target_bytes) + " bytes\n", version);
  }
  if (const auto cl = p.content_length(); cl && *cl > o.max_body_bytes) {
    return error_response(
        http::status::payload_too_large,
        "request body larger than " + std::to_string(o.max_body_bytes) + " bytes\n", version);
  }
  if (const auto expect = req.find(http::field::expect); expect != req.end()) {
    if (!iequals(expect->value(), "100-continue")) {
      return error_response(http::status::expectation_failed,
                            "unsupported expectation " + std::string(expect->value()) + "\n",
                            version);
    }
    send_continue = version == 11 && !p.is_done();
  }
  return std::nullopt;
}

inline http::response<http::empty_body> continue_response() {
  return http::response<http::empty_body>{http::status::continue_, 11};
}

// Calls the application and finishes the response's framing. Returns true if the response is
// to be streamed (header, then body) rather than written whole.
inline bool respond(server_state& state, request_context& context, response_type& res) {
  state.requests.fetch_add(1, std::memory_order_relaxed);
  const request_type& req = context.request;
  try {
    res = state.app(context);
  } catch (const std::exception& e) {
    res = text_response(req, http::status::internal_server_error,
                        std::string("handler failed: ") + e.what() + "\n");
  }
  const bool head = req.method() == http::verb::head;
  const bool streamed = res.chunked() && !head;
  res.version(req.version());
  res.set(http::field::date, http_date());
  res.keep_alive(req.keep_alive() && !state.stopping);
  // HTTP/1.0 has no chunked coding; a HEAD response has the headers of the GET, no body.
  if (res.chunked() && (req.version() == 10 || head)) res.chunked(false);
  if (!res.chunked()) res.prepare_payload();
  if (head) res.body().clear();  // after prepare_payload: Content-Length stays the GET's
  return streamed;
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
  callback_session(const callback_session&) = delete;
  callback_session& operator=(const callback_session&) = delete;
  ~callback_session() {
    slot_->close = nullptr;
    state_->connection_closed();
  }

  void run() {
    slot_->close = [weak = weak_from_this()] {
      if (auto self = weak.lock()) self->stream_.close();
    };
    net::dispatch(stream_.get_executor(),
                  beast::bind_front_handler(&callback_session::do_read, shared_from_this()));
  }

 private:
  const server_options& options() const { return state_->options; }

  void do_read() {
    slot_->busy = false;
    if (slot_->stop) return do_close();
    if (buffer_.size() == 0) {
      buffer_.shrink_to_fit();
      slot_->retained = buffer_.capacity() + (response_ ? response_->body().capacity() : 0);
      // Idle: wait for the first byte of the next request.
      stream_.expires_after(options().idle_timeout);
      stream_.async_read_some(
          buffer_.prepare(1024),
          beast::bind_front_handler(&callback_session::on_first_bytes, shared_from_this()));
      return;
    }
    read_header();
  }

  void on_first_bytes(error_code ec, std::size_t n) {
    if (ec) return state_->count_read_error(ec);  // idle timeout, close, reset, stop
    buffer_.commit(n);
    read_header();
  }

  void read_header() {
    slot_->busy = true;
    parser_.emplace();
    parser_->header_limit(options().max_header_bytes);
    parser_->body_limit(options().max_body_bytes);
    stream_.expires_after(options().header_timeout);
    http::async_read_header(
        stream_, buffer_, *parser_,
        beast::bind_front_handler(&callback_session::on_header_read, shared_from_this()));
  }

  void on_header_read(error_code ec, std::size_t) {
    if (ec) return on_read_error(ec);
    bool send_continue = false;
    if (auto refused = check_header(options(), *parser_, send_continue)) {
      return do_error(std::move(*refused));
    }
    if (parser_->is_done()) return handle();
    if (send_continue) {
      stream_.expires_after(options().write_timeout);
      continue_ = continue_response();
      http::async_write(
          stream_, continue_,
          beast::bind_front_handler(&callback_session::on_continue_written, shared_from_this()));
      return;
    }
    read_body();
  }

  void on_continue_written(error_code ec, std::size_t) {
    if (ec) return state_->count_read_error(ec);
    read_body();
  }

  void read_body() {
    stream_.expires_after(options().body_timeout);
    http::async_read(
        stream_, buffer_, *parser_,
        beast::bind_front_handler(&callback_session::on_body_read, shared_from_this()));
  }

  void on_body_read(error_code ec, std::size_t) {
    if (ec) return on_read_error(ec);
    handle();
  }

  void on_read_error(error_code ec) {
    state_->count_read_error(ec);
    if (auto res = read_error_response(ec)) return do_error(std::move(*res));
    if (ec == http::error::end_of_stream) do_close();
    // otherwise: reset, timeout (the stream closed itself), stop: the connection is gone
  }

  void handle() {
    scope_.emplace(connection_);  // crosstown: the request has been read
    auto record = std::make_shared<write_record>();
    stream_.rate_policy().track(record);
    request_context context{parser_->get(), *scope_, record, id_};
    response_.emplace();
    const bool streamed = respond(*state_, context, *response_);
    stream_.expires_after(options().write_timeout);
    if (streamed) {
      serializer_.emplace(*response_);
      crosstown::beast::async_write_header(
          stream_, *serializer_, *scope_,
          beast::bind_front_handler(&callback_session::on_header, shared_from_this()));
    } else {
      crosstown::beast::async_write_response(
          stream_, *response_, *scope_,
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
    const bool keep_alive = response_->keep_alive();
    stream_.expires_never();
    stream_.rate_policy().track(nullptr);
    serializer_.reset();
    scope_.reset();  // crosstown: the response is done
    // An idle connection keeps no response (64 KB for /stream), nor the request and its body.
    response_.reset();
    parser_.reset();
    if (ec) {
      state_->delivery_failures.fetch_add(1, std::memory_order_relaxed);
      state_->count_read_error(ec);
      return;
    }
    if (!keep_alive) return do_close();
    do_read();
  }

  void do_error(response_type res) {
    slot_->busy = true;
    state_->bad_requests.fetch_add(1, std::memory_order_relaxed);
    parser_.reset();
    response_ = std::move(res);
    stream_.expires_after(options().write_timeout);
    http::async_write(
        stream_, *response_,
        beast::bind_front_handler(&callback_session::on_error_written, shared_from_this()));
  }

  void on_error_written(error_code ec, std::size_t) {
    response_.reset();
    if (ec) return state_->count_read_error(ec);
    // Lingering close: stop sending, read what the client still sends for a moment, so that
    // closing with unread data does not reset the connection before it read the response.
    do_close();
    slot_->busy = false;  // nothing left to finish: stop() may close it at once
    if (slot_->stop) return;
    linger_until_ = clock_type::now() + std::chrono::seconds(1);
    do_linger();
  }

  void do_linger() {
    stream_.expires_at(linger_until_);
    buffer_.clear();
    stream_.async_read_some(buffer_.prepare(4096),
                            [self = shared_from_this()](error_code ec, std::size_t) {
                              if (!ec) self->do_linger();
                            });
  }

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
  std::optional<response_type> response_;  // only while it is written
  http::response<http::empty_body> continue_;
  std::optional<http::response_serializer<http::string_body>> serializer_;
  clock_type::time_point linger_until_{};
  const std::uint64_t id_;
};

// The same session as a coroutine: the scope is a local passed explicitly.
inline net::awaitable<void> coroutine_session(stream_type stream,
                                              std::shared_ptr<server_state> state,
                                              std::shared_ptr<connection_slot> slot,
                                              std::uint64_t id) {
  slot->close = [&stream] { stream.close(); };
  struct on_exit {
    connection_slot& slot;
    server_state& state;
    ~on_exit() {
      slot.close = nullptr;
      state.connection_closed();
    }
  } guard{*slot, *state};

  constexpr auto tuple_awaitable = net::as_tuple(net::use_awaitable);
  const server_options& o = state->options;
  crosstown::connection_scope connection(state->runtime);
  beast::flat_buffer buffer;
  std::optional<response_type> refused;
  for (;;) {
    slot->busy = false;
    if (slot->stop) break;
    if (buffer.size() == 0) {
      buffer.shrink_to_fit();
      slot->retained = buffer.capacity();
      stream.expires_after(o.idle_timeout);
      auto [ec, n] = co_await stream.async_read_some(buffer.prepare(1024), tuple_awaitable);
      if (ec) {
        state->count_read_error(ec);
        co_return;
      }
      buffer.commit(n);
    }
    slot->busy = true;
    http::request_parser<http::string_body> parser;
    parser.header_limit(o.max_header_bytes);
    parser.body_limit(o.max_body_bytes);
    stream.expires_after(o.header_timeout);
    auto [ec, read] = co_await http::async_read_header(stream, buffer, parser, tuple_awaitable);
    bool send_continue = false;
    if (!ec) refused = check_header(o, parser, send_continue);
    if (!ec && !refused && !parser.is_done()) {
      if (send_continue) {
        stream.expires_after(o.write_timeout);
        auto cont = continue_response();
        std::tie(ec, std::ignore) = co_await http::async_write(stream, cont, tuple_awaitable);
        if (ec) {
          state->count_read_error(ec);
          co_return;
        }
      }
      stream.expires_after(o.body_timeout);
      std::tie(ec, read) = co_await http::async_read(stream, buffer, parser, tuple_awaitable);
    }
    if (ec) {
      state->count_read_error(ec);
      refused = read_error_response(ec);
      if (!refused) {
        if (ec == http::error::end_of_stream) break;
        co_return;  // reset, timeout, stop: the connection is gone
      }
    }
    if (refused) break;

    crosstown::response_scope scope(connection);
    auto record = std::make_shared<write_record>();
    stream.rate_policy().track(record);
    request_context context{parser.get(), scope, record, id};
    response_type res;
    const bool streamed = respond(*state, context, res);
    stream.expires_after(o.write_timeout);
    error_code wec;
    if (streamed) {
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
    stream.expires_never();
    stream.rate_policy().track(nullptr);
    if (wec) {
      state->delivery_failures.fetch_add(1, std::memory_order_relaxed);
      state->count_read_error(wec);
      co_return;
    }
    if (!res.keep_alive()) break;
  }
  const bool answered_refusal = refused.has_value();
  if (refused) {
    state->bad_requests.fetch_add(1, std::memory_order_relaxed);
    stream.expires_after(o.write_timeout);
    auto [ec, n] = co_await http::async_write(stream, *refused, tuple_awaitable);
    refused.reset();
    if (ec) {
      state->count_read_error(ec);
      co_return;
    }
  }
  error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  if (!answered_refusal) co_return;
  // Lingering close (see callback_session::on_error_written).
  slot->busy = false;
  if (slot->stop) co_return;
  stream.expires_after(std::chrono::seconds(1));
  for (;;) {
    buffer.clear();
    auto [ec, n] = co_await stream.async_read_some(buffer.prepare(4096), tuple_awaitable);
    if (ec) break;
  }
}

// Over the connection cap: a fixed 503, written without waiting, then the socket closes.
inline void reject_connection(tcp::socket& socket) {
  static constexpr std::string_view text =
      "HTTP/1.1 503 Service Unavailable\r\nServer: crosstown-demo\r\nRetry-After: 1\r\n"
      "Connection: close\r\nContent-Length: 0\r\n\r\n";
  error_code ignored;
  socket.non_blocking(true, ignored);
  socket.write_some(net::buffer(text.data(), text.size()), ignored);
  socket.shutdown(tcp::socket::shutdown_send, ignored);
  socket.close(ignored);
}

inline void start_session(const std::shared_ptr<server_state>& state, tcp::socket socket) {
  if (state->active.load() >= state->options.max_connections) {
    state->rejected.fetch_add(1, std::memory_order_relaxed);
    reject_connection(socket);
    return;
  }
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

// Accept failures that more attempts cannot fix at once: the process or the system is out of
// descriptors, or the kernel out of memory. Retrying at once spins the I/O thread.
inline bool is_resource_exhaustion(const error_code& ec) {
  return ec == net::error::no_descriptors ||
         ec == boost::system::errc::too_many_files_open_in_system ||
         ec == net::error::no_buffer_space || ec == net::error::no_memory;
}

inline void do_accept(const std::shared_ptr<server_state>& state);

inline void back_off_then_accept(const std::shared_ptr<server_state>& state) {
  const server_options& o = state->options;
  state->backoff = state->backoff.count() == 0 ? o.accept_backoff_min
                                               : std::min(state->backoff * 2, o.accept_backoff_max);
  state->backoff_timer.expires_after(state->backoff);
  state->backoff_timer.async_wait([state](error_code ec) {
    if (ec || state->stopping) return;
    do_accept(state);
  });
}

inline void do_accept(const std::shared_ptr<server_state>& state) {
  state->acceptor.async_accept(net::make_strand(state->acceptor.get_executor()),
                               [state](error_code ec, tcp::socket socket) {
                                 if (state->stopping || !state->acceptor.is_open()) return;
                                 if (ec && is_resource_exhaustion(ec)) {
                                   state->accept_errors.fetch_add(1);
                                   return back_off_then_accept(state);
                                 }
                                 state->backoff = {};
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
  const server_options& options() const noexcept { return state_->options; }

  /// Starts accepting connections.
  void start() {
    net::post(state_->acceptor.get_executor(), [state = state_] { detail::do_accept(state); });
  }

  /// Graceful stop; callable from any thread. Stops accepting, closes idle connections, lets
  /// responses in progress finish within `stop_grace` and closes their connections after them.
  void stop() {
    net::post(state_->acceptor.get_executor(), [state = state_] {
      if (state->stopping) return;
      state->stopping = true;
      error_code ignored;
      state->acceptor.close(ignored);
      state->backoff_timer.cancel();
      for (const auto& weak : state->connections) {
        if (auto slot = weak.lock()) {
          slot->stop = true;
          if (!slot->busy && slot->close) slot->close();
        }
      }
      if (state->active.load() == 0) return;
      state->grace_timer.expires_after(state->options.stop_grace);
      state->grace_timer.async_wait([state](error_code ec) {
        if (!ec) state->close_all();
      });
    });
  }

  /// Immediate stop; callable from any thread: closes the listener and every connection now
  /// (responses in progress count as not delivered).
  void abort() {
    net::post(state_->acceptor.get_executor(), [state = state_] {
      state->stopping = true;
      error_code ignored;
      state->acceptor.close(ignored);
      state->backoff_timer.cancel();
      state->grace_timer.cancel();
      state->close_all();
    });
  }

  server_stats stats() const {
    return {state_->connection_count.load(), state_->requests.load(),
            state_->bad_requests.load(),     state_->delivery_failures.load(),
            state_->active.load(),           state_->rejected.load(),
            state_->timeouts.load(),         state_->accept_errors.load()};
  }

  /// What idle sessions hold: how many there are and the bytes of their buffers, summed on
  /// the I/O thread (which must be running). For tests of memory per idle connection.
  struct idle_memory {
    std::size_t sessions = 0;
    std::uint64_t bytes = 0;
  };
  idle_memory retained() const {
    std::promise<idle_memory> total;
    auto result = total.get_future();
    net::post(state_->acceptor.get_executor(), [state = state_, &total] {
      idle_memory sum;
      for (const auto& weak : state->connections) {
        if (auto slot = weak.lock(); slot && !slot->busy && slot->close) {
          ++sum.sessions;
          sum.bytes += slot->retained;
        }
      }
      total.set_value(sum);
    });
    return result.get();
  }

 private:
  std::shared_ptr<detail::server_state> state_;
};

}  // namespace crosstown_demo
