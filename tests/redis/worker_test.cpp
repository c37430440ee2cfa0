// Workers against a real redis-server: handlers run and are acknowledged, failures retry with
// backoff and are dead-lettered after the last attempt, malformed entries are dead-lettered
// with a clear reason and never stop a worker, duplicates by key run once, stop gives back.
#include <crosstown/redis/worker.hpp>

#include "redis_fixture.hpp"
#include "test_handlers.hpp"
#include "web_fixture.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace crosstown::redis::test {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;

worker_options test_worker(const endpoint& where) {
  worker_options o;
  o.redis = where;
  o.consumer = "test";
  o.block = std::chrono::milliseconds(20);
  o.claim_interval = std::chrono::milliseconds(50);
  o.retry_initial = std::chrono::milliseconds(10);
  o.retry_max = std::chrono::milliseconds(40);
  return o;
}

long long pending(connection& c, std::string_view stream = "crosstown:tasks") {
  reply_ptr r = c.command({"XPENDING", stream, "crosstown"});
  if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) return -1;
  return r->element[0]->integer;
}

void add_entry(connection& c, std::vector<std::string_view> fields_and_values) {
  std::vector<std::string_view> args{"XADD", "crosstown:tasks", "*"};
  args.insert(args.end(), fields_and_values.begin(), fields_and_values.end());
  c.command(args);
}

TEST(RedisWorker, PublishedTasksRunOnceEachAndAreAcknowledged) {
  redis_server server;
  web_process web(test_publisher(server.where()));
  worker w(test_worker(server.where()));
  add_test_handlers(w);
  w.start();
  std::vector<std::string> keys;
  for (int r = 0; r < 10; ++r) {
    for (auto& k : web.respond(200, {task_named("record"), task_named("record")})) {
      keys.push_back(k);
    }
  }
  connection c = server.connect();
  ASSERT_TRUE(eventually([&] { return integer(c, {"SCARD", "test:done"}) == 20; }));
  ASSERT_TRUE(eventually([&] { return w.metrics().acked == 20; }));
  EXPECT_EQ(pending(c), 0);
  for (const auto& k : keys) EXPECT_EQ(integer(c, {"EXISTS", "crosstown:done:" + k}), 1);
  const auto m = w.metrics();
  EXPECT_EQ(m.consumed, 20u);
  EXPECT_EQ(m.retried, 0u);
  EXPECT_EQ(m.dead_lettered, 0u);
  EXPECT_EQ(m.in_flight, 0u);
}

TEST(RedisWorker, AGroupCreatedAfterThePublishStillSeesTheEarlierEntries) {
  redis_server server;
  connection c = server.connect();
  add_entry(c, {"name", "record", "payload", "", "key", "early"});
  worker w(test_worker(server.where()));
  add_test_handlers(w);
  w.start();
  EXPECT_TRUE(eventually([&] { return integer(c, {"SISMEMBER", "test:done", "early"}) == 1; }));
}

TEST(RedisWorker, AFailingTaskIsRetriedWithBackoffThenSucceeds) {
  redis_server server;
  connection c = server.connect();
  std::mutex mutex;
  std::vector<std::uint32_t> attempts;
  worker w(test_worker(server.where()));
  w.handle("flaky", [&](const task_context& ctx) {
    {
      std::lock_guard lock(mutex);
      attempts.push_back(ctx.attempt);
    }
    if (ctx.attempt < 3) throw std::runtime_error("try again");
  });
  w.start();
  add_entry(c, {"name", "flaky", "payload", "", "key", "k1", "attempt", "1"});
  ASSERT_TRUE(eventually([&] { return w.metrics().acked == 1; }));
  {
    std::lock_guard lock(mutex);
    EXPECT_EQ(attempts, (std::vector<std::uint32_t>{1, 2, 3}));
  }
  EXPECT_EQ(w.metrics().retried, 2u);
  EXPECT_EQ(w.metrics().dead_lettered, 0u);
  EXPECT_EQ(pending(c), 0);
  // The retries are appended copies that carry the last error.
  const auto entries = read_stream(c, "crosstown:tasks");
  ASSERT_THAT(entries, SizeIs(3));
  EXPECT_EQ(field(entries[1], "attempt"), "2");
  EXPECT_EQ(field(entries[1], "last_error"), "try again");
  EXPECT_NE(field(entries[2], "not_before"), "<missing>");
}

