// The demo server's hardening, over real sockets on 127.0.0.1 (port 0), for both session
// styles: input bounds, timeouts, the connection cap, memory per idle connection, bounded
// per-request records, admission (503), HTTP conformance, pipelined floods and resets at byte
// offsets. Every wait polls a condition with a deadline; every client socket has a receive
// timeout, so a server that misbehaves fails the test instead of hanging it.
//
// Timeouts are configured in milliseconds here so each test takes well under a second; the
// defaults (seconds) are the server's, documented in README.md.
#include "demo_server.hpp"
#include "phone_calls_app.hpp"
#include "test_support.hpp"

#include <crosstown/crosstown.hpp>

#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/time.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

namespace demo = crosstown_demo;
namespace net = demo::net;
namespace beast = demo::beast;
namespace http = demo::http;
using demo::tcp;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

constexpr auto deadline = 10s;

// A blocking client whose reads give up after 5 s (the test then fails, never hangs).
class raw_client {
 public:
  explicit raw_client(unsigned short port, int receive_buffer = 0) : socket_(ioc_) {
    socket_.open(tcp::v4());
    if (receive_buffer > 0) {
      socket_.set_option(net::socket_base::receive_buffer_size(receive_buffer));
    }
    timeval tv{5, 0};
    ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    socket_.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  }

  void send(std::string_view bytes) {
    beast::error_code ec;
    net::write(socket_, net::buffer(bytes.data(), bytes.size()), ec);
  }

  // One response; `head`: it answers a HEAD (no body whatever its Content-Length).
  std::optional<demo::response_type> read(bool head = false) {
    http::response_parser<http::string_body> parser;
    parser.body_limit(boost::none);
    parser.skip(head);
    beast::error_code ec;
    http::read(socket_, buffer_, parser, ec);
    if (ec) return std::nullopt;
    return parser.release();
  }

  demo::response_type request(std::string_view text, bool head = false) {
    send(text);
    auto res = read(head);
    EXPECT_TRUE(res.has_value()) << "no response to: " << text;
    return res ? std::move(*res) : demo::response_type{};
  }

  // The raw bytes the server sends until it closes (or 5 s pass).
  std::string read_all() {
    std::string out(static_cast<const char*>(buffer_.data().data()), buffer_.size());
    buffer_.consume(buffer_.size());
    char chunk[4096];
    for (;;) {
      beast::error_code ec;
      const std::size_t n = socket_.read_some(net::buffer(chunk), ec);
      out.append(chunk, n);
      if (ec) break;
    }
    return out;
  }

  // True once the server has closed the connection (EOF or reset) - within the read timeout.
  bool closed_by_server() {
    char byte = 0;
    beast::error_code ec;
    socket_.read_some(net::buffer(&byte, 1), ec);
    return ec == net::error::eof || ec == net::error::connection_reset;
  }

  void reset() {
    beast::error_code ignored;
    socket_.set_option(net::socket_base::linger(true, 0), ignored);
    socket_.close(ignored);
  }

  tcp::socket& socket() { return socket_; }

 private:
  net::io_context ioc_;
  tcp::socket socket_;
  beast::flat_buffer buffer_;
};

std::string get(std::string_view target, std::string_view extra = "") {
  return "GET " + std::string(target) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + std::string(extra) +
         "\r\n";
}
std::string post(std::string_view target, std::string_view extra = "") {
  return "POST " + std::string(target) + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n" +
         std::string(extra) + "\r\n";
}

class ServerReliabilityTest : public ::testing::TestWithParam<demo::session_style> {
 protected:
  void start(demo::server_options o = {}, crosstown::runtime_options r = {.threads = 2},
             demo::app_limits limits = {}) {
    // Every wait below is for the server's counters or the runtime's tasks: both announce
    // their changes, so the test waits on a condition rather than polling.
    r.on_settled = [this, user = std::move(r.on_settled)](const crosstown::task_info& i,
                                                          crosstown::task_state s) {
      if (user) user(i, s);
      changes_.notify();
    };
    o.on_change = [this] { changes_.notify(); };
    rt_ = std::make_unique<crosstown::runtime>(std::move(r));
    app_ = std::make_unique<demo::phone_calls_app>(*rt_, 0us, limits);
    o.style = GetParam();
    server_ = std::make_unique<demo::server>(ioc_, *rt_, std::ref(*app_), o);
    app_->observe(server_.get());
    server_->start();
    io_ = std::thread([this] { ioc_.run(); });
  }

