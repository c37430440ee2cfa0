#include "driver.hpp"

#include <algorithm>
#include <utility>

namespace crosstown::sim::detail {

fault_dice::fault_dice(std::uint64_t seed, double run_rate, double hit_rate,
                       std::function<void(std::string_view)> on_fire, journal* log)
    : rng_(seed, 3, log), on_fire_(std::move(on_fire)), hit_rate_(hit_rate) {
  armed_ = rng_.chance(run_rate);
}

bool fault_dice::should_fail(std::string_view site) noexcept {
  try {
    fault_counts& c = counts_[std::string(site)];
    ++c.hits;
    if (!armed_ || healed_ || !rng_.chance(hit_rate_)) return false;
    ++c.fired;
    if (on_fire_) on_fire_(site);
  } catch (...) {
    return false;
  }
  return true;
}

std::uint64_t run_phases(scheduler& sched, virtual_time& time, const phase_limits& limits,
                         const std::function<void()>& heal,
                         const std::function<void(const run_outcome&)>& on_cap) {
  // The heal happens at a fixed virtual horizon, never earlier when there is less deferred
  // work: healing earlier would move response times and fake an I7 violation.
  const time_point horizon = time.now() + limits.fault_horizon;
  const run_outcome first = sched.run(limits.step_cap, horizon);
  std::uint64_t steps = first.steps;
  if (first.capped) {
    on_cap(first);
    return steps;
  }
  if (time.now() < horizon) time.advance(horizon - time.now());
  heal();
  const run_outcome second = sched.run(limits.step_cap, time.now() + limits.liveness_budget);
  steps += second.steps;
  if (second.capped) on_cap(second);
  return steps;
}

std::string cap_message(std::uint64_t step_cap, const run_outcome& o, std::string_view what) {
  std::string names;
  for (std::size_t i = 0; i < o.live.size() && i < 3; ++i)
    names += (i == 0 ? "" : ", ") + o.live[i];
  return "step cap of " + std::to_string(step_cap) + " reached; " + std::string(what) + ": " +
         names;
}

std::optional<violation> no_drag_violation(const completion_map& with,
                                           const completion_map& without,
                                           std::string_view connection_word, std::string_view work,
                                           std::size_t event_index) {
  auto show = [](std::int64_t t) {
    if (t == 0) return std::string("never");
    return t > 0 ? "delivered at " + std::to_string(t) + "ns"
                 : "failed at " + std::to_string(-t - 1) + "ns";
  };
  for (const auto& [key, with_time] : with) {
    auto it = without.find(key);
    const std::int64_t other = it == without.end() ? 0 : it->second;
    if (other == with_time) continue;
    return violation{"I7 no drag",
                     "response " + std::to_string(key.second) + " " + std::string(connection_word) +
                         " connection " + std::to_string(key.first) + ": " + show(with_time) +
                         " with its " + std::string(work) + ", " + show(other) + " without",
                     event_index};
  }
  return std::nullopt;
}

std::string story_of(const std::vector<event>& trace, const std::optional<violation>& first,
                     std::size_t max_events) {
  std::string out;
  if (!first) return out;
  const std::size_t end = std::min(first->event_index + 1, trace.size());
  const std::size_t begin = end > max_events ? end - max_events : 0;
  if (begin > 0) out += "  ... " + std::to_string(begin) + " earlier events\n";
  for (std::size_t i = begin; i < end; ++i) out += "  " + describe(trace[i]) + "\n";
  out += "  >>> " + first->invariant + ": " + first->message + "\n";
  return out;
}

}  // namespace crosstown::sim::detail
