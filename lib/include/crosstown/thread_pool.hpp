// crosstown/thread_pool.hpp - the default executor: a fixed pool of worker threads.
//
// A response's tasks arrive as one batch and enter the queue in one operation (one lock, one
// wake-up), yet run in parallel: idle workers each claim a slice of the batch at the front of
// the queue. Slices shrink as the batch empties (guided scheduling: a worker takes about
// 1/(2 x threads) of what is left), so short tasks cost little locking and long tasks still
// spread across workers. Jobs leave the queue in the order they entered it.
//
// Capacity. With `capacity > 0` the pool holds at most that many unfinished tasks (queued or
// being worked on). A batch that does not fit is partly queued and the rest handled by the
// overflow policy: `block` waits for room (a pool worker never blocks on its own pool: it runs
// the overflow itself, to avoid deadlock), `reject` rejects the rest (counted
// `rejected_by_overflow` and reported), `run_on_caller` runs the rest on the calling thread.
//
// Workers start with the first batch: a pool that is never handed work (a runtime whose tasks
// all go elsewhere, as in the simulator) never starts a thread. On Linux they are named
// "crosstown-pool" (top -H, gdb, perf show it).
//
// A task that throws is caught by `job::run`: the worker survives and carries on with the next.
// Thread-safe. The destructor finishes all queued work before joining; use `shutdown` with a
// deadline to bound that.
#pragma once

#include <crosstown/executor.hpp>
#include <crosstown/metrics.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace crosstown {

/// What to do with tasks that do not fit a bounded queue.
enum class overflow_policy : std::uint8_t {
  block,          ///< wait for room
  reject,         ///< count them `rejected_by_overflow` and report them
  run_on_caller,  ///< run them on the thread handing them over
};

struct thread_pool_options {
  /// Worker threads; 0 means `std::thread::hardware_concurrency()` (at least 1).
  std::size_t threads = 0;
  /// Most unfinished tasks the pool holds; 0 means unbounded.
  std::size_t capacity = 0;
  overflow_policy overflow = overflow_policy::block;
  /// Niceness the workers add to the process's (0-19; Linux, elsewhere ignored). Deferred
  /// work competes for the CPU with the threads serving requests; at 10 a busy worker gets
  /// about a tenth of a core the server wants. 0: the workers run like the process. Outside
  /// 0-19 the constructor throws std::invalid_argument.
  int nice = 0;
};

class thread_pool final : public executor {
 public:
  using clock = std::chrono::steady_clock;

  explicit thread_pool(thread_pool_options options = {});
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;
  /// Runs everything still queued, then joins the workers.
  ~thread_pool() override;

  void execute(job_batch batch) override;

  /// Waits until no task is queued or running, or until `deadline`.
  drain_report drain(clock::time_point deadline);
  /// Stops accepting work (later batches are dropped and counted), waits until `deadline` for
  /// queued work, drops what is still queued, waits for running tasks and joins the workers.
  /// The report names what was dropped or still running at the deadline. Idempotent.
  drain_report shutdown(clock::time_point deadline);

  /// Worker threads the pool runs (once it has been handed work).
  std::size_t thread_count() const noexcept { return options_.threads; }
  /// Tasks queued and not yet claimed by a worker.
  std::size_t queue_depth() const;
  /// Most unfinished tasks the pool holds; 0: unbounded.
  std::size_t capacity() const noexcept { return options_.capacity; }
  /// Tasks handed over and not finished (queued, claimed or running). Lock-free; exact only
  /// while no batch is moving.
  std::size_t unfinished() const noexcept { return held_.load(std::memory_order_relaxed); }
  /// False once the pool cannot take another task without its overflow policy: it is shut
  /// down, or bounded and holding `capacity()` unfinished tasks. Lock-free, for an admission
  /// check (a server answers 503 before its handler defers); a batch handed over right after
  /// `true` may still overflow.
  bool accepting() const noexcept;
  /// True on one of this pool's worker threads.
  bool on_worker_thread() const noexcept;

 private:
  struct segment {
    job_batch jobs;
    std::size_t next = 0;
  };
  // A worker's claimed slice. `chunk` changes only under `mutex` (at claim and at the end of
  // the slice); while the worker runs it, `next` advances with release stores, so a report
  // taken under `mutex` can name the unfinished jobs without a lock per job.
  struct worker_slot {
    std::mutex mutex;
    job_batch chunk;                   // resized under mutex
    std::atomic<std::size_t> next{0};  // first job of chunk not finished
    std::atomic<bool> abandon{false};  // set at a shutdown deadline
  };

  void work(worker_slot& slot);
  void start_locked();
  bool idle_locked() const noexcept { return queued_ == 0 && claimed_ == 0; }
  drain_report report_locked(bool complete);
  std::size_t room_locked() const noexcept;

  const thread_pool_options options_;
  mutable std::mutex mutex_;
  std::condition_variable work_cv_;   // queue became non-empty, or stopping
  std::condition_variable room_cv_;   // capacity freed
  std::condition_variable idle_cv_;   // queued_ and claimed_ reached zero
  std::deque<segment> queue_;         // guarded by mutex_
  std::size_t queued_ = 0;            // jobs in queue_; guarded by mutex_
  std::size_t claimed_ = 0;           // jobs in worker chunks; guarded by mutex_
  bool accepting_ = true;             // guarded by mutex_
  std::atomic<bool> open_{true};      // accepting_, readable without the lock
  std::atomic<std::size_t> held_{0};  // queued_ + claimed_, readable without the lock
  bool stopping_ = false;             // workers exit when the queue is empty; guarded by mutex_
  bool started_ = false;              // workers_ were started; guarded by mutex_
  std::vector<std::unique_ptr<worker_slot>> slots_;
  std::vector<std::thread> workers_;  // grows only under mutex_ while accepting_
  std::once_flag joined_;
  drain_report shutdown_report_;  // written once under joined_
};

}  // namespace crosstown
