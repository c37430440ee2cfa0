// The publisher against a real redis-server: the rules of the web process hold for durable
// tasks (status, delivery, names, order), a task counts ran only once Redis acknowledged its
// append, and an unreachable Redis means a bounded backlog, a flush after reconnect, and
// counted, reported losses.
#include <crosstown/redis/publisher.hpp>

#include "redis_fixture.hpp"
#include "web_fixture.hpp"

#include <crosstown/redis/durable_task.hpp>
#include <crosstown/task.hpp>

#include <boost/json.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace crosstown::redis::test {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

std::vector<std::string> keys_in(connection& c, std::string_view stream) {
  std::vector<std::string> keys;
  for (const auto& f : read_stream(c, stream)) keys.push_back(field(f, "key"));
  return keys;
}

TEST(RedisPublisher, TaskTargetFindsTheStoredCallableOnlyForItsType) {
  struct small {
    int x;
    void operator()() const {}
  };
  struct large {
    char bytes[200];
    void operator()() const {}
  };
  task a{small{7}};
  task b{large{}};
  ASSERT_NE(a.target<small>(), nullptr);
  EXPECT_EQ(a.target<small>()->x, 7);
  EXPECT_EQ(a.target<large>(), nullptr);
  EXPECT_NE(b.target<large>(), nullptr);
  EXPECT_EQ(b.target<small>(), nullptr);
}

TEST(RedisPublisher, DurableTaskIsAppendedWithItsFieldsAndCountsRanWhenAcknowledged) {
  redis_server server;
  web_process web(test_publisher(server.where()));
  const auto keys =
      web.respond(200, {json_task("send-mail", boost::json::object{{"to", "a@b"}}),
                        durable_task{"call", std::string("bytes\0here", 10), "given-key", {}}});
  ASSERT_TRUE(eventually([&] { return web.count(task_state::ran) == 2; }));
  connection c = server.connect();
  const auto entries = read_stream(c, "crosstown:tasks");
  ASSERT_THAT(entries, SizeIs(2));
  EXPECT_EQ(field(entries[0], "name"), "send-mail");
  EXPECT_EQ(field(entries[0], "payload"), R"({"to":"a@b"})");
  EXPECT_EQ(field(entries[0], "key"), keys[0]);
  EXPECT_EQ(keys[0].size(), 32u);
  EXPECT_EQ(field(entries[0], "attempt"), "1");
  EXPECT_EQ(field(entries[1], "key"), "given-key");
  EXPECT_EQ(field(entries[1], "payload"), std::string("bytes\0here", 10));
  EXPECT_EQ(keys[1], "given-key");
  const auto m = web.pub().metrics();
  EXPECT_EQ(m.published, 2u);
  EXPECT_EQ(m.backlog, 0u);
  EXPECT_EQ(m.publish_failures, 0u);
  EXPECT_TRUE(m.connected);
  EXPECT_TRUE(web.errors().empty());
}

TEST(RedisPublisher, TasksOfOneResponseEnterTheStreamInRegistrationOrder) {
  redis_server server;
  web_process web(test_publisher(server.where()));
  std::vector<durable_task> tasks;
  for (int i = 0; i < 200; ++i) tasks.push_back(task_named("step", std::to_string(i)));
  const auto keys = web.respond(200, std::move(tasks));
  ASSERT_TRUE(eventually([&] { return web.count(task_state::ran) == 200; }));
  connection c = server.connect();
  EXPECT_EQ(keys_in(c, "crosstown:tasks"), keys);
}

TEST(RedisPublisher, StatusInTheNoGoSetAppendsNothingAndAlwaysAppendsAnyway) {
  redis_server server;
  web_process web(test_publisher(server.where()));
  web.respond(500, {task_named("skipped")});
  const auto always = web.respond(503, {task_named("audit")}, {.always = true});
  const auto ok = web.respond(200, {task_named("after")});
  ASSERT_TRUE(eventually([&] { return web.count(task_state::ran) == 2; }));
  EXPECT_EQ(web.count(task_state::skipped_by_status), 1u);
  connection c = server.connect();
  EXPECT_THAT(keys_in(c, "crosstown:tasks"), ElementsAre(always[0], ok[0]));
}

