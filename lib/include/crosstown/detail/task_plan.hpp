// crosstown/detail/task_plan.hpp - not API. What a task needs beyond "call this closure".
//
// A task deferred as an awaitable, or with a lane or a timeout, carries a `task_plan` inside
// its `task` (a `plan_carrier`, eight bytes, stored inline). The task travels the usual way -
// scope entry, job, batch, executor - so every rule of the hand-off applies unchanged; when an
// executor runs the job, `job::run` sees the plan and routes the job to `run_planned`
// (awaitable_task.cpp): lane admission, then a coroutine on the I/O executor or the blocking
// closure with an overrun watch. Plain closures carry no plan and never take that branch.
#pragma once

#include <crosstown/defer_options.hpp>
#include <crosstown/metrics.hpp>
#include <crosstown/retry.hpp>
#include <crosstown/task.hpp>

#include <chrono>
#include <memory>
#include <utility>

namespace crosstown {
class runtime;
class executor;
}  // namespace crosstown

namespace crosstown::detail {

struct awaitable_body;
class lane_state;
class io_runtime;

struct task_plan {
  // Out of line, like the destructor: awaitable_body is incomplete here.
  explicit task_plan(io_runtime& owner) noexcept;
  task_plan(const task_plan&) = delete;
  task_plan& operator=(const task_plan&) = delete;
  /// Tells the lane (if it reached one) how the task ended and frees its slot.
  ~task_plan();

  io_runtime* io;
  task blocking;                         // a blocking task's closure, or empty
  std::unique_ptr<awaitable_body> body;  // an awaitable task's factory, or null
  lane_state* lane = nullptr;            // null: no lane
  executor* target = nullptr;            // blocking, once admitted: where it runs; null: pool
  std::chrono::nanoseconds timeout{0};   // per attempt; zero: none
  retry_policy retry{};
  std::chrono::nanoseconds arrived{0};  // when it started waiting in the lane (task clock)
  task_state outcome = task_state::dropped_at_shutdown;
  bool in_lane = false;     // reached the lane: the lane counts its outcome
  bool holds_slot = false;  // owns one of the lane's in-flight slots
};

/// The callable of a task that carries a plan; `task` recognises it by `crosstown_plan()`.
class plan_carrier {
 public:
  explicit plan_carrier(task_plan* plan) noexcept : plan_(plan) {}
  plan_carrier(plan_carrier&& other) noexcept : plan_(std::exchange(other.plan_, nullptr)) {}
  plan_carrier& operator=(plan_carrier&&) = delete;
  ~plan_carrier() { delete plan_; }

  // Never called: job::run routes planned tasks to run_planned before invoking anything.
  void operator()() const noexcept {}
  task_plan* crosstown_plan() const noexcept { return plan_; }

 private:
  task_plan* plan_;
};

/// True when the options ask for more than a plain closure.
inline bool needs_plan(const defer_options& o) noexcept {
  return !o.lane.empty() || o.timeout != std::chrono::nanoseconds::zero() ||
         o.retry.max_attempts != 1;
}

/// Wraps a blocking task whose options name a lane or a timeout. `target` is where the task
/// runs (null: the pool). Throws std::invalid_argument for an unknown lane, a negative
/// timeout or a retry policy (blocking tasks are not retried).
task plan_blocking(runtime& rt, task&& fn, const defer_options& options, executor* target);

}  // namespace crosstown::detail
