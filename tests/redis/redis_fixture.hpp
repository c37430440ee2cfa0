// tests/redis/redis_fixture.hpp - a private redis-server for one test, and waiting helpers.
//
// `redis_server` starts redis-server (CROSSTOWN_REDIS_SERVER) on a Unix socket in a fresh temporary
// directory
// (`--port 0`: no TCP port at all), optionally with AOF and `appendfsync always`, and waits
// until it printed "ready to accept connections" (read from its stdout through a pipe with a
// deadline - no sleeping). `kill9()` and `start()` restart it on the same directory and
// socket; the destructor stops it and removes the directory. `eventually(pred)` polls a
// condition until a deadline, pausing a millisecond between polls: the conditions are in
// other processes (Redis, a worker), which cannot notify us.
#pragma once

#include <crosstown/redis/connection.hpp>

#include <gtest/gtest.h>

#include <hiredis/hiredis.h>

#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace crosstown::redis::test {

using namespace std::chrono_literals;

/// How long a condition that is expected to hold may take.
inline constexpr auto deadline = std::chrono::seconds(15);

/// True once `pred()` holds; false if it did not within `timeout`.
inline bool eventually(const std::function<bool()>& pred,
                       std::chrono::steady_clock::duration timeout = deadline) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(1ms);  // polling another process: nothing can notify us
  }
  return true;
}

/// A child process started with posix_spawn; killed (SIGKILL) and reaped by the destructor.
class child_process {
 public:
  child_process() = default;
  /// Starts `argv[0]` with `argv`; with `stdout_pipe`, its stdout is readable by `read_line`.
  explicit child_process(const std::vector<std::string>& argv, bool stdout_pipe = false) {
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    int fds[2] = {-1, -1};
    if (stdout_pipe) {
      if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
      posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
      posix_spawn_file_actions_addclose(&actions, fds[0]);
      posix_spawn_file_actions_addclose(&actions, fds[1]);
    }
    const int rc = posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (stdout_pipe) {
      ::close(fds[1]);
      out_ = fds[0];
    }
    if (rc != 0) throw std::runtime_error("cannot start " + argv[0]);
  }
  child_process(child_process&& o) noexcept
      : pid_(std::exchange(o.pid_, -1)),
        out_(std::exchange(o.out_, -1)),
        buffer_(std::move(o.buffer_)) {}
  child_process& operator=(child_process&& o) noexcept {
    if (this != &o) {
      kill9();
      pid_ = std::exchange(o.pid_, -1);
      out_ = std::exchange(o.out_, -1);
      buffer_ = std::move(o.buffer_);
    }
    return *this;
  }
  ~child_process() { kill9(); }

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }

  /// The next line of its stdout, or nothing at the deadline or end of file.
  std::optional<std::string> read_line(std::chrono::steady_clock::duration timeout = deadline) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (const auto nl = buffer_.find('\n'); nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          end - std::chrono::steady_clock::now());
      if (out_ < 0 || left.count() <= 0) return std::nullopt;
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char chunk[4096];
      const ssize_t n = ::read(out_, chunk, sizeof chunk);
      if (n <= 0) return std::nullopt;
      buffer_.append(chunk, static_cast<std::size_t>(n));
    }
  }
  /// Reads lines until one contains `text`; false at the deadline.
  bool wait_for_line(std::string_view text,
                     std::chrono::steady_clock::duration timeout = deadline) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (auto line = read_line(end - std::chrono::steady_clock::now())) {
      if (line->find(text) != std::string::npos) return true;
    }
    return false;
  }

  void kill9() noexcept { signal_and_reap(SIGKILL); }
  /// Waits for it to exit on its own (bounded by the test's timeout); the exit status.
  int wait() noexcept { return signal_and_reap(0); }
  /// SIGTERM, then waits for the exit; the exit status (or -1).
  int terminate() noexcept { return signal_and_reap(SIGTERM); }

 private:
  int signal_and_reap(int sig) noexcept {
    int status = -1;
    if (pid_ > 0) {
      if (sig != 0) ::kill(pid_, sig);
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
      pid_ = -1;
    }
    if (out_ >= 0) {
      ::close(out_);
      out_ = -1;
    }
    buffer_.clear();
    return status;
  }

  pid_t pid_ = -1;
  int out_ = -1;
  std::string buffer_;
};

class redis_server {
 public:
  explicit redis_server(bool aof = false) : aof_(aof) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "crosstown-redis-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    start();
  }
  ~redis_server() {
    process_.terminate();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  redis_server(const redis_server&) = delete;
  redis_server& operator=(const redis_server&) = delete;

  void start() {
    std::vector<std::string> argv{CROSSTOWN_REDIS_SERVER,
                                  "--port",
                                  "0",
                                  "--unixsocket",
                                  socket_path(),
                                  "--unixsocketperm",
                                  "700",
                                  "--dir",
                                  dir_,
                                  "--save",
                                  "",
                                  "--daemonize",
                                  "no",
                                  "--logfile",
                                  "",
                                  "--loglevel",
                                  "notice"};
    if (aof_) argv.insert(argv.end(), {"--appendonly", "yes", "--appendfsync", "always"});
    process_ = child_process(argv, /*stdout_pipe=*/true);
    if (!process_.wait_for_line("ready to accept connections")) {
      throw std::runtime_error("redis-server did not become ready in " + dir_);
    }
    // Quiet from now on: nobody reads the pipe after this, and a full pipe would stall it.
    connect().command({"CONFIG", "SET", "loglevel", "warning"});
  }
  /// SIGKILL: no shutdown save; with AOF always, every acknowledged write is on disk.
  void kill9() { process_.kill9(); }
  void stop() { process_.terminate(); }
  bool running() const { return process_.running(); }

  std::string socket_path() const { return dir_ + "/redis.sock"; }
  endpoint where() const { return endpoint::parse("unix:" + socket_path()); }
  connection connect() const { return connection(where(), 2s, 5s); }
  const std::string& dir() const { return dir_; }

 private:
  bool aof_;
  std::string dir_;
  child_process process_;
};

/// Integer reply of a command (XLEN, SCARD, ...), or -1.
inline long long integer(connection& c, std::initializer_list<std::string_view> args) {
  reply_ptr r = c.command(args);
  return r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
}

/// One stream entry's fields.
using fields = std::vector<std::pair<std::string, std::string>>;

inline std::string field(const fields& f, std::string_view name) {
  for (const auto& [k, v] : f) {
    if (k == name) return v;
  }
  return "<missing>";
}

/// Every entry of a stream, oldest first.
inline std::vector<fields> read_stream(connection& c, std::string_view stream) {
  std::vector<fields> out;
  reply_ptr r = c.command({"XRANGE", stream, "-", "+"});
  if (r->type != REDIS_REPLY_ARRAY) return out;
  for (std::size_t i = 0; i < r->elements; ++i) {
    const redisReply* e = r->element[i];
    fields f;
    const redisReply* kv = e->element[1];
    for (std::size_t j = 0; j + 1 < kv->elements; j += 2) {
      f.emplace_back(std::string(kv->element[j]->str, kv->element[j]->len),
                     std::string(kv->element[j + 1]->str, kv->element[j + 1]->len));
    }
    out.push_back(std::move(f));
  }
  return out;
}

}  // namespace crosstown::redis::test
