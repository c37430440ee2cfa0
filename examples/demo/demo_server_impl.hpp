// demo_server_impl.hpp - the demo server's sessions, accept loop and transports (see
// demo_server.hpp for what the server does).
//
// Include this only in a .cpp file that instantiates `basic_server` for a transport (it pulls
// in Beast's parsers and Asio's composed operations): demo_server.cpp for `tcp_transport`,
// demo_sim.cpp for the simulator's. Everything here runs on the server's I/O thread.
//
// A transport `T` (a tag with `context_type`) is described by `transport_traits<T>`:
//   socket_type, stream_type   the accepted connection and the timed stream over it: stream_type
//                              is constructed from (write_recorder, socket_type&&) and has
//                              basic_stream's `expires_after/expires_at/expires_never` (a
//                              timed-out operation completes with `beast::error::timeout` and
//                              the connection closes), `rate_policy()` (the write_recorder),
//                              `socket()` (with `shutdown(what, ec)`) and `close()`;
//   timer_type, time_point     steady_timer-like (accept back-off, stop grace); time_point is
//                              what `stream_type::expires_at` takes;
//   acceptor_type              `async_accept` through `accept(acceptor, handler)`, `is_open`,
//                              `close` through `close(acceptor)`;
//   executor(ctx), open(opt, ctx, options), port(acceptor), reject(socket&&),
//   configure(socket&, options), now(), date()   - see tcp_transport's below;
//   posted(ex)                 work was posted to `ex` from outside its own handlers (a new
//                              session's first step): a context stepped from outside (the
//                              simulator's) is told; a running io_context needs nothing;
//   watch(ctx, scope)          called once the handler has deferred, before the write
//                              (production: nothing; the simulator shows the oracle the tasks).
// `planted` (optional, default none) plants a known bug in the sessions for the simulator's
// tests that it is caught; only a transport that asks for one gets it - TCP never does.
#pragma once

#include "demo_server.hpp"

#include <crosstown/beast/write.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <exception>
#include <future>
#include <list>
#include <optional>
#include <string_view>
#include <tuple>
#include <utility>

namespace crosstown_demo {

/// Known session bugs the simulator's tests plant (demo_sim.cpp); production has none.
enum class planted_bug : std::uint8_t {
  none,
  stale_scope,         ///< (a) request N+1's write is handed request N's scope
  ignore_write_error,  ///< (c) a failed write is reported to the scope as sent
};

template <class Transport>
struct transport_traits;

template <class Traits>
constexpr planted_bug planted_bug_of() {
  if constexpr (requires { Traits::planted; }) {
    return Traits::planted;
  } else {
    return planted_bug::none;
  }
}

template <>
struct transport_traits<tcp_transport> {
  using socket_type = tcp::socket;
  using stream_type = beast::basic_stream<tcp, net::any_io_executor, write_recorder>;
  using timer_type = net::steady_timer;
  using acceptor_type = tcp::acceptor;
  using time_point = net::steady_timer::time_point;

  static net::any_io_executor executor(net::io_context& ioc) { return ioc.get_executor(); }

  static void open(std::optional<acceptor_type>& acceptor, net::io_context& ioc,
                   const server_options& o) {
    acceptor.emplace(ioc);
    const tcp::endpoint endpoint(net::ip::make_address(o.address), o.port);
    acceptor->open(endpoint.protocol());
    acceptor->set_option(net::socket_base::reuse_address(true));
    acceptor->bind(endpoint);
    acceptor->listen(net::socket_base::max_listen_connections);
  }

  static unsigned short port(const acceptor_type& acceptor) {
    return acceptor.local_endpoint().port();
  }

  // Each connection on a strand of its own (the io_context may be run by one thread only, but
  // a strand costs nothing then and keeps sessions independent).
  template <class Handler>
  static void accept(acceptor_type& acceptor, Handler&& on_accept) {
    acceptor.async_accept(net::make_strand(acceptor.get_executor()),
                          std::forward<Handler>(on_accept));
  }

