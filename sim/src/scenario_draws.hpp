// sim/src/scenario_draws.hpp - not API. What a built-in scenario's handler draws for one
// request (scenario_server.cpp): every choice drawn up front, in one order, from the
// connection's own stream, so a run with and without deferred work (I7) draws the same.
#pragma once

#include <crosstown/sim/journal.hpp>
#include <crosstown/sim/simulation.hpp>

#include <crosstown/defer_options.hpp>
#include <crosstown/status_set.hpp>

#include <array>
#include <cstdint>
#include <vector>

namespace crosstown::sim::detail {

// The no-go sets handlers pick from (the first is the default).
inline const std::array<status_set, 5>& no_go_choices() {
  static const std::array<status_set, 5> sets{status_set("4xx,5xx"), status_set("5xx"),
                                              status_set("4xx"), status_set("404,500-503"),
                                              status_set("3xx,5xx")};
  return sets;
}

// A task the handler will defer, as drawn (compact: the no-go set and the name are only
// materialized when the task is actually deferred, which a run without deferred work skips).
struct planned_task {
  std::int32_t no_go = 0;  // index into no_go_choices(), or -1 for status_set::none()
  std::int64_t name = -1;  // "call-<name>", or -1: unnamed
  task_phase phase = task_phase::response_sent;
  bool same_thread = false;
  bool always = false;
  bool require_delivery = false;
  bool throws = false;

  status_set no_go_set() const {
    return no_go < 0 ? status_set::none() : no_go_choices()[static_cast<std::size_t>(no_go)];
  }
};

// One request's choices.
struct planned_response {
  std::vector<planned_task> tasks;
  int status = 200;
  std::uint64_t header_bytes = 0;
  std::uint64_t body_bytes = 0;
};

// Draws everything at once from the handler's stream, so a run without deferred work draws
// exactly the same numbers (I7).
inline planned_response draw_response(rng& h, const scenario& s) {
  planned_response out;
  const auto n = static_cast<std::uint32_t>(h.between(s.min_tasks, s.max_tasks));
  out.tasks.reserve(n);
  for (std::uint32_t i = 0; i < n; ++i) {
    planned_task t;
    t.same_thread = h.chance(s.same_thread_rate);
    t.no_go = static_cast<std::int32_t>(h.below(no_go_choices().size()));
    if (h.chance(0.05)) t.no_go = -1;
    t.always = h.chance(s.always_rate);
    t.require_delivery = h.chance(s.require_delivery_rate);
    if (h.chance(s.named_rate)) t.name = static_cast<std::int64_t>(h.below(s.distinct_names));
    if (h.chance(s.headers_phase_rate)) {
      t.phase = task_phase::headers_sent;
    } else if (h.chance(s.connection_phase_rate)) {
      t.phase = task_phase::connection_closed;
    }
    t.throws = h.chance(s.throw_rate);
    out.tasks.push_back(t);
  }
  out.status = s.statuses.empty() ? 200 : s.statuses[h.below(s.statuses.size())];
  out.header_bytes =
      static_cast<std::uint64_t>(h.between(static_cast<std::int64_t>(s.min_header_bytes),
                                           static_cast<std::int64_t>(s.max_header_bytes)));
  out.body_bytes = static_cast<std::uint64_t>(h.between(
      static_cast<std::int64_t>(s.min_body_bytes), static_cast<std::int64_t>(s.max_body_bytes)));
  return out;
}

}  // namespace crosstown::sim::detail
