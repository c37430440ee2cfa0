// crosstown/lane.hpp - a named concurrency limit shared by every request of a runtime.
//
//     rt.lane("telephony", {.max_in_flight = 20, .capacity = 5'000});
//     scope.defer(place_call, {.lane = "telephony"});    // awaitable or blocking
//
// At most `max_in_flight` of a lane's tasks run at once, awaitable and blocking alike. A task
// that reaches the lane (its executor started it) while the lane is full waits there, in the
// order tasks reached it; it still counts as `queued`. When a task of the lane ends, the
// oldest waiting one starts: an awaitable on the runtime's I/O executor, a blocking one handed
// again to its executor (the runtime's pool by default). At most `capacity` tasks wait; one
// more is rejected - counted `rejected_by_overflow` (in the runtime's and the lane's
// counters) and reported to `on_lost`. The lane never blocks the thread handing it work (that
// thread may be an I/O thread), and running the excess on the caller would break the limit,
// so rejection is the one policy.
//
// A lane lives as long as its runtime. Creating a lane of an existing name returns it when the
// options are the same and throws std::invalid_argument otherwise. Thread-safe.
#pragma once

#include <crosstown/metrics.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace crosstown {

namespace detail {
class lane_state;
}

struct lane_options {
  /// Tasks of the lane running at once, at least 1.
  std::size_t max_in_flight = 1;
  /// Tasks that may wait for a slot; more are rejected. At least 1.
  std::size_t capacity = 10'000;
};

/// A lane's counters at one moment.
struct lane_snapshot {
  std::string name;
  lane_options options;
  std::uint64_t in_flight = 0;  ///< running now (gauge)
  std::uint64_t waiting = 0;    ///< waiting for a slot (gauge)
  std::uint64_t admitted = 0;   ///< tasks that got a slot
  std::uint64_t waited = 0;     ///< of those, tasks that had to wait for it
  /// Total time admitted tasks waited for a slot, on the runtime's task clock.
  std::chrono::nanoseconds waited_time{0};
  /// Tasks of the lane by terminal state, indexed as `terminal_states`.
  std::array<std::uint64_t, terminal_state_count> completed{};

  std::uint64_t count(task_state state) const noexcept {
    return is_terminal(state) ? completed[metrics_snapshot::terminal_slot(state)] : 0;
  }
};

/// A handle to a runtime's lane; cheap to copy, valid as long as the runtime.
class lane {
 public:
  explicit lane(detail::lane_state& state) noexcept : state_(&state) {}
  const std::string& name() const noexcept;
  const lane_options& options() const noexcept;
  lane_snapshot snapshot() const;

 private:
  detail::lane_state* state_;
};

/// The lanes' metrics in Prometheus text (appended after `to_prometheus(m)`'s): per lane
/// `<prefix>_lane_in_flight`, `_lane_waiting`, `_lane_max_in_flight`, `_lane_capacity`
/// (gauges), `_lane_admitted_total`, `_lane_waited_total`, `_lane_wait_seconds_total` and
/// `_lane_tasks_total{state}` (counters), each labelled `lane="<name>"`.
std::string to_prometheus(const metrics_snapshot& m, const std::vector<lane_snapshot>& lanes,
                          std::string_view prefix = "crosstown");

}  // namespace crosstown