  void stop_server() {
    if (!io_.joinable()) return;
    server_->stop();
    io_.join();
  }

  // Stops the server, drains the runtime and checks the accounting.
  void expect_balanced() {
    stop_server();
    const crosstown::drain_report report = rt_->drain_for(deadline);
    EXPECT_TRUE(report.complete) << report;
    const crosstown::metrics_snapshot m = rt_->metrics();
    EXPECT_EQ(m.unfinished(), 0u) << m;
    EXPECT_EQ(m.terminal(), m.registered) << m;
  }

  void TearDown() override {
    if (io_.joinable()) server_->abort();
    if (io_.joinable()) io_.join();
  }

  unsigned short port() const { return server_->port(); }

  // True once `done` holds, re-checked at each change the server or the runtime announces.
  template <class Done>
  bool eventually(Done done) {
    return changes_.wait_for(done, deadline);
  }

  crosstown::test_support::change_signal changes_;  // before the runtime and server: outlives
                                                    // their hooks
  std::unique_ptr<crosstown::runtime> rt_;
  std::unique_ptr<demo::phone_calls_app> app_;
  net::io_context ioc_;
  std::unique_ptr<demo::server> server_;
  std::thread io_;
};

std::string style_name(const ::testing::TestParamInfo<demo::session_style>& info) {
  return info.param == demo::session_style::callback ? "Callback" : "Coroutine";
}

INSTANTIATE_TEST_SUITE_P(Sessions, ServerReliabilityTest,
                         ::testing::Values(demo::session_style::callback,
                                           demo::session_style::coroutine),
                         style_name);

// ---- 1, 9: the query of POST /calls ----------------------------------------------------------

TEST_P(ServerReliabilityTest, InvalidCallsQueryIs400NamingTheParameterAndDefersNothing) {
  start();
  raw_client c(port());
  for (const std::string_view query :
       {"n=abc", "n=", "n=-5", "n=0x10", "n=1e3", "n=+3", "n=%2031", "xn=7", "n=1&n=2", "us=ab"}) {
    const auto res = c.request(post("/calls?" + std::string(query)));
    EXPECT_EQ(res.result_int(), 400) << query;
    const std::string key = query.substr(0, 2) == "us" ? "us" : query[0] == 'x' ? "xn" : "n";
    EXPECT_NE(res.body().find("parameter " + key), std::string::npos)
        << query << " -> " << res.body();
  }
  EXPECT_EQ(rt_->metrics().registered, 0u);
  expect_balanced();
}

TEST_P(ServerReliabilityTest, CallsOverTheBoundAre413AndDeferNothing) {
  start({}, {.threads = 2}, {.max_calls = 50});
  raw_client c(port());
  for (const std::string_view query :
       {"n=51", "n=3000000", "n=2147483647", "n=99999999999", "n=999999999999999999999999"}) {
    const auto res = c.request(post("/calls?" + std::string(query)));
    EXPECT_EQ(res.result_int(), 413) << query;
    EXPECT_NE(res.body().find("parameter n"), std::string::npos) << res.body();
  }
  EXPECT_EQ(rt_->metrics().registered, 0u);
  const auto ok = c.request(post("/calls?n=50"));
  EXPECT_EQ(ok.result_int(), 202);
  EXPECT_EQ(ok.body(), "queued 50 calls\n");
  expect_balanced();
  EXPECT_EQ(rt_->metrics().registered, 50u);
}

// ---- 2, 4: timeouts --------------------------------------------------------------------------

TEST_P(ServerReliabilityTest, SlowHeaderIsClosedByTheHeaderTimeout) {
  start({.header_timeout = 100ms});
  raw_client c(port());
  c.send("GET /metrics HTTP/1.1\r\nHo");  // and nothing more (slowloris)
  const auto t0 = clock_type::now();
  EXPECT_TRUE(c.closed_by_server());
  EXPECT_LT(clock_type::now() - t0, 4s);
  EXPECT_TRUE(eventually([&] { return server_->stats().timeouts >= 1; }));
  EXPECT_EQ(server_->stats().requests, 0u);
  expect_balanced();
}

TEST_P(ServerReliabilityTest, SlowBodyIsClosedByTheBodyTimeout) {
  start({.body_timeout = 100ms});
  raw_client c(port());
  c.send("POST /calls?n=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789");
  EXPECT_TRUE(c.closed_by_server());
  EXPECT_TRUE(eventually([&] { return server_->stats().timeouts >= 1; }));
  EXPECT_EQ(rt_->metrics().registered, 0u);
  expect_balanced();
}

