// crosstown-demo: the phone-calls server on Boost.Beast, and a client that shows its timeline.
//
//   crosstown-demo [client] [--coroutine] [--requests N]
//       starts the server on 127.0.0.1 (any free port), sends the demo's requests with a Beast
//       client and prints a timeline: when each response's last byte was written, when its
//       first deferred task started, which tasks were skipped; then measures the gap between
//       "last byte written" and "first task started" over N requests (default 1000) on 16
//       keep-alive connections, shuts down gracefully (SIGTERM to itself) and prints the
//       final counters. Exit status 0 iff every rule held and every task is accounted for.
//   crosstown-demo serve [--port N] [--coroutine]
//       runs the server alone until SIGINT/SIGTERM, e.g. for
//       curl -X POST 'http://127.0.0.1:8080/calls?n=100'; curl http://127.0.0.1:8080/metrics
//
// Shutdown (both modes): stop accepting, let responses in progress finish, drain deferred
// tasks with a deadline, report what did not finish, then print the counters.
#include "demo_server.hpp"
#include "phone_calls_app.hpp"

#include <crosstown/crosstown.hpp>

#include <boost/asio/signal_set.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

namespace demo = crosstown_demo;
namespace net = demo::net;
namespace beast = demo::beast;
namespace http = demo::http;
using demo::clock_type;

constexpr auto drain_deadline = std::chrono::seconds(10);
const std::int64_t program_start_ns = demo::now_ns();

double ms_at(std::int64_t ns) { return static_cast<double>(ns - program_start_ns) / 1e6; }

struct options {
  bool serve = false;
  bool coroutine = false;
  unsigned short port = 0;
  int requests = 1000;
};

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: crosstown-demo [client] [--coroutine] [--requests N]\n"
               "       crosstown-demo serve [--port N] [--coroutine]\n");
  std::exit(2);
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "client" && i == 1) {
      o.serve = false;
    } else if (arg == "serve" && i == 1) {
      o.serve = true;
    } else if (arg == "--coroutine") {
      o.coroutine = true;
    } else if (arg == "--port" && i + 1 < argc) {
      o.port = static_cast<unsigned short>(std::atoi(argv[++i]));
    } else if (arg == "--requests" && i + 1 < argc) {
      o.requests = std::max(1, std::atoi(argv[++i]));
    } else {
      usage();
    }
  }
  return o;
}

