// The simulated Asio stream, acceptor and timer: Beast's real http::async_read/async_write
// and crosstown::beast::async_write_response over them, on virtual time.
#include <crosstown/sim/asio.hpp>

#include <crosstown/beast/write.hpp>
#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using namespace crosstown::sim;
namespace http = boost::beast::http;

struct wire_log final : link_observer {
  std::string server_bytes;
  std::vector<std::size_t> server_writes;
  std::optional<std::uint64_t> reset_at;
  void on_server_bytes(std::uint32_t, std::uint64_t, const char* d, std::size_t n) override {
    server_bytes.append(d, n);
  }
  void on_server_completion(std::uint32_t, bool write, const error_code& ec,
                            std::size_t n) override {
    if (write && !ec) server_writes.push_back(n);
  }
  void on_reset(std::uint32_t, std::uint64_t at) override { reset_at = at; }
  void on_closed(std::uint32_t, bool) override {}
  void on_stall(std::uint32_t, bool) override {}
};

struct world {
  explicit world(std::uint64_t seed = 1)
      : sched(time, {.kind = strategy_kind::random}, seed, &log),
        net(sched, seed, &log, &wire),
        client(sched, 1, "client"),
        listener(sched, 2, "listener") {}
  ~world() { net.shut_down(); }
  run_outcome run() {
    clock_binding bound(time);
    return sched.run(1'000'000);
  }
  journal log;
  virtual_time time;
  scheduler sched;
  wire_log wire;
  sim_network net;
  io_actor client;
  io_actor listener;
};

