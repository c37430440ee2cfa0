// Worker handlers beyond the plain blocking one: awaitable handlers, lanes, timeouts and retry
// policies per task type, and poison entries (delivered too many times) dead-lettered.
#include <crosstown/redis/worker.hpp>

#include "redis_fixture.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace crosstown::redis::test {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;

worker_options handler_worker(const endpoint& where) {
  worker_options o;
  o.redis = where;
  o.consumer = "handlers";
  o.block = std::chrono::milliseconds(20);
  o.claim_interval = std::chrono::milliseconds(20);
  o.retry_initial = std::chrono::milliseconds(5);
  o.retry_max = std::chrono::milliseconds(20);
  return o;
}

void add_entry(connection& c, std::string_view name, std::string_view key) {
  c.command({"XADD", "crosstown:tasks", "*", "name", name, "payload", "", "key", key});
}

boost::asio::awaitable<void> wait_for(std::chrono::milliseconds d) {
  boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor, d);
  co_await timer.async_wait(boost::asio::use_awaitable);
}

TEST(RedisWorkerHandlers, AnAwaitableHandlerRunsOnTheWorkersIoThreadAndIsAcknowledged) {
  redis_server server;
  connection c = server.connect();
  worker w(handler_worker(server.where()));
  std::mutex mutex;
  std::vector<std::string> keys;
  std::thread::id coroutine_thread;
  w.handle_awaitable("await", [&](const task_context& ctx) -> boost::asio::awaitable<void> {
    co_await wait_for(std::chrono::milliseconds(1));
    std::lock_guard lock(mutex);
    keys.emplace_back(ctx.key);  // still valid after the suspension
    coroutine_thread = std::this_thread::get_id();
  });
  w.start();
  add_entry(c, "await", "a1");
  add_entry(c, "await", "a2");
  ASSERT_TRUE(eventually([&] { return w.metrics().acked == 2; }));
  std::lock_guard lock(mutex);
  EXPECT_EQ(keys, (std::vector<std::string>{"a1", "a2"}));
  EXPECT_NE(coroutine_thread, std::this_thread::get_id());
  EXPECT_EQ(w.metrics().in_flight, 0u);
}

TEST(RedisWorkerHandlers, AnAwaitablePastItsTimeoutIsCancelledAndItsRetrySucceeds) {
  redis_server server;
  connection c = server.connect();
  worker w(handler_worker(server.where()));
  std::mutex mutex;
  std::vector<std::uint32_t> attempts;
  std::atomic<bool> cancelled{false};
  w.handle_awaitable(
      "slow-once",
      [&](const task_context& ctx) -> boost::asio::awaitable<void> {
        {
          std::lock_guard lock(mutex);
          attempts.push_back(ctx.attempt);
        }
        if (ctx.attempt == 1) {
          try {
            co_await wait_for(std::chrono::hours(1));  // only the timeout ends this
          } catch (const boost::system::system_error&) {
            cancelled = true;
            throw;
          }
        }
      },
      handler_options{.timeout = std::chrono::milliseconds(50)});
  w.start();
  add_entry(c, "slow-once", "t1");
  ASSERT_TRUE(eventually([&] { return w.metrics().acked == 1; }));
  EXPECT_TRUE(cancelled.load());
  const auto m = w.metrics();
  EXPECT_EQ(m.timed_out, 1u);
  EXPECT_EQ(m.retried, 1u);
  EXPECT_EQ(m.dead_lettered, 0u);
  {
    std::lock_guard lock(mutex);
    EXPECT_EQ(attempts, (std::vector<std::uint32_t>{1, 2}));
  }
  const auto entries = read_stream(c, "crosstown:tasks");
  ASSERT_THAT(entries, SizeIs(2));
  EXPECT_EQ(field(entries[1], "last_error"), "timed out after 50 ms");
}

