// crosstown/runtime.hpp - owns the default pool, the hooks and the counters.
//
// One runtime per application (or per test). Response scopes are created from it; their tasks
// run on its pool unless they name another executor. The runtime:
//   - reports every task that throws to `on_error` with its name; the worker survives and the
//     task's siblings run;
//   - reports every task rejected by a full queue or dropped at shutdown to `on_lost`;
//   - counts every terminal state (invariant I6) - see `metrics()`;
//   - bounds its pool's queue with an explicit overflow policy;
//   - `drain(deadline)` waits for queued and running tasks and reports what did not finish.
//
// Hooks are called on the thread where the event happens (pool workers included),
// concurrently; they must be thread-safe and should be quick. A hook that throws is ignored.
//
// Backpressure: the pool holds at most `queue_capacity` unfinished tasks (by default 8192 per
// pool thread); beyond it the overflow policy applies (by default `reject`: counted and
// reported). `accepting()` and `pressure()` let a server refuse a request before it defers.
//
// Destruction: the pool stops accepting work; queued work runs to completion (or, with
// `shutdown_timeout`, until that timeout, after which what is still queued is dropped - each
// task counted and reported to `on_lost`, never lost silently). A task still running then
// cannot be stopped: `thread_pool::abandon_grace` (100 ms) later its worker is abandoned - the
// task is reported to `on_lost` with `task_state::running` and the destructor returns; the
// task finishes on its own thread, which keeps the runtime's accounting alive, and the hooks
// are no longer called for it. So the destructor returns within `shutdown_timeout` plus the
// time to report the dropped tasks plus `abandon_grace`. Scopes, connections and executors
// holding this runtime's tasks must be destroyed before it.
#pragma once

#include <crosstown/detail/core_key.hpp>
#include <crosstown/executor.hpp>
#include <crosstown/lane.hpp>
#include <crosstown/metrics.hpp>
#include <crosstown/thread_pool.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

namespace crosstown {

namespace detail {
class ledger;
class io_runtime;
struct hook_gate;
}  // namespace detail

class awaitable_executor;
class task_clock;

struct runtime_options {
  /// Pool threads; 0 means `std::thread::hardware_concurrency()` (at least 1).
  std::size_t threads = 0;
  /// Most unfinished tasks (queued or running) the pool holds; 0 means
  /// `default_capacity_per_thread` (8192) x pool threads; `crosstown::unbounded` for no limit.
  std::size_t queue_capacity = 0;
  /// What the pool does with tasks beyond `queue_capacity` (see thread_pool.hpp; `block` is
  /// refused on a thread marked by `io_thread_guard`).
  overflow_policy overflow = overflow_policy::reject;
  /// Niceness of the pool's workers, 0-19 (see thread_pool_options::nice): raise it so that
  /// deferred work yields the CPU to the threads serving requests (README, "Priority").
  int worker_nice = 0;
  /// Run the pool's workers in the lowest scheduling class (SCHED_IDLE on Linux; see
  /// thread_pool_options::lowest_priority). Supersedes `worker_nice`.
  bool worker_lowest_priority = false;
  /// Called when a task throws. Empty: a line on stderr.
  std::function<void(const task_failure&)> on_error{};
  /// Called when a task is lost: rejected (by overflow, a lane or a throwing executor), dropped
  /// (at shutdown or for lack of memory), or abandoned running at the shutdown deadline. Empty:
  /// a line on stderr.
  std::function<void(const task_info&, task_state)> on_lost{};
  /// Called once for every task when it reaches its terminal state (any of `terminal_states`), for
  /// tracing and tests. Called with no crosstown lock held: it may call into the scope.
  /// Empty: nothing.
  std::function<void(const task_info&, task_state)> on_settled{};
  /// How long the destructor lets queued work run before dropping it; empty: no limit.
  std::optional<std::chrono::steady_clock::duration> shutdown_timeout{};
  /// Awaitable tasks (awaitable_task.hpp): threads of the runtime's own io_context, started
  /// with the first awaitable task or blocking timeout; 0 means 1.
  std::size_t io_threads = 1;
  /// Run awaitable tasks on this executor instead of the runtime's io_context (non-owning; see
  /// awaitable_task.hpp for shutdown). Null: the runtime's own.
  awaitable_executor* io_executor = nullptr;
  /// The clock of timeouts, retry backoffs and lane waits (non-owning). Null: steady clock.
  task_clock* clock = nullptr;
};

class runtime {
 public:
  using clock = std::chrono::steady_clock;

