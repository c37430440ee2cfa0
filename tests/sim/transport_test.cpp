// The byte-level transport: resets at every byte offset, short writes, stalls that block
// the writer - each driving a real response_scope as an adapter would.
#include <crosstown/sim/transport.hpp>

#include <crosstown/manual_executor.hpp>
#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using namespace crosstown::sim;

struct chunk_log final : transport_observer {
  std::vector<std::uint64_t> chunks;
  std::optional<std::uint64_t> reset_at;
  void on_accepted(std::uint32_t, std::uint64_t, std::uint64_t bytes) override {
    chunks.push_back(bytes);
  }
  void on_reset(std::uint32_t, std::uint64_t at) override { reset_at = at; }
  void on_stall(std::uint32_t, bool) override {}
};

// A minimal adapter: status, headers (H bytes), body (B bytes), then sent or failed.
struct outcome {
  bool delivered = false;
  bool failed = false;
  std::vector<std::string> ran;
};

outcome serve_one(std::uint64_t header_bytes, std::uint64_t body_bytes, link_faults faults,
                  std::uint64_t seed = 1) {
  crosstown::runtime rt({.threads = 1});
  crosstown::manual_executor tasks;
  virtual_time time;
  scheduler sched(time, {.kind = strategy_kind::fifo}, seed);
  rng draws(seed, 7);
  connection conn(1, sched, draws, {.max_chunk = 5}, faults);
  outcome out;
  {
    crosstown::response_scope scope(rt);
    scope.defer([&] { out.ran.push_back("plain"); }, {.executor = tasks});
    scope.defer([&] { out.ran.push_back("needs-delivery"); },
                {.executor = tasks, .require_delivery = true});
    scope.status_known(200);
    auto fail = [&] {
      out.failed = true;
      scope.delivery_failed("reset");
    };
    conn.async_write(header_bytes, [&](bool ok) {
      if (!ok) return fail();
      scope.headers_sent();
      conn.async_write(body_bytes, [&](bool ok2) {
        if (!ok2) return fail();
        out.delivered = true;
        scope.response_sent();
      });
    });
    sched.run(100000);
  }
  tasks.run_all();
  return out;
}

TEST(Transport, ResetAtEveryByteOffsetGivesTheRightDeliveryOutcome) {
  constexpr std::uint64_t header = 7, body = 13, total = header + body;
  for (std::uint64_t k = 0; k <= total + 2; ++k) {
    SCOPED_TRACE("reset at byte " + std::to_string(k));
    const outcome o = serve_one(header, body, {.reset_at_byte = k});
    const bool whole = k >= total;
    EXPECT_EQ(o.delivered, whole);
    EXPECT_EQ(o.failed, !whole);
    // The delivery-failure rule: plain tasks run anyway, require_delivery ones only if sent.
    if (whole) {
      EXPECT_EQ(o.ran, (std::vector<std::string>{"plain", "needs-delivery"}));
    } else {
      EXPECT_EQ(o.ran, (std::vector<std::string>{"plain"}));
    }
  }
}

TEST(Transport, WritesAreAcceptedInShortChunks) {
  crosstown::runtime rt({.threads = 1});
  virtual_time time;
  scheduler sched(time, {.kind = strategy_kind::fifo}, 3);
  rng draws(3, 7);
  chunk_log log;
  connection conn(1, sched, draws, {.max_chunk = 16}, {}, nullptr, &log);
  bool done = false;
  conn.async_write(1000, [&](bool ok) { done = ok; });
  sched.run(100000);
  EXPECT_TRUE(done);
  EXPECT_GT(log.chunks.size(), 1000u / 16);
  std::uint64_t sum = 0;
  for (auto c : log.chunks) {
    EXPECT_GE(c, 1u);
    EXPECT_LE(c, 16u);
    sum += c;
  }
  EXPECT_EQ(sum, 1000u);
  EXPECT_EQ(conn.accepted(), 1000u);
}

TEST(Transport, StalledClientBlocksTheWriterUntilItReadsAgain) {
  virtual_time time;
  scheduler sched(time, {.kind = strategy_kind::random}, 5);
  rng draws(5, 7);
  connection conn(1, sched, draws, {.max_chunk = 64, .window = 100}, {.stall_at_byte = 50});
  bool done = false;
  conn.async_write(1000, [&](bool ok) { done = ok; });
  sched.run(100000);
  EXPECT_FALSE(done) << "the window is full and the client stopped reading";
  EXPECT_TRUE(conn.stalled());
  EXPECT_LE(conn.accepted(), 150u);
  EXPECT_EQ(conn.read_by_client(), 50u);
  conn.heal();
  sched.run(100000);
  EXPECT_TRUE(done);
  EXPECT_EQ(conn.read_by_client(), 1000u);
}

TEST(Transport, TimedStallEndsByItself) {
  virtual_time time;
  scheduler sched(time, {.kind = strategy_kind::fifo}, 5);
  rng draws(5, 7);
  connection conn(1, sched, draws, {.max_chunk = 64, .window = 100},
                  {.stall_at_byte = 10, .stall_for = 2ms});
  bool done = false;
  conn.async_write(500, [&](bool ok) { done = ok; });
  sched.run(100000);
  EXPECT_TRUE(done);
  EXPECT_GE(time.now_ns(), 2'000'000);
}

TEST(Transport, ResponseSentIsReportedWhenTheLastByteIsAcceptedNotRead) {
  virtual_time time;
  scheduler sched(time, {.kind = strategy_kind::fifo}, 5);
  rng draws(5, 7);
  // Large window: everything is accepted long before the slow client reads it.
  connection conn(1, sched, draws, {.latency = 1ms, .window = 10000}, {});
  std::int64_t done_at = -1;
  conn.async_write(100, [&](bool) { done_at = time.now_ns(); });
  sched.run(100000);
  EXPECT_GE(done_at, 0);
  EXPECT_LT(done_at, 1'000'000) << "completion must not wait for the client";
}

}  // namespace