TEST_P(ServerReliabilityTest, IdleKeepAliveConnectionIsClosedByTheIdleTimeout) {
  start({.idle_timeout = 100ms});
  raw_client c(port());
  EXPECT_EQ(c.request(get("/metrics")).result_int(), 200);
  EXPECT_TRUE(c.closed_by_server());
  raw_client silent(port());  // connects and never sends
  EXPECT_TRUE(silent.closed_by_server());
  EXPECT_TRUE(eventually([&] { return server_->stats().timeouts >= 2; }));
  EXPECT_TRUE(eventually([&] { return server_->stats().active_connections == 0; }));
  expect_balanced();
}

TEST_P(ServerReliabilityTest, StalledReaderIsCutOffByTheWriteTimeout) {
  start({.send_buffer_size = 4096, .write_timeout = 150ms}, {.threads = 2});
  raw_client c(port(), /*receive_buffer=*/4096);
  // /stream is 64 KiB: more than both buffers hold; the client reads nothing.
  c.send(get("/stream"));
  EXPECT_TRUE(eventually([&] { return server_->stats().delivery_failures == 1; }));
  EXPECT_GE(server_->stats().timeouts, 1u);
  EXPECT_TRUE(eventually([&] { return server_->stats().active_connections == 0; }));
  expect_balanced();
}

TEST_P(ServerReliabilityTest, StopDoesNotWaitForAStalledReaderBeyondTheGrace) {
  start({.send_buffer_size = 4096, .write_timeout = 60s, .stop_grace = 100ms});
  raw_client c(port(), /*receive_buffer=*/4096);
  c.send(get("/stream"));
  ASSERT_TRUE(eventually([&] { return server_->stats().requests == 1; }));
  const auto t0 = clock_type::now();
  stop_server();  // joins the I/O thread: every connection is gone
  EXPECT_LT(clock_type::now() - t0, 5s);
  EXPECT_EQ(server_->stats().active_connections, 0u);
  expect_balanced();
}

// ---- 4: connection cap -----------------------------------------------------------------------

TEST_P(ServerReliabilityTest, ConnectionOverTheCapGets503AndTheNextAfterACloseIsServed) {
  start({.max_connections = 2});
  auto a = std::make_unique<raw_client>(port());
  raw_client b(port());
  EXPECT_EQ(a->request(get("/metrics")).result_int(), 200);
  EXPECT_EQ(b.request(get("/metrics")).result_int(), 200);
  {
    raw_client over(port());
    const std::string text = over.read_all();
    EXPECT_EQ(text.rfind("HTTP/1.1 503", 0), 0u) << text;
    EXPECT_NE(text.find("Retry-After: 1"), std::string::npos);
  }
  EXPECT_EQ(server_->stats().rejected_connections, 1u);
  a.reset();  // closes: room for one more
  ASSERT_TRUE(eventually([&] { return server_->stats().active_connections == 1; }));
  raw_client again(port());
  EXPECT_EQ(again.request(get("/metrics")).result_int(), 200);
  expect_balanced();
}

// ---- 5: memory per idle connection -----------------------------------------------------------

TEST_P(ServerReliabilityTest, IdleConnectionReleasesItsLastResponse) {
  start();
  raw_client c(port());
  const auto res = c.request(get("/stream"));
  ASSERT_EQ(res.body().size(), 64u * 1024);
  // The session goes idle after the write; what it holds then must not include the 64 KiB.
  ASSERT_TRUE(eventually([&] { return server_->retained().sessions == 1; }));
  EXPECT_LT(server_->retained().bytes, 16u * 1024) << "the idle session kept its response";
  expect_balanced();
}

// ---- 6: per-request records ------------------------------------------------------------------

TEST_P(ServerReliabilityTest, RequestRecordsAreBoundedOldestFirst) {
  start({}, {.threads = 2}, {.max_records = 8});
  raw_client c(port());
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(
        c.request(get("/metrics", "X-Request-Id: id-" + std::to_string(i) + "\r\n")).result_int(),
        200);
  }
  EXPECT_EQ(app_->records(), 8u);
  EXPECT_EQ(app_->records_evicted(), 12u);
  EXPECT_EQ(app_->find("id-0"), nullptr);
  EXPECT_EQ(app_->find("id-11"), nullptr);
  EXPECT_NE(app_->find("id-12"), nullptr);
  EXPECT_NE(app_->find("id-19"), nullptr);
  expect_balanced();
}

// ---- 7: admission ----------------------------------------------------------------------------

