// Descriptor exhaustion: with RLIMIT_NOFILE lowered in-process (setrlimit, restored after), a
// pending connection makes accept fail with EMFILE. The server must back off (not retry in a
// tight loop on the I/O thread) and serve the client once descriptors are available again.
// A binary of its own: the limit is process-wide.
#include "demo_server.hpp"
#include "phone_calls_app.hpp"
#include "posix_client.hpp"
#include "test_support.hpp"

#include <crosstown/crosstown.hpp>

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

namespace {

namespace demo = crosstown_demo;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

// Lowers the soft descriptor limit for its lifetime and fills what is left, keeping `spare`
// descriptors free; restores everything when destroyed.
class descriptor_squeeze {
 public:
  descriptor_squeeze() {
    ::getrlimit(RLIMIT_NOFILE, &saved_);
    const int probe = ::open("/dev/null", O_RDONLY);
    rlimit low = saved_;
    low.rlim_cur = static_cast<rlim_t>(probe + 16);
    ::close(probe);
    ok_ = ::setrlimit(RLIMIT_NOFILE, &low) == 0;
    for (;;) {
      const int fd = ::open("/dev/null", O_RDONLY);
      if (fd < 0) break;
      held_.push_back(fd);
    }
  }
  descriptor_squeeze(const descriptor_squeeze&) = delete;
  descriptor_squeeze& operator=(const descriptor_squeeze&) = delete;
  ~descriptor_squeeze() { release(); }

  bool ok() const { return ok_ && !held_.empty(); }
  // Frees one descriptor (for the client's socket).
  void free_one() {
    ::close(held_.back());
    held_.pop_back();
  }
  void release() {
    for (const int fd : held_) ::close(fd);
    held_.clear();
    ::setrlimit(RLIMIT_NOFILE, &saved_);
  }

 private:
  rlimit saved_{};
  bool ok_ = false;
  std::vector<int> held_;
};

class DescriptorExhaustionTest : public ::testing::TestWithParam<demo::session_style> {};

std::string style_name(const ::testing::TestParamInfo<demo::session_style>& info) {
  return info.param == demo::session_style::callback ? "Callback" : "Coroutine";
}

INSTANTIATE_TEST_SUITE_P(Sessions, DescriptorExhaustionTest,
                         ::testing::Values(demo::session_style::callback,
                                           demo::session_style::coroutine),
                         style_name);

TEST_P(DescriptorExhaustionTest, AcceptBacksOffOnEmfileAndServesOnceDescriptorsReturn) {
  // The waits below are for the server's counters and the runtime's tasks, which announce
  // their changes: the test waits on them rather than polling.
  crosstown::test_support::change_signal changes;
  const auto eventually = [&changes](auto done) { return changes.wait_for(done, 10s); };
  crosstown::runtime rt(
      {.threads = 1, .on_settled = [&changes](const crosstown::task_info&, crosstown::task_state) {
         changes.notify();
       }});
  demo::phone_calls_app app(rt, 0us);
  demo::net::io_context ioc;
  demo::server server(ioc, rt, std::ref(app),
                      {.style = GetParam(),
                       .accept_backoff_min = 20ms,
                       .accept_backoff_max = 200ms,
                       .on_change = [&changes] { changes.notify(); }});
  server.start();
  std::thread io([&] { ioc.run(); });
  const unsigned short port = server.port();
  ASSERT_EQ(crosstown_test::request(port, crosstown_test::post("/calls?n=1")), 202);
  // The first call's hand-off and the pool's first thread come after the client read its 202:
  // let them finish before the descriptors run out. Under UBSan, a virtual call's first
  // type check opens a pipe (to probe that the vtable is readable); with no descriptor left
  // it fails and reports a valid object as having an invalid vptr.
  ASSERT_TRUE(eventually([&] { return rt.metrics().count(crosstown::task_state::ran) == 1; }));
  ASSERT_TRUE(rt.drain_for(10s).complete);

  int client = -1;
  clock_type::time_point first_error, third_error;
  {
    descriptor_squeeze squeeze;
    ASSERT_TRUE(squeeze.ok());
    squeeze.free_one();
    client = crosstown_test::connect_local(port);  // the kernel accepts; the server cannot
    ASSERT_GE(client, 0);
    ASSERT_TRUE(eventually([&] { return server.stats().accept_errors >= 1; }));
    first_error = clock_type::now();
    const std::uint64_t seen = server.stats().accept_errors;
    ASSERT_TRUE(eventually([&] { return server.stats().accept_errors >= seen + 2; }));
    third_error = clock_type::now();
    // A spinning accept loop fails thousands of times a millisecond; backing off at least
    // 20 ms, doubling, two more failures take at least 40 ms (30: slack for waking the test).
    EXPECT_GE(third_error - first_error, 30ms);
    EXPECT_LT(server.stats().accept_errors, 20u);
  }  // descriptors and the limit restored
  ASSERT_TRUE(crosstown_test::send_all(client, crosstown_test::post("/calls?n=2")));
  EXPECT_EQ(crosstown_test::read_status(client), 202) << "served after the back-off";
  ::close(client);

  server.stop();
  io.join();
  ASSERT_TRUE(rt.drain_for(10s).complete);
  EXPECT_EQ(rt.metrics().registered, 3u);
  EXPECT_EQ(rt.metrics().unfinished(), 0u);
}

}  // namespace