TEST(RedisWorkerHandlers, ABlockingHandlerPastItsTimeoutRunsOnAndCountsAnOverrun) {
  redis_server server;
  connection c = server.connect();
  worker w(handler_worker(server.where()));
  w.handle(
      "overrun",
      [](const task_context&) {
        // Longer than the timeout below, measured on the clock the worker uses.
        const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
        while (std::chrono::steady_clock::now() < until) std::this_thread::yield();
      },
      handler_options{.timeout = std::chrono::milliseconds(5)});
  w.start();
  add_entry(c, "overrun", "o1");
  ASSERT_TRUE(eventually([&] { return w.metrics().acked == 1; }));
  EXPECT_EQ(w.metrics().overruns, 1u);
  EXPECT_EQ(w.metrics().retried, 0u);
}

TEST(RedisWorkerHandlers, ALaneRunsAtMostItsLimitOfHandlersAcrossRunners) {
  redis_server server;
  connection c = server.connect();
  auto options = handler_worker(server.where());
  options.threads = 4;
  options.batch = 1;  // one entry per read, so the runners contend for the lane
  options.lanes = {{"api", 1}};
  worker w(options);
  std::atomic<int> running{0};
  std::atomic<int> most{0};
  std::atomic<int> done{0};
  auto enter = [&] {
    const int now = running.fetch_add(1) + 1;
    int seen = most.load();
    while (now > seen && !most.compare_exchange_weak(seen, now)) {
    }
  };
  // The first handler holds its slot until another runner has queued on the lane, so the
  // limit is tested while there is contention.
  w.handle(
      "lane-blocking",
      [&](const task_context& ctx) {
        enter();
        if (ctx.key == "b0") eventually([&] { return w.metrics().lane_waits >= 1; });
        running.fetch_sub(1);
        done.fetch_add(1);
      },
      handler_options{.lane = "api"});
  w.handle_awaitable(
      "lane-awaitable",
      [&](const task_context&) -> boost::asio::awaitable<void> {
        enter();
        co_await wait_for(std::chrono::milliseconds(1));
        running.fetch_sub(1);
        done.fetch_add(1);
      },
      handler_options{.lane = "api"});
  w.handle("free", [&](const task_context&) { done.fetch_add(1); });
  w.start();
  add_entry(c, "lane-blocking", "b0");
  for (int i = 1; i < 8; ++i) {
    add_entry(c, i % 2 == 0 ? "lane-blocking" : "lane-awaitable", "b" + std::to_string(i));
  }
  add_entry(c, "free", "f");
  ASSERT_TRUE(eventually([&] { return w.metrics().acked == 9; }));
  EXPECT_EQ(done.load(), 9);
  EXPECT_EQ(most.load(), 1);
  EXPECT_GE(w.metrics().lane_waits, 1u);
}

TEST(RedisWorkerHandlers, ARetryPolicyReplacesTheWorkersAttemptsAndMayDeclineAFailure) {
  redis_server server;
  connection c = server.connect();
  auto options = handler_worker(server.where());
  options.max_attempts = 5;
  std::mutex mutex;
  std::vector<std::string> reasons;
  options.on_dead_letter = [&](const task_context& ctx, std::string_view reason) {
    std::lock_guard lock(mutex);
    reasons.push_back(std::string(ctx.key) + ": " + std::string(reason));
  };
  worker w(options);
  std::atomic<int> runs{0};
  retry_policy policy{.max_attempts = 2,
                      .base = std::chrono::milliseconds(5),
                      .cap = std::chrono::milliseconds(10),
                      .jitter = 0,
                      .retry_if = [](const std::exception_ptr& e) {
                        try {
                          std::rethrow_exception(e);
                        } catch (const std::logic_error&) {
                          return false;  // a bug: trying again will not help
                        } catch (...) {
                          return true;
                        }
                      }};
  w.handle(
      "policy",
      [&](const task_context& ctx) {
        runs.fetch_add(1);
        if (ctx.key == "fatal") throw std::logic_error("bad request");
        throw std::runtime_error("busy");
      },
      handler_options{.retry = policy});
  w.start();
  add_entry(c, "policy", "fatal");
  add_entry(c, "policy", "flaky");
  ASSERT_TRUE(eventually([&] { return w.metrics().dead_lettered == 2; }));
  EXPECT_EQ(runs.load(), 3);  // fatal once, flaky twice (not the worker's 5)
  EXPECT_EQ(w.metrics().retried, 1u);
  std::lock_guard lock(mutex);
  EXPECT_THAT(reasons, testing::UnorderedElementsAre(
                           HasSubstr("fatal: not retried: the retry policy declined"),
                           "flaky: failed after 2 attempts: busy"));
}

