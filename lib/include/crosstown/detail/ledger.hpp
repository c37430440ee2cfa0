// crosstown/detail/ledger.hpp - not API. A runtime's accounting, shared with its jobs.
//
// Counters are relaxed atomics, sharded by thread (each thread adds to its own cache line;
// a snapshot sums the shards, wrapping arithmetic making gauges that rise on one thread and
// fall on another come out right). Each is exact on its own; a snapshot is consistent once
// activity has stopped (after `wait_idle`). `active_` counts tasks handed to an executor and
// not yet terminal; reaching zero wakes `wait_idle` (notified under `idle_mutex_`, so no
// wake-up is lost).
//
// Hooks (`on_error`, `on_lost`, `on_settled`) are called by whoever reports the state, never
// while a crosstown lock is held: scopes settle tasks after unlocking, executors run and drop
// jobs outside their locks.
//
// Why a job that is destroyed unrun counts as `dropped_at_shutdown` unless a `drop_reason` is
// active on the destroying thread: a job cannot tell why it is being destroyed, but the code
// that hands it over can. `drop_reason` marks a region of one thread (the hand-off to an
// executor, crosstown's own out-of-memory paths) so that those destructions count as what
// happened - `rejected_by_executor` when an executor's `execute` throws, `dropped_out_of_memory`
// when crosstown could not allocate - and are reported so to `on_lost`.
#pragma once

#include <crosstown/job.hpp>
#include <crosstown/metrics.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>

namespace crosstown::detail {

class ledger {
 public:
  using error_hook = std::function<void(const task_failure&)>;
  using lost_hook = std::function<void(const task_info&, task_state)>;
  using settled_hook = std::function<void(const task_info&, task_state)>;

  ledger(error_hook on_error, lost_hook on_lost, settled_hook on_settled = {});

  void registered(std::uint64_t n = 1) noexcept { add(mine().registered, n); }
  /// A pending task reached a terminal state without being handed over (skipped, cancelled).
  void settled_pending(task_state state, const task_info& info) noexcept {
    add(mine().terminal[slot(state)], 1);
    notify_settled(info, state);
  }
  /// `n` tasks are about to be handed to executors.
  void handed_off(std::uint64_t n) noexcept {
    add(mine().queued, n);
    add(active_, n);
  }
  /// A job starts running; `was_queued` when it had been counted by `handed_off`.
  void started(bool was_queued) noexcept {
    shard& s = mine();
    if (was_queued) {
      sub(s.queued, 1);
    } else {
      add(active_, 1);
    }
    add(s.in_flight, 1);
  }
  using origin = ledger_origin;
  /// A job reached a terminal state.
  void finished(task_state state, origin from, const task_info& info) noexcept;

  void report_failure(const task_failure& failure) noexcept;
  void report_lost(const task_info& info, task_state state) noexcept;
  /// A pending task that was never made a job ends as lost (`dropped_out_of_memory`): counted,
  /// reported to `on_settled` and `on_lost`.
  void settled_lost(task_state state, const task_info& info) noexcept {
    settled_pending(state, info);
    report_lost(info, state);
  }

  /// True when nothing is queued or running; false at `deadline`.
  bool wait_idle(std::chrono::steady_clock::time_point deadline);

  metrics_snapshot snapshot() const noexcept;

 private:
  static constexpr std::size_t slot(task_state s) noexcept {
    return metrics_snapshot::terminal_slot(s);
  }
  static void add(std::atomic<std::uint64_t>& c, std::uint64_t n) noexcept {
    c.fetch_add(n, std::memory_order_relaxed);
  }
  static void sub(std::atomic<std::uint64_t>& c, std::uint64_t n) noexcept {
    c.fetch_sub(n, std::memory_order_relaxed);
  }

  void notify_settled(const task_info& info, task_state state) noexcept;
  // `dropped_at_shutdown`, or what an active drop_reason of this thread says instead.
  task_state drop_state(task_state state) const noexcept;
  friend class drop_reason;

  struct alignas(64) shard {
    std::atomic<std::uint64_t> registered{0};
    std::array<std::atomic<std::uint64_t>, terminal_state_count> terminal{};
    std::atomic<std::uint64_t> queued{0};     // wraps per shard; the sum is the gauge
    std::atomic<std::uint64_t> in_flight{0};  // likewise
  };
  static constexpr std::size_t shard_count = 16;
  shard& mine() noexcept;

  error_hook on_error_;
  settled_hook on_settled_;
  lost_hook on_lost_;
  std::array<shard, shard_count> shards_{};
  alignas(64) std::atomic<std::uint64_t> active_{0};
  std::mutex idle_mutex_;
  std::condition_variable idle_cv_;
};

/// While alive, jobs of `l` destroyed unrun on this thread count as `state` instead of
/// `dropped_at_shutdown`. With `only_while_unwinding`, only those destroyed while an exception
/// thrown inside the region propagates (the batch an executor's `execute` threw out of), not
/// those an executor drops deliberately (a pool that has shut down). Nests; not movable.
class drop_reason {
 public:
  drop_reason(ledger& l, task_state state, bool only_while_unwinding) noexcept;
  drop_reason(const drop_reason&) = delete;
  drop_reason& operator=(const drop_reason&) = delete;
  ~drop_reason();

 private:
  friend class ledger;
  const ledger* ledger_;
  task_state state_;
  int unwinding_base_;  // std::uncaught_exceptions() at entry; -1: always applies
  drop_reason* outer_;
};

}  // namespace crosstown::detail