TEST(RedisPublisher, RequireDeliverySkipsTheAppendWhenDeliveryFailed) {
  redis_server server;
  web_process web(test_publisher(server.where()));
  std::string kept;
  {
    response_scope scope(web.rt());
    defer_durable(scope, web.pub(), task_named("needs-delivery"), {.require_delivery = true});
    kept = defer_durable(scope, web.pub(), task_named("runs-anyway"));
    scope.status_known(200);
    scope.delivery_failed("reset by peer");
  }
  ASSERT_TRUE(eventually([&] { return web.count(task_state::ran) == 1; }));
  EXPECT_EQ(web.count(task_state::skipped_by_delivery), 1u);
  connection c = server.connect();
  EXPECT_THAT(keys_in(c, "crosstown:tasks"), ElementsAre(kept));
}

TEST(RedisPublisher, ALaterTaskOfTheSameNameReplacesTheEarlierAndCancelAppendsNothing) {
  redis_server server;
  web_process web(test_publisher(server.where()));
  std::string later;
  {
    response_scope scope(web.rt());
    defer_durable(scope, web.pub(), task_named("mail", "first"), {.name = "welcome"});
    later = defer_durable(scope, web.pub(), task_named("mail", "second"), {.name = "welcome"});
    defer_durable(scope, web.pub(), task_named("mail", "third"), {.name = "gone"});
    EXPECT_TRUE(scope.cancel("gone"));
    scope.status_known(200);
    scope.response_sent();
  }
  ASSERT_TRUE(eventually([&] { return web.count(task_state::ran) == 1; }));
  EXPECT_EQ(web.count(task_state::cancelled), 2u);
  connection c = server.connect();
  const auto entries = read_stream(c, "crosstown:tasks");
  ASSERT_THAT(entries, SizeIs(1));
  EXPECT_EQ(field(entries[0], "payload"), "second");
  EXPECT_EQ(field(entries[0], "key"), later);
}

TEST(RedisPublisher, TasksAreRoutedToTheStreamTheTaskOrTheRouteNames) {
  redis_server server;
  auto options = test_publisher(server.where());
  options.route = [](const durable_task& t) { return "tasks:" + t.name; };
  web_process web(std::move(options));
  web.respond(200, {task_named("a"), task_named("b"), durable_task{"c", "", "", "explicit"}});
  ASSERT_TRUE(eventually([&] { return web.count(task_state::ran) == 3; }));
  connection c = server.connect();
  EXPECT_EQ(integer(c, {"XLEN", "tasks:a"}), 1);
  EXPECT_EQ(integer(c, {"XLEN", "tasks:b"}), 1);
  EXPECT_EQ(integer(c, {"XLEN", "explicit"}), 1);
}

TEST(RedisPublisher, DeferDurableRejectsBadNamesAndAnotherExecutor) {
  redis_server server;
  web_process web(test_publisher(server.where()));
  response_scope scope(web.rt());
  EXPECT_THROW(defer_durable(scope, web.pub(), task_named("")), std::invalid_argument);
  EXPECT_THROW(defer_durable(scope, web.pub(), task_named("bad\nname")), std::invalid_argument);
  EXPECT_THROW(defer_durable(scope, web.pub(), task_named(std::string(201, 'x'))),
               std::invalid_argument);
  EXPECT_THROW(defer_durable(scope, web.pub(), task_named("x"), {.same_thread = true}),
               std::invalid_argument);
  EXPECT_THROW(defer_durable(scope, web.pub(), task_named("x"),
                             {.executor = same_thread_executor::instance()}),
               std::invalid_argument);
  EXPECT_EQ(scope.pending(), 0u);
  scope.status_known(200);
  scope.response_sent();
}

