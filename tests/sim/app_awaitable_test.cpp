// Awaitable deferred work under run_app: coroutines on the run's simulated io_context, their
// timeouts, retry backoffs and lane waits on virtual time, judged by the oracle like any task.
//
// The server here is a raw one (no Beast, to keep this translation unit light): it reads one
// request, creates the response's scope, lets the test's `defer_fn` defer on it, writes a fixed
// 200 and reports the write as crosstown::beast would, then closes. The oracle parses the wire.
#include <crosstown/sim/app_test.hpp>

#include <crosstown/awaitable_task.hpp>
#include <crosstown/response_scope.hpp>

#include <boost/asio/write.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
namespace sim = crosstown::sim;
namespace net = boost::asio;
using error_code = boost::system::error_code;

// What a test defers on each response's scope; `conn` is the connection's number.
using defer_fn = std::function<void(crosstown::response_scope&, sim::app_env&, std::uint32_t conn)>;

enum class flaw {
  none,
  sent_in_handler,  // response_sent() reported in the very step that created the scope
};

constexpr char response_bytes[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

struct raw_session : std::enable_shared_from_this<raw_session> {
  raw_session(sim::sim_stream s, sim::app_env& e, const defer_fn& d, flaw f)
      : stream(std::move(s)), env(e), defer(d), bug(f) {}

  void read() {
    stream.async_read_some(net::buffer(buf),
                           [self = shared_from_this()](error_code ec, std::size_t n) {
                             if (ec) return self->close();
                             self->request.append(self->buf.data(), n);
                             if (self->request.find("\r\n\r\n") == std::string::npos)
                               return self->read();
                             self->respond();
                           });
  }

  void respond() {
    scope = std::make_unique<crosstown::response_scope>(env.runtime());
    defer(*scope, env, stream.id());
    env.watch(*scope);
    scope->status_known(200);
    if (bug == flaw::sent_in_handler) scope->response_sent();  // before a byte went out
    net::async_write(stream, net::buffer(response_bytes, sizeof response_bytes - 1),
                     [self = shared_from_this()](error_code ec, std::size_t) {
                       if (ec) {
                         self->scope->delivery_failed("write failed");
                       } else if (self->bug == flaw::none) {
                         self->scope->response_sent();
                       }
                       self->close();
                     });
  }

  void close() {
    scope.reset();
    error_code ignored;
    stream.shutdown(net::socket_base::shutdown_send, ignored);
    stream.close(ignored);
  }

  sim::sim_stream stream;
  sim::app_env& env;
  const defer_fn& defer;
  flaw bug;
  std::array<char, 512> buf{};
  std::string request;
  std::unique_ptr<crosstown::response_scope> scope;
};

struct raw_server {
  raw_server(sim::app_env& e, const defer_fn& d, flaw f)
      : env(e), defer(d), bug(f), acceptor(e.network(), e.server_executor()) {
    accept();
  }
  void accept() {
    acceptor.async_accept([this](error_code ec, sim::sim_stream s) {
      if (ec) return;
      std::make_shared<raw_session>(std::move(s), env, defer, bug)->read();
      accept();
    });
  }
  sim::app_env& env;
  const defer_fn& defer;
  flaw bug;
  sim::sim_acceptor acceptor;
};

// The client sends one request and reads until the server closes.
struct raw_reader : std::enable_shared_from_this<raw_reader> {
  explicit raw_reader(sim::client_conn& conn) : c(conn) {}
  void read() {
    c.stream.async_read_some(net::buffer(buf),
                             [self = shared_from_this()](error_code ec, std::size_t) {
                               if (!ec) self->read();
                             });
  }
  sim::client_conn& c;
  std::string req = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
  std::array<char, 512> buf{};
};

void raw_client(sim::client_conn& c) {
  auto r = std::make_shared<raw_reader>(c);
  net::async_write(c.stream, net::buffer(r->req), [r](error_code, std::size_t) {});
  r->read();
}

sim::app_config quiet_network() {
  sim::app_config cfg;
  cfg.connections = 1;
  cfg.reset_rate = 0;
  cfg.stall_rate = 0;
  return cfg;
}

sim::app_result run_one(const sim::app_config& cfg, const defer_fn& defer,
                        const sim::app_check& check = {}, flaw bug = flaw::none) {
  return sim::run_app(
      cfg,
      [&defer, bug](sim::app_env& env) -> std::shared_ptr<void> {
        return std::make_shared<raw_server>(env, defer, bug);
      },
      raw_client, check);
}

sim::app_seeds_result run_seeds(const sim::app_config& cfg, std::uint64_t runs,
                                const defer_fn& defer, flaw bug = flaw::none) {
  return sim::run_app_seeds(
      cfg, 1, runs,
      [&defer, bug](sim::app_env& env) -> std::shared_ptr<void> {
        return std::make_shared<raw_server>(env, defer, bug);
      },
      raw_client);
}

std::int64_t completed_at(const sim::app_result& r, std::uint32_t conn) {
  auto it = r.completions.find({conn, 0});
  if (it == r.completions.end()) return -1;
  return it->second >= 0 ? it->second : -it->second - 1;
}

TEST(SimAwaitable, AwaitableTasksStartAfterTheirResponseOnTheSimulatedIoContext) {
  struct start {
    std::uint32_t conn;
    std::int64_t at_ns;
    std::string actor;
  };
  std::vector<start> starts;
  const defer_fn defer = [&starts](crosstown::response_scope& scope, sim::app_env& env,
                                   std::uint32_t conn) {
    for (int i = 0; i < 3; ++i) {
      scope.defer([&starts, &env, conn]() -> net::awaitable<void> {
        const sim::io_actor* running = sim::io_actor::running();
        starts.push_back({conn, env.now_ns(), running != nullptr ? running->label() : "none"});
        co_await env.task_clock().wait(1ms);
      });
    }
  };
  sim::app_config cfg;  // faults on: resets and stalls
  std::uint64_t seen = 0;
  for (std::uint64_t seed = 1; seed <= 100; ++seed) {
    cfg.seed = seed;
    starts.clear();
    const sim::app_result r = run_one(cfg, defer);
    ASSERT_TRUE(r.ok()) << sim::describe(r);
    for (const start& s : starts) {
      ++seen;
      EXPECT_EQ(s.actor, "tasks io") << "seed " << seed;
      const std::int64_t done = completed_at(r, s.conn);
      if (done < 0) continue;  // reset before a byte of it: the oracle judged that release
      EXPECT_GE(s.at_ns, done) << "seed " << seed << ", connection " << s.conn;
    }
  }
  EXPECT_GT(seen, 300U);
}

TEST(SimAwaitable, TimeoutOfFiftyMillisecondsOverAOneSecondWaitEndsTimedOutAtVirtualFiftyMs) {
  std::int64_t started = -1;
  std::int64_t cancelled = -1;
  const defer_fn defer = [&](crosstown::response_scope& scope, sim::app_env& env, std::uint32_t) {
    scope.defer(
        [&, clock = &env.task_clock()]() -> net::awaitable<void> {
          started = env.now_ns();
          try {
            co_await clock->wait(1s);
          } catch (const boost::system::system_error&) {
            cancelled = env.now_ns();
            throw;
          }
        },
        {.timeout = 50ms});
  };
  std::uint64_t timed_out = 0;
  const auto real_start = std::chrono::steady_clock::now();
  const sim::app_result r = run_one(quiet_network(), defer, [&](sim::app_env& env) {
    timed_out = env.runtime().metrics().count(crosstown::task_state::timed_out);
  });
  ASSERT_TRUE(r.ok()) << sim::describe(r);
  EXPECT_EQ(timed_out, 1U);
  ASSERT_GE(started, 0);
  EXPECT_EQ(cancelled - started, std::chrono::nanoseconds(50ms).count());
  // A second of virtual waiting did not take a second: the run never waited in real time.
  EXPECT_LT(std::chrono::steady_clock::now() - real_start, 1s);
}

TEST(SimAwaitable, RetriesWaitTheirBackoffOnVirtualTime) {
  std::vector<std::int64_t> attempts;
  const defer_fn defer = [&](crosstown::response_scope& scope, sim::app_env& env, std::uint32_t) {
    scope.defer(
        [&, clock = &env.task_clock()]() -> net::awaitable<void> {
          attempts.push_back(env.now_ns());
          co_await clock->wait(1s);
        },
        {.timeout = 50ms, .retry = {.max_attempts = 3, .base = 10ms, .cap = 1s, .jitter = 0}});
  };
  crosstown::metrics_snapshot m;
  const sim::app_result r =
      run_one(quiet_network(), defer, [&](sim::app_env& env) { m = env.runtime().metrics(); });
  ASSERT_TRUE(r.ok()) << sim::describe(r);
  ASSERT_EQ(attempts.size(), 3U);
  // 50 ms timeout, 10 ms backoff, 50 ms, 20 ms, 50 ms.
  EXPECT_EQ(attempts[1] - attempts[0], std::chrono::nanoseconds(60ms).count());
  EXPECT_EQ(attempts[2] - attempts[1], std::chrono::nanoseconds(70ms).count());
  EXPECT_EQ(m.count(crosstown::task_state::timed_out), 1U);
  EXPECT_EQ(m.retries, 2U);
}

TEST(SimAwaitable, AFailedAttemptRetriedOnVirtualTimeEndsRan) {
  std::vector<std::int64_t> attempts;
  const defer_fn defer = [&](crosstown::response_scope& scope, sim::app_env& env, std::uint32_t) {
    scope.defer(
        [&, clock = &env.task_clock()]() -> net::awaitable<void> {
          attempts.push_back(env.now_ns());
          co_await clock->wait(5ms);
          if (attempts.size() == 1) throw std::runtime_error("the API said no");
        },
        {.timeout = 50ms, .retry = {.max_attempts = 3, .base = 100ms, .cap = 1s, .jitter = 0}});
  };
  crosstown::metrics_snapshot m;
  const sim::app_result r =
      run_one(quiet_network(), defer, [&](sim::app_env& env) { m = env.runtime().metrics(); });
  ASSERT_TRUE(r.ok()) << sim::describe(r);
  ASSERT_EQ(attempts.size(), 2U);
  EXPECT_EQ(attempts[1] - attempts[0], std::chrono::nanoseconds(105ms).count());
  EXPECT_EQ(m.count(crosstown::task_state::ran), 1U);
  EXPECT_EQ(m.count(crosstown::task_state::failed), 0U);
}

TEST(SimAwaitable, ALaneLimitsInFlightTasksInTheSimulation) {
  int inside = 0;
  int peak = 0;
  int done = 0;
  const defer_fn defer = [&](crosstown::response_scope& scope, sim::app_env& env, std::uint32_t) {
    env.runtime().lane("api", {.max_in_flight = 2, .capacity = 100});
    for (int i = 0; i < 3; ++i) {
      scope.defer(
          [&, clock = &env.task_clock()]() -> net::awaitable<void> {
            peak = std::max(peak, ++inside);
            co_await clock->wait(10ms);
            --inside;
            ++done;
          },
          {.lane = "api"});
    }
  };
  sim::app_config cfg = quiet_network();
  cfg.connections = 4;
  std::vector<crosstown::lane_snapshot> lanes;
  const sim::app_result r =
      run_one(cfg, defer, [&](sim::app_env& env) { lanes = env.runtime().lane_metrics(); });
  ASSERT_TRUE(r.ok()) << sim::describe(r);
  EXPECT_EQ(done, 12);
  EXPECT_EQ(peak, 2);
  ASSERT_EQ(lanes.size(), 1U);
  EXPECT_EQ(lanes[0].admitted, 12U);
  EXPECT_GT(lanes[0].waited, 0U);
  EXPECT_GT(lanes[0].waited_time, 0ns) << "lane waits are measured on virtual time";
}

// Random latencies, timeouts and retries, with faults: the oracle's checks (I7 no drag among
// them: the tasks wait on virtual time, never on a connection's io_context) and I8.
TEST(SimAwaitable, SameSeedGivesTheSameJournalWithAwaitableTasks) {
  const defer_fn defer = [](crosstown::response_scope& scope, sim::app_env& env, std::uint32_t) {
    const int n = 1 + static_cast<int>(env.draws().below(3));
    for (int i = 0; i < n; ++i) {
      const auto latency = std::chrono::milliseconds(env.draws().below(80));
      const bool fails = env.draws().chance(0.3);
      scope.defer(
          [latency, fails, clock = &env.task_clock()]() -> net::awaitable<void> {
            co_await clock->wait(latency);
            if (fails) throw std::runtime_error("flaky");
          },
          {.timeout = 50ms, .retry = {.max_attempts = 2, .base = 5ms}});
    }
  };
  sim::app_config cfg;
  cfg.determinism = true;
  const sim::app_seeds_result r = run_seeds(cfg, 50, defer);
  EXPECT_TRUE(r.ok()) << (r.failure ? sim::describe(*r.failure) : "");
  EXPECT_EQ(r.runs, 50U);
  EXPECT_GT(r.tasks_ran, 50U);
}

std::size_t threads_named(const std::string& wanted) {
  std::size_t n = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    std::ifstream comm(entry.path() / "comm");
    std::string name;
    if (std::getline(comm, name) && name == wanted) ++n;
  }
  return n;
}