// A blocking Beast client on one keep-alive connection.
class client {
 public:
  explicit client(unsigned short port) : stream_(ioc_) {
    stream_.connect(demo::tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  }

  demo::response_type send(http::verb method, std::string_view target, std::string_view id) {
    demo::request_type req{method, target, 11};
    req.set(http::field::host, "127.0.0.1");
    req.set("X-Request-Id", id);
    req.prepare_payload();
    http::write(stream_, req);
    demo::response_type res;
    http::read(stream_, buffer_, res);
    return res;
  }

  // Sends raw bytes and reads one response.
  demo::response_type send_raw(std::string_view bytes) {
    net::write(stream_, net::buffer(bytes.data(), bytes.size()));
    demo::response_type res;
    http::read(stream_, buffer_, res);
    return res;
  }

 private:
  net::io_context ioc_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
};

// Waits (demo only: polling is fine here) until `done` or the deadline.
template <class Predicate>
bool wait_for(Predicate done, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto deadline = clock_type::now() + timeout;
  while (!done()) {
    if (clock_type::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

bool settled(crosstown::runtime& rt) {
  const crosstown::metrics_snapshot m = rt.metrics();
  return m.unfinished() == 0;
}

void print_counters(const crosstown::metrics_snapshot& m) {
  std::cout << "counters: " << m << "\n";
  std::printf("every task accounted for: %s\n", m.unfinished() == 0 ? "yes" : "NO");
}

// Drains deferred work with a deadline and reports; true if everything finished.
bool drain_and_report(crosstown::runtime& rt) {
  std::printf("draining deferred tasks (deadline %llds)...\n",
              static_cast<long long>(drain_deadline.count()));
  const crosstown::drain_report report = rt.drain_for(drain_deadline);
  if (report.complete) {
    std::printf("drain: complete\n");
  } else {
    std::printf("drain: INCOMPLETE - %llu queued, %llu running\n",
                static_cast<unsigned long long>(report.queued),
                static_cast<unsigned long long>(report.running));
    for (const std::string& name : report.unfinished)
      std::printf("  unfinished: %s\n", name.c_str());
  }
  print_counters(rt.metrics());
  return report.complete && rt.metrics().unfinished() == 0;
}

// Stops the server on SIGINT/SIGTERM.
void stop_on_signal(net::signal_set& signals, demo::server& server) {
  signals.async_wait([&server](const demo::error_code& ec, int signal) {
    if (ec) return;
    std::printf("\nsignal %d: stop accepting, finish responses in flight\n", signal);
    std::fflush(stdout);
    server.stop();
  });
}

int serve(const options& o) {
  crosstown::runtime rt({.threads = 4, .shutdown_timeout = std::chrono::seconds(1)});
  demo::phone_calls_app app(rt);
  net::io_context ioc;
  demo::server server(
      ioc, rt, std::ref(app),
      {.port = o.port,
       .style = o.coroutine ? demo::session_style::coroutine : demo::session_style::callback});
  app.observe(&server);
  net::signal_set signals(ioc, SIGINT, SIGTERM);
  stop_on_signal(signals, server);
  server.start();
  std::printf(
      "crosstown-demo serving on http://127.0.0.1:%u (%s sessions); Ctrl-C to stop\n"
      "  curl -X POST 'http://127.0.0.1:%u/calls?n=100'\n"
      "  curl http://127.0.0.1:%u/missing\n"
      "  curl http://127.0.0.1:%u/metrics\n",
      server.port(), o.coroutine ? "coroutine" : "callback", server.port(), server.port(),
      server.port());
  std::fflush(stdout);
  ioc.run();
  return drain_and_report(rt) ? 0 : 1;
}

struct check {
  bool ok = true;
  void require(bool condition, const char* what) {
    if (!condition) {
      std::printf("  FAILED: %s\n", what);
      ok = false;
    }
  }
};

double percentile(std::vector<double>& sorted, double p) {
  const auto at = static_cast<std::size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(at, sorted.size() - 1)];
}

// Measures "first task started" minus "last byte written" over n requests.
void measure_gap(unsigned short port, demo::phone_calls_app& app, crosstown::runtime& rt, int n,
                 check& c) {
  constexpr int connections = 16;
  std::vector<std::thread> threads;
  for (int t = 0; t < connections; ++t) {
    threads.emplace_back([&, t] {
      client cl(port);
      for (int i = t; i < n; i += connections) {
        cl.send(http::verb::post, "/calls?n=1&us=0", "gap-" + std::to_string(i));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  c.require(wait_for([&] { return settled(rt); }), "gap-run tasks finished");

  std::vector<double> gaps_us;
  int early = 0;
  for (int i = 0; i < n; ++i) {
    auto x = app.find("gap-" + std::to_string(i));
    if (!x || x->started.load() != 1) continue;
    const std::int64_t gap = x->first_task_ns.load() - x->written->last_write_ns.load();
    if (gap < 0) ++early;
    gaps_us.push_back(static_cast<double>(gap) / 1e3);
  }
  c.require(gaps_us.size() == static_cast<std::size_t>(n), "every gap-run task ran");
  c.require(early == 0, "no task started before its response's last byte was written");
  if (gaps_us.empty()) return;
  std::sort(gaps_us.begin(), gaps_us.end());
  std::printf(
      "\nlast byte written -> first task started, %d requests on %d keep-alive connections:\n"
      "  median %.1f us   p99 %.1f us   max %.1f us   (started early: %d)\n",
      n, connections, percentile(gaps_us, 0.5), percentile(gaps_us, 0.99), gaps_us.back(), early);
}

int run_client(const options& o) {
  crosstown::runtime rt({.threads = 4, .shutdown_timeout = std::chrono::seconds(1)});
  demo::phone_calls_app app(rt);
  net::io_context ioc;
  demo::server server(
      ioc, rt, std::ref(app),
      {.style = o.coroutine ? demo::session_style::coroutine : demo::session_style::callback});
  app.observe(&server);
  net::signal_set signals(ioc, SIGINT, SIGTERM);
  stop_on_signal(signals, server);
  server.start();
  std::thread io([&ioc] { ioc.run(); });
  const unsigned short port = server.port();

  std::printf(
      "crosstown-demo: server on 127.0.0.1:%u (%s sessions), client in the same "
      "process\n\n",
      port, o.coroutine ? "coroutine" : "callback");
  check c;
  {
    client cl(port);

    // 1. POST /calls?n=100: 202 at once, 100 calls after the last byte.
    const auto res = cl.send(http::verb::post, "/calls?n=100", "calls");
    const auto received_ns = demo::now_ns();
    auto x = app.find("calls");
    c.require(res.result_int() == 202 && x != nullptr, "POST /calls answered 202");
    if (x) {
      c.require(wait_for([&] { return x->started.load() == 100; }), "100 calls started");
      const std::int64_t written = x->written->last_write_ns.load();
      std::printf("POST /calls?n=100  -> %d\n", res.result_int());
      std::printf(
          "  t=%9.3f ms  server: write of the response's last byte completed (%llu "
          "bytes)\n",
          ms_at(written), static_cast<unsigned long long>(x->written->bytes.load()));
      std::printf(
          "  t=%9.3f ms  client: has read the whole response (may precede the line "
          "above: the kernel hands the bytes over before the server's completion runs)\n",
          ms_at(received_ns));
      std::printf("  t=%9.3f ms  first deferred call started (t+%.3f ms after the last byte)\n",
                  ms_at(x->first_task_ns.load()),
                  static_cast<double>(x->first_task_ns.load() - written) / 1e6);
      std::printf("               %d of 100 calls ran, none before the last byte\n\n",
                  x->started.load());
      c.require(x->first_task_ns.load() >= written, "calls started after the last byte");
    }
    c.require(wait_for([&] { return settled(rt); }), "calls settled");

    // 2. GET /missing: 404, deferred work skipped.
    const auto before = rt.metrics();
    const auto missing = cl.send(http::verb::get, "/missing", "missing");
    c.require(wait_for([&] { return settled(rt) && rt.metrics().registered > before.registered; }),
              "404 settled");
    const auto after = rt.metrics();
    std::printf(
        "GET /missing       -> %d   %llu deferred task skipped by status, %llu ran\n",
        missing.result_int(),
        static_cast<unsigned long long>(after.count(crosstown::task_state::skipped_by_status) -
                                        before.count(crosstown::task_state::skipped_by_status)),
        static_cast<unsigned long long>(after.count(crosstown::task_state::ran) -
                                        before.count(crosstown::task_state::ran)));
    c.require(
        missing.result_int() == 404 &&
            after.count(crosstown::task_state::ran) == before.count(crosstown::task_state::ran) &&
            after.count(crosstown::task_state::skipped_by_status) ==
                before.count(crosstown::task_state::skipped_by_status) + 1,
        "404 skipped its task");

    // 3. POST /audit: 500, the `always` task runs, the default one is skipped.
    const auto audit = cl.send(http::verb::post, "/audit", "audit");
    auto ax = app.find("audit");
    c.require(ax && wait_for([&] { return ax->started.load() == 1 && settled(rt); }),
              "audit task ran");
    std::printf("POST /audit        -> %d   `always` audit task ran; default task skipped\n",
                audit.result_int());

    // 4. GET /moved: 302 with a custom no-go spec.
    const auto before_moved = rt.metrics();
    const auto moved = cl.send(http::verb::get, "/moved", "moved");
    auto mx = app.find("moved");
    c.require(mx && wait_for([&] {
                return mx->started.load() == 1 && settled(rt) &&
                       rt.metrics().registered == before_moved.registered + 2;
              }),
              "302: default task ran");
    c.require(rt.metrics().count(crosstown::task_state::skipped_by_status) ==
                  before_moved.count(crosstown::task_state::skipped_by_status) + 1,
              "302: custom no-go task skipped");
    std::printf(
        "GET /moved         -> %d   task with no-go \"5xx,400-405,302\" skipped; "
        "default task ran\n",
        moved.result_int());

    // 5. GET /stream: chunked, written with a serializer.
    const auto stream = cl.send(http::verb::get, "/stream", "stream");
    auto sx = app.find("stream");
    c.require(sx && wait_for([&] { return sx->started.load() == 2; }), "stream tasks ran");
    std::printf(
        "GET /stream        -> %d   chunked %zu bytes; headers-phase and "
        "response-phase tasks ran\n",
        stream.result_int(), stream.body().size());

    // 6. A malformed request: 400, no deferred work.
    const auto before_bad = rt.metrics();
    client raw(port);
    const auto bad = raw.send_raw("GARBAGE / HTTP/1.1\r\nHost x\r\n\r\n");
    std::printf("malformed request  -> %d   tasks registered for it: %llu\n", bad.result_int(),
                static_cast<unsigned long long>(rt.metrics().registered - before_bad.registered));
    c.require(bad.result_int() == 400 && rt.metrics().registered == before_bad.registered,
              "malformed request: 400, nothing deferred");

    // 7. GET /metrics.
    const auto metrics = cl.send(http::verb::get, "/metrics", "metrics");
    std::printf("GET /metrics       -> %d   (Prometheus text; first lines:)\n",
                metrics.result_int());
    const std::string& body = metrics.body();
    std::size_t shown = 0;
    for (std::size_t at = 0; at < body.size() && shown < 6;) {
      const std::size_t end = body.find('\n', at);
      const std::string line = body.substr(at, end - at);
      if (line.rfind('#', 0) != 0) {
        std::printf("    %s\n", line.c_str());
        ++shown;
      }
      at = end == std::string::npos ? body.size() : end + 1;
    }
  }

  measure_gap(port, app, rt, o.requests, c);

  std::printf("\nshutting down gracefully (SIGTERM)\n");
  std::fflush(stdout);
  std::raise(SIGTERM);
  io.join();
  const demo::server_stats s = server.stats();
  std::printf("server: %llu connections, %llu requests, %llu bad requests\n",
              static_cast<unsigned long long>(s.connections),
              static_cast<unsigned long long>(s.requests),
              static_cast<unsigned long long>(s.bad_requests));
  const bool drained = drain_and_report(rt);
  std::printf("%s\n", c.ok && drained ? "demo: OK" : "demo: FAILED");
  return c.ok && drained ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const options o = parse(argc, argv);
    return o.serve ? serve(o) : run_client(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "crosstown-demo: %s\n", e.what());
    return 1;
  }
}
