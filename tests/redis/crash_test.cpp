// Crashes with a real redis-server: a worker killed with SIGKILL in the middle of a task, and
// a web process killed with SIGKILL right after its tasks were acknowledged. The killed
// processes are crosstown_redis_test_process (test_process.cpp).
#include "redis_fixture.hpp"
#include "test_handlers.hpp"

#include <crosstown/redis/durable_task.hpp>
#include <crosstown/redis/worker.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace crosstown::redis::test {
namespace {

const std::string test_process = CROSSTOWN_REDIS_TEST_PROCESS;

TEST(RedisCrash, AWorkerKilledMidTaskIsReplacedAfterTheVisibilityTimeoutAndTheTaskSucceedsOnce) {
  redis_server server;
  connection c = server.connect();
  child_process first({test_process, "worker", "unix:" + server.socket_path(), "first", "300"},
                      /*stdout_pipe=*/true);
  ASSERT_TRUE(first.wait_for_line("ready"));
  c.command({"XADD", "crosstown:tasks", "*", "name", "hold-once", "payload", "", "key", "call-1",
             "attempt", "1"});
  ASSERT_TRUE(first.wait_for_line("holding call-1"));
  first.kill9();

  worker_options o;
  o.redis = server.where();
  o.consumer = "second";
  o.visibility_timeout = std::chrono::milliseconds(300);
  o.claim_interval = std::chrono::milliseconds(50);
  o.block = std::chrono::milliseconds(20);
  worker second(o);
  add_test_handlers(second);
  second.start();
  ASSERT_TRUE(eventually([&] { return second.metrics().acked == 1; }));
  reply_ptr successes = c.command({"GET", "test:success:call-1"});
  EXPECT_EQ(reply_text(*successes), "1");
  EXPECT_EQ(second.metrics().reclaimed, 1u);
  reply_ptr summary = c.command({"XPENDING", "crosstown:tasks", "crosstown"});
  EXPECT_EQ(summary->element[0]->integer, 0);
}

TEST(RedisCrash, AWebProcessKilledAfterItsTasksWereAcknowledgedLosesNone) {
  redis_server server(/*aof=*/true);
  child_process web({test_process, "web", "unix:" + server.socket_path(), "50", "10"},
                    /*stdout_pipe=*/true);
  ASSERT_TRUE(web.wait_for_line("acknowledged 500"));
  web.kill9();

  worker_options o;
  o.redis = server.where();
  o.consumer = "after-the-crash";
  o.block = std::chrono::milliseconds(20);
  o.batch = 64;
  worker w(o);
  add_test_handlers(w);
  w.start();
  connection c = server.connect();
  EXPECT_TRUE(eventually([&] {
    return integer(c, {"SCARD", "test:done"}) == 500;
  })) << "done: "
      << integer(c, {"SCARD", "test:done"});
  EXPECT_TRUE(eventually([&] { return w.metrics().acked == 500; }));
}

}  // namespace
}  // namespace crosstown::redis::test