TEST(RedisWorker, ATaskFailingEveryAttemptIsDeadLetteredWithItsError) {
  redis_server server;
  connection c = server.connect();
  std::atomic<int> runs{0};
  std::vector<std::string> reasons;
  std::mutex mutex;
  auto options = test_worker(server.where());
  options.max_attempts = 3;
  options.on_dead_letter = [&](const task_context&, std::string_view reason) {
    std::lock_guard lock(mutex);
    reasons.emplace_back(reason);
  };
  worker w(options);
  w.handle("doomed", [&](const task_context&) {
    runs.fetch_add(1);
    throw std::runtime_error("the provider said no");
  });
  w.start();
  add_entry(c, {"name", "doomed", "payload", "p", "key", "k2", "attempt", "1"});
  ASSERT_TRUE(eventually([&] { return w.metrics().dead_lettered == 1; }));
  EXPECT_EQ(runs.load(), 3);
  EXPECT_EQ(w.metrics().retried, 2u);
  EXPECT_EQ(w.metrics().acked, 0u);
  EXPECT_EQ(pending(c), 0);
  const auto dead = read_stream(c, "crosstown:tasks:dead");
  ASSERT_THAT(dead, SizeIs(1));
  EXPECT_EQ(field(dead[0], "name"), "doomed");
  EXPECT_EQ(field(dead[0], "key"), "k2");
  EXPECT_EQ(field(dead[0], "payload"), "p");
  EXPECT_EQ(field(dead[0], "attempt"), "3");
  EXPECT_EQ(field(dead[0], "error"), "the provider said no");
  EXPECT_EQ(field(dead[0], "reason"), "failed after 3 attempts");
  std::lock_guard lock(mutex);
  EXPECT_THAT(reasons, testing::ElementsAre("failed after 3 attempts: the provider said no"));
}

TEST(RedisWorker, MalformedEntriesAreDeadLetteredWithTheReasonAndTheWorkerGoesOn) {
  redis_server server;
  connection c = server.connect();
  worker w(test_worker(server.where()));
  add_test_handlers(w);
  w.handle_json("json", [](const boost::json::value&, const task_context&) {});
  w.start();
  add_entry(c, {"payload", "x", "key", "no-name"});
  add_entry(c, {"name", "record", "key", "no-payload"});
  add_entry(c, {"name", "record", "payload", "x"});
  add_entry(c, {"name", "nobody-handles-this", "payload", "x", "key", "unknown"});
  add_entry(c, {"name", "json", "payload", "{not json", "key", "bad-json"});
  add_entry(c, {"name", "record", "payload", "x", "key", "bad-attempt", "attempt", "two"});
  add_entry(c, {"name", "record", "payload", "x", "key", "good"});
  ASSERT_TRUE(eventually([&] { return integer(c, {"SISMEMBER", "test:done", "good"}) == 1; }));
  ASSERT_TRUE(eventually([&] { return w.metrics().dead_lettered == 6; }));
  // The handler's effect is visible before its XACK: wait for the acknowledgement too.
  ASSERT_TRUE(eventually([&] { return w.metrics().acked == 1; }));
  const auto dead = read_stream(c, "crosstown:tasks:dead");
  ASSERT_THAT(dead, SizeIs(6));
  EXPECT_EQ(field(dead[0], "reason"), "malformed entry: no \"name\" field");
  EXPECT_EQ(field(dead[1], "reason"), "malformed entry: no \"payload\" field");
  EXPECT_EQ(field(dead[2], "reason"), "malformed entry: no \"key\" field");
  EXPECT_THAT(field(dead[3], "reason"),
              HasSubstr("unknown task name \"nobody-handles-this\" (this worker handles: "
                        "hold-once, json, record)"));
  EXPECT_THAT(field(dead[4], "reason"), HasSubstr("malformed: bad payload: not JSON"));
  EXPECT_EQ(field(dead[5], "reason"), "malformed entry: attempt \"two\" is not a number");
  EXPECT_EQ(w.metrics().retried, 0u);
  EXPECT_EQ(pending(c), 0);
}