std::size_t threads_of_this_process() {
  std::size_t n = 0;
  std::error_code ec;
  for ([[maybe_unused]] const auto& entry :
       std::filesystem::directory_iterator("/proc/self/task", ec))
    ++n;
  return n;
}

TEST(SimAwaitable, TheRuntimeStartsNoIoThreadForAwaitableTasksInASimulatedRun) {
  int ran = 0;
  const defer_fn defer = [&](crosstown::response_scope& scope, sim::app_env& env, std::uint32_t) {
    scope.defer([&, clock = &env.task_clock()]() -> net::awaitable<void> {
      co_await clock->wait(1ms);
      ++ran;
    });
  };
  const std::size_t before = threads_of_this_process();
  std::size_t io_threads = 99;
  std::size_t during = 0;
  const sim::app_result r = run_one(quiet_network(), defer, [&](sim::app_env&) {
    // The runtime is still alive here, after its awaitable task ran.
    io_threads = threads_named("crosstown-io");
    during = threads_of_this_process();
  });
  ASSERT_TRUE(r.ok()) << sim::describe(r);
  EXPECT_EQ(ran, 1);
  EXPECT_EQ(io_threads, 0U);
  EXPECT_EQ(during, before);
}

// A release in the very step that created its scope is judged too (the scope's connection is
// resolved before judging): a handler reporting response_sent() before writing, in the same
// completion that created the scope, is caught as I1.
TEST(SimAwaitable, ReleaseInTheStepThatCreatedItsScopeIsJudged) {
  const defer_fn defer = [](crosstown::response_scope& scope, sim::app_env&, std::uint32_t) {
    scope.defer([] {}, {.name = "plain"});
  };
  const sim::app_seeds_result r = run_seeds(quiet_network(), 100, defer, flaw::sent_in_handler);
  ASSERT_FALSE(r.ok()) << "not caught in " << r.runs << " seeds";
  EXPECT_EQ(r.failure->first->invariant, "I1 after") << sim::describe(*r.failure);
}

}  // namespace
