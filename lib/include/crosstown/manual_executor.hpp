// crosstown/manual_executor.hpp - an executor that only queues; the test decides when work runs.
//
// `execute` appends the batch to a FIFO queue. Nothing runs until the owner calls `run_one()`
// (the oldest job, on the calling thread) or `run_all()` (until the queue is empty, including
// jobs queued meanwhile). This is the executor for deterministic tests: no threads, no sleeps.
//
// Thread-safe: any thread may execute, run or inspect. Jobs run outside the internal lock, so
// a job may defer more work. Destroying the executor drops its queued jobs; each is counted as
// `dropped_at_shutdown` and reported, never lost silently.
#pragma once

#include <crosstown/executor.hpp>

#include <cstddef>
#include <deque>
#include <mutex>
#include <vector>

namespace crosstown {

class manual_executor final : public executor {
 public:
  manual_executor() = default;
  manual_executor(const manual_executor&) = delete;
  manual_executor& operator=(const manual_executor&) = delete;
  ~manual_executor() override;

  void execute(job_batch batch) override;

  /// Runs the oldest queued job on this thread. Returns false if the queue was empty.
  bool run_one();
  /// Runs jobs until the queue is empty. Returns how many ran.
  std::size_t run_all();
  /// Number of queued jobs.
  std::size_t pending() const;
  /// The queued jobs' descriptions, oldest first (for failure messages).
  std::vector<std::string> pending_tasks() const;
  /// Number of `execute` calls so far (hand-offs, not jobs).
  std::size_t handoffs() const;
  /// Drops every queued job (counted as `dropped_at_shutdown`). Returns how many.
  std::size_t drop_all();

 private:
  mutable std::mutex mutex_;
  std::deque<job> queue_;     // guarded by mutex_
  std::size_t handoffs_ = 0;  // guarded by mutex_
};

}  // namespace crosstown
