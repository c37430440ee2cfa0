// crosstown/metrics.hpp - task states and the runtime's counters.
//
// Every task registered with a response scope ends in exactly one terminal state
// (invariant I6): it ran, it failed (threw), it timed out (an awaitable task past its
// timeout), it was skipped by the response status, skipped because delivery failed,
// cancelled (by name, or replaced by a later task of the same name), rejected by a full queue
// or lane, dropped at shutdown, dropped because crosstown could not allocate what releasing
// it needed, or rejected by an executor whose `execute` threw. `metrics_snapshot` reads the
// runtime's counters; once the runtime is drained, `registered` equals the sum of the
// terminal counters.
//
// A snapshot is taken counter by counter with relaxed loads, so while tasks are moving the
// figures may be a few tasks apart; after `runtime::drain` returns complete they add up.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace crosstown {

/// Where a task is in its life. `ran` and every state after it are terminal.
enum class task_state : std::uint8_t {
  pending,  ///< registered, waiting for its phase
  queued,   ///< handed to an executor, not started
  running,  ///< running now
  ran,      ///< returned normally
  failed,   ///< threw; reported to the runtime's error hook
  /// an awaitable task's last attempt ran past its timeout and was cancelled; reported to the
  /// error hook (awaitable_task.hpp)
  timed_out,
  skipped_by_status,     ///< the response status was in the task's no-go set
  skipped_by_delivery,   ///< `require_delivery` and the response was not delivered
  cancelled,             ///< cancelled by name, or replaced by a later task of the same name
  rejected_by_overflow,  ///< the pool's queue was full and the overflow policy is `reject`
  dropped_at_shutdown,   ///< still queued when the runtime (or its executor) shut down
  /// crosstown could not allocate what releasing the task needed (its batch, the connection's
  /// list); reported to `on_lost`. Registration itself throws std::bad_alloc instead.
  dropped_out_of_memory,
  /// the executor's `execute` threw while the task was in its batch; reported to `on_lost`
  rejected_by_executor,
};

/// Name of a state, e.g. "skipped_by_status".
std::string_view to_string(task_state state) noexcept;
std::ostream& operator<<(std::ostream& out, task_state state);

/// The last state of the enumeration. A new terminal state is added to `task_state` (before
/// this line, after `ran`) and to `to_string`; every count, report and exposition derives
/// from the enumeration.
inline constexpr task_state last_task_state = task_state::rejected_by_executor;

/// True for the terminal states (`ran` and after).
constexpr bool is_terminal(task_state state) noexcept { return state >= task_state::ran; }

/// How many terminal states there are.
inline constexpr std::size_t terminal_state_count =
    static_cast<std::size_t>(last_task_state) - static_cast<std::size_t>(task_state::ran) + 1;

/// The terminal states, in enumeration order.
inline constexpr std::array<task_state, terminal_state_count> terminal_states = [] {
  std::array<task_state, terminal_state_count> out{};
  for (std::size_t i = 0; i < terminal_state_count; ++i) {
    out[i] = static_cast<task_state>(static_cast<std::size_t>(task_state::ran) + i);
  }
  return out;
}();

/// The runtime's counters at one moment.
struct metrics_snapshot {
  std::uint64_t registered = 0;  ///< tasks deferred on scopes of this runtime
  /// Tasks that reached each terminal state, indexed as `terminal_states`; read with `count`.
  std::array<std::uint64_t, terminal_state_count> terminal_counts{};
  std::uint64_t queued = 0;            ///< handed to an executor, not started (gauge)
  std::uint64_t in_flight = 0;         ///< running now (gauge)
  std::uint64_t pool_queue_depth = 0;  ///< tasks waiting in the runtime's own pool (gauge)
  std::uint64_t retries = 0;   ///< attempts of awaitable tasks beyond their first (retry.hpp)
  std::uint64_t overruns = 0;  ///< blocking tasks still running at their timeout

  /// Tasks now in `state`: the counter of a terminal state; for `queued` and `running` the
  /// gauges; for `pending`, the tasks registered and neither queued, running nor terminal.
  constexpr std::uint64_t count(task_state state) const noexcept {
    if (is_terminal(state)) return terminal_counts[terminal_slot(state)];
    if (state == task_state::queued) return queued;
    if (state == task_state::running) return in_flight;
    const std::uint64_t moving = queued + in_flight;
    return unfinished() > moving ? unfinished() - moving : 0;
  }
  /// The counter of a terminal state, writable (for tools that sum snapshots).
  constexpr std::uint64_t& terminal_count(task_state state) noexcept {
    return terminal_counts[terminal_slot(state)];
  }
  /// Sum of the terminal counters.
  constexpr std::uint64_t terminal() const noexcept {
    std::uint64_t total = 0;
    for (std::uint64_t n : terminal_counts) total += n;
    return total;
  }
  /// Tasks registered but not yet in a terminal state (pending in scopes, queued or running).
  constexpr std::uint64_t unfinished() const noexcept { return registered - terminal(); }

  /// Adds another snapshot's counters and gauges (for summing runs or runtimes).
  constexpr metrics_snapshot& operator+=(const metrics_snapshot& other) noexcept {
    registered += other.registered;
    for (std::size_t i = 0; i < terminal_state_count; ++i) {
      terminal_counts[i] += other.terminal_counts[i];
    }
    queued += other.queued;
    in_flight += other.in_flight;
    pool_queue_depth += other.pool_queue_depth;
    retries += other.retries;
    overruns += other.overruns;
    return *this;
  }

  /// Index of a terminal state in `terminal_counts`.
  static constexpr std::size_t terminal_slot(task_state state) noexcept {
    return static_cast<std::size_t>(state) - static_cast<std::size_t>(task_state::ran);
  }

  friend bool operator==(const metrics_snapshot&, const metrics_snapshot&) = default;
};

/// `registered=5 ran=3 failed=0 ... queued=1 in_flight=1 pool_queue_depth=1`: every counter
/// and gauge, terminal states in enumeration order.
std::ostream& operator<<(std::ostream& out, const metrics_snapshot& m);

/// The snapshot in Prometheus text exposition format (0.0.4): `<prefix>_tasks_registered_total`,
/// `<prefix>_tasks_total{state="..."}` for each terminal state, and the gauges
/// `<prefix>_tasks_queued`, `<prefix>_tasks_in_flight`, `<prefix>_pool_queue_depth`, and the
/// counters `<prefix>_task_retries_total`, `<prefix>_task_overruns_total`, each with its HELP
/// and TYPE lines. Lanes: the overload in lane.hpp.
std::string to_prometheus(const metrics_snapshot& m, std::string_view prefix = "crosstown");

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