TEST_P(ServerReliabilityTest, CallsAre503WithRetryAfterWhileTheRuntimeCannotTakeWork) {
  std::mutex m;
  std::condition_variable cv;
  bool open = false;
  // One worker, a pool of capacity 4, held by a task until the test opens the gate.
  start({}, {.threads = 1, .queue_capacity = 4, .overflow = crosstown::overflow_policy::reject});
  raw_client c(port());
  // The gate: a /calls task cannot block, so hold the worker with a task of our own.
  {
    crosstown::response_scope scope(*rt_);
    scope.defer([&] {
      std::unique_lock lock(m);
      cv.wait_for(lock, deadline, [&] { return open; });
    });
    scope.status_known(200);
    scope.response_sent();
  }
  EXPECT_EQ(c.request(post("/calls?n=3")).result_int(), 202);
  ASSERT_TRUE(eventually([&] { return !rt_->accepting(); }));
  const auto busy = c.request(post("/calls?n=1"));
  EXPECT_EQ(busy.result_int(), 503);
  EXPECT_EQ(busy[http::field::retry_after], "1");
  EXPECT_EQ(app_->refused_busy(), 1u);
  EXPECT_EQ(rt_->metrics().registered, 4u) << "the 503 deferred nothing";
  {
    std::lock_guard lock(m);
    open = true;
  }
  cv.notify_all();
  // The pool counts a task a moment past its on_settled hook: its own drain waits for that.
  ASSERT_TRUE(rt_->pool().drain(clock_type::now() + deadline).complete);
  ASSERT_TRUE(rt_->accepting());
  ASSERT_EQ(rt_->metrics().unfinished(), 0u);
  EXPECT_EQ(c.request(post("/calls?n=1")).result_int(), 202);
  expect_balanced();
  EXPECT_EQ(rt_->metrics().count(crosstown::task_state::rejected_by_overflow), 0u);
}

// ---- 8: HTTP conformance ---------------------------------------------------------------------

TEST_P(ServerReliabilityTest, HeadResponseHasNoBodyAndTheNextResponseOnTheConnectionParses) {
  start();
  raw_client c(port());
  c.send("HEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n" + get("/metrics"));
  const auto head = c.read(/*head=*/true);
  ASSERT_TRUE(head);
  EXPECT_EQ(head->result_int(), 200);
  EXPECT_FALSE(head->chunked());
  EXPECT_EQ((*head)[http::field::content_length], std::to_string(64 * 1024));
  const auto next = c.read();
  ASSERT_TRUE(next) << "the HEAD response carried a body that broke the next response";
  EXPECT_EQ(next->result_int(), 200);
  EXPECT_NE(next->body().find("crosstown_tasks"), std::string::npos);
  expect_balanced();
}

TEST_P(ServerReliabilityTest, Http10ClientGetsContentLengthNotChunked) {
  start();
  raw_client c(port());
  c.send("GET /stream HTTP/1.0\r\n\r\n");
  const std::string text = c.read_all();  // HTTP/1.0 without keep-alive: the server closes
  EXPECT_EQ(text.rfind("HTTP/1.0 200", 0), 0u) << text.substr(0, 200);
  EXPECT_EQ(text.find("Transfer-Encoding"), std::string::npos);
  EXPECT_NE(text.find("Content-Length: 65536"), std::string::npos);
  EXPECT_EQ(text.size() - text.find("\r\n\r\n") - 4, 64u * 1024);
  expect_balanced();
}

TEST_P(ServerReliabilityTest, TransferEncodingNotEndingInChunkedIs400AndClosesWithoutSmuggling) {
  start();
  raw_client c(port());
  const std::string smuggled = post("/calls?n=7");
  c.send("POST /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n" + smuggled);
  const std::string text = c.read_all();
  EXPECT_EQ(text.rfind("HTTP/1.1 400", 0), 0u) << text;
  EXPECT_NE(text.find("Transfer-Encoding"), std::string::npos);
  EXPECT_EQ(text.find("HTTP/1.1 202"), std::string::npos) << "the body was served as a request";
  EXPECT_EQ(rt_->metrics().registered, 0u);
  expect_balanced();
}

struct refusal_case {
  std::string name;
  std::string request;
  int status;
  std::string header;  // expected in the response, if not empty
};

