// End-to-end tests of crosstown::beast: the demo server (examples/demo/demo_server.hpp) on real
// sockets on 127.0.0.1 (port 0), with blocking Beast clients on their own threads. Every test
// runs with callback sessions and with coroutine sessions.
//
// No sleeps: tests wait on condition variables with deadlines, or stop the server (joining its
// I/O thread, after which every scope has ended and every task was handed over) and drain the
// runtime.
//
// "A task starts only after its response went out": a client can only read the last byte after
// the server wrote it, so the proof is on the server side. The server's stream records, as each
// write completes and before the adapter reports it, the bytes accepted and a tick of a shared
// atomic sequence; each task takes its own tick when it starts and reads that record. The task's
// tick must come after the write's, and the bytes accepted must equal the whole response the
// client read.
#include "demo_server.hpp"

#include <crosstown/beast/write.hpp>
#include <crosstown/crosstown.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <ostream>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace crosstown_demo {
// Names the parameter in test listings ("GetParam() = callback").
inline void PrintTo(session_style style, std::ostream* out) {
  *out << (style == session_style::callback ? "callback" : "coroutine");
}
}  // namespace crosstown_demo

namespace {

namespace demo = crosstown_demo;
namespace net = demo::net;
namespace beast = demo::beast;
namespace http = demo::http;
using demo::tcp;
using std::chrono::seconds;

constexpr auto deadline_after = seconds(60);

// What a task saw when it started.
struct task_record {
  std::string id;
  std::uint64_t start_sequence = 0;
  std::uint64_t write_sequence = 0;  // the response's last completed write
  std::uint64_t bytes_at_start = 0;  // bytes of the response accepted by the transport
  std::int64_t gap_ns = 0;           // task start - last write completion
};

// Everything the handler and the tasks report. Thread-safe.
class test_log {
 public:
  void handled(const std::string& id) {
    std::lock_guard lock(mutex_);
    handled_.insert(id);
    changed_.notify_all();
  }
  void started(task_record r) {
    std::lock_guard lock(mutex_);
    records_[r.id] = r;
    ++started_;
    changed_.notify_all();
  }
  bool wait_handled(const std::string& id) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, deadline_after, [&] { return handled_.count(id) > 0; });
  }
  bool wait_started(std::size_t count) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, deadline_after, [&] { return started_ >= count; });
  }
  bool wait_started(const std::string& id) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, deadline_after, [&] { return records_.count(id) > 0; });
  }
  std::map<std::string, task_record> records() const {
    std::lock_guard lock(mutex_);
    return records_;
  }
  std::size_t handled_count() const {
    std::lock_guard lock(mutex_);
    return handled_.size();
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::set<std::string> handled_;               // guarded by mutex_
  std::map<std::string, task_record> records_;  // guarded by mutex_
  std::size_t started_ = 0;                     // guarded by mutex_
};

