// driver.hpp (private to crosstown::sim) - what every simulated run does the same way, whether
// it runs the built-in scenario (simulation.cpp) or an application's server (app_test.cpp):
//
//   - the two phases: a faulty phase up to a fixed virtual horizon, then the network heals and
//     everything must settle within the liveness budget, each phase bounded by the step cap;
//   - the I7 comparison of a run's completion times with those of the same seed run without
//     deferred work;
//   - the story of a violation: the trace events leading to it;
//   - the injection of the core's faults (`fault_dice`).
#pragma once

#include <crosstown/sim/oracle.hpp>
#include <crosstown/sim/scheduler.hpp>
#include <crosstown/sim/virtual_clock.hpp>

#include <crosstown/fault.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace crosstown::sim::detail {

/// Injects the core's faults, two-level: a run arms the fault sites with `run_rate`; an armed
/// site fires on each hit with `hit_rate`. `heal()` (the liveness phase) disarms everything.
/// `on_fire(site)` hears of every fault fired, before the core acts on it.
class fault_dice final : public fault::injector {
 public:
  fault_dice(std::uint64_t seed, double run_rate, double hit_rate,
             std::function<void(std::string_view)> on_fire, journal* log);

  bool should_fail(std::string_view site) noexcept override;
  void heal() noexcept { healed_ = true; }
  const std::map<std::string, fault_counts>& counts() const noexcept { return counts_; }

 private:
  rng rng_;
  std::function<void(std::string_view)> on_fire_;
  double hit_rate_;
  bool armed_ = false;
  bool healed_ = false;
  std::map<std::string, fault_counts> counts_;
};

struct phase_limits {
  std::uint64_t step_cap = 0;
  duration fault_horizon{};
  duration liveness_budget{};
};

/// Runs the faulty phase, then (unless it was capped) advances to the horizon, calls `heal`
/// and runs the liveness phase. `on_cap(outcome)` is called for each phase the step cap
/// stopped. Returns the steps taken.
std::uint64_t run_phases(scheduler& sched, virtual_time& time, const phase_limits& limits,
                         const std::function<void()>& heal,
                         const std::function<void(const run_outcome&)>& on_cap);

/// "step cap of N reached; <what>: a, b, c" (the first three live items).
std::string cap_message(std::uint64_t step_cap, const run_outcome& o, std::string_view what);

/// Completion times by (connection, response on it): the last byte's acceptance (positive),
/// or the failure (negated time - 1); absent: never.
using completion_map = std::map<std::pair<std::uint32_t, std::uint32_t>, std::int64_t>;

/// The first response that completed at a different virtual time without deferred work (I7),
/// with the trace index `event_index`; `connection_word` is "on" or "of", `work` names what
/// was dropped ("deferred tasks", "deferred work").
std::optional<violation> no_drag_violation(const completion_map& with,
                                           const completion_map& without,
                                           std::string_view connection_word, std::string_view work,
                                           std::size_t event_index);

/// The events leading to `first` (at most `max_events`), then the violation itself.
std::string story_of(const std::vector<event>& trace, const std::optional<violation>& first,
                     std::size_t max_events = 40);

}  // namespace crosstown::sim::detail
