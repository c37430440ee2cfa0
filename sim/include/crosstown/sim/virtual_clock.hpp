// crosstown/sim/virtual_clock.hpp - simulated time: a timer queue and an Asio-compatible clock.
//
// `virtual_time` is the simulator's time source: a current time that only moves when told, and
// a queue of timers keyed by (deadline, creation order). `advance(d)` fires every timer due
// within `d`, each at its own deadline, in deadline order (ties in creation order), so a timer
// callback observes `now() == its deadline` and may schedule more timers, which fire in the
// same call if they fall inside the window. `advance_to_next()` jumps to the earliest deadline
// - what the scheduler does when nothing is runnable ("auto-advance"); a `manual_advance`
// scope turns auto-advance off, so time then moves only through explicit `advance` calls.
//
// `virtual_clock` is a Clock type for `boost::asio::basic_waitable_timer<virtual_clock,
// virtual_wait_traits>`. Asio asks `Clock::now()` statically, so the clock reads the
// `virtual_time` bound to the calling thread with a `clock_binding` (the epoch if none is
// bound) - the time source itself is always injected, never global. `virtual_wait_traits`
// turns every wait into a zero real-time wait: drive such an io_context with `poll()` after
// advancing virtual time, never with `run()` (which would spin).
//
// Not thread-safe: one simulation runs on one thread, which is the point.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <queue>
#include <vector>

namespace crosstown::sim {

class virtual_time;

/// A steady clock whose `now()` is the virtual time bound to the calling thread.
struct virtual_clock {
  using duration = std::chrono::nanoseconds;
  using rep = duration::rep;
  using period = duration::period;
  using time_point = std::chrono::time_point<virtual_clock, duration>;
  static constexpr bool is_steady = true;

  /// The bound `virtual_time`'s now, or the epoch when none is bound to this thread.
  static time_point now() noexcept;
};

using duration = virtual_clock::duration;
using time_point = virtual_clock::time_point;

/// Wait traits for Asio timers on the virtual clock: never wait in real time.
struct virtual_wait_traits {
  static virtual_clock::duration to_wait_duration(const virtual_clock::duration&) {
    return virtual_clock::duration::zero();
  }
  static virtual_clock::duration to_wait_duration(const virtual_clock::time_point&) {
    return virtual_clock::duration::zero();
  }
};

/// Handle of a scheduled timer, for `cancel`.
using timer_id = std::uint64_t;

class virtual_time {
 public:
  virtual_time() = default;
  virtual_time(const virtual_time&) = delete;
  virtual_time& operator=(const virtual_time&) = delete;

  time_point now() const noexcept { return now_; }
  /// Nanoseconds since the start of the simulation.
  std::int64_t now_ns() const noexcept { return now_.time_since_epoch().count(); }

  /// Calls `fn` when virtual time reaches `deadline` (at once on the next advance if past).
  timer_id call_at(time_point deadline, std::function<void()> fn);
  timer_id call_after(duration d, std::function<void()> fn) {
    return call_at(now_ + d, std::move(fn));
  }
  /// Cancels a timer that has not fired. False if it fired or was cancelled already.
  bool cancel(timer_id id);

  /// Moves time forward by `d`, firing due timers at their own deadlines, in order.
  void advance(duration d);
  /// Jumps to the earliest deadline and fires every timer due then. False if none is pending.
  bool advance_to_next();
  /// The earliest pending deadline.
  std::optional<time_point> next_deadline();
  /// Timers not yet fired or cancelled.
  std::size_t pending() const noexcept { return live_; }

  /// True unless a `manual_advance` scope is alive.
  bool auto_advance() const noexcept { return manual_depth_ == 0; }

  /// Turns auto-advance off for its lifetime (nestable).
  class manual_advance {
   public:
    explicit manual_advance(virtual_time& t) noexcept : time_(t) { ++time_.manual_depth_; }
    manual_advance(const manual_advance&) = delete;
    manual_advance& operator=(const manual_advance&) = delete;
    ~manual_advance() { --time_.manual_depth_; }

   private:
    virtual_time& time_;
  };

 private:
  struct timer {
    time_point deadline;
    timer_id id;
    bool operator>(const timer& o) const noexcept {
      return deadline != o.deadline ? deadline > o.deadline : id > o.id;
    }
  };
  // Fires the earliest timer if it is due at or before `limit`.
  bool fire_one(time_point limit);
  void drop_cancelled();

  time_point now_{};
  timer_id next_id_ = 1;
  std::size_t live_ = 0;
  std::size_t cancelled_queued_ = 0;  // cancelled timers still in queue_
  int manual_depth_ = 0;
  std::priority_queue<timer, std::vector<timer>, std::greater<>> queue_;
  // Callbacks by id; an empty function marks a cancelled or fired timer.
  std::vector<std::function<void()>> callbacks_;
};

/// Binds a `virtual_time` to the calling thread for `virtual_clock::now()` (restores on exit).
class clock_binding {
 public:
  explicit clock_binding(const virtual_time& t) noexcept;
  clock_binding(const clock_binding&) = delete;
  clock_binding& operator=(const clock_binding&) = delete;
  ~clock_binding();

 private:
  const virtual_time* previous_;
};

}  // namespace crosstown::sim