std::string_view query(std::string_view target, std::string_view key) {
  const auto q = target.find('?');
  if (q == std::string_view::npos) return {};
  std::string_view rest = target.substr(q + 1);
  while (!rest.empty()) {
    const auto amp = rest.find('&');
    const std::string_view item = rest.substr(0, amp);
    const auto eq = item.find('=');
    if (item.substr(0, eq) == key) return eq == std::string_view::npos ? "1" : item.substr(eq + 1);
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return {};
}

std::size_t query_size(std::string_view target, std::string_view key, std::size_t fallback) {
  const std::string_view v = query(target, key);
  std::size_t n = fallback;
  if (!v.empty()) std::from_chars(v.data(), v.data() + v.size(), n);
  return n;
}

// The test application. `/r?id=X` defers one task "X" and answers 200 with an empty body;
// options: status=404, size=N (body bytes), chunked, always, nogo=SPEC, require_delivery,
// headers_phase (adds a headers-phase task "X-headers").
class test_app {
 public:
  test_app(test_log& log, std::atomic<std::uint64_t>& sequence) : log_(log), sequence_(sequence) {}

  demo::response_type operator()(demo::request_context& c) const {
    const std::string_view target = c.request.target();
    const std::string id(query(target, "id"));
    crosstown::defer_options options;
    if (!query(target, "always").empty()) options.always = true;
    if (!query(target, "require_delivery").empty()) options.require_delivery = true;
    if (const auto spec = query(target, "nogo"); !spec.empty()) {
      options.no_go = crosstown::status_set::parse(spec);
    }
    c.scope.defer(recorder(id, c.written), std::move(options));
    if (!query(target, "headers_phase").empty()) {
      c.scope.defer(recorder(id + "-headers", c.written),
                    {.phase = crosstown::task_phase::headers_sent});
    }
    const auto status = static_cast<unsigned>(query_size(target, "status", 200));
    demo::response_type res{static_cast<http::status>(status), c.request.version()};
    res.body().assign(query_size(target, "size", 0), 'x');
    if (!query(target, "chunked").empty()) res.chunked(true);
    log_.handled(id);
    return res;
  }

 private:
  crosstown::task recorder(std::string id, std::shared_ptr<const demo::write_record> w) const {
    // Captures the log and the sequence, not `this`: they outlive the runtime, the app not.
    return [&log = log_, &sequence = sequence_, id = std::move(id), w = std::move(w)] {
      task_record r;
      r.id = id;
      r.start_sequence = sequence.fetch_add(1) + 1;
      r.write_sequence = w->last_write_sequence.load();
      r.bytes_at_start = w->bytes.load();
      r.gap_ns = demo::now_ns() - w->last_write_ns.load();
      log.started(std::move(r));
    };
  }

  test_log& log_;
  std::atomic<std::uint64_t>& sequence_;
};

// A blocking client on one keep-alive connection.
class test_client {
 public:
  struct reply {
    demo::response_type response;
    std::size_t bytes = 0;  // the whole response, as read off the wire
  };

  explicit test_client(unsigned short port, int receive_buffer = 0) : socket_(ioc_) {
    socket_.open(tcp::v4());
    if (receive_buffer > 0)
      socket_.set_option(net::socket_base::receive_buffer_size(receive_buffer));
    socket_.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  }

  static std::string request_text(std::string_view target) {
    return "GET " + std::string(target) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  }

  void send(std::string_view target) { send_raw(request_text(target)); }
  void send_raw(std::string_view bytes) {
    net::write(socket_, net::buffer(bytes.data(), bytes.size()));
  }

  reply read() {
    reply r;
    r.bytes = http::read(socket_, buffer_, r.response);
    return r;
  }

  reply get(std::string_view target) {
    send(target);
    return read();
  }

  // Reads the header only, then resets the connection (RST, not FIN).
  void read_header_then_reset() {
    http::response_parser<http::string_body> parser;
    parser.body_limit(boost::none);
    http::read_header(socket_, buffer_, parser);
    socket_.set_option(net::socket_base::linger(true, 0));
    socket_.close();
  }

  void close() {
    beast::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }

 private:
  net::io_context ioc_;
  tcp::socket socket_;
  beast::flat_buffer buffer_;
};

class BeastServerTest : public ::testing::TestWithParam<demo::session_style> {
 protected:
  void start(crosstown::runtime_options runtime = {.threads = 2}, int send_buffer = 0,
             demo::handler app = {}) {
    rt_ = std::make_unique<crosstown::runtime>(std::move(runtime));
    if (!app) app = test_app(log_, sequence_);
    server_ = std::make_unique<demo::server>(
        ioc_, *rt_, std::move(app),
        demo::server_options{
            .style = GetParam(), .sequence = &sequence_, .send_buffer_size = send_buffer});
    server_->start();
    io_ = std::thread([this] { ioc_.run(); });
  }

  // Graceful stop; once it returns, every scope has ended and every task was handed over.
  void stop_server() {
    if (!io_.joinable()) return;
    server_->stop();
    io_.join();
  }

  void drain() {
    const crosstown::drain_report report = rt_->drain_for(deadline_after);
    ASSERT_TRUE(report.complete) << report;
    const crosstown::metrics_snapshot m = rt_->metrics();
    EXPECT_EQ(m.unfinished(), 0u) << m;
  }

  void TearDown() override { stop_server(); }

  unsigned short port() const { return server_->port(); }

  // Declared first: outlive the runtime, whose tasks use them.
  test_log log_;
  std::atomic<std::uint64_t> sequence_{0};
  std::unique_ptr<crosstown::runtime> rt_;
  net::io_context ioc_;  // after rt_: its sessions hold scopes of rt_
  std::unique_ptr<demo::server> server_;
  std::thread io_;
};

std::string style_name(const ::testing::TestParamInfo<demo::session_style>& info) {
  return info.param == demo::session_style::callback ? "Callback" : "Coroutine";
}

INSTANTIATE_TEST_SUITE_P(Sessions, BeastServerTest,
                         ::testing::Values(demo::session_style::callback,
                                           demo::session_style::coroutine),
                         style_name);

// Checks that task `r` started after the whole response of `bytes` bytes was written.
void expect_after_last_byte(const task_record& r, std::size_t bytes) {
  EXPECT_NE(r.write_sequence, 0u) << r.id << ": no write completed before the task started";
  EXPECT_LT(r.write_sequence, r.start_sequence) << r.id << ": task started before the write";
  EXPECT_EQ(r.bytes_at_start, bytes) << r.id << ": task started before the last byte";
}

TEST_P(BeastServerTest, TasksStartOnlyAfterTheClientCouldReadTheWholeResponse) {
  start();
  constexpr int connections = 16;
  constexpr int requests = 1000;
  struct seen {
    std::size_t bytes = 0;
    std::uint64_t read_sequence = 0;
  };
  std::vector<std::map<std::string, seen>> per_connection(connections);
  std::vector<std::thread> clients;
  for (int c = 0; c < connections; ++c) {
    clients.emplace_back([&, c] {
      test_client client(port());
      for (int i = c; i < requests; i += connections) {
        const std::string id = "r" + std::to_string(i);
        const auto reply = client.get("/r?id=" + id + "&size=" + std::to_string((i * 37) % 9000));
        per_connection[c][id] = {reply.bytes, sequence_.fetch_add(1) + 1};
        EXPECT_EQ(reply.response.result_int(), 200);
      }
      client.close();
    });
  }
  for (std::thread& t : clients) t.join();
  stop_server();
  drain();

  const auto records = log_.records();
  ASSERT_EQ(records.size(), static_cast<std::size_t>(requests));
  std::vector<std::int64_t> gaps;
  int before_client_read = 0;
  for (const auto& connection : per_connection) {
    for (const auto& [id, s] : connection) {
      const task_record& r = records.at(id);
      expect_after_last_byte(r, s.bytes);
      if (r.start_sequence < s.read_sequence) ++before_client_read;
      gaps.push_back(r.gap_ns);
    }
  }
  std::sort(gaps.begin(), gaps.end());
  const auto at = [&](double p) {
    return static_cast<double>(gaps[static_cast<std::size_t>(p * (gaps.size() - 1))]) / 1e3;
  };
  std::printf(
      "[ gap      ] last byte written -> task started over %d requests on %d "
      "connections: median %.1f us, p99 %.1f us, max %.1f us; %d tasks started before "
      "the client had finished reading (allowed: the bytes were already sent)\n",
      requests, connections, at(0.5), at(0.99), at(1.0), before_client_read);
  const crosstown::metrics_snapshot m = rt_->metrics();
  EXPECT_EQ(m.registered, static_cast<std::uint64_t>(requests));
  EXPECT_EQ(m.count(crosstown::task_state::ran), static_cast<std::uint64_t>(requests));
}

TEST_P(BeastServerTest, StatusRulesHoldEndToEnd) {
  start();
  {
    test_client client(port());
    EXPECT_EQ(client.get("/r?id=ok").response.result_int(), 200);
    EXPECT_EQ(client.get("/r?id=missing&status=404").response.result_int(), 404);
    EXPECT_EQ(client.get("/r?id=broken&status=500").response.result_int(), 500);
    EXPECT_EQ(client.get("/r?id=audit&status=500&always").response.result_int(), 500);
    EXPECT_EQ(client.get("/r?id=custom302&status=302&nogo=5xx,400-405,302").response.result_int(),
              302);
    EXPECT_EQ(client.get("/r?id=default302&status=302").response.result_int(), 302);
    EXPECT_EQ(client.get("/r?id=custom404&status=404&nogo=5xx").response.result_int(), 404);
    client.close();
  }
  stop_server();
  drain();

  std::set<std::string> ran;
  for (const auto& [id, r] : log_.records()) ran.insert(id);
  EXPECT_EQ(ran, (std::set<std::string>{"ok", "audit", "default302", "custom404"}));
  const crosstown::metrics_snapshot m = rt_->metrics();
  EXPECT_EQ(m.registered, 7u);
  EXPECT_EQ(m.count(crosstown::task_state::ran), 4u);
  EXPECT_EQ(m.count(crosstown::task_state::skipped_by_status), 3u);
}

TEST_P(BeastServerTest, ClientResetMidBodyAppliesTheDeliveryRuleBothWays) {
  start({.threads = 2}, /*send_buffer=*/4096);
  {
    test_client client(port(), /*receive_buffer=*/4096);
    // Two tasks on one 4 MiB response: "runs" keeps the default (run even if not delivered),
    // "needs-delivery" is skipped when the response did not get through.
    client.send("/r?id=runs&size=4194304&headers_phase");
    ASSERT_TRUE(log_.wait_handled("runs"));
    client.read_header_then_reset();
  }
  stop_server();
  drain();

  const auto records = log_.records();
  EXPECT_EQ(records.count("runs"), 1u) << "the default rule runs the task after a failure";
  EXPECT_EQ(records.count("runs-headers"), 1u) << "the header did go out";
  if (records.count("runs") != 0) {
    EXPECT_LT(records.at("runs").bytes_at_start, 4194304u);
  }
  const crosstown::metrics_snapshot m = rt_->metrics();
  EXPECT_EQ(m.registered, 2u);
  EXPECT_EQ(m.count(crosstown::task_state::ran), 2u);
  EXPECT_EQ(server_->stats().delivery_failures, 1u);
}

TEST_P(BeastServerTest, RequireDeliveryTasksAreSkippedWhenTheClientResets) {
  start({.threads = 2}, /*send_buffer=*/4096);
  {
    test_client client(port(), /*receive_buffer=*/4096);
    client.send("/r?id=needs-delivery&size=4194304&require_delivery");
    ASSERT_TRUE(log_.wait_handled("needs-delivery"));
    client.read_header_then_reset();
  }
  stop_server();
  drain();

  EXPECT_TRUE(log_.records().empty());
  const crosstown::metrics_snapshot m = rt_->metrics();
  EXPECT_EQ(m.registered, 1u);
  EXPECT_EQ(m.count(crosstown::task_state::skipped_by_delivery), 1u);
  EXPECT_EQ(m.terminal(), m.registered);
}

TEST_P(BeastServerTest, StalledClientDoesNotHoldUpOtherConnections) {
  start({.threads = 2}, /*send_buffer=*/4096);
  test_client stalled(port(), /*receive_buffer=*/4096);
  stalled.send("/r?id=stalled&size=4194304");
  ASSERT_TRUE(log_.wait_handled("stalled"));

  constexpr int others = 4;
  constexpr int each = 25;
  std::vector<std::thread> clients;
  for (int c = 0; c < others; ++c) {
    clients.emplace_back([&, c] {
      test_client client(port());
      for (int i = 0; i < each; ++i) {
        const auto reply = client.get("/r?id=o" + std::to_string(c) + "-" + std::to_string(i));
        EXPECT_EQ(reply.response.result_int(), 200);
      }
      client.close();
    });
  }
  for (std::thread& t : clients) t.join();
  // Every other connection's tasks run while the 4 MiB response is still stuck.
  ASSERT_TRUE(log_.wait_started(static_cast<std::size_t>(others * each)));
  EXPECT_EQ(log_.records().count("stalled"), 0u) << "the stalled response's task ran early";

  const auto reply = stalled.read();  // the client reads again: the response completes
  EXPECT_EQ(reply.response.body().size(), 4194304u);
  ASSERT_TRUE(log_.wait_started("stalled"));
  expect_after_last_byte(log_.records().at("stalled"), reply.bytes);
  stalled.close();
  stop_server();
  drain();
}

TEST_P(BeastServerTest, PipelinedRequestsReleaseOnlyTheirOwnTasks) {
  start();
  {
    test_client client(port());
    client.send_raw(test_client::request_text("/r?id=p1&size=200000") +
                    test_client::request_text("/r?id=p2&status=404&size=10") +
                    test_client::request_text("/r?id=p3&size=3000"));
    const auto r1 = client.read();
    const auto r2 = client.read();
    const auto r3 = client.read();
    EXPECT_EQ(r1.response.result_int(), 200);
    EXPECT_EQ(r2.response.result_int(), 404);
    EXPECT_EQ(r3.response.result_int(), 200);
    ASSERT_TRUE(log_.wait_started("p1"));
    ASSERT_TRUE(log_.wait_started("p3"));
    const auto records = log_.records();
    // Each task saw its own response - and all of it - written.
    expect_after_last_byte(records.at("p1"), r1.bytes);
    expect_after_last_byte(records.at("p3"), r3.bytes);
    client.close();
  }
  stop_server();
  drain();
  EXPECT_EQ(log_.records().count("p2"), 0u);
  EXPECT_EQ(server_->stats().connections, 1u);
  const crosstown::metrics_snapshot m = rt_->metrics();
  EXPECT_EQ(m.count(crosstown::task_state::ran), 2u);
  EXPECT_EQ(m.count(crosstown::task_state::skipped_by_status), 1u);
}

TEST_P(BeastServerTest, StreamedResponseReleasesHeaderTasksThenTheRestAfterTheLastChunk) {
  start();
  {
    test_client client(port());
    const auto reply = client.get("/r?id=s&size=300000&chunked&headers_phase");
    EXPECT_EQ(reply.response.result_int(), 200);
    EXPECT_TRUE(reply.response.chunked());
    EXPECT_EQ(reply.response.body().size(), 300000u);
    ASSERT_TRUE(log_.wait_started("s"));
    ASSERT_TRUE(log_.wait_started("s-headers"));
    const auto records = log_.records();
    expect_after_last_byte(records.at("s"), reply.bytes);
    EXPECT_NE(records.at("s-headers").write_sequence, 0u);
    EXPECT_LT(records.at("s-headers").write_sequence, records.at("s-headers").start_sequence);
    client.close();
  }
  stop_server();
  drain();
}

TEST_P(BeastServerTest, MalformedRequestsGet400AndReleaseNoDeferredWork) {
  start();
  for (const std::string_view garbage :
       {std::string_view("GARBAGE\r\n\r\n"), std::string_view("GET / HTTP/1.1\r\nHost x\r\n\r\n"),
        std::string_view("GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n")}) {
    test_client client(port());
    client.send_raw(garbage);
    const auto reply = client.read();
    EXPECT_EQ(reply.response.result_int(), 400) << garbage;
    client.close();
  }
  stop_server();
  drain();
  EXPECT_EQ(log_.handled_count(), 0u);
  EXPECT_EQ(server_->stats().bad_requests, 3u);
  EXPECT_EQ(rt_->metrics().registered, 0u);
}

TEST_P(BeastServerTest, ShutdownWithQueuedDeferredWorkAccountsForEveryTask) {
  constexpr int tasks = 50;
  std::mutex gate_mutex;
  std::condition_variable gate_cv;
  bool gate_open = false;
  bool gate_entered = false;
  std::atomic<int> ran{0};
  std::atomic<int> lost{0};
  const auto open_gate = [&] {
    std::lock_guard lock(gate_mutex);
    gate_open = true;
    gate_cv.notify_all();
  };
  // One worker, held by the first task until shutdown has dropped what is queued.
  start({.threads = 1,
         .on_lost =
             [&](const crosstown::task_info&, crosstown::task_state) {
               lost.fetch_add(1);
               open_gate();
             }},
        0, [&](demo::request_context& c) {
          c.scope.defer([&] {
            std::unique_lock lock(gate_mutex);
            gate_entered = true;
            gate_cv.notify_all();
            gate_cv.wait_for(lock, deadline_after, [&] { return gate_open; });
            ran.fetch_add(1);
          });
          for (int i = 1; i < tasks; ++i) c.scope.defer([&] { ran.fetch_add(1); });
          return demo::response_type{http::status::accepted, c.request.version()};
        });
  {
    test_client client(port());
    EXPECT_EQ(client.get("/calls").response.result_int(), 202);
    client.close();
  }
  {
    std::unique_lock lock(gate_mutex);
    ASSERT_TRUE(gate_cv.wait_for(lock, deadline_after, [&] { return gate_entered; }));
  }
  stop_server();
  const crosstown::drain_report report = rt_->shutdown(crosstown::runtime::clock::now());
  open_gate();  // in case nothing was dropped

  EXPECT_FALSE(report.complete);
  const crosstown::metrics_snapshot m = rt_->metrics();
  EXPECT_EQ(m.registered, static_cast<std::uint64_t>(tasks));
  EXPECT_EQ(m.unfinished(), 0u) << m;
  EXPECT_EQ(m.count(crosstown::task_state::ran), static_cast<std::uint64_t>(ran.load()));
  EXPECT_EQ(m.count(crosstown::task_state::dropped_at_shutdown),
            static_cast<std::uint64_t>(lost.load()));
  EXPECT_GE(lost.load(), 1);
  EXPECT_EQ(ran.load() + lost.load(), tasks);
}

}  // namespace
