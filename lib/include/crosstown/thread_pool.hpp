// crosstown/thread_pool.hpp - the default executor: a fixed pool of worker threads.
//
// Hand-off. A response's tasks arrive as one batch and enter the queue in one lock-free
// operation (a push onto the pool's inbox, then one wake-up if a worker sleeps): the thread
// handing over - an I/O thread - never waits for a lock a worker holds, so a worker preempted
// at low priority cannot delay the next hand-off. Workers take ONE task at a time from the
// front of the queue, so tasks start in the order they entered, an idle worker never waits
// while another worker is busy, and every task not started is counted by `queue_depth`. (The
// workers share a lock among themselves to take tasks; the hand-off never takes it.)
//
// Capacity. The pool holds at most `capacity` unfinished tasks (queued or running); by
// default `default_capacity_per_thread` per worker thread. A batch that does not fit is partly
// queued and the rest handled by the overflow policy: `reject` (the default) rejects the rest,
// counted `rejected_by_overflow` and reported; `run_on_caller` runs it on the calling thread;
// `block` waits for room - except on a pool worker (which runs the rest itself: waiting on its
// own pool could deadlock) and on a thread marked as an I/O thread by `io_thread_guard`, where
// blocking would stall every connection of that thread: there the rest is rejected, counted in
// `io_thread_refusals` and named on stderr once per pool (see `io_thread_guard`).
//
// Priority. `nice` lowers the workers' priority by that much; `lowest_priority` puts them in
// the lowest scheduling class (Linux: SCHED_IDLE; elsewhere nice 19) so that deferred work
// runs on CPU time the serving threads leave over.
//
// Workers start with the first batch: a pool that is never handed work (a runtime whose tasks
// all go elsewhere, as in the simulator) never starts a thread. On Linux they are named
// "crosstown-pool" (top -H, gdb, perf show it).
//
// Shutdown. The destructor finishes all queued work before joining. `shutdown(deadline)`
// bounds that: at the deadline what is still queued is dropped (counted, reported), and a
// worker still running a task `abandon_grace` after the deadline is abandoned - its thread is
// detached and finishes that task on its own (a blocking task cannot be stopped), counting
// its outcome in state the thread keeps alive; the report names the task. A task that throws
// is caught by `job::run`: the worker survives and carries on with the next. Thread-safe.
#pragma once

#include <crosstown/executor.hpp>
#include <crosstown/metrics.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace crosstown {

/// What to do with tasks that do not fit a bounded pool.
enum class overflow_policy : std::uint8_t {
  block,          ///< wait for room (never on a pool worker or an I/O thread: see thread_pool)
  reject,         ///< count them `rejected_by_overflow` and report them
  run_on_caller,  ///< run them on the thread handing them over
};

/// `capacity` for a pool that holds any number of tasks (memory is then unbounded).
inline constexpr std::size_t unbounded = std::numeric_limits<std::size_t>::max();
/// Default capacity, per worker thread: 8192 tasks (about 1 MiB of small closures each).
inline constexpr std::size_t default_capacity_per_thread = 8192;

struct thread_pool_options {
  /// Worker threads; 0 means `std::thread::hardware_concurrency()` (at least 1).
  std::size_t threads = 0;
  /// Most unfinished tasks the pool holds; 0 means `default_capacity_per_thread` x threads;
  /// `crosstown::unbounded` for no limit.
  std::size_t capacity = 0;
  overflow_policy overflow = overflow_policy::reject;
  /// Niceness the workers add to the process's (0-19; Linux, elsewhere ignored). Deferred
  /// work competes for the CPU with the threads serving requests; at 10 a busy worker gets
  /// about a tenth of a core the server wants. 0: the workers run like the process. Outside
  /// 0-19 the constructor throws std::invalid_argument.
  int nice = 0;
  /// Run the workers in the lowest scheduling class: SCHED_IDLE on Linux (they get the CPU
  /// only when no normal thread wants it), nice 19 elsewhere or where SCHED_IDLE is refused.
  /// Supersedes `nice`.
  bool lowest_priority = false;
};

/// Marks the current thread as an I/O thread (one that runs an event loop serving
/// connections) for as long as it lives: a `block` overflow handed over on it is refused
/// (the excess is rejected) instead of stalling the event loop. An adapter or the code that
/// calls `io_context::run()` creates one on each I/O thread. Nests; not movable.
class io_thread_guard {
 public:
  io_thread_guard() noexcept;
  ~io_thread_guard();
  io_thread_guard(const io_thread_guard&) = delete;
  io_thread_guard& operator=(const io_thread_guard&) = delete;
};

/// True on a thread marked by an `io_thread_guard`.
bool on_io_thread() noexcept;

class thread_pool final : public executor {
 public:
  using clock = std::chrono::steady_clock;
  /// How long after a shutdown deadline a worker may still finish its task before it is
  /// abandoned (see the top of this header).
  static constexpr clock::duration abandon_grace = std::chrono::milliseconds(100);

  explicit thread_pool(thread_pool_options options = {});
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;
  /// Runs everything still queued, then joins the workers.
  ~thread_pool() override;

  void execute(job_batch batch) override;

  /// Waits until no task is queued or running, or until `deadline`.
  drain_report drain(clock::time_point deadline);
  /// Stops accepting work (later batches are dropped and counted), waits until `deadline` for
  /// queued work, drops what is still queued, waits `abandon_grace` more for running tasks and
  /// abandons the workers still running one (see the top of this header). The report names
  /// what was dropped or still running at the deadline (`abandoned_workers` says how many
  /// were then abandoned). Idempotent: later calls return the first report.
  drain_report shutdown(clock::time_point deadline);

  /// Worker threads the pool runs (once it has been handed work).
  std::size_t thread_count() const noexcept;
  /// Tasks handed over and not started yet. Lock-free.
  std::size_t queue_depth() const noexcept;
  /// Most unfinished tasks the pool holds (`crosstown::unbounded`: no limit).
  std::size_t capacity() const noexcept;
  /// Tasks handed over and not finished (queued or running). Lock-free; exact only while no
  /// batch is moving.
  std::size_t unfinished() const noexcept;
  /// False once the pool cannot take another task without its overflow policy: it is shut
  /// down, or holding `capacity()` unfinished tasks. Lock-free, for an admission check (a
  /// server answers 503 before its handler defers); a batch handed over right after `true`
  /// may still overflow.
  bool accepting() const noexcept;
  /// Hand-offs whose `block` overflow was refused because they came from an I/O thread.
  std::uint64_t io_thread_refusals() const noexcept;
  /// Workers abandoned by `shutdown` at its deadline (still running a task then).
  std::size_t abandoned_workers() const noexcept;
  /// True on one of this pool's worker threads.
  bool on_worker_thread() const noexcept;

  /// Keeps `owner` alive until the pool's last thread is gone - an abandoned worker included -
  /// so that what its jobs report to (a runtime's accounting) outlives them.
  void keep_alive(std::shared_ptr<const void> owner);
  /// Called, without any lock of the pool, for each task a shutdown abandons (still running
  /// when its worker was abandoned). Set before the pool is handed work.
  void on_abandoned(std::function<void(const task_info&)> hook);

  /// Abandoned worker threads of all pools that have not finished yet (for tests).
  static std::size_t abandoned_threads_running() noexcept;

 private:
  struct state;
  std::shared_ptr<state> state_;
};

}  // namespace crosstown
