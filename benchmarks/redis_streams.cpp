// Suite 7 - Redis Streams: durable tasks handed to Redis, and workers running them (issue 15).
// Each benchmark starts its own redis-server (no persistence) on a Unix socket in a fresh
// temporary directory and stops it at the end.
//
//   redis_benchmark_xadd   the baseline: `redis-benchmark -c 1 -P 256 XADD ...` run as a child
//                          on the same socket, the same field sizes as a durable task's entry;
//                          its own reported rate. One client pipelining 256 deep is the
//                          publisher's shape: one connection, pipelined appends.
//   hiredis_pipelined_xadd the floor in this process: a blocking hiredis connection appending
//                          in pipelined batches of 256, no crosstown at all.
//   publisher_xadd/<n>     crosstown: requests of n durable tasks each (`defer_durable`, status
//                          202, response_sent) on a runtime; the publisher appends them on an
//                          io_context thread; an iteration ends when the runtime drained, i.e.
//                          Redis acknowledged every append.
//   end_to_end/2_workers   the publisher as above plus two `crosstown::redis::worker`s (one
//                          runner each, de-duplication on, as by default) in this process;
//                          an iteration ends when every task's handler ran. `pace_us:0`: 4,000
//                          tasks at once (throughput; latency is then mostly queueing);
//                          `pace_us:10000`: a request of 10 tasks every 10 ms (latency of
//                          the path below saturation).
//
// Counters: `tasks_per_second` everywhere; `ratio_to_redis_benchmark` on the publisher (its
// rate over the baseline's, measured once per process); on end_to_end `last_byte_to_start_p50_us`
// and `_p99_us`: from the moment before `response_sent()` to the worker's handler starting.
// Target of the issue: publisher >= 0.5 of redis-benchmark's XADD rate. Run with
// --benchmark_repetitions=5 --benchmark_report_aggregates_only=true for medians.
#include "support/summary.hpp"

#include <crosstown/redis/connection.hpp>
#include <crosstown/redis/publisher.hpp>
#include <crosstown/redis/worker.hpp>
#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>

#include <benchmark/benchmark.h>
#include <hiredis/hiredis.h>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace {

namespace redis = crosstown::redis;
using namespace std::chrono_literals;
using bench_clock = std::chrono::steady_clock;

// The fields of a typical durable entry (the demo's phone call).
constexpr std::string_view task_name = "phone-call";
constexpr std::string_view task_payload = R"({"to":"+15550100","call":1})";
constexpr std::string_view sample_key = "0123456789abcdef0123456789abcdef";

// A child process; stdout readable through a pipe until `close_output`.
class child {
 public:
  explicit child(const std::vector<std::string>& argv) {
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    posix_spawn_file_actions_addclose(&actions, fds[1]);
    const int rc = posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    out_ = fds[0];
    if (rc != 0) {
      ::close(out_);
      throw std::runtime_error("cannot start " + argv[0]);
    }
  }
  child(const child&) = delete;
  child& operator=(const child&) = delete;
  ~child() {
    if (out_ >= 0) ::close(out_);
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      wait();
    }
  }

  // Reads stdout until `text` appears (true) or end of file / the deadline (false).
  bool read_until(std::string_view text, std::string* all = nullptr,
                  bench_clock::duration timeout = 60s) {
    const auto end = bench_clock::now() + timeout;
    std::string seen;
    for (;;) {
      if (!text.empty() && seen.find(text) != std::string::npos) break;
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(end - bench_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char chunk[4096];
      const ssize_t n = ::read(out_, chunk, sizeof chunk);
      if (n <= 0) break;
      seen.append(chunk, static_cast<std::size_t>(n));
    }
    if (all != nullptr) *all = seen;
    return text.empty() || seen.find(text) != std::string::npos;
  }
  void close_output() {
    if (out_ >= 0) ::close(out_);
    out_ = -1;
  }
  int wait() {
    int status = -1;
    while (pid_ > 0 && ::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    return status;
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
};

// A private redis-server on a Unix socket in a temporary directory, no persistence.
class redis_server {
 public:
  redis_server() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "crosstown-bench-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    process_.emplace(std::vector<std::string>{CROSSTOWN_REDIS_SERVER, "--port", "0", "--unixsocket",
                                              socket(), "--unixsocketperm", "700", "--dir", dir_,
                                              "--save", "", "--appendonly", "no", "--daemonize",
                                              "no", "--logfile", "", "--loglevel", "notice"});
    if (!process_->read_until("ready to accept connections")) {
      throw std::runtime_error("redis-server did not become ready in " + dir_);
    }
    // Nobody reads its stdout from now on; a full pipe would stall it.
    connect().command({"CONFIG", "SET", "loglevel", "warning"});
    process_->close_output();
  }
  redis_server(const redis_server&) = delete;
  redis_server& operator=(const redis_server&) = delete;
  ~redis_server() {
    process_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  std::string socket() const { return dir_ + "/redis.sock"; }
  redis::endpoint where() const { return redis::endpoint::parse("unix:" + socket()); }
  redis::connection connect() const { return redis::connection(where(), 2s, 10s); }

 private:
  std::string dir_;
  std::optional<child> process_;
};

