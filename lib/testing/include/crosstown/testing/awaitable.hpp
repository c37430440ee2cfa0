// crosstown/testing/awaitable.hpp - step awaitable tasks, lanes, timeouts and retries on
// virtual time, on the test's thread.
//
//     crosstown::testkit::harness h;                      // or any crosstown::runtime
//     crosstown::testkit::awaitable_driver io{h.rt()};    // after the harness: destroyed first
//     h.call([&](crosstown::response_scope& s) {
//       s.defer(call_api, {.timeout = 2s, .retry = {.max_attempts = 3, .jitter = 0}});
//     });
//     h.respond(202);
//     h.run_all();              // hands the task over: its coroutine starts on io's context
//     io.poll();                // runs what is ready
//     io.advance(2s);           // virtual time: the timeout fires, the attempt is cancelled
//     EXPECT_EQ(h.find(...)->state, crosstown::task_state::timed_out);
//
// `awaitable_driver` points the runtime's awaitable tasks at an io_context it owns and its
// timeouts, backoffs and lane waits at a `manual_task_clock`: nothing runs until the test calls
// `poll`/`run_one`, and no time passes until it calls `advance`. No thread, no sleep, no real
// time. Destroying the driver destroys the coroutines still suspended (each task counted
// `dropped_at_shutdown`) and gives the runtime back its own executor and clock.
//
// Not thread-safe: one test thread drives a driver and its clock.
#pragma once

#include <crosstown/awaitable_task.hpp>
#include <crosstown/runtime.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <list>
#include <optional>
#include <utility>

namespace crosstown::testkit {

/// A task clock that moves only when told: `wait(d)` completes once `advance` has moved the
/// clock `d` past the moment it was called. Waits are cancellable like timers.
class manual_task_clock final : public task_clock {
 public:
  std::chrono::nanoseconds now() const noexcept override { return now_; }

  boost::asio::awaitable<void> wait(std::chrono::nanoseconds d) override {
    if (d <= std::chrono::nanoseconds::zero()) co_return;
    // A timer that never expires by itself: `advance` cancels it once its virtual deadline is
    // reached and marks it fired; any other cancellation is the awaiting coroutine's own.
    boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor,
                                    boost::asio::steady_timer::time_point::max());
    auto it = waiters_.insert(waiters_.end(), waiter{now_ + d, &timer, false});
    struct unlink {
      std::list<waiter>& list;
      std::list<waiter>::iterator it;
      ~unlink() { list.erase(it); }
    } guard{waiters_, it};
    boost::system::error_code ec;
    try {
      co_await timer.async_wait(boost::asio::use_awaitable);
    } catch (const boost::system::system_error& e) {
      ec = e.code();
    }
    if (!it->fired) {
      throw boost::system::system_error(ec ? ec : boost::asio::error::operation_aborted);
    }
  }

  /// Moves the clock forward; waits whose deadline is reached complete (when their executor
  /// next runs: call `awaitable_driver::poll`).
  void advance(std::chrono::nanoseconds d) {
    now_ += d;
    for (waiter& w : waiters_) {
      if (!w.fired && w.deadline <= now_) {
        w.fired = true;
        w.timer->cancel();
      }
    }
  }

  /// Waits not yet complete.
  std::size_t waiting() const {
    return static_cast<std::size_t>(
        std::count_if(waiters_.begin(), waiters_.end(), [](const waiter& w) { return !w.fired; }));
  }
  /// The earliest deadline of a pending wait, if any (for "advance to the next timer").
  std::chrono::nanoseconds next_deadline() const {
    std::chrono::nanoseconds next = std::chrono::nanoseconds::max();
    for (const waiter& w : waiters_) {
      if (!w.fired) next = std::min(next, w.deadline);
    }
    return next;
  }

 private:
  struct waiter {
    std::chrono::nanoseconds deadline;
    boost::asio::steady_timer* timer;
    bool fired;
  };
  std::chrono::nanoseconds now_{0};
  std::list<waiter> waiters_;
};

/// Runs a runtime's awaitable tasks on an io_context the test steps, on virtual time.
class awaitable_driver {
 public:
  explicit awaitable_driver(runtime& rt)
      : rt_(rt), io_(std::in_place), executor_(io_->get_executor()) {
    redirect_awaitables(rt_, &executor_, &clock_);
  }
  awaitable_driver(const awaitable_driver&) = delete;
  awaitable_driver& operator=(const awaitable_driver&) = delete;
  ~awaitable_driver() {
    // A coroutine destroyed below may free a lane slot and start the next task: refuse it
    // (counted) rather than start it on a context that is going away.
    refuse_awaitables(rt_, true);
    io_.reset();  // destroys the pending handlers, and with them the suspended coroutines
    redirect_awaitables(rt_, nullptr, nullptr);
    refuse_awaitables(rt_, false);
  }

  /// Runs every handler that is ready, without waiting. Returns how many ran.
  std::size_t poll() {
    io_->restart();
    return io_->poll();
  }
  /// Runs one ready handler. False if none was ready.
  bool run_one() {
    io_->restart();
    return io_->poll_one() != 0;
  }
  /// Moves virtual time forward by `d`, then runs what became ready.
  std::size_t advance(std::chrono::nanoseconds d) {
    poll();
    clock_.advance(d);
    return poll();
  }
  /// Moves virtual time to the next pending wait's deadline (if any) and runs what is ready.
  bool advance_to_next() {
    poll();
    const std::chrono::nanoseconds next = clock_.next_deadline();
    if (next == std::chrono::nanoseconds::max()) return false;
    clock_.advance(next - clock_.now());
    poll();
    return true;
  }

  manual_task_clock& clock() noexcept { return clock_; }
  boost::asio::io_context& io() noexcept { return *io_; }

 private:
  runtime& rt_;
  manual_task_clock clock_;  // outlives the coroutines waiting on it
  std::optional<boost::asio::io_context> io_;
  awaitable_executor executor_;
};

}  // namespace crosstown::testkit
