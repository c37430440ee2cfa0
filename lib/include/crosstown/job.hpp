// crosstown/job.hpp - a released task on its way through an executor.
//
// When a response reaches a task's phase and the status allows it, the scope wraps the task
// in a `job` and hands it, with the other jobs of that response bound for the same executor,
// to the executor as one `job_batch`. A job knows its identity (`task_info`) and the runtime
// whose counters it updates, so an executor only has to do one of three things with each job:
//
//   - `run()` it, on any thread: the task runs, an exception is caught and reported to the
//     runtime's error hook with the task's name, and the job counts as `ran` or `failed`;
//   - `reject()` it (a full queue): counted as `rejected_by_overflow` and reported;
//   - destroy it without running it (shutdown): counted as `dropped_at_shutdown` and reported.
//
// So no executor can lose a task silently (invariant I6). A job is move-only and not
// thread-safe; `run()` is noexcept. The runtime that released a job must outlive it.
//
// A job whose task carries a plan (an awaitable task, or one with a lane or timeout:
// detail/task_plan.hpp) is not finished when `run()` returns: it may wait in its lane (still
// counted queued) or continue as a `running_job` - a coroutine on the runtime's I/O executor -
// which records the outcome when the coroutine ends.
#pragma once

#include <crosstown/detail/core_key.hpp>
#include <crosstown/detail/task_name.hpp>
#include <crosstown/metrics.hpp>
#include <crosstown/task.hpp>

#include <cstdint>
#include <exception>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace crosstown {

class job;
class running_job;

namespace detail {
class ledger;
class io_runtime;
// Runs a job whose task carries a plan (awaitable_task.cpp).
void run_planned(job&& work) noexcept;
/// Where a job was when it reached its terminal state.
enum class ledger_origin : std::uint8_t { unreleased, queued, running };
}  // namespace detail

/// Who a task is: its request, its position in that request and its optional name.
struct task_info {
  std::uint64_t request_id = 0;  ///< runtime-unique id of the response scope (from 1)
  std::uint32_t index = 0;       ///< registration index within the scope (from 0)
  std::string_view name;         ///< empty for unnamed tasks

  /// `"send-mail" (request 7, task 2)` or `task 2 of request 7`.
  std::string describe() const;
};

std::ostream& operator<<(std::ostream& out, const task_info& info);

/// What the error hook receives when a task throws.
struct task_failure {
  task_info task;
  std::exception_ptr error;  ///< the exception thrown by the task
  std::string message;       ///< `what()` for std::exception, else "unknown exception"
};

class job {
 public:
  job() noexcept = default;
  /// Internal: only a response scope makes a job that counts.
  job(task&& fn, std::uint64_t request_id, std::uint32_t index, detail::task_name&& name,
      detail::ledger* ledger, detail::core_key) noexcept
      : fn_(std::move(fn)),
        name_(std::move(name)),
        request_id_(request_id),
        index_(index),
        ledger_(ledger) {}
  // Moves are inline: a job travels scope -> batch -> queue -> worker, moved at each hop.
  job(job&& other) noexcept
      : fn_(std::move(other.fn_)),
        name_(std::move(other.name_)),
        request_id_(other.request_id_),
        index_(other.index_),
        ledger_(std::exchange(other.ledger_, nullptr)),
        handed_off_(other.handed_off_) {}
  job& operator=(job&& other) noexcept;
  job(const job&) = delete;
  job& operator=(const job&) = delete;
  /// A job destroyed before it finished counts as `dropped_at_shutdown`.
  ~job() {
    if (ledger_ != nullptr) drop();
  }

  /// Runs the task on the calling thread and records the outcome. Never throws.
  void run() noexcept;
  /// Records that the executor refused the job (`rejected_by_overflow`) and releases it.
  void reject() noexcept;
  /// Records that the job will never run (`dropped_at_shutdown`) and releases it.
  void drop() noexcept;

  /// Internal, called by the hand-off: the job now counts as queued.
  void mark_handed_off(detail::core_key) noexcept { handed_off_ = true; }

  /// The task this job will run (empty once finished), so an executor can inspect it with
  /// `task::target<F>()` before running it; the job still counts when it is run or dropped.
  task& work() noexcept { return fn_; }

  task_info info() const noexcept { return {request_id_, index_, name_.view()}; }
  /// True once the job has reached a terminal state (or was moved from).
  bool finished() const noexcept { return ledger_ == nullptr; }

 private:
  // Where the job counts in the ledger before it runs: queued once handed off.
  detail::ledger_origin origin() const noexcept;
  // Counts the job started and moves it into a running_job, which records the outcome.
  running_job start_detached() noexcept;
  friend void detail::run_planned(job&& work) noexcept;
  friend class detail::io_runtime;

  task fn_;
  detail::task_name name_;
  std::uint64_t request_id_ = 0;
  std::uint32_t index_ = 0;
  detail::ledger* ledger_ = nullptr;  // null once finished
  bool handed_off_ = false;
};

/// A job that has started and ends later (an awaitable task): it counts as running until
/// `finish` records its outcome. Destroyed unfinished (its coroutine was destroyed at
/// shutdown), it counts as `dropped_at_shutdown` and is reported. Move-only, not thread-safe.
class running_job {
 public:
  running_job() noexcept = default;
  running_job(running_job&& other) noexcept
      : fn_(std::move(other.fn_)),
        name_(std::move(other.name_)),
        request_id_(other.request_id_),
        index_(other.index_),
        ledger_(std::exchange(other.ledger_, nullptr)) {}
  running_job& operator=(running_job&&) = delete;
  running_job(const running_job&) = delete;
  running_job& operator=(const running_job&) = delete;
  ~running_job() {
    if (ledger_ != nullptr) finish(task_state::dropped_at_shutdown, nullptr);
  }

  /// Records the terminal state: `failed` and `timed_out` report `error` to the error hook,
  /// `dropped_at_shutdown` and `rejected_by_overflow` report to the lost hook. The task (and
  /// its captures) is destroyed before the job counts as finished. Idempotent.
  void finish(task_state outcome, std::exception_ptr error) noexcept;

  task_info info() const noexcept { return {request_id_, index_, name_.view()}; }
  task& work() noexcept { return fn_; }
  /// For reports made while the task runs (a blocking task's overrun).
  detail::ledger* ledger() const noexcept { return ledger_; }

 private:
  friend class job;
  task fn_;
  detail::task_name name_;
  std::uint64_t request_id_ = 0;
  std::uint32_t index_ = 0;
  detail::ledger* ledger_ = nullptr;  // null once finished
};

/// The jobs of one response bound for one executor, in registration order.
using job_batch = std::vector<job>;

}  // namespace crosstown
