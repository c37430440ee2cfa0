// The conformance kit (crosstown/testing/conformance.hpp) run on the Boost.Beast adapter: a
// small Beast server on two I/O threads (a strand per connection) whose sessions write every
// response with crosstown::beast - callback sessions and coroutine sessions, each a target.
#include <crosstown/beast/write.hpp>
#include <crosstown/crosstown.hpp>
#include <crosstown/testing/conformance.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace testkit = crosstown::testkit;
using tcp = net::ip::tcp;
using error_code = beast::error_code;

// `broken` is an adapter that gets it wrong on purpose - it reports the response sent, with
// status 200, as soon as the handler returns, then writes with Beast's own function - built
// only into beast_conformance_broken_test, which proves that the kit's checks can fail.
enum class session_style { callback, coroutine, broken };

// One accepted connection: the stream and the connection's scope. Shared by the session and
// the server's registry (weakly), so stop() can close it.
struct connection {
  connection(tcp::socket socket, crosstown::runtime& rt) : stream(std::move(socket)), scope(rt) {}
  beast::tcp_stream stream;
  crosstown::connection_scope scope;
};

// What a session writes for one request: a whole message, or headers then chunks.
struct prepared {
  http::response<http::string_body> whole;
  std::vector<std::string> chunks;  // non-empty: streamed with a buffer_body
  bool keep_alive = true;
};

// The server's part that does not depend on the session style: routing, the kit's handler,
// its error path and the outcome report.
struct app {
  testkit::kit_handler handler;
  testkit::outcome_hook on_outcome;

  prepared respond(const http::request<http::string_body>& req,
                   crosstown::response_scope& scope) const {
    prepared p;
    p.keep_alive = req.keep_alive();
    const std::string target(req.target());
    http::response<http::string_body>& res = p.whole;
    res.version(req.version());
    res.keep_alive(p.keep_alive);
    if (target != "/kit" && target.rfind("/kit?", 0) != 0) {
      res.result(http::status::not_found);
      res.body() = "not found\n";
      res.prepare_payload();
      return p;
    }
    testkit::kit_response out;
    try {
      out = handler({std::string(req.method_string()), target}, scope);
    } catch (const std::exception& e) {
      // The server's own error path: the scope learns the 500 from the write, as for any
      // response.
      res.result(http::status::internal_server_error);
      res.body() = std::string("handler failed: ") + e.what() + "\n";
      res.prepare_payload();
      return p;
    }
    res.result(static_cast<unsigned>(out.status));
    if (!out.chunks.empty()) {
      p.chunks = std::move(out.chunks);
      return p;
    }
    if (req.method() == http::verb::head) {
      res.content_length(out.body.size());  // the headers of that body, no body
    } else {
      res.body() = std::move(out.body);
      if (out.status != 204 && out.status != 304) res.prepare_payload();
    }
    return p;
  }

  void report(const http::request<http::string_body>& req,
              const crosstown::response_scope& scope) const {
    on_outcome({std::string(req.method_string()), std::string(req.target()), scope.status(),
                scope.delivery_state()});
  }
};

// --- callback sessions ---------------------------------------------------------------------

class callback_session : public std::enable_shared_from_this<callback_session> {
 public:
  callback_session(std::shared_ptr<connection> c, const app& a, bool broken = false)
      : c_(std::move(c)), app_(a), broken_(broken) {}

  void run() { do_read(); }