// redis-benchmark's XADD rate (requests/s) against `server`, or 0 if it could not run.
double redis_benchmark_rate(const redis_server& server, int requests) {
  child bench({CROSSTOWN_REDIS_BENCHMARK,
               "-s",
               server.socket(),
               "-c",
               "1",
               "-P",
               "256",
               "-n",
               std::to_string(requests),
               "-q",
               "--csv",
               "XADD",
               "bench:baseline",
               "*",
               "name",
               std::string(task_name),
               "payload",
               std::string(task_payload),
               "key",
               std::string(sample_key),
               "attempt",
               "1",
               "request",
               "1",
               "released",
               "1700000000000"});
  std::string out;
  bench.read_until({}, &out);
  if (bench.wait() != 0) return 0;
  // "test","rps",...\n"XADD ...","126342.39", then six more fields. The test name quotes
  // the payload's own quotes, so the rate is found counting fields from the end of the line.
  const auto line = out.find("\n\"XADD");
  if (line == std::string::npos) return 0;
  std::string_view row(out.c_str() + line + 1);
  while (!row.empty() && (row.back() == '\n' || row.back() == '\r')) row.remove_suffix(1);
  std::size_t end = row.size();
  for (int field = 0; field < 7; ++field) {
    const auto sep = row.rfind("\",\"", end - 1);
    if (sep == std::string_view::npos || sep == 0) return 0;
    end = sep;
  }
  // `end` is at the separator before the seventh field from the end: the rate.
  return std::strtod(row.data() + end + 3, nullptr);
}

