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
const std::string worker_program = CROSSTOWN_WORKER_PROGRAM;

TEST(RedisWorkerProgram, RunsTheBuiltInPhoneCallsAndStopsCleanlyOnSigterm) {
  redis_server server;
  connection c = server.connect();
  child_process worker({worker_program, "--redis", "unix:" + server.socket_path(), "--metrics"},
                       /*stdout_pipe=*/true);
  c.command({"XADD", "crosstown:tasks", "*", "name", "phone-call", "payload",
             R"({"to":"+15550100","call":1})", "key", "call-key-1", "attempt", "1"});
  c.command({"XADD", "crosstown:tasks", "*", "name", "phone-call", "payload", R"({"no":1})", "key",
             "call-key-2", "attempt", "1"});
  ASSERT_TRUE(eventually([&] {
    return integer(c, {"SISMEMBER", "crosstown:demo:placed", "call-key-1"}) == 1;
  }));
  ASSERT_TRUE(eventually([&] { return integer(c, {"XLEN", "crosstown:tasks:dead"}) == 1; }));
  const int status = worker.terminate();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  const auto dead = read_stream(c, "crosstown:tasks:dead");
  EXPECT_THAT(field(dead[0], "reason"), testing::HasSubstr("a phone call needs {\"to\""));
}

TEST(RedisWorkerProgram, RejectsABadAddressWithTheReason) {
  child_process worker({worker_program, "--redis", "localhost"});
  const int status = worker.wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << "status " << status;
}

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
