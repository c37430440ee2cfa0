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
// timeouts"): every wait runs on the session's stream timer (`expires_after` of the transport's
// timed stream: Beast's `basic_stream` over TCP, a stream on the transport's timer otherwise):
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
//
// Transports: `basic_server<Transport>` is the server over one transport; `server` is the TCP
// one (`tcp_transport`: Beast's `basic_stream` over `tcp::socket`, `steady_timer`), compiled
// once in demo_server.cpp. The sessions, the accept loop and the transport's traits are in
// demo_server_impl.hpp, included only by the .cpp files that instantiate the server for a
// transport - demo_server.cpp for TCP, demo_sim.cpp for the simulator's stream and timer
// (crosstown::sim), where the same sessions, handler and crosstown::beast writes run on
// virtual time. A transport is a tag naming the context the server is built from
// (`context_type`) plus a `transport_traits` specialization (see demo_server_impl.hpp).
#pragma once

#include <crosstown/crosstown.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
// Beast's core and HTTP headers whole: the server's users (main.cpp's client, tests/beast)
// talk HTTP with them. What costs compile time - instantiating the sessions - is not here.
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <functional>
#include <limits>
#include <memory>
#include <string>

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

  /// A write of `n` bytes completed at `at_ns` (the transport's clock). Beast's `basic_stream`
  /// calls it through the rate-policy interface below; other timed streams call it directly.
  void record_write(std::size_t n, std::int64_t at_ns) noexcept {
    if (!current_) return;
    current_->bytes.fetch_add(n, std::memory_order_relaxed);
    current_->last_write_ns.store(at_ns, std::memory_order_relaxed);
    if (sequence_ != nullptr) {
      current_->last_write_sequence.store(sequence_->fetch_add(1) + 1, std::memory_order_relaxed);
    }
  }

 private:
  friend class boost::beast::rate_policy_access;
  static constexpr std::size_t all = (std::numeric_limits<std::size_t>::max)();

  std::size_t available_read_bytes() const noexcept { return all; }
  std::size_t available_write_bytes() const noexcept { return all; }
  void transfer_read_bytes(std::size_t) const noexcept {}
  void transfer_write_bytes(std::size_t n) noexcept { record_write(n, now_ns()); }
  void on_timer() const noexcept {}

  std::shared_ptr<write_record> current_;
  std::atomic<std::uint64_t>* sequence_;
};

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
  /// Called on the I/O thread after a counter of `stats()` changed, a session went idle (what
  /// `retained()` sums) or a response's write completed: an observer (a test) waits on it
  /// instead of polling. Must be quick and must not call into the server. Empty: not called.
  std::function<void()> on_change{};
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

/// The TCP transport: Beast's `basic_stream` over `tcp::socket`, `steady_timer`; the server is
/// built from the io_context it runs on.
struct tcp_transport {
  using context_type = net::io_context;
};

namespace detail {
template <class Transport>
struct server_state;
}  // namespace detail

/// The listener over one transport. See the file comment for its threading and shutdown rules.
template <class Transport>
class basic_server {
 public:
  using context_type = typename Transport::context_type;

  /// Binds and listens at once (so `port()` is known); accepts once `start()` is called.
  basic_server(context_type& context, crosstown::runtime& rt, handler app,
               server_options options = {});
  basic_server(const basic_server&) = delete;
  basic_server& operator=(const basic_server&) = delete;
  ~basic_server();

  /// The port listened on (0 for a transport without ports).
  unsigned short port() const;
  const server_options& options() const noexcept;

  /// Starts accepting connections.
  void start();

  /// Graceful stop; callable from any thread. Stops accepting, closes idle connections, lets
  /// responses in progress finish within `stop_grace` and closes their connections after them.
  void stop();

  /// Immediate stop; callable from any thread: closes the listener and every connection now
  /// (responses in progress count as not delivered).
  void abort();

  server_stats stats() const;

  /// What idle sessions hold: how many there are and the bytes of their buffers, summed on
  /// the I/O thread (which must be running, on another thread). For tests of memory per idle
  /// connection.
  struct idle_memory {
    std::size_t sessions = 0;
    std::uint64_t bytes = 0;
  };
  idle_memory retained() const;

 private:
  std::shared_ptr<detail::server_state<Transport>> state_;
};

extern template class basic_server<tcp_transport>;

/// The TCP server (crosstown-demo, tests/beast).
using server = basic_server<tcp_transport>;

}  // namespace crosstown_demo