TEST(RedisWorkerHandlers, BadHandlerOptionsAreRefusedWithTheReason) {
  worker_options o;
  o.lanes = {{"api", 0}};
  EXPECT_THROW(worker{o}, std::invalid_argument);
  o.lanes = {{"api", 2}};
  o.max_deliveries = 0;
  EXPECT_THROW(worker{o}, std::invalid_argument);
  o.max_deliveries = 5;
  worker w(o);
  const auto noop = [](const task_context&) {};
  try {
    w.handle("x", noop, handler_options{.lane = "elsewhere"});
    ADD_FAILURE() << "an unknown lane was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("no lane \"elsewhere\""));
  }
  EXPECT_THROW(w.handle("y", noop, handler_options{.timeout = std::chrono::milliseconds(-1)}),
               std::invalid_argument);
  EXPECT_THROW(w.handle("z", noop, handler_options{.retry = retry_policy{.max_attempts = 0}}),
               std::invalid_argument);
  EXPECT_THROW(w.handle_awaitable("w", {}), std::invalid_argument);
  w.handle("ok", noop, handler_options{.lane = "api"});
}

TEST(RedisWorkerHandlers, AnEntryDeliveredMoreThanMaxDeliveriesIsDeadLetteredAsPoison) {
  redis_server server;
  connection c = server.connect();
  c.command({"XGROUP", "CREATE", "crosstown:tasks", "crosstown", "0", "MKSTREAM"});
  add_entry(c, "crash", "poison");
  add_entry(c, "crash", "survivor");
  // Consumers that died holding them: "poison" delivered 6 times, "survivor" once.
  c.command({"XREADGROUP", "GROUP", "crosstown", "ghost", "COUNT", "2", "STREAMS",
             "crosstown:tasks", ">"});
  reply_ptr ids = c.command({"XRANGE", "crosstown:tasks", "-", "+"});
  ASSERT_EQ(ids->elements, 2u);
  const std::string poison_id(ids->element[0]->element[0]->str, ids->element[0]->element[0]->len);
  for (int i = 0; i < 5; ++i) {
    c.command({"XCLAIM", "crosstown:tasks", "crosstown", "ghost", "0", poison_id});
  }
  auto options = handler_worker(server.where());
  options.visibility_timeout = std::chrono::milliseconds(10);
  options.max_deliveries = 6;
  std::mutex mutex;
  std::vector<std::string> ran;
  std::vector<std::string> reasons;
  options.on_dead_letter = [&](const task_context& ctx, std::string_view reason) {
    std::lock_guard lock(mutex);
    reasons.push_back(std::string(ctx.key) + ": " + std::string(reason));
  };
  worker w(options);
  w.handle("crash", [&](const task_context& ctx) {
    std::lock_guard lock(mutex);
    ran.emplace_back(ctx.key);
  });
  w.start();
  ASSERT_TRUE(eventually([&] { return w.metrics().acked + w.metrics().dead_lettered == 2; }));
  const auto m = w.metrics();
  EXPECT_EQ(m.poisoned, 1u);
  EXPECT_EQ(m.dead_lettered, 1u);
  EXPECT_EQ(m.reclaimed, 2u);
  {
    std::lock_guard lock(mutex);
    EXPECT_EQ(ran, std::vector<std::string>{"survivor"});  // the poison never ran again
    EXPECT_THAT(reasons, testing::ElementsAre("poison: poison: delivered 7 times without being "
                                              "acknowledged (max_deliveries 6)"));
  }
  const auto dead = read_stream(c, "crosstown:tasks:dead");
  ASSERT_THAT(dead, SizeIs(1));
  EXPECT_EQ(field(dead[0], "key"), "poison");
  EXPECT_EQ(field(dead[0], "source_id"), poison_id);
  EXPECT_THAT(field(dead[0], "reason"), HasSubstr("delivered 7 times"));
}

}  // namespace
}  // namespace crosstown::redis::test
