// crosstown/sim/sim_executor.hpp - a thread pool made of simulated workers.
//
// A `crosstown::executor` whose `execute` queues the batch's jobs (FIFO, as the real pool
// does) and whose `workers` simulated workers take them as scheduler work items: a worker
// picks the oldest job, runs it (on the simulation's thread - no real threads), and is busy
// for a virtual duration drawn from its generator. So the scheduler's strategy, not the OS,
// decides how pool work interleaves with handler steps and transport events.
//
// Every released job is reported to the oracle (if any); a test-only `drop_every` makes the
// executor destroy every n-th job instead of running it - a planted bug for the mutation
// checks (the core then counts it as dropped; the oracle must notice that it never ran).
// Destroying the executor drops queued jobs (counted `dropped_at_shutdown`). Not thread-safe.
#pragma once

#include <crosstown/sim/journal.hpp>
#include <crosstown/sim/scheduler.hpp>

#include <crosstown/executor.hpp>

#include <cstdint>
#include <vector>

namespace crosstown::sim {

class oracle;

struct sim_executor_options {
  std::uint32_t workers = 4;
  duration min_cost{std::chrono::microseconds(1)};
  duration max_cost{std::chrono::microseconds(500)};
  /// Test-only planted bug: destroy every n-th job instead of queueing it (0: never).
  std::uint32_t drop_every = 0;
  /// Actor ids of the workers start here (for PCT).
  actor_id first_actor = 1U << 20U;
};

class sim_executor final : public executor {
 public:
  sim_executor(scheduler& sched, rng& costs, sim_executor_options options = {},
               oracle* observer = nullptr);
  sim_executor(const sim_executor&) = delete;
  sim_executor& operator=(const sim_executor&) = delete;
  ~sim_executor() override;

  void execute(job_batch batch) override;

  /// Jobs queued, not yet taken by a worker.
  std::size_t queued() const noexcept { return queue_.size() - head_; }
  /// Workers busy (taking or running a job).
  std::size_t busy() const noexcept;
  std::uint64_t handoffs() const noexcept { return handoffs_; }

 private:
  void dispatch();
  void take(std::uint32_t worker);

  scheduler& sched_;
  rng& costs_;
  sim_executor_options options_;
  oracle* observer_;
  // FIFO: jobs from head_ on are queued; the ones before it were taken (moved from). A
  // vector reused run after run, where a deque would allocate a block every few jobs.
  std::vector<job> queue_;
  std::size_t head_ = 0;
  std::vector<bool> busy_;
  std::uint64_t handoffs_ = 0;
  std::uint64_t jobs_seen_ = 0;
};

}  // namespace crosstown::sim