  explicit runtime(runtime_options options = {});
  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;
  ~runtime();

  /// The runtime's pool, the executor of tasks that name none.
  thread_pool& pool() noexcept { return *pool_; }

  /// Counters and gauges now.
  metrics_snapshot metrics() const;

  /// The lane `name` (lane.hpp), made with `options` the first time; the same name with other
  /// options throws std::invalid_argument, as do a name outside [A-Za-z0-9_.:-]{1,64},
  /// `max_in_flight` 0 or `capacity` 0.
  crosstown::lane lane(std::string_view name, lane_options options = {});
  /// Every lane's counters, in name order.
  std::vector<lane_snapshot> lane_metrics() const;
  /// Internal: the I/O side (awaitable tasks, lanes), for crosstown's own code.
  detail::io_runtime& io(detail::core_key) noexcept { return *io_; }

  /// Admission check: false when the runtime cannot take more work - its pool is shut down,
  /// or bounded and holding `queue_capacity` unfinished tasks (queued or running). A server
  /// asks before its handler defers and answers 503 with Retry-After instead of piling up
  /// work it would have to reject. Lock-free; advisory (a batch handed over right after
  /// `true` may still meet the overflow policy).
  bool accepting() const noexcept { return pool_->accepting(); }
  /// How full the pool is, 0..1: unfinished pool tasks / `queue_capacity`, clamped at 1; 1
  /// once shut down; 0 for an unbounded pool that is running. For shedding load gradually
  /// (say, refuse optional work above 0.8). Lock-free. The pool counts a task until its
  /// worker is done with it, a moment after `drain` saw it finish (`pool().drain` waits for
  /// that too).
  double pressure() const noexcept;

  /// Waits until no task of this runtime is queued or running on any executor, or until
  /// `deadline`. Tasks still waiting for their phase in live scopes are not waited for.
  drain_report drain(clock::time_point deadline);
  drain_report drain_for(clock::duration timeout) { return drain(clock::now() + timeout); }

  /// Stops the pool: see `thread_pool::shutdown`. Later hand-offs to the pool are dropped.
  drain_report shutdown(clock::time_point deadline);

  /// Test seam: while set, every task released by this runtime's scopes goes to `target`,
  /// whatever its options name (`same_thread` included) - e.g. an inline executor to run
  /// deferred work synchronously in a test, or a manual one to step it. The status and
  /// delivery rules still apply. An empty ref restores normal routing. Thread-safe; tasks
  /// already handed over are not moved. See crosstown::testkit for RAII wrappers.
  void redirect_all_to(executor_ref target) noexcept {
    redirect_.store(target.get(), std::memory_order_release);
  }
  /// The current redirection, or null.
  executor* redirected_to() const noexcept { return redirect_.load(std::memory_order_acquire); }

  /// Internal: the accounting shared with jobs (callable by crosstown's scopes only).
  detail::ledger& ledger(detail::core_key) noexcept { return *ledger_; }
  /// The id of the last response scope created on this runtime (0: none yet). Ids are 1, 2,
  /// ... in creation order, as `response_scope::id()` shows, so a tool that reads this before
  /// and after some code ran knows which scopes that code created (the simulator does so after
  /// every step). Lock-free.
  std::uint64_t last_request_id() const noexcept {
    return next_request_id_.load(std::memory_order_relaxed) - 1;
  }
  /// Internal: next request id (callable by crosstown's scopes only).
  std::uint64_t next_request_id(detail::core_key) noexcept {
    return next_request_id_.fetch_add(1, std::memory_order_relaxed);
  }

 private:
  std::optional<clock::duration> shutdown_timeout_;
  std::shared_ptr<detail::hook_gate> hooks_;  // stops the hooks at destruction (runtime.cpp)
  // Shared with the pool: a worker abandoned at shutdown keeps it alive while its task ends.
  std::shared_ptr<detail::ledger> ledger_;  // declared before pool_: outlives its jobs
  std::unique_ptr<thread_pool> pool_;
  std::atomic<std::uint64_t> next_request_id_{1};
  std::atomic<executor*> redirect_{nullptr};
  // Awaitable tasks and lanes. Declared after ledger_ and pool_: destroyed first, its
  // coroutines settling their jobs while both still exist.
  std::unique_ptr<detail::io_runtime> io_;
};

}  // namespace crosstown