TEST(RedisPublisher, APlainTaskGivenToThePublisherIsRejectedAndReported) {
  redis_server server;
  web_process web(test_publisher(server.where()));
  {
    response_scope scope(web.rt());
    scope.defer([] {}, {.executor = web.pub()});
    scope.status_known(200);
    scope.response_sent();
  }
  EXPECT_EQ(web.count(task_state::rejected_by_overflow), 1u);
  EXPECT_EQ(web.pub().metrics().not_durable, 1u);
  EXPECT_THAT(web.publish_lost(), ElementsAre(HasSubstr("not a durable task")));
}

TEST(RedisPublisher, ADurableTaskOnAnotherExecutorFailsLoudlyInsteadOfVanishing) {
  redis_server server;
  web_process web(test_publisher(server.where()));
  {
    response_scope scope(web.rt());
    auto record = std::make_unique<detail::durable_record>();
    record->task = task_named("lost");
    scope.defer(detail::durable_call{std::move(record)}, {.same_thread = true});
    scope.status_known(200);
    scope.response_sent();
  }
  EXPECT_EQ(web.count(task_state::failed), 1u);
  EXPECT_THAT(web.errors(), ElementsAre(HasSubstr("not a crosstown::redis::publisher")));
}

TEST(RedisPublisher, RedisDownAtResponseSentHoldsABacklogThatFlushesAfterReconnect) {
  redis_server server;
  web_process web(test_publisher(server.where()));
  ASSERT_TRUE(eventually([&] { return web.pub().metrics().connected; }));
  server.kill9();
  ASSERT_TRUE(eventually([&] { return !web.pub().metrics().connected; }));
  std::vector<std::string> keys;
  for (int i = 0; i < 5; ++i) {
    for (auto& k : web.respond(200, {task_named("later", std::to_string(i))})) keys.push_back(k);
  }
  ASSERT_TRUE(eventually([&] { return web.pub().metrics().backlog == 5; }));
  EXPECT_EQ(web.count(task_state::ran), 0u);
  EXPECT_EQ(web.rt().metrics().queued, 5u);  // held, not lost: drain would wait for them
  server.start();
  ASSERT_TRUE(eventually([&] { return web.count(task_state::ran) == 5; }));
  connection c = server.connect();
  EXPECT_EQ(keys_in(c, "crosstown:tasks"), keys);
  const auto m = web.pub().metrics();
  EXPECT_EQ(m.backlog, 0u);
  EXPECT_GE(m.connects, 2u);
  EXPECT_GE(m.disconnects, 1u);
}

TEST(RedisPublisher, BacklogOverflowIsCountedAndReportedWithTheReason) {
  redis_server server;
  auto options = test_publisher(server.where());
  options.backlog_limit = 3;
  web_process web(std::move(options));
  server.kill9();
  ASSERT_TRUE(eventually([&] { return !web.pub().metrics().connected; }));
  std::vector<durable_task> tasks;
  for (int i = 0; i < 5; ++i) tasks.push_back(task_named("burst", std::to_string(i)));
  web.respond(200, std::move(tasks));
  EXPECT_EQ(web.count(task_state::rejected_by_overflow), 2u);
  EXPECT_EQ(web.pub().metrics().overflowed, 2u);
  EXPECT_THAT(web.publish_lost(), AllOf(SizeIs(2), ElementsAre(HasSubstr("backlog is full (3"),
                                                               HasSubstr("overflow"))));
  EXPECT_THAT(web.lost(), SizeIs(2));
  server.start();
  ASSERT_TRUE(eventually([&] { return web.count(task_state::ran) == 3; }));
  connection c = server.connect();
  const auto entries = read_stream(c, "crosstown:tasks");
  ASSERT_THAT(entries, SizeIs(3));
  EXPECT_EQ(field(entries[0], "payload"), "0");  // the first three of the batch were kept
  EXPECT_EQ(field(entries[2], "payload"), "2");
}

