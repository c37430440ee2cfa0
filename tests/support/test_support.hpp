// tests/support/test_support.hpp - helpers shared by the runtime, thread-pool and executor tests.
//
// Waiting without sleeping (an event with a deadline, a gate that holds a worker, a thread run
// in the background), recording what the runtime's on_lost hook reported, and completing a
// response scope. Every wait has a deadline (`deadline` unless told otherwise) whose expiry the
// calling test asserts against. Header-only: everything is inline or defined in its class.
// Found through the include directory that crosstown_add_test gives every test.
#pragma once

#include <crosstown/job.hpp>
#include <crosstown/metrics.hpp>
#include <crosstown/response_scope.hpp>
#include <crosstown/task.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <ostream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace crosstown::test_support {

/// The clock every deadline is measured on.
using clock_type = std::chrono::steady_clock;

/// How long a wait that is expected to succeed may take before the test fails.
inline constexpr auto deadline = std::chrono::seconds(10);

/// A one-shot event.
class event {
 public:
  void set() {
    {
      std::lock_guard lock(mutex_);
      set_ = true;
    }
    cv_.notify_all();
  }
  /// True if the event was set within `timeout`.
  bool wait(clock_type::duration timeout = deadline) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [this] { return set_; });
  }
  bool is_set() const {
    std::lock_guard lock(mutex_);
    return set_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool set_ = false;
};

/// A condition that other threads announce: they call `notify()` after anything the waiter's
/// predicate reads may have changed (from a server's or a runtime's hook); `wait_for(pred)`
/// evaluates `pred` - outside the lock, so it may call into the notifier's owner - now and
/// after every notification, until it holds or `timeout` passed. True if it held.
class change_signal {
 public:
  void notify() {
    {
      std::lock_guard lock(mutex_);
      ++generation_;
    }
    cv_.notify_all();
  }

  template <class Predicate>
  bool wait_for(Predicate pred, clock_type::duration timeout = deadline) {
    const auto until = clock_type::now() + timeout;
    for (;;) {
      std::uint64_t seen = 0;
      {
        std::lock_guard lock(mutex_);
        seen = generation_;
      }
      if (pred()) return true;
      std::unique_lock lock(mutex_);
      if (!cv_.wait_until(lock, until, [&] { return generation_ != seen; })) {
        lock.unlock();
        return pred();
      }
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::uint64_t generation_ = 0;  // guarded by mutex_
};

/// A task that holds its worker until opened: `started` is set when it runs, `finished` once it
/// returns, `timed_out` if it was never opened within the deadline.
struct gate {
  event started;
  event opened;
  std::atomic<bool> timed_out{false};
  std::atomic<bool> finished{false};

  crosstown::task task() {
    return [this] {
      started.set();
      if (!opened.wait()) timed_out = true;
      finished = true;
    };
  }
};

/// Runs `fn` on its own thread; `wait_done` waits for it with a deadline. Joins on destruction.
class background {
 public:
  explicit background(std::function<void()> fn)
      : thread_([this, fn = std::move(fn)] {
          fn();
          done_.set();
        }) {}
  background(const background&) = delete;
  background& operator=(const background&) = delete;
  ~background() { thread_.join(); }
  bool wait_done(clock_type::duration timeout = deadline) { return done_.wait(timeout); }
  std::thread::id id() const { return thread_.get_id(); }

 private:
  event done_;  // declared before thread_: constructed before the thread starts
  std::thread thread_;
};

/// What the runtime's on_lost hook saw, copied out (task_info::name does not outlive the call).
struct lost_task {
  std::uint64_t request_id;
  std::uint32_t index;
  std::string name;
  crosstown::task_state state;
  friend bool operator==(const lost_task&, const lost_task&) = default;
  friend std::ostream& operator<<(std::ostream& out, const lost_task& t) {
    return out << t.name << " (request " << t.request_id << ", task " << t.index << ") " << t.state;
  }
};

/// A thread-safe record of every task the on_lost hook reported, in the order reported. `hook`
/// makes the hook to hand the runtime; `also`, if given, runs after each report is recorded.
class lost_log {
 public:
  std::function<void(const crosstown::task_info&, crosstown::task_state)> hook(
      std::function<void()> also = {}) {
    return [this, also](const crosstown::task_info& info, crosstown::task_state state) {
      {
        std::lock_guard lock(mutex_);
        seen_.push_back({info.request_id, info.index, std::string(info.name), state});
      }
      if (also) also();
    };
  }
  std::vector<lost_task> seen() const {
    std::lock_guard lock(mutex_);
    return seen_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<lost_task> seen_;
};

/// Completes a response: its status is known (`status`, 200 unless told), then it is sent.
inline void complete(crosstown::response_scope& scope, int status = 200) {
  scope.status_known(status);
  scope.response_sent();
}

}  // namespace crosstown::test_support
