// The crosstown-demo program's shutdown, run as a child process: `serve --port 0` with a short
// deadline, a backlog of deferred calls, then SIGTERM (and a second one). It must exit within
// the deadline plus its stated margin whatever the backlog, print a summary of the unfinished
// work (counts by state and a few names, not one line per task) and the final, balanced
// counters - also when a second signal forces the stop, and when a task outlives the deadline.
#include "posix_client.hpp"

#include <gtest/gtest.h>

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#ifndef CROSSTOWN_DEMO_PATH
#error "CROSSTOWN_DEMO_PATH must name the crosstown-demo program"
#endif

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

// A running `crosstown-demo serve`; its stdout is collected through a pipe.
class demo_process {
 public:
  explicit demo_process(std::vector<std::string> args) {
    int out[2];
    if (::pipe(out) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], STDOUT_FILENO);
      ::dup2(out[1], STDERR_FILENO);
      ::close(out[0]);
      ::close(out[1]);
      std::vector<char*> argv;
      static std::string program = CROSSTOWN_DEMO_PATH;
      argv.push_back(program.data());
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(program.c_str(), argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    out_ = out[0];
  }
  demo_process(const demo_process&) = delete;
  demo_process& operator=(const demo_process&) = delete;
  ~demo_process() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) ::close(out_);
  }

  // Reads output until `text` appears or the deadline passes.
  bool wait_for_output(const std::string& text, clock_type::duration within = 10s) {
    const auto until = clock_type::now() + within;
    while (output_.find(text) == std::string::npos) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(until - clock_type::now());
      if (left <= 0ms || !read_some(static_cast<int>(left.count()))) {
        return output_.find(text) != std::string::npos;
      }
    }
    return true;
  }

  // The port from "listening on 127.0.0.1:PORT".
  unsigned short port() {
    if (!wait_for_output("listening on 127.0.0.1:")) return 0;
    const auto at = output_.find("listening on 127.0.0.1:") + 23;
    return static_cast<unsigned short>(std::stoi(output_.substr(at)));
  }

  void signal(int sig) { ::kill(pid_, sig); }

  // Waits for the exit (reading the rest of the output); the exit status, or -1 on timeout.
  int wait_exit(clock_type::duration within) {
    const auto until = clock_type::now() + within;
    for (;;) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        while (read_some(100)) {
        }
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      if (clock_type::now() > until) return -1;
      read_some(10);  // also the polling interval
    }
  }

  const std::string& output() const { return output_; }

 private:
  bool read_some(int timeout_ms) {
    pollfd p{out_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return false;
    char buf[4096];
    const ssize_t n = ::read(out_, buf, sizeof buf);
    if (n <= 0) return false;
    output_.append(buf, static_cast<std::size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int out_ = -1;
  bool exited_ = false;
  std::string output_;
};

std::size_t lines(const std::string& text) {
  std::size_t n = 0;
  for (const char c : text) n += c == '\n' ? 1 : 0;
  return n;
}

class DemoShutdownTest : public ::testing::TestWithParam<bool> {
 protected:
  std::vector<std::string> args(int deadline_ms) const {
    // The blocking variant: these cases are about pool workers held by running calls.
    std::vector<std::string> a{"serve", "--blocking-calls", "--port",
                               "0",     "--deadline-ms",    std::to_string(deadline_ms)};
    if (GetParam()) a.push_back("--coroutine");
    return a;
  }
};

std::string style_name(const ::testing::TestParamInfo<bool>& p) {
  return p.param ? "Coroutine" : "Callback";
}

INSTANTIATE_TEST_SUITE_P(Sessions, DemoShutdownTest, ::testing::Values(false, true), style_name);

// 40,000 calls of 1 ms on 4 workers: 10 s of work, far beyond the deadline.
void queue_backlog(unsigned short port) {
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(crosstown_test::request(port, crosstown_test::post("/calls?n=10000&us=1000")), 202);
  }
}

TEST_P(DemoShutdownTest, SigtermWithABacklogExitsWithinTheDeadlineAndPrintsBalancedCounters) {
  demo_process demo(args(1000));
  const unsigned short port = demo.port();
  ASSERT_NE(port, 0) << demo.output();
  queue_backlog(port);
  const auto t0 = clock_type::now();
  demo.signal(SIGTERM);
  const int status = demo.wait_exit(10s);
  const auto took = clock_type::now() - t0;
  ASSERT_NE(status, -1) << "did not exit\n" << demo.output();
  // Deadline 1 s (responses in flight get 0.5 s of it), margin 1 s, 1.5 s slack for the machine.
  EXPECT_LT(took, 3500ms);
  EXPECT_EQ(status, 1) << "work was left: the exit status says so";
  const std::string& out = demo.output();
  EXPECT_NE(out.find("dropped_at_shutdown: "), std::string::npos) << out;
  EXPECT_NE(out.find("every task accounted for: yes"), std::string::npos) << out;
  EXPECT_LT(lines(out), 40u) << "unfinished work must be summarised, not listed\n" << out;
  EXPECT_LT(out.find("drain: INCOMPLETE"), out.find("counters:")) << "counters come last";
}

TEST_P(DemoShutdownTest, SecondSignalStopsAtOnceAndStillPrintsBalancedCounters) {
  demo_process demo(args(60'000));
  const unsigned short port = demo.port();
  ASSERT_NE(port, 0) << demo.output();
  queue_backlog(port);
  demo.signal(SIGTERM);
  ASSERT_TRUE(demo.wait_for_output("signal 15")) << demo.output();
  const auto t0 = clock_type::now();
  demo.signal(SIGTERM);
  const int status = demo.wait_exit(10s);
  const auto took = clock_type::now() - t0;
  ASSERT_NE(status, -1) << "did not exit\n" << demo.output();
  EXPECT_LT(took, 2500ms) << "the 60 s deadline was not cut short";
  const std::string& out = demo.output();
  EXPECT_NE(out.find("again: stopping now"), std::string::npos) << out;
  EXPECT_NE(out.find("(forced)"), std::string::npos) << out;
  EXPECT_NE(out.find("every task accounted for: yes"), std::string::npos) << out;
  EXPECT_LT(lines(out), 40u) << out;
}

TEST_P(DemoShutdownTest, TaskLongerThanTheDeadlineIsAbandonedAfterTheMargin) {
  demo_process demo(args(500));
  const unsigned short port = demo.port();
  ASSERT_NE(port, 0) << demo.output();
  // Four calls of 5 s: every worker is busy far beyond deadline and margin.
  ASSERT_EQ(crosstown_test::request(port, crosstown_test::post("/calls?n=6&us=5000000")), 202);
  const auto t0 = clock_type::now();
  demo.signal(SIGTERM);
  const int status = demo.wait_exit(10s);
  const auto took = clock_type::now() - t0;
  ASSERT_NE(status, -1) << demo.output();
  EXPECT_LT(took, 3500ms) << "a running task held the exit";
  EXPECT_EQ(status, 1);
  const std::string& out = demo.output();
  EXPECT_NE(out.find("(abandoned)"), std::string::npos) << out;
  EXPECT_NE(out.find("every task accounted for: yes (4 still running, abandoned at exit)"),
            std::string::npos)
      << out;
}

}  // namespace
