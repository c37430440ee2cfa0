// tests/redis/web_fixture.hpp - the web process's side in one test: a runtime, an io_context
// on its own thread and a publisher on it, plus a way to answer a request that defers durable
// tasks. Records what the runtime's hooks reported. Destroyed in the order the publisher's
// contract asks: the io_context stops, then the publisher goes, then the runtime.
#pragma once

#include <crosstown/redis/publisher.hpp>
#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace crosstown::redis::test {

class web_process {
 public:
  explicit web_process(publisher_options options)
      : rt_(runtime_options{
            .threads = 1,
            .on_error = [this](const task_failure& f) { remember(errors_, f.message); },
            .on_lost =
                [this](const task_info& i, task_state s) {
                  remember(lost_, i.describe() + " " + std::string(to_string(s)));
                },
        }) {
    options.on_lost = [this](const task_info&, const durable_task& t, publish_failure why,
                             std::string_view message) {
      remember(publish_lost_,
               t.name + " " + std::string(to_string(why)) + ": " + std::string(message));
    };
    publisher_.emplace(io_, std::move(options));
    io_thread_ = std::thread([this] { io_.run(); });
  }
  ~web_process() {
    guard_.reset();
    io_.stop();
    io_thread_.join();
    publisher_.reset();
  }

  runtime& rt() { return rt_; }
  publisher& pub() { return *publisher_; }
  boost::asio::io_context& io() { return io_; }

  /// One request: defers `tasks`, answers `status`, sends the last byte. The keys, in order.
  std::vector<std::string> respond(int status, std::vector<durable_task> tasks,
                                   defer_options options = {}) {
    std::vector<std::string> keys;
    response_scope scope(rt_);
    for (auto& t : tasks) keys.push_back(defer_durable(scope, *publisher_, std::move(t), options));
    scope.status_known(status);
    scope.response_sent();
    return keys;
  }

  std::uint64_t count(task_state s) const { return rt_.metrics().count(s); }

  std::vector<std::string> errors() const { return copy(errors_); }
  std::vector<std::string> lost() const { return copy(lost_); }
  std::vector<std::string> publish_lost() const { return copy(publish_lost_); }

 private:
  void remember(std::vector<std::string>& where, std::string what) {
    std::lock_guard lock(mutex_);
    where.push_back(std::move(what));
  }
  std::vector<std::string> copy(const std::vector<std::string>& from) const {
    std::lock_guard lock(mutex_);
    return from;
  }

  mutable std::mutex mutex_;
  std::vector<std::string> errors_;        // guarded by mutex_
  std::vector<std::string> lost_;          // guarded by mutex_
  std::vector<std::string> publish_lost_;  // guarded by mutex_
  runtime rt_;
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_{
      io_.get_executor()};
  std::optional<publisher> publisher_;
  std::thread io_thread_;
};

/// Publisher options for a test server: short timeouts, quick reconnects.
inline publisher_options test_publisher(const endpoint& where) {
  publisher_options o;
  o.redis = where;
  o.connect_timeout = std::chrono::milliseconds(500);
  o.command_timeout = std::chrono::milliseconds(1000);
  o.reconnect_initial = std::chrono::milliseconds(5);
  o.reconnect_max = std::chrono::milliseconds(50);
  return o;
}

inline durable_task task_named(std::string name, std::string payload = "{}") {
  return durable_task{std::move(name), std::move(payload), {}, {}};
}

}  // namespace crosstown::redis::test