// The baseline once per process, for the ratio counters.
double baseline_rate() {
  static const double rate = [] {
    redis_server server;
    return redis_benchmark_rate(server, 200'000);
  }();
  return rate;
}

void redis_benchmark_xadd(benchmark::State& state) {
  redis_server server;
  const int requests = 200'000;
  double rate = 0;
  for (auto _ : state) {
    rate = redis_benchmark_rate(server, requests);
    if (rate <= 0) {
      state.SkipWithError("redis-benchmark did not run or printed no XADD rate");
      return;
    }
    state.SetIterationTime(requests / rate);
  }
  state.counters["tasks_per_second"] = rate;
}

void hiredis_pipelined_xadd(benchmark::State& state) {
  redis_server server;
  redisContext* c = redisConnectUnix(server.socket().c_str());
  if (c == nullptr || c->err != 0) {
    state.SkipWithError("cannot connect");
    if (c != nullptr) redisFree(c);
    return;
  }
  const int tasks = 100'000;
  const int depth = 256;
  const std::vector<std::string_view> args{
      "XADD",     "bench:floor", "*", "name",    task_name, "payload",  task_payload,   "key",
      sample_key, "attempt",     "1", "request", "1",       "released", "1700000000000"};
  std::vector<const char*> argv;
  std::vector<std::size_t> lens;
  for (auto a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  std::int64_t done = 0;
  for (auto _ : state) {
    for (int sent = 0; sent < tasks; sent += depth) {
      const int n = std::min(depth, tasks - sent);
      for (int i = 0; i < n; ++i) {
        redisAppendCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data());
      }
      for (int i = 0; i < n; ++i) {
        void* reply = nullptr;
        if (redisGetReply(c, &reply) != REDIS_OK) {
          state.SkipWithError("hiredis lost the connection");
          redisFree(c);
          return;
        }
        freeReplyObject(reply);
      }
    }
    done += tasks;
  }
  redisFree(c);
  state.counters["tasks_per_second"] =
      benchmark::Counter(static_cast<double>(done), benchmark::Counter::kIsRate);
}

// The web process: a runtime, an io_context thread, a publisher on it.
class web_process {
 public:
  explicit web_process(const redis::endpoint& where)
      : rt_(crosstown::runtime_options{.threads = 1}) {
    redis::publisher_options o;
    o.redis = where;
    o.stream = "bench:tasks";
    o.backlog_limit = 1'000'000;
    publisher_.emplace(io_, std::move(o));
    io_thread_ = std::thread([this] { io_.run(); });
  }
  web_process(const web_process&) = delete;
  web_process& operator=(const web_process&) = delete;
  ~web_process() {
    guard_.reset();
    io_.stop();
    io_thread_.join();
    publisher_.reset();
  }

  // One response of `n` durable tasks, payload given per task; returns the last-byte time.
  template <typename Payload>
  bench_clock::time_point respond(int n, Payload&& payload_of) {
    crosstown::response_scope scope(rt_);
    for (int i = 0; i < n; ++i) {
      redis::defer_durable(scope, *publisher_,
                           redis::durable_task{std::string(task_name), payload_of(i), {}, {}});
    }
    scope.status_known(202);
    const auto last_byte = bench_clock::now();
    scope.response_sent();
    return last_byte;
  }
  bool drain() { return rt_.drain_for(60s).complete; }
  redis::publisher& pub() { return *publisher_; }

 private:
  crosstown::runtime rt_;
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_{
      io_.get_executor()};
  std::optional<redis::publisher> publisher_;
  std::thread io_thread_;
};

void publisher_xadd(benchmark::State& state) {
  redis_server server;
  const double baseline = baseline_rate();
  web_process web(server.where());
  const int per_request = static_cast<int>(state.range(0));
  const int tasks = 20'000;
  std::int64_t done = 0;
  const auto payload = [](int) { return std::string(task_payload); };
  bench_clock::duration elapsed{};
  for (auto _ : state) {
    const auto start = bench_clock::now();
    for (int sent = 0; sent < tasks; sent += per_request) web.respond(per_request, payload);
    if (!web.drain()) {
      state.SkipWithError("the runtime did not drain: appends not acknowledged");
      return;
    }
    elapsed += bench_clock::now() - start;
    done += tasks;
  }
  const auto m = web.pub().metrics();
  if (m.published != static_cast<std::uint64_t>(done)) {
    state.SkipWithError("published count differs from the tasks deferred");
    return;
  }
  state.counters["tasks_per_second"] =
      benchmark::Counter(static_cast<double>(done), benchmark::Counter::kIsRate);
  const double rate = static_cast<double>(done) / std::chrono::duration<double>(elapsed).count();
  state.counters["baseline_tasks_per_second"] = baseline;
  state.counters["ratio_to_redis_benchmark"] = baseline > 0 ? rate / baseline : 0;
}

void end_to_end(benchmark::State& state) {
  redis_server server;
  web_process web(server.where());
  const int per_request = 10;
  // 0: every request at once (throughput); else one request every `pace` (latency below
  // saturation, so the figures are the path's, not a queue's).
  const auto pace = std::chrono::microseconds(state.range(0));
  const int tasks = pace.count() == 0 ? 4'000 : 1'000;
  // Per task index: the last-byte time of its request, written before the response is sent
  // (so before any worker can see the task) and the handler's start.
  std::vector<std::atomic<std::int64_t>> last_byte(static_cast<std::size_t>(tasks));
  std::vector<std::int64_t> latency_ns(static_cast<std::size_t>(tasks));
  std::mutex mutex;
  std::condition_variable all_done;
  int finished = 0;  // guarded by mutex
  std::vector<std::int64_t> samples;
  const auto epoch = bench_clock::now();
  auto handler = [&](const redis::task_context& ctx) {
    const auto started = (bench_clock::now() - epoch).count();
    const auto index = static_cast<std::size_t>(std::strtol(ctx.payload.data(), nullptr, 10));
    latency_ns[index] = started - last_byte[index].load(std::memory_order_acquire);
    std::lock_guard lock(mutex);
    if (++finished == tasks) all_done.notify_all();
  };
  std::vector<std::unique_ptr<redis::worker>> workers;
  for (int w = 0; w < 2; ++w) {
    redis::worker_options o;
    o.redis = server.where();
    o.streams = {"bench:tasks"};
    o.consumer = "bench-" + std::to_string(w);
    o.block = 100ms;
    workers.push_back(std::make_unique<redis::worker>(o));
    workers.back()->handle(std::string(task_name), handler);
    workers.back()->start();
  }
  std::int64_t done = 0;
  for (auto _ : state) {
    {
      std::lock_guard lock(mutex);
      finished = 0;
    }
    auto next = bench_clock::now();
    for (int base = 0; base < tasks; base += per_request) {
      if (pace.count() != 0) {
        std::this_thread::sleep_until(next);  // pacing the offered load, not waiting for work
        next += pace;
      }
      // The last-byte time is known only at respond(); the tasks carry their index, and the
      // time is stored before response_sent() releases them.
      const auto now = (bench_clock::now() - epoch).count();
      for (int i = 0; i < per_request; ++i) {
        last_byte[static_cast<std::size_t>(base + i)].store(now, std::memory_order_release);
      }
      web.respond(per_request, [base](int i) { return std::to_string(base + i); });
    }
    std::unique_lock lock(mutex);
    if (!all_done.wait_for(lock, 60s, [&] { return finished == tasks; })) {
      state.SkipWithError("the workers did not run every task within 60 s");
      return;
    }
    done += tasks;
    samples.insert(samples.end(), latency_ns.begin(), latency_ns.end());
  }
  for (auto& w : workers) w->stop();
  for (auto& w : workers) w->join();
  std::sort(samples.begin(), samples.end());
  const auto at = [&](double q) {
    return static_cast<double>(samples[static_cast<std::size_t>(q * (samples.size() - 1))]) / 1e3;
  };
  state.counters["tasks_per_second"] =
      benchmark::Counter(static_cast<double>(done), benchmark::Counter::kIsRate);
  state.counters["last_byte_to_start_p50_us"] = at(0.50);
  state.counters["last_byte_to_start_p99_us"] = at(0.99);
}

BENCHMARK(redis_benchmark_xadd)->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(hiredis_pipelined_xadd)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(publisher_xadd)
    ->Arg(1)
    ->Arg(10)
    ->Arg(100)
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(end_to_end)
    ->Name("end_to_end/2_workers")
    ->ArgName("pace_us")
    ->Arg(0)
    ->Arg(10'000)
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  std::vector<crosstown_bench::comparison> lines;
  for (const char* n : {"1", "10", "100"}) {
    const std::string arg = std::string("/") + n + "/iterations:1/real_time";
    lines.push_back(
        {.label = std::string("publisher / redis-benchmark XADD/s, ") + n + " tasks per request",
         .subject = "publisher_xadd" + arg,
         .baseline = "redis_benchmark_xadd/iterations:1/manual_time",
         .metric = "tasks_per_second",
         .op = ">=",
         .bound = 0.5,
         .note = "target of issue 15"});
    lines.push_back({.label = std::string("publisher / raw hiredis pipeline XADD/s, ") + n +
                              " tasks per request",
                     .subject = "publisher_xadd" + arg,
                     .baseline = "hiredis_pipelined_xadd/iterations:1/real_time",
                     .metric = "tasks_per_second"});
  }
  const std::string burst = "end_to_end/2_workers/pace_us:0/iterations:1/real_time";
  const std::string paced = "end_to_end/2_workers/pace_us:10000/iterations:1/real_time";
  lines.push_back({.label = "end to end through 2 workers, all at once, tasks/s",
                   .subject = burst,
                   .metric = "tasks_per_second"});
  lines.push_back({.label = "last byte -> worker start p50 (us), 1,000 tasks/s offered",
                   .subject = paced,
                   .metric = "last_byte_to_start_p50_us"});
  lines.push_back({.label = "last byte -> worker start p99 (us), 1,000 tasks/s offered",
                   .subject = paced,
                   .metric = "last_byte_to_start_p99_us"});
  lines.push_back({.label = "last byte -> worker start p99 (us), all at once (queueing)",
                   .subject = burst,
                   .metric = "last_byte_to_start_p99_us"});
  return crosstown_bench::run_suite(argc, argv, "redis_streams", lines);
}