TEST(RedisWorker, TwoEntriesWithOneKeyRunTheHandlerOnce) {
  redis_server server;
  connection c = server.connect();
  worker w(test_worker(server.where()));
  add_test_handlers(w);
  w.start();
  add_entry(c, {"name", "record", "payload", "", "key", "same"});
  add_entry(c, {"name", "record", "payload", "", "key", "same"});
  ASSERT_TRUE(eventually([&] { return w.metrics().acked + w.metrics().duplicates == 2; }));
  reply_ptr runs = c.command({"GET", "test:runs:same"});
  EXPECT_EQ(reply_text(*runs), "1");
  EXPECT_EQ(w.metrics().duplicates, 1u);
}

TEST(RedisWorker, MarkOnceIsTrueOnlyTheFirstTime) {
  redis_server server;
  connection c = server.connect();
  EXPECT_TRUE(mark_once(c, "app:sent:k", std::chrono::seconds(60)));
  EXPECT_FALSE(mark_once(c, "app:sent:k", std::chrono::seconds(60)));
  EXPECT_GT(integer(c, {"TTL", "app:sent:k"}), 0);
}

TEST(RedisWorker, SeveralRunnersShareTheWorkOfOneGroup) {
  redis_server server;
  connection c = server.connect();
  auto options = test_worker(server.where());
  options.threads = 3;
  options.batch = 2;
  worker w(options);
  add_test_handlers(w);
  w.start();
  for (int i = 0; i < 60; ++i) {
    const std::string key = "k" + std::to_string(i);
    add_entry(c, {"name", "record", "payload", "", "key", key});
  }
  ASSERT_TRUE(eventually([&] { return integer(c, {"SCARD", "test:done"}) == 60; }));
  ASSERT_TRUE(eventually([&] { return w.metrics().acked == 60; }));
  EXPECT_EQ(w.metrics().duplicates, 0u);
}

TEST(RedisWorker, StopFinishesTheHandlerInHandAndReturns) {
  redis_server server;
  connection c = server.connect();
  std::atomic<bool> entered{false};
  std::atomic<bool> finish{false};
  worker w(test_worker(server.where()));
  w.handle("slow", [&](const task_context&) {
    entered = true;
    while (!finish.load()) std::this_thread::yield();
  });
  w.start();
  add_entry(c, {"name", "slow", "payload", "", "key", "s1"});
  ASSERT_TRUE(eventually([&] { return entered.load(); }));
  w.stop();
  finish = true;
  w.join();
  EXPECT_EQ(w.metrics().acked, 1u);
  EXPECT_EQ(pending(c), 0);
}

TEST(RedisWorker, ALostConnectionIsReMadeAndTheWorkerGoesOn) {
  redis_server server;
  connection c = server.connect();
  worker w(test_worker(server.where()));
  add_test_handlers(w);
  w.start();
  add_entry(c, {"name", "record", "payload", "", "key", "before"});
  ASSERT_TRUE(eventually([&] { return w.metrics().acked == 1; }));
  server.kill9();
  server.start();
  connection again = server.connect();
  add_entry(again, {"name", "record", "payload", "", "key", "after"});
  ASSERT_TRUE(eventually([&] { return integer(again, {"SISMEMBER", "test:done", "after"}) == 1; }));
  EXPECT_GE(w.metrics().connection_errors, 1u);
}

TEST(RedisWorker, BadOptionsAndRegistrationsAreRefusedWithTheReason) {
  worker_options o;
  o.streams.clear();
  EXPECT_THROW(worker{o}, std::invalid_argument);
  worker w(worker_options{});
  w.handle("a", [](const task_context&) {});
  EXPECT_THROW(w.handle("a", [](const task_context&) {}), std::invalid_argument);
  EXPECT_THROW(w.handle("", [](const task_context&) {}), std::invalid_argument);
  EXPECT_THROW(endpoint::parse("localhost"), std::invalid_argument);
  EXPECT_THROW(endpoint::parse("host:99999"), std::invalid_argument);
  EXPECT_EQ(endpoint::parse("unix:/tmp/r.sock").unix_path, "/tmp/r.sock");
  EXPECT_EQ(endpoint::parse("tcp://r:6380").port, 6380);
}

}  // namespace
}  // namespace crosstown::redis::test