TEST_P(ServerReliabilityTest, ServerRefusesNonConformingRequestsWithTheRightStatus) {
  start({.max_header_bytes = 2048, .max_body_bytes = 1000, .max_target_bytes = 256});
  const std::vector<refusal_case> cases = {
      {"no Host", "GET /metrics HTTP/1.1\r\n\r\n", 400, ""},
      {"two Host", "GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, ""},
      {"body over the limit", "POST /calls HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
       413, ""},
      {"chunked body over the limit",
       "POST /calls HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" +
           std::string(2048, 'b') + "\r\n0\r\n\r\n",
       413, ""},
      {"header block over the limit",
       "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(4096, 'h') + "\r\n\r\n", 431,
       ""},
      {"target over the limit", "GET /" + std::string(300, 't') + " HTTP/1.1\r\nHost: x\r\n\r\n",
       414, ""},
      {"unknown method", "BREW /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 501, ""},
      {"wrong method on /calls", get("/calls?n=1"), 405, "Allow: POST"},
      {"wrong method on /metrics", post("/metrics"), 405, "Allow: GET, HEAD"},
      {"unsupported expectation",
       "POST /calls HTTP/1.1\r\nHost: x\r\nExpect: coffee\r\n"
       "Content-Length: 1\r\n\r\n1",
       417, ""},
  };
  for (const refusal_case& k : cases) {
    raw_client c(port());
    c.send(k.request);
    const auto res = c.read();
    ASSERT_TRUE(res) << k.name << ": no response";
    EXPECT_EQ(res->result_int(), k.status) << k.name << ": " << res->body();
    EXPECT_FALSE((*res)[http::field::date].empty()) << k.name;
    if (!k.header.empty()) {
      const auto colon = k.header.find(": ");
      EXPECT_EQ((*res)[k.header.substr(0, colon)], k.header.substr(colon + 2)) << k.name;
    }
    if (k.status != 405) {
      EXPECT_TRUE(c.closed_by_server()) << k.name << ": a refused request closes the connection";
    }
  }
  EXPECT_EQ(rt_->metrics().registered, 0u);
  expect_balanced();
}

TEST_P(ServerReliabilityTest, Expect100ContinueIsAnsweredBeforeTheBodyIsSent) {
  start();
  raw_client c(port());
  c.send(
      "POST /calls?n=2 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
  // The client waits for the interim response before sending the body.
  http::response_parser<http::empty_body> interim;
  beast::flat_buffer buffer;
  beast::error_code ec;
  http::read_header(c.socket(), buffer, interim, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(interim.get().result_int(), 100);
  c.send("body");
  http::response<http::string_body> res;
  http::read(c.socket(), buffer, res, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(res.result_int(), 202);
  EXPECT_FALSE(res[http::field::date].empty());
  expect_balanced();
  EXPECT_EQ(rt_->metrics().registered, 2u);
}

// ---- floods and resets -----------------------------------------------------------------------

TEST_P(ServerReliabilityTest, PipelinedFloodIsAnsweredInOrderAndAccounted) {
  start();
  raw_client c(port());
  constexpr int count = 300;
  std::string flood;
  for (int i = 0; i < count; ++i) flood += i % 3 == 0 ? post("/calls?n=2") : get("/moved");
  std::thread writer([&] { c.send(flood); });  // reading while writing: no buffer deadlock
  int answered = 0;
  for (int i = 0; i < count; ++i) {
    const auto res = c.read();
    if (!res) break;
    EXPECT_EQ(res->result_int(), i % 3 == 0 ? 202 : 302) << i;
    ++answered;
  }
  writer.join();
  EXPECT_EQ(answered, count);
  expect_balanced();
  EXPECT_EQ(rt_->metrics().registered,
            static_cast<std::uint64_t>(count / 3 * 2 + (count - count / 3) * 2));
}

TEST_P(ServerReliabilityTest, ResetsAtEveryRequestOffsetLeaveTheServerServingAndBalanced) {
  start();
  const std::string request = post("/calls?n=3", "X-Pad: abcdefgh\r\n");
  for (std::size_t offset = 1; offset <= request.size(); offset += 3) {
    raw_client c(port());
    c.send(std::string_view(request).substr(0, offset));
    c.reset();
  }
  // And resets while reading a response, at a few offsets into it.
  for (const std::size_t offset : {1u, 40u, 200u, 5000u}) {
    raw_client c(port(), 4096);
    c.send(get("/stream"));
    std::string got(offset, '\0');
    beast::error_code ec;
    net::read(c.socket(), net::buffer(got), ec);
    c.reset();
  }
  raw_client after(port());
  EXPECT_EQ(after.request(post("/calls?n=1")).result_int(), 202);
  expect_balanced();
}

}  // namespace
