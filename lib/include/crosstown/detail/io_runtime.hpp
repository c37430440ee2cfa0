// crosstown/detail/io_runtime.hpp - not API. A runtime's I/O side: the executor awaitable
// tasks start on, the task clock, the lanes, and the counters of retries and overruns.
//
// Created with the runtime, it starts nothing: the owned io_context and its threads are made
// when the first awaitable task (or blocking timeout) needs them. Thread-safe. Locks: each
// lane's mutex guards that lane; `mutex_` guards the io_context, the redirection and the lane
// registry; `quiet_mutex_` only pairs with `quiet_cv_`. No user code runs under any of them.
#pragma once

#include <crosstown/awaitable_task.hpp>
#include <crosstown/detail/core_key.hpp>
#include <crosstown/detail/task_plan.hpp>
#include <crosstown/executor.hpp>
#include <crosstown/job.hpp>
#include <crosstown/lane.hpp>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace crosstown::detail {

class lane_state {
 public:
  lane_state(io_runtime& io, std::string name, lane_options options);
  lane_state(const lane_state&) = delete;
  lane_state& operator=(const lane_state&) = delete;

  /// The job reached the lane. True: it took a slot and starts now. False: the lane keeps it
  /// waiting, or rejected it (the lane is at capacity).
  bool arrive(job& work, task_plan& plan) noexcept;
  /// A task of the lane reached its terminal state; `held` if it had a slot.
  void settled(task_state state, bool held) noexcept;
  /// Drops every waiting task (shutdown).
  void drop_waiting() noexcept;
  bool quiet() const;
  lane_snapshot snapshot() const;

  const std::string& name() const noexcept { return name_; }
  const lane_options& options() const noexcept { return options_; }

 private:
  // Starts waiting jobs while slots are free; one thread at a time (a start may finish a task
  // inline and settle again: that call only frees its slot and returns).
  void pump(std::unique_lock<std::mutex>& lock) noexcept;

  io_runtime& io_;
  const std::string name_;
  const lane_options options_;
  mutable std::mutex mutex_;
  std::deque<job> waiting_;                                      // guarded by mutex_
  std::uint64_t in_flight_ = 0;                                  // guarded by mutex_
  std::uint64_t admitted_ = 0;                                   // guarded by mutex_
  std::uint64_t waited_ = 0;                                     // guarded by mutex_
  std::chrono::nanoseconds waited_time_{0};                      // guarded by mutex_
  std::array<std::uint64_t, terminal_state_count> completed_{};  // guarded by mutex_
  bool pumping_ = false;                                         // guarded by mutex_
};

class io_runtime {
 public:
  io_runtime(runtime& owner, std::size_t threads, awaitable_executor* external, task_clock* clock);
  io_runtime(const io_runtime&) = delete;
  io_runtime& operator=(const io_runtime&) = delete;
  ~io_runtime();

  static io_runtime& of(runtime& rt) noexcept;
  /// The plan of a job whose task carries one.
  static task_plan& plan_of(job& work) noexcept { return *work.fn_.plan(); }

  runtime& owner() noexcept { return owner_; }
  /// The executor awaitable tasks are handed to: runs each job at once (starting its
  /// coroutine), in hand-off order.
  executor& entry() noexcept { return entry_; }
  task_clock& clock() noexcept;

  /// Starts a planned job that may run now (admitted by its lane, or without one).
  void start(job&& work) noexcept;
  /// Hands a waiting blocking job, now admitted, back to its executor.
  void resume_blocking(job&& work) noexcept;

  lane_state& make_lane(std::string_view name, const lane_options& options);
  lane_state* find_lane(std::string_view name) const;
  std::vector<lane_snapshot> lane_snapshots() const;

  void count_retry() noexcept { retries_.fetch_add(1, std::memory_order_relaxed); }
  void count_overrun() noexcept { overruns_.fetch_add(1, std::memory_order_relaxed); }
  std::uint64_t retries() const noexcept { return retries_.load(std::memory_order_relaxed); }
  std::uint64_t overruns() const noexcept { return overruns_.load(std::memory_order_relaxed); }
  /// A deterministic draw in [0, 1) for backoff jitter.
  double jitter_unit() noexcept;

  void redirect(awaitable_executor* external, task_clock* clock);
  void refuse(bool refuse) noexcept { refusing_.store(refuse, std::memory_order_release); }
  bool stopping() const noexcept { return stopping_.load(std::memory_order_acquire); }

  /// Waits until no awaitable task runs and every lane is empty, or until `deadline`.
  bool wait_quiet(std::chrono::steady_clock::time_point deadline);
  /// Stops for good: later starts are dropped, lanes drop their waiting tasks, the owned
  /// io_context stops, its threads are joined and its suspended coroutines destroyed.
  void shutdown() noexcept;

  /// Something that `wait_quiet` waits for changed.
  void notify_quiet() noexcept;
  void coroutine_ended() noexcept;

 private:
  class entry_executor final : public executor {
   public:
    void execute(job_batch batch) override {
      for (job& j : batch) j.run();
    }
  };

  // The executor for a new coroutine: the redirection, else one of the owned io_contexts,
  // round robin (started here the first time). Throws if a thread cannot be started.
  // `one_thread`: set to whether that executor is run by a single thread (the runtime's own).
  boost::asio::any_io_executor spawn_executor(bool* one_thread = nullptr);
  void start_awaitable(job&& work) noexcept;
  void run_blocking(job&& work) noexcept;

  runtime& owner_;
  const std::size_t threads_;
  entry_executor entry_;
  steady_task_clock steady_;

  mutable std::mutex mutex_;
  awaitable_executor* external_;  // guarded by mutex_
  std::atomic<task_clock*> clock_;
  // One io_context per I/O thread, each run by its thread alone, made on first use: a task
  // lives on one context, so the timeout race needs no strand (see spawn_executor).
  std::vector<std::unique_ptr<boost::asio::io_context>> contexts_;  // guarded by mutex_
  std::vector<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>>
      work_;                                                               // guarded by mutex_
  std::vector<std::thread> pool_;                                          // guarded by mutex_
  std::size_t next_context_ = 0;                                           // guarded by mutex_
  std::map<std::string, std::unique_ptr<lane_state>, std::less<>> lanes_;  // mutex_

  std::atomic<std::uint64_t> live_{0};  // awaitable coroutines and overrun watches alive
  std::atomic<std::uint64_t> retries_{0};
  std::atomic<std::uint64_t> overruns_{0};
  std::atomic<std::uint64_t> draws_{0};
  std::atomic<bool> refusing_{false};
  std::atomic<bool> stopping_{false};
  std::mutex quiet_mutex_;
  std::condition_variable quiet_cv_;
};

}  // namespace crosstown::detail