http::response<http::string_body> make_response(int status, std::string body) {
  http::response<http::string_body> res{static_cast<http::status>(status), 11};
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

// One request, one response: the server reads with http::async_read and answers with
// crosstown::beast::async_write_response; returns what the client read and the scope's view.
struct exchange_result {
  std::optional<int> status_read;
  std::string body_read;
  error_code client_ec;
  error_code server_write_ec;
  crosstown::delivery delivery = crosstown::delivery::pending;
  std::int64_t sent_at_ns = -1;
  std::int64_t read_at_ns = -1;  // the client had read the whole response
};

exchange_result exchange(world& w, link_options link, link_faults faults, std::size_t body_size) {
  crosstown::runtime rt({.threads = 1});
  exchange_result out;
  sim_acceptor acceptor(w.net, w.listener.get_executor());
  std::optional<sim_stream> server;
  std::optional<crosstown::response_scope> scope;
  boost::beast::flat_buffer server_buf;
  http::request<http::string_body> req;
  auto res = make_response(200, std::string(body_size, 'x'));
  acceptor.async_accept([&](error_code ec, sim_stream s) {
    ASSERT_FALSE(ec) << ec.message();
    server.emplace(std::move(s));
    http::async_read(*server, server_buf, req, [&](error_code rec, std::size_t) {
      ASSERT_FALSE(rec) << rec.message();
      scope.emplace(rt);
      crosstown::beast::async_write_response(*server, res, *scope,
                                             [&](error_code wec, std::size_t) {
                                               out.server_write_ec = wec;
                                               out.delivery = scope->delivery_state();
                                               out.sent_at_ns = w.time.now_ns();
                                             });
    });
  });
  sim_stream client = w.net.connect(w.client, link, faults);
  http::request<http::string_body> creq{http::verb::get, "/", 11};
  creq.prepare_payload();
  boost::beast::flat_buffer client_buf;
  http::response<http::string_body> cres;
  http::async_write(client, creq, [&](error_code ec, std::size_t) {
    ASSERT_FALSE(ec) << ec.message();
    http::async_read(client, client_buf, cres, [&](error_code rec, std::size_t) {
      out.client_ec = rec;
      out.read_at_ns = w.time.now_ns();
      if (!rec) {
        out.status_read = cres.result_int();
        out.body_read = cres.body();
      }
    });
  });
  const run_outcome o = w.run();
  EXPECT_FALSE(o.capped);
  scope.reset();
  server.reset();
  return out;
}

TEST(SimAsio, BeastRequestAndAdapterResponseCarryTheBytesOverShortWrites) {
  world w;
  link_options link;
  link.max_chunk = 64;  // many short writes and reads
  const exchange_result r = exchange(w, link, {}, 3000);
  EXPECT_FALSE(r.server_write_ec) << r.server_write_ec.message();
  EXPECT_EQ(r.delivery, crosstown::delivery::delivered);
  ASSERT_TRUE(r.status_read.has_value()) << r.client_ec.message();
  EXPECT_EQ(*r.status_read, 200);
  EXPECT_EQ(r.body_read, std::string(3000, 'x'));
  EXPECT_GT(w.wire.server_writes.size(), 3000U / 64U);  // partial writes
  EXPECT_GT(r.sent_at_ns, 0);                           // on virtual time
}

TEST(SimAsio, FullWindowBlocksTheServerWriteUntilTheStalledClientReadsAgain) {
  world w;
  link_options link;
  link.window = 512;
  link_faults faults;
  faults.stall_at_byte = 100;
  faults.stall_for = 50ms;
  const exchange_result r = exchange(w, link, faults, 4000);
  EXPECT_EQ(r.delivery, crosstown::delivery::delivered);
  // The write could not finish before the stall ended: backpressure.
  EXPECT_GE(r.sent_at_ns, std::chrono::nanoseconds(50ms).count());
  EXPECT_EQ(r.body_read.size(), 4000U);
}

TEST(SimAsio, ResetAtEveryByteOffsetAcceptsExactlyThatManyBytesThenFailsTheWrite) {
  // The response is 440 bytes (40 of header, 400 of body): every offset before its end.
  for (std::uint64_t k = 0; k < 440; k += 3) {
    world w(k + 3);
    link_options link;
    link.max_chunk = 100;
    link_faults faults;
    faults.reset_at_byte = k;
    const exchange_result r = exchange(w, link, faults, 400);
    EXPECT_EQ(w.wire.server_bytes.size(), k) << "reset at " << k;
    EXPECT_EQ(r.server_write_ec, boost::asio::error::connection_reset) << "reset at " << k;
    EXPECT_EQ(r.delivery, crosstown::delivery::failed) << "reset at " << k;
    EXPECT_FALSE(r.status_read.has_value());
  }
}

TEST(SimAsio, HalfCloseEndsTheServersReadWithEndOfStream) {
  world w;
  sim_acceptor acceptor(w.net, w.listener.get_executor());
  std::optional<sim_stream> server;
  error_code read_ec;
  boost::beast::flat_buffer buf;
  http::request<http::string_body> req;
  acceptor.async_accept([&](error_code, sim_stream s) {
    server.emplace(std::move(s));
    http::async_read(*server, buf, req, [&](error_code ec, std::size_t) { read_ec = ec; });
  });
  sim_stream client = w.net.connect(w.client);
  client.shutdown(boost::asio::socket_base::shutdown_send);
  w.run();
  EXPECT_EQ(read_ec, http::error::end_of_stream);
}

TEST(SimAsio, WritesToAClosedPeerFailWithConnectionReset) {
  world w;
  sim_acceptor acceptor(w.net, w.listener.get_executor());
  std::optional<sim_stream> server;
  std::vector<error_code> results;
  std::string data(100, 'y');
  std::function<void()> write_again;
  acceptor.async_accept([&](error_code, sim_stream s) {
    server.emplace(std::move(s));
    write_again = [&] {
      server->async_write_some(boost::asio::buffer(data), [&](error_code ec, std::size_t) {
        results.push_back(ec);
        if (!ec && results.size() < 1000) write_again();
      });
    };
    write_again();
  });
  sim_stream client = w.net.connect(w.client);
  client.close();
  w.run();
  ASSERT_FALSE(results.empty());
  EXPECT_EQ(results.back(), boost::asio::error::connection_reset);
}

TEST(SimAsio, TimerFiresOnVirtualTimeByAutoAdvanceAndCancelAborts) {
  world w;
  sim_timer fires(w.listener.get_executor());
  sim_timer cancelled(w.listener.get_executor());
  std::int64_t fired_at = -1;
  error_code cancel_ec;
  fires.expires_after(5ms);
  fires.async_wait([&](error_code ec) {
    if (!ec) fired_at = w.time.now_ns();
  });
  cancelled.expires_after(1s);
  cancelled.async_wait([&](error_code ec) { cancel_ec = ec; });
  sim_timer canceller(w.listener.get_executor(), 2ms);
  canceller.async_wait([&](error_code) { cancelled.cancel(); });
  w.run();
  EXPECT_EQ(fired_at, std::chrono::nanoseconds(5ms).count());
  EXPECT_EQ(cancel_ec, boost::asio::error::operation_aborted);
  EXPECT_LT(w.time.now_ns(), std::chrono::nanoseconds(1s).count());
}

TEST(SimAsio, TimerWorksWithCoroutinesAndTheExpiryIsVirtual) {
  world w;
  std::vector<std::int64_t> woke;
  boost::asio::co_spawn(
      w.listener.get_executor(),
      [&]() -> boost::asio::awaitable<void> {
        sim_timer t(co_await boost::asio::this_coro::executor);
        for (int i = 1; i <= 3; ++i) {
          t.expires_at(t.expiry() + 10ms);
          co_await t.async_wait(boost::asio::use_awaitable);
          woke.push_back(w.time.now_ns());
        }
      },
      boost::asio::detached);
  w.listener.kick();
  w.run();
  EXPECT_EQ(woke, (std::vector<std::int64_t>{10'000'000, 20'000'000, 30'000'000}));
}

TEST(SimAsio, SpendDelaysTheActorsNextPoll) {
  world w;
  std::int64_t second_at = -1;
  boost::asio::post(w.listener.get_executor(), [&] {
    spend(3ms);
    boost::asio::post(w.listener.get_executor(), [&] { second_at = w.time.now_ns(); });
  });
  w.listener.kick();
  w.run();
  EXPECT_EQ(second_at, std::chrono::nanoseconds(3ms).count());
}

TEST(SimAsio, SameSeedGivesTheSameJournal) {
  auto digest = [](std::uint64_t seed) {
    world w(seed);
    link_options link;
    link.max_chunk = 50;
    exchange(w, link, {}, 2000);
    return w.log.digest();
  };
  EXPECT_EQ(digest(9), digest(9));
  EXPECT_NE(digest(9), digest(10));
}

TEST(SimAsio, TimerOnAnExecutorThatIsNotSimulatedIsRefusedByName) {
  boost::asio::io_context plain;
  try {
    sim_timer t(plain.get_executor());
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("not an io_actor"), std::string::npos);
  }
}

TEST(SimAsio, AWriteCompletesWhenTheLastByteIsAcceptedNotWhenTheClientReadsIt) {
  world w;
  link_options link;
  link.latency = 1ms;   // the client reads the response a millisecond after it was accepted
  link.window = 10000;  // room for all of it: the write never waits for the reader
  const exchange_result r = exchange(w, link, {}, 100);
  EXPECT_EQ(r.delivery, crosstown::delivery::delivered);
  ASSERT_TRUE(r.status_read.has_value()) << r.client_ec.message();
  ASSERT_GT(r.sent_at_ns, 0);
  EXPECT_GE(r.read_at_ns - r.sent_at_ns, std::chrono::nanoseconds(1ms).count())
      << "the completion (and response_sent) must not wait for the client";
}

}  // namespace