TEST(RedisPublisher, ATaskWaitingPastTheBacklogDeadlineFailsWithTheReason) {
  redis_server server;
  auto options = test_publisher(server.where());
  options.backlog_deadline = std::chrono::milliseconds(100);
  web_process web(std::move(options));
  server.kill9();
  ASSERT_TRUE(eventually([&] { return !web.pub().metrics().connected; }));
  web.respond(200, {task_named("too-late"), task_named("too-late")});
  ASSERT_TRUE(eventually([&] { return web.count(task_state::failed) == 2; }));
  EXPECT_EQ(web.pub().metrics().expired, 2u);
  EXPECT_EQ(web.pub().metrics().backlog, 0u);
  EXPECT_THAT(web.errors(), ElementsAre(HasSubstr("waited more than 100 ms in the backlog"),
                                        HasSubstr("was not handed to Redis")));
}

// The fallback of the tests: runs each job at once on the thread that hands it over.
struct local_runs {
  std::mutex mutex;
  std::vector<std::string> payloads;  // guarded by mutex
  void operator()(const durable_task& t) {
    std::lock_guard lock(mutex);
    payloads.push_back(t.payload);
  }
  std::vector<std::string> seen() {
    std::lock_guard lock(mutex);
    return payloads;
  }
};

TEST(RedisPublisher, WithAFallbackAnOverflowingTaskRunsLocallyInsteadOfBeingRejected) {
  redis_server server;
  local_runs local;
  auto options = test_publisher(server.where());
  options.backlog_limit = 1;
  options.fallback = same_thread_executor::instance();
  options.run_locally = [&](const durable_task& t) { local(t); };
  web_process web(std::move(options));
  server.kill9();
  ASSERT_TRUE(eventually([&] { return !web.pub().metrics().connected; }));
  web.respond(200, {task_named("call", "0"), task_named("call", "1"), task_named("call", "2")});
  EXPECT_EQ(local.seen(), (std::vector<std::string>{"1", "2"}));  // the first waits for Redis
  EXPECT_EQ(web.count(task_state::ran), 2u);
  EXPECT_EQ(web.count(task_state::rejected_by_overflow), 0u);
  const auto m = web.pub().metrics();
  EXPECT_EQ(m.ran_locally, 2u);
  EXPECT_EQ(m.overflowed, 0u);
  EXPECT_EQ(m.publish_failures, 0u);
  EXPECT_THAT(web.publish_lost(), SizeIs(0));
  server.start();
  ASSERT_TRUE(eventually([&] { return web.count(task_state::ran) == 3; }));
  connection c = server.connect();
  const auto entries = read_stream(c, "crosstown:tasks");
  ASSERT_THAT(entries, SizeIs(1));
  EXPECT_EQ(field(entries[0], "payload"), "0");
}

TEST(RedisPublisher, WithAFallbackATaskPastTheBacklogDeadlineRunsLocally) {
  redis_server server;
  local_runs local;
  auto options = test_publisher(server.where());
  options.backlog_deadline = std::chrono::milliseconds(50);
  options.fallback = same_thread_executor::instance();
  options.run_locally = [&](const durable_task& t) {
    local(t);
    if (t.payload == "bad") throw std::runtime_error("the local run failed too");
  };
  web_process web(std::move(options));
  server.kill9();
  ASSERT_TRUE(eventually([&] { return !web.pub().metrics().connected; }));
  web.respond(200, {task_named("call", "late"), task_named("call", "bad")});
  // What the local run did decides: one ran, one failed (both settle on the I/O thread).
  ASSERT_TRUE(eventually([&] {
    return web.count(task_state::ran) == 1 && web.count(task_state::failed) == 1 &&
           web.errors().size() == 1;
  }));
  EXPECT_EQ(web.pub().metrics().ran_locally, 2u);
  EXPECT_EQ(local.seen(), (std::vector<std::string>{"late", "bad"}));
  EXPECT_THAT(web.errors(), ElementsAre(HasSubstr("the local run failed too")));
  EXPECT_EQ(web.pub().metrics().expired, 0u);
}

