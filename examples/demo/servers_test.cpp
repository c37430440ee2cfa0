// The same phone-calls app served by each server (servers.hpp: Beast, RESTinio, cpp-httplib),
// over real sockets on 127.0.0.1 port 0: the 202 of POST /calls and its calls placed after the
// response, the 404 whose deferred visit log is skipped. A server this build lacks is skipped.
#include "servers.hpp"
#include "app.hpp"
#include "demo_client.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>

namespace {

namespace demo = crosstown_demo;
using crosstown::task_state;
using namespace std::chrono_literals;

class ServedAppTest : public ::testing::TestWithParam<demo::server_kind> {
 protected:
  void SetUp() override {
    if (!demo::server_available(GetParam())) {
      GTEST_SKIP() << "this build has no " << demo::to_string(GetParam()) << " adapter";
    }
    server = demo::start_server(GetParam(), rt, app, {.threads = 2});
    ASSERT_NE(server->port(), 0);
  }

  // Waits, with a deadline, until `done()`; each wait is the runtime's own drain.
  template <class Done>
  bool eventually(Done done) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      rt.drain_for(5ms);
    }
    return true;
  }
  std::uint64_t count(task_state s) const { return rt.metrics().count(s); }

  crosstown::steady_task_clock clock;  // outlives the runtime's calls
  crosstown::runtime rt{{.threads = 2, .clock = &clock}};
  demo::awaitable_call_placer placer{rt, clock, {.latency = 1ms}};
  demo::calls_app app{rt, placer};
  std::unique_ptr<demo::running_server> server;  // stopped first
};

std::string kind_name(const ::testing::TestParamInfo<demo::server_kind>& info) {
  return std::string(demo::to_string(info.param));
}

INSTANTIATE_TEST_SUITE_P(Servers, ServedAppTest,
                         ::testing::Values(demo::server_kind::beast, demo::server_kind::restinio,
                                           demo::server_kind::httplib),
                         kind_name);

TEST_P(ServedAppTest, PostCallsAnswers202AndPlacesAllThreeCallsAfterTheResponse) {
  demo::http_client client(server->port());
  const std::int64_t sent_ns = demo::steady_now_ns();
  const demo::client_reply reply = client.send("POST", "/calls?n=3", "calls");
  EXPECT_EQ(reply.status, 202);
  EXPECT_EQ(reply.body, "queued 3 calls\n");
  const auto x = app.find("calls");
  ASSERT_NE(x, nullptr);
  EXPECT_EQ(x->deferred.load(), 3);
  ASSERT_TRUE(eventually([&] { return count(task_state::ran) == 3; }))
      << "ran " << count(task_state::ran);
  EXPECT_EQ(x->started.load(), 3);
  EXPECT_EQ(rt.metrics().registered, 3u);
  EXPECT_EQ(count(task_state::skipped_by_delivery), 0u) << "the 202 was delivered";
  EXPECT_EQ(placer.lane().snapshot().count(task_state::ran), 3u) << "through the lane";
  EXPECT_GE(x->first_task_ns.load(), sent_ns);
  if (GetParam() == demo::server_kind::beast) {
    // Beast's transport records when the response's last byte was accepted: the calls came
    // after it.
    ASSERT_NE(demo::last_write_ns(*x), 0);
    EXPECT_GE(x->first_task_ns.load(), demo::last_write_ns(*x));
    EXPECT_EQ(demo::bytes_written(*x) > 0, true);
  }
  EXPECT_GE(server->status().requests, 1u);
}

TEST_P(ServedAppTest, GetMissingAnswers404AndSkipsItsDeferredVisitLog) {
  demo::http_client client(server->port());
  const demo::client_reply reply = client.send("GET", "/missing");
  EXPECT_EQ(reply.status, 404);
  EXPECT_EQ(reply.body, "not found\n");
  ASSERT_TRUE(eventually([&] { return count(task_state::skipped_by_status) == 1; }));
  EXPECT_EQ(rt.metrics().registered, 1u);
  EXPECT_EQ(count(task_state::ran), 0u);
}

}  // namespace