 private:
  void do_read() {
    req_ = {};
    http::async_read(
        c_->stream, buffer_, req_,
        [self = shared_from_this()](error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(error_code ec) {
    if (ec) return close();
    scope_.emplace(c_->scope);
    p_ = app_.respond(req_, *scope_);
    if (broken_) {
      scope_->status_known(200);
      scope_->response_sent();
      http::async_write(
          c_->stream, p_.whole,
          [self = shared_from_this()](error_code e, std::size_t) { self->on_written(e); });
      return;
    }
    if (p_.chunks.empty()) {
      crosstown::beast::async_write_response(
          c_->stream, p_.whole, *scope_,
          [self = shared_from_this()](error_code e, std::size_t) { self->on_written(e); });
      return;
    }
    streamed_.emplace(p_.whole.result(), p_.whole.version());
    streamed_->keep_alive(p_.keep_alive);
    streamed_->chunked(true);
    sr_.emplace(*streamed_);
    crosstown::beast::async_write_header(c_->stream, *sr_, *scope_,
                                         [self = shared_from_this()](error_code e, std::size_t) {
                                           if (e) return self->on_written(e);
                                           self->next_chunk = 0;
                                           self->do_write_chunk();
                                         });
  }

  void do_write_chunk() {
    auto& body = streamed_->body();
    if (next_chunk < p_.chunks.size()) {
      body.data = p_.chunks[next_chunk].data();
      body.size = p_.chunks[next_chunk].size();
      body.more = true;
    } else {
      body.data = nullptr;
      body.size = 0;
      body.more = false;
    }
    ++next_chunk;
    crosstown::beast::async_write_body(c_->stream, *sr_, *scope_,
                                       [self = shared_from_this()](error_code e, std::size_t) {
                                         if (e == http::error::need_buffer)
                                           return self->do_write_chunk();
                                         self->on_written(e);
                                       });
  }

  void on_written(error_code ec) {
    app_.report(req_, *scope_);
    scope_.reset();
    sr_.reset();
    streamed_.reset();
    if (ec || !p_.keep_alive) return close();
    do_read();
  }

  void close() {
    error_code ignored;
    c_->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    c_->stream.socket().close(ignored);
  }

  std::shared_ptr<connection> c_;
  const app& app_;
  const bool broken_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> req_;
  std::optional<crosstown::response_scope> scope_;
  prepared p_;
  std::optional<http::response<http::buffer_body>> streamed_;
  std::optional<http::response_serializer<http::buffer_body>> sr_;

 public:
  std::size_t next_chunk = 0;
};

// --- coroutine sessions --------------------------------------------------------------------

net::awaitable<void> coroutine_session(std::shared_ptr<connection> c, const app& a) {
  const auto tuple = net::as_tuple(net::use_awaitable);
  beast::flat_buffer buffer;
  for (;;) {
    http::request<http::string_body> req;
    auto [read_ec, read_n] = co_await http::async_read(c->stream, buffer, req, tuple);
    if (read_ec) break;
    crosstown::response_scope scope(c->scope);  // a local, passed explicitly
    prepared p = a.respond(req, scope);
    error_code ec;
    if (p.chunks.empty()) {
      std::tie(ec, std::ignore) =
          co_await crosstown::beast::async_write_response(c->stream, p.whole, scope, tuple);
    } else {
      http::response<http::buffer_body> res{p.whole.result(), p.whole.version()};
      res.keep_alive(p.keep_alive);
      res.chunked(true);
      http::response_serializer<http::buffer_body> sr{res};
      std::tie(ec, std::ignore) =
          co_await crosstown::beast::async_write_header(c->stream, sr, scope, tuple);
      for (std::size_t i = 0; !ec && i <= p.chunks.size(); ++i) {
        const bool last = i == p.chunks.size();
        res.body().data = last ? nullptr : p.chunks[i].data();
        res.body().size = last ? 0 : p.chunks[i].size();
        res.body().more = !last;
        std::tie(ec, std::ignore) =
            co_await crosstown::beast::async_write_body(c->stream, sr, scope, tuple);
        if (ec == http::error::need_buffer) ec = {};
      }
    }
    a.report(req, scope);
    if (ec || !p.keep_alive) break;
  }
  error_code ignored;
  c->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  c->stream.socket().close(ignored);
}

// --- the server ----------------------------------------------------------------------------

class beast_server final : public testkit::server_under_test {
 public:
  explicit beast_server(session_style style) : style_(style) {}
  ~beast_server() override { stop(); }

  unsigned short start(crosstown::runtime& rt, testkit::kit_handler handler,
                       testkit::outcome_hook on_outcome) override {
    rt_ = &rt;
    app_ = {std::move(handler), std::move(on_outcome)};
    acceptor_.open(tcp::v4());
    acceptor_.set_option(net::socket_base::reuse_address(true));
    acceptor_.bind({net::ip::make_address("127.0.0.1"), 0});
    acceptor_.listen();
    const unsigned short port = acceptor_.local_endpoint().port();
    do_accept();
    work_.emplace(ioc_.get_executor());
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { ioc_.run(); });
    return port;
  }

  // Stops accepting, closes every connection, and joins the I/O threads: every session has
  // finished, so every scope has ended and every connection scope closed. The work guard keeps
  // the threads running until every close is posted: without it, the threads could run out of
  // work - the acceptor closed, the last session ended - between the acceptor's close and a
  // connection's, and the unrun close would keep its connection (and its connection-phase
  // tasks) alive until the io_context is destroyed, after the runtime.
  void stop() override {
    if (threads_.empty()) return;
    net::post(acceptor_.get_executor(), [this] {
      error_code ignored;
      acceptor_.close(ignored);
    });
    std::vector<std::shared_ptr<connection>> live;
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      for (auto& [id, weak] : connections_) {
        if (auto c = weak.lock()) live.push_back(std::move(c));
      }
    }
    for (auto& c : live) {
      net::post(c->stream.get_executor(), [c] {
        error_code ignored;
        c->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
        c->stream.socket().close(ignored);
      });
    }
    live.clear();
    work_.reset();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

 private:
  void do_accept() {
    acceptor_.async_accept(net::make_strand(ioc_), [this](error_code ec, tcp::socket socket) {
      if (ec) return;  // closed by stop()
      auto c = std::make_shared<connection>(std::move(socket), *rt_);
      {
        std::lock_guard lock(mutex_);
        if (stopping_) return;  // accepted as stop() ran: dropped, closing the socket
        std::erase_if(connections_, [](const auto& entry) { return entry.second.expired(); });
        connections_.emplace(next_id_++, c);
      }
      if (style_ != session_style::coroutine) {
        std::make_shared<callback_session>(std::move(c), app_, style_ == session_style::broken)
            ->run();
      } else {
        auto ex = c->stream.get_executor();
        net::co_spawn(ex, coroutine_session(std::move(c), app_), net::detached);
      }
      do_accept();
    });
  }

  const session_style style_;
  crosstown::runtime* rt_ = nullptr;
  app app_;
  net::io_context ioc_{2};
  tcp::acceptor acceptor_{net::make_strand(ioc_)};
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work_;
  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::map<std::uint64_t, std::weak_ptr<connection>> connections_;  // guarded by mutex_
  std::uint64_t next_id_ = 0;                                       // guarded by mutex_
  bool stopping_ = false;                                           // guarded by mutex_
};

}  // namespace

#ifdef CROSSTOWN_CONFORMANCE_BROKEN
CROSSTOWN_CONFORMANCE_SUITE(BrokenBeast,
                            testkit::conformance_target{"broken", [] {
                                                          return std::make_unique<beast_server>(
                                                              session_style::broken);
                                                        }});
#else
CROSSTOWN_CONFORMANCE_SUITE(
    Beast,
    testkit::conformance_target{
        "callback", [] { return std::make_unique<beast_server>(session_style::callback); }},
    testkit::conformance_target{
        "coroutine", [] { return std::make_unique<beast_server>(session_style::coroutine); }});
#endif
