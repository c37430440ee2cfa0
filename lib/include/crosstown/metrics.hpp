// crosstown/metrics.hpp - task states and the runtime's counters.
//
// Every task registered with a response scope ends in exactly one terminal state
// (invariant I6): it ran, it failed (threw), it was skipped by the response status, skipped
// because delivery failed, cancelled (by name, or replaced by a later task of the same name),
// rejected by a full queue, or dropped at shutdown. `metrics_snapshot` reads the runtime's
// counters; once the runtime is drained, `registered` equals the sum of the terminal counters.
//
// A snapshot is taken counter by counter with relaxed loads, so while tasks are moving the
// figures may be a few tasks apart; after `runtime::drain` returns complete they add up.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace crosstown {

/// Where a task is in its life. The last seven are terminal.
enum class task_state : std::uint8_t {
  pending,               ///< registered, waiting for its phase
  queued,                ///< handed to an executor, not started
  running,               ///< running now
  ran,                   ///< returned normally
  failed,                ///< threw; reported to the runtime's error hook
  skipped_by_status,     ///< the response status was in the task's no-go set
  skipped_by_delivery,   ///< `require_delivery` and the response was not delivered
  cancelled,             ///< cancelled by name, or replaced by a later task of the same name
  rejected_by_overflow,  ///< the pool's queue was full and the overflow policy is `reject`
  dropped_at_shutdown,   ///< still queued when the runtime (or its executor) shut down
};

/// Name of a state, e.g. "skipped_by_status".
std::string_view to_string(task_state state) noexcept;
std::ostream& operator<<(std::ostream& out, task_state state);

/// True for the seven terminal states.
constexpr bool is_terminal(task_state state) noexcept {
  return state >= task_state::ran;
}

/// The runtime's counters at one moment.
struct metrics_snapshot {
  std::uint64_t registered = 0;  ///< tasks deferred on scopes of this runtime
  std::uint64_t ran = 0;
  std::uint64_t failed = 0;
  std::uint64_t skipped_by_status = 0;
  std::uint64_t skipped_by_delivery = 0;
  std::uint64_t cancelled = 0;
  std::uint64_t rejected_by_overflow = 0;
  std::uint64_t dropped_at_shutdown = 0;
  std::uint64_t queued = 0;     ///< handed to an executor, not started (gauge)
  std::uint64_t in_flight = 0;  ///< running now (gauge)
  std::uint64_t pool_queue_depth = 0;  ///< tasks waiting in the runtime's own pool (gauge)

  /// Sum of the seven terminal counters.
  constexpr std::uint64_t terminal() const noexcept {
    return ran + failed + skipped_by_status + skipped_by_delivery + cancelled +
           rejected_by_overflow + dropped_at_shutdown;
  }
  /// Tasks registered but not yet in a terminal state (pending in scopes, queued or running).
  constexpr std::uint64_t unfinished() const noexcept { return registered - terminal(); }

  friend bool operator==(const metrics_snapshot&, const metrics_snapshot&) = default;
};

std::ostream& operator<<(std::ostream& out, const metrics_snapshot& m);

/// What `drain` or `shutdown` found when it returned.
struct drain_report {
  bool complete = false;      ///< nothing was left queued or running
  std::uint64_t queued = 0;   ///< tasks still queued at the deadline (or dropped by shutdown)
  std::uint64_t running = 0;  ///< tasks still running at the deadline
  /// Descriptions of the unfinished tasks the pool could name (queued and running), in queue
  /// order; tasks held by other executors are counted above but not named.
  std::vector<std::string> unfinished;
};

std::ostream& operator<<(std::ostream& out, const drain_report& r);

}  // namespace crosstown