TEST(RedisPublisher, AFallbackWithoutItsRunFunctionIsRefused) {
  boost::asio::io_context io;
  publisher_options o;
  o.fallback = same_thread_executor::instance();
  EXPECT_THROW(publisher(io, o), std::invalid_argument);
  o.fallback = {};
  o.run_locally = [](const durable_task&) {};
  EXPECT_THROW(publisher(io, o), std::invalid_argument);
}

TEST(RedisPublisher, AnErrorReplyFailsTheTaskWithRedisMessage) {
  redis_server server;
  connection c = server.connect();
  c.command({"SET", "not-a-stream", "x"});
  auto options = test_publisher(server.where());
  options.stream = "not-a-stream";
  web_process web(std::move(options));
  web.respond(200, {task_named("wrong-type")});
  ASSERT_TRUE(eventually([&] { return web.count(task_state::failed) == 1; }));
  EXPECT_EQ(web.pub().metrics().refused, 1u);
  EXPECT_THAT(web.errors(), ElementsAre(HasSubstr("WRONGTYPE")));
}

TEST(RedisPublisher, RestartingRedisMidLoadLosesNoAcknowledgedTask) {
  redis_server server(/*aof=*/true);
  auto options = test_publisher(server.where());
  options.backlog_deadline = std::chrono::seconds(60);
  web_process web(std::move(options));
  constexpr int responses = 300;
  constexpr int per_response = 10;
  std::vector<std::string> keys;
  std::atomic<int> answered{0};
  std::thread load([&] {
    for (int r = 0; r < responses; ++r) {
      std::vector<durable_task> tasks;
      for (int i = 0; i < per_response; ++i) tasks.push_back(task_named("load"));
      for (auto& k : web.respond(200, std::move(tasks))) keys.push_back(std::move(k));
      answered.fetch_add(1);
    }
  });
  ASSERT_TRUE(eventually([&] { return web.count(task_state::ran) >= 500; }));
  const std::uint64_t acknowledged_before_kill = web.count(task_state::ran);
  server.kill9();
  server.start();
  load.join();
  ASSERT_TRUE(eventually([&] { return web.count(task_state::ran) == responses * per_response; }))
      << web.rt().metrics() << "\n"
      << web.pub().metrics();
  EXPECT_GE(acknowledged_before_kill, 500u);
  EXPECT_EQ(web.count(task_state::failed), 0u);
  connection c = server.connect();
  const auto stored = keys_in(c, "crosstown:tasks");
  const std::set<std::string> in_stream(stored.begin(), stored.end());
  std::size_t missing = 0;
  for (const auto& k : keys) missing += in_stream.count(k) == 0 ? 1 : 0;
  EXPECT_EQ(missing, 0u) << "acknowledged tasks lost across the restart";
  // Re-sent appends may be stored twice (at-least-once); nothing else is.
  EXPECT_EQ(stored.size() - in_stream.size() <= web.pub().metrics().resent, true);
}

TEST(RedisPublisher, MetricsAreRenderedAsPrometheusText) {
  publisher_metrics m;
  m.published = 7;
  m.backlog = 2;
  m.overflowed = 1;
  m.publish_failures = 1;
  const std::string text = to_prometheus(m);
  EXPECT_THAT(text, HasSubstr("# TYPE crosstown_redis_published_total counter\n"
                              "crosstown_redis_published_total 7\n"));
  EXPECT_THAT(text, HasSubstr("crosstown_redis_backlog 2\n"));
  EXPECT_THAT(text, HasSubstr("crosstown_redis_publish_overflowed_total 1\n"));
  worker_metrics w;
  w.dead_lettered = 3;
  EXPECT_THAT(to_prometheus(w, "app"), HasSubstr("app_worker_dead_lettered_total 3\n"));
}

}  // namespace
}  // namespace crosstown::redis::test