  static void close(acceptor_type& acceptor) {
    error_code ignored;
    acceptor.close(ignored);
  }

  // Over the connection cap: a fixed 503, written without waiting, then the socket closes.
  static void reject(socket_type&& socket) {
    static constexpr std::string_view text =
        "HTTP/1.1 503 Service Unavailable\r\nServer: crosstown-demo\r\nRetry-After: 1\r\n"
        "Connection: close\r\nContent-Length: 0\r\n\r\n";
    error_code ignored;
    socket.non_blocking(true, ignored);
    socket.write_some(net::buffer(text.data(), text.size()), ignored);
    socket.shutdown(tcp::socket::shutdown_send, ignored);
    socket.close(ignored);
  }

  static void configure(socket_type& socket, const server_options& o) {
    if (o.send_buffer_size > 0) {
      error_code ignored;
      socket.set_option(net::socket_base::send_buffer_size(o.send_buffer_size), ignored);
    }
  }

  static time_point now() { return net::steady_timer::clock_type::now(); }
  static const std::string& date() { return http_date(); }
  static void posted(const net::any_io_executor&) noexcept {}
  static void watch(net::io_context&, const crosstown::response_scope&) noexcept {}
};

namespace detail {

// A response the server itself gives (limits, malformed requests): it closes the connection.
// The session sets its Date (on the transport's clock) when it writes it.
inline response_type error_response(http::status status, std::string body, unsigned version = 11) {
  response_type res{status, version == 10 ? 10u : 11u};
  res.set(http::field::server, "crosstown-demo");
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

template <class Transport>
struct server_state {
  using traits = transport_traits<Transport>;
  using context_type = typename Transport::context_type;

  server_state(context_type& ctx, crosstown::runtime& rt, handler h, server_options o)
      : context(ctx),
        runtime(rt),
        app(std::move(h)),
        options(std::move(o)),
        backoff_timer(traits::executor(ctx)),
        grace_timer(traits::executor(ctx)) {
    traits::open(acceptor, ctx, options);
  }

  context_type& context;
  crosstown::runtime& runtime;
  const handler app;
  const server_options options;
  std::optional<typename traits::acceptor_type> acceptor;  // opened by the constructor
  typename traits::timer_type backoff_timer;               // accept back-off; I/O thread only
  typename traits::timer_type grace_timer;  // stop(): cuts off what is still busy; I/O thread only
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
    changed();
    return slot;
  }

  // A session ended (I/O thread). The last one during a stop lets the io_context finish.
  void connection_closed() {
    if (active.fetch_sub(1) == 1 && stopping) grace_timer.cancel();
    changed();
  }

  // Counts one more of `counter` (I/O thread) and tells the observer.
  std::uint64_t count(std::atomic<std::uint64_t>& counter) {
    const std::uint64_t now = counter.fetch_add(1, std::memory_order_relaxed) + 1;
    changed();
    return now;
  }

  // `server_options::on_change`: a counter changed, a session went idle or a write completed.
  void changed() const {
    if (options.on_change) options.on_change();
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
    if (ec == beast::error::timeout) count(timeouts);
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
template <class State>
bool respond(State& state, request_context& context, response_type& res, const std::string& date) {
  state.count(state.requests);
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
  res.set(http::field::date, date);
  res.keep_alive(req.keep_alive() && !state.stopping);
  // HTTP/1.0 has no chunked coding; a HEAD response has the headers of the GET, no body.
  if (res.chunked() && (req.version() == 10 || head)) res.chunked(false);
  if (!res.chunked()) res.prepare_payload();
  if (head) res.body().clear();  // after prepare_payload: Content-Length stays the GET's
  return streamed;
}

// Beast's async server session, with crosstown's few lines added.
template <class Transport>
class callback_session : public std::enable_shared_from_this<callback_session<Transport>> {
  using traits = transport_traits<Transport>;
  using state_type = server_state<Transport>;
  static constexpr planted_bug bug = planted_bug_of<traits>();

 public:
  callback_session(typename traits::socket_type&& socket, std::shared_ptr<state_type> state,
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
    slot_->close = [weak = this->weak_from_this()] {
      if (auto self = weak.lock()) self->stream_.close();
    };
    net::dispatch(stream_.get_executor(),
                  beast::bind_front_handler(&callback_session::do_read, this->shared_from_this()));
  }

 private:
  const server_options& options() const { return state_->options; }

  void do_read() {
    slot_->busy = false;
    if (slot_->stop) return do_close();
    if (buffer_.size() == 0) {
      buffer_.shrink_to_fit();
      slot_->retained = buffer_.capacity() + (response_ ? response_->body().capacity() : 0);
      state_->changed();
      // Idle: wait for the first byte of the next request.
      stream_.expires_after(options().idle_timeout);
      stream_.async_read_some(
          buffer_.prepare(1024),
          beast::bind_front_handler(&callback_session::on_first_bytes, this->shared_from_this()));
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
        beast::bind_front_handler(&callback_session::on_header_read, this->shared_from_this()));
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
      http::async_write(stream_, continue_,
                        beast::bind_front_handler(&callback_session::on_continue_written,
                                                  this->shared_from_this()));
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
        beast::bind_front_handler(&callback_session::on_body_read, this->shared_from_this()));
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
    if constexpr (bug == planted_bug::stale_scope) ++turn_;
    scope().emplace(connection_);  // crosstown: the request has been read
    auto record = std::make_shared<write_record>();
    stream_.rate_policy().track(record);
    request_context context{parser_->get(), *scope(), record, id_};
    response_.emplace();
    const bool streamed = respond(*state_, context, *response_, traits::date());
    traits::watch(state_->context, *scope());
    stream_.expires_after(options().write_timeout);
    if constexpr (bug == planted_bug::ignore_write_error) {
      if (!streamed) return write_ignoring_errors();
    }
    if (streamed) {
      serializer_.emplace(*response_);
      crosstown::beast::async_write_header(
          stream_, *serializer_, write_scope(),
          beast::bind_front_handler(&callback_session::on_header, this->shared_from_this()));
    } else {
      crosstown::beast::async_write_response(
          stream_, *response_, write_scope(),
          beast::bind_front_handler(&callback_session::on_write, this->shared_from_this()));
    }
  }

  // The current request's scope.
  std::optional<crosstown::response_scope>& scope() { return scopes_[turn_ % 2]; }

  // The scope the response's write reports to: its own request's.
  crosstown::response_scope& write_scope() {
    if constexpr (bug == planted_bug::stale_scope) {
      // Planted bug (a): the session keeps a scope made ahead and hands each write the one made
      // before the current request's - request N+1's write gets request N's scope (the first
      // write an empty one made for the connection).
      auto& before = scopes_[(turn_ + 1) % 2];
      if (!before) before.emplace(connection_);
      return *before;
    }
    return *scope();
  }

  // Planted bug (c): writes without the adapter and reports success whatever the write said.
  void write_ignoring_errors() {
    scope()->status_known(response_->result_int());
    http::async_write(stream_, *response_,
                      [self = this->shared_from_this()](error_code, std::size_t n) {
                        (*self->scope()).response_sent();
                        self->on_write({}, n);
                      });
  }

  void on_header(error_code ec, std::size_t bytes) {
    if (ec) return on_write(ec, bytes);
    crosstown::beast::async_write_body(
        stream_, *serializer_, write_scope(),
        beast::bind_front_handler(&callback_session::on_write, this->shared_from_this()));
  }

  void on_write(error_code ec, std::size_t) {
    const bool keep_alive = response_->keep_alive();
    stream_.expires_never();
    stream_.rate_policy().track(nullptr);
    serializer_.reset();
    if constexpr (bug == planted_bug::stale_scope) {
      scopes_[(turn_ + 1) % 2].reset();  // the one written ends; the current one is kept
    } else {
      scope().reset();  // crosstown: the response is done
    }
    // An idle connection keeps no response (64 KB for /stream), nor the request and its body.
    response_.reset();
    parser_.reset();
    state_->changed();
    if (ec) {
      // The cause first: whoever sees the failure counted sees its timeout counted too.
      state_->count_read_error(ec);
      state_->count(state_->delivery_failures);
      return;
    }
    if (!keep_alive) return do_close();
    do_read();
  }

  void do_error(response_type res) {
    slot_->busy = true;
    state_->count(state_->bad_requests);
    parser_.reset();
    response_ = std::move(res);
    response_->set(http::field::date, traits::date());
    stream_.expires_after(options().write_timeout);
    http::async_write(
        stream_, *response_,
        beast::bind_front_handler(&callback_session::on_error_written, this->shared_from_this()));
  }

  void on_error_written(error_code ec, std::size_t) {
    response_.reset();
    if (ec) return state_->count_read_error(ec);
    // Lingering close: stop sending, read what the client still sends for a moment, so that
    // closing with unread data does not reset the connection before it read the response.
    do_close();
    slot_->busy = false;  // nothing left to finish: stop() may close it at once
    if (slot_->stop) return;
    linger_until_ = traits::now() + std::chrono::seconds(1);
    do_linger();
  }

  void do_linger() {
    stream_.expires_at(linger_until_);
    buffer_.clear();
    stream_.async_read_some(buffer_.prepare(4096),
                            [self = this->shared_from_this()](error_code ec, std::size_t) {
                              if (!ec) self->do_linger();
                            });
  }

  void do_close() {
    error_code ignored;
    stream_.socket().shutdown(net::socket_base::shutdown_send, ignored);
  }

  std::shared_ptr<state_type> state_;
  std::shared_ptr<connection_slot> slot_;
  typename traits::stream_type stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  crosstown::connection_scope connection_;  // declared before scopes_: outlives them
  // The request's scope is scopes_[0]; planted bug (a) alternates them (turn_: requests).
  std::array<std::optional<crosstown::response_scope>, 2> scopes_;
  std::size_t turn_ = 0;
  std::optional<response_type> response_;  // only while it is written
  http::response<http::empty_body> continue_;
  std::optional<http::response_serializer<http::string_body>> serializer_;
  typename traits::time_point linger_until_{};
  const std::uint64_t id_;
};

// The same session as a coroutine: the scope is a local passed explicitly.
template <class Transport>
net::awaitable<void> coroutine_session(typename transport_traits<Transport>::stream_type stream,
                                       std::shared_ptr<server_state<Transport>> state,
                                       std::shared_ptr<connection_slot> slot, std::uint64_t id) {
  using traits = transport_traits<Transport>;
  slot->close = [&stream] { stream.close(); };
  struct on_exit {
    connection_slot& slot;
    server_state<Transport>& state;
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
      state->changed();
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
    const bool streamed = respond(*state, context, res, traits::date());
    traits::watch(state->context, scope);
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
    state->changed();
    if (wec) {
      state->count_read_error(wec);  // the cause first, as in callback_session::on_write
      state->count(state->delivery_failures);
      co_return;
    }
    if (!res.keep_alive()) break;
  }
  const bool answered_refusal = refused.has_value();
  if (refused) {
    state->count(state->bad_requests);
    refused->set(http::field::date, traits::date());
    stream.expires_after(o.write_timeout);
    auto [ec, n] = co_await http::async_write(stream, *refused, tuple_awaitable);
    refused.reset();
    if (ec) {
      state->count_read_error(ec);
      co_return;
    }
  }
  error_code ignored;
  stream.socket().shutdown(net::socket_base::shutdown_send, ignored);
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

template <class Transport>
void start_session(const std::shared_ptr<server_state<Transport>>& state,
                   typename transport_traits<Transport>::socket_type socket) {
  using traits = transport_traits<Transport>;
  if (state->active.load() >= state->options.max_connections) {
    state->count(state->rejected);
    traits::reject(std::move(socket));
    return;
  }
  traits::configure(socket, state->options);
  const std::uint64_t id = state->count(state->connection_count);
  auto slot = state->add_connection();
  auto executor = socket.get_executor();
  if (state->options.style == session_style::callback) {
    std::make_shared<callback_session<Transport>>(std::move(socket), state, std::move(slot), id)
        ->run();
    traits::posted(executor);
    return;
  }
  net::co_spawn(
      executor,
      coroutine_session<Transport>(
          typename traits::stream_type(write_recorder(state->options.sequence), std::move(socket)),
          state, std::move(slot), id),
      [](const std::exception_ptr& e) {
        if (e) std::rethrow_exception(e);
      });
  traits::posted(executor);
}

// Accept failures that more attempts cannot fix at once: the process or the system is out of
// descriptors, or the kernel out of memory. Retrying at once spins the I/O thread.
inline bool is_resource_exhaustion(const error_code& ec) {
  return ec == net::error::no_descriptors ||
         ec == boost::system::errc::too_many_files_open_in_system ||
         ec == net::error::no_buffer_space || ec == net::error::no_memory;
}

template <class Transport>
void do_accept(const std::shared_ptr<server_state<Transport>>& state);

template <class Transport>
void back_off_then_accept(const std::shared_ptr<server_state<Transport>>& state) {
  const server_options& o = state->options;
  state->backoff = state->backoff.count() == 0 ? o.accept_backoff_min
                                               : std::min(state->backoff * 2, o.accept_backoff_max);
  state->backoff_timer.expires_after(state->backoff);
  state->backoff_timer.async_wait([state](error_code ec) {
    if (ec || state->stopping) return;
    do_accept(state);
  });
}

template <class Transport>
void do_accept(const std::shared_ptr<server_state<Transport>>& state) {
  using traits = transport_traits<Transport>;
  traits::accept(*state->acceptor, [state](error_code ec, typename traits::socket_type socket) {
    if (state->stopping || !state->acceptor->is_open()) return;
    if (ec && is_resource_exhaustion(ec)) {
      state->count(state->accept_errors);
      return back_off_then_accept(state);
    }
    state->backoff = {};
    if (!ec) start_session<Transport>(state, std::move(socket));
    do_accept(state);
  });
}

}  // namespace detail

template <class Transport>
basic_server<Transport>::basic_server(context_type& context, crosstown::runtime& rt, handler app,
                                      server_options options)
    : state_(std::make_shared<detail::server_state<Transport>>(context, rt, std::move(app),
                                                               std::move(options))) {}

template <class Transport>
basic_server<Transport>::~basic_server() = default;

template <class Transport>
unsigned short basic_server<Transport>::port() const {
  return transport_traits<Transport>::port(*state_->acceptor);
}

template <class Transport>
const server_options& basic_server<Transport>::options() const noexcept {
  return state_->options;
}

template <class Transport>
void basic_server<Transport>::start() {
  net::post(state_->acceptor->get_executor(), [state = state_] { detail::do_accept(state); });
}

template <class Transport>
void basic_server<Transport>::stop() {
  net::post(state_->acceptor->get_executor(), [state = state_] {
    if (state->stopping) return;
    state->stopping = true;
    transport_traits<Transport>::close(*state->acceptor);
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

template <class Transport>
void basic_server<Transport>::abort() {
  net::post(state_->acceptor->get_executor(), [state = state_] {
    state->stopping = true;
    transport_traits<Transport>::close(*state->acceptor);
    state->backoff_timer.cancel();
    state->grace_timer.cancel();
    state->close_all();
  });
}

template <class Transport>
server_stats basic_server<Transport>::stats() const {
  return {state_->connection_count.load(), state_->requests.load(),
          state_->bad_requests.load(),     state_->delivery_failures.load(),
          state_->active.load(),           state_->rejected.load(),
          state_->timeouts.load(),         state_->accept_errors.load()};
}

template <class Transport>
typename basic_server<Transport>::idle_memory basic_server<Transport>::retained() const {
  std::promise<idle_memory> total;
  auto result = total.get_future();
  net::post(state_->acceptor->get_executor(), [state = state_, &total] {
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

}  // namespace crosstown_demo
