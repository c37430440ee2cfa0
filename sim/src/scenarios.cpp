// The built-in scenarios and the names of the planted bugs (simulation.hpp).
#include <crosstown/sim/simulation.hpp>

#include <chrono>

namespace crosstown::sim {

std::string_view to_string(mutation m) noexcept {
  switch (m) {
    case mutation::none: return "none";
    case mutation::sent_at_headers: return "sent-at-headers";
    case mutation::status_200: return "status-200";
    case mutation::cross_release: return "cross-release";
    case mutation::drop_job: return "drop-job";
  }
  return "?";
}

std::optional<mutation> parse_mutation(std::string_view text) noexcept {
  for (auto m : {mutation::none, mutation::sent_at_headers, mutation::status_200,
                 mutation::cross_release, mutation::drop_job}) {
    if (text == to_string(m)) return m;
  }
  return std::nullopt;
}

std::vector<std::string> scenario_names() {
  return {"phone-calls", "slow-readers", "resets", "keep-alive"};
}

std::optional<scenario> scenario_by_name(std::string_view name) {
  using std::chrono::microseconds;
  scenario s;
  s.name = std::string(name);
  if (name == "phone-calls") {
    // 100 phone calls per request, mixed statuses: most tasks are judged by the status.
    s.connections = 8;
    s.requests = 16;
    s.min_tasks = s.max_tasks = 100;
    s.named_rate = 0.3;
    s.distinct_names = 60;
    s.cancel_rate = 0.3;
    s.same_thread_rate = 0.1;
  } else if (name == "slow-readers") {
    // Clients that read slowly or stop reading: writes block on a full window.
    s.connections = 4;
    s.requests = 12;
    s.min_body_bytes = 2000;
    s.max_body_bytes = 40000;
    s.link.window = 4096;
    s.link.ns_per_byte = 50;
    s.link.read_delay = microseconds(500);
    s.stall_rate = 0.7;
    s.stall_forever_rate = 0.4;
  } else if (name == "resets") {
    // Connections reset at a random byte, often in the middle of a body.
    s.connections = 6;
    s.requests = 18;
    s.min_body_bytes = 500;
    s.max_body_bytes = 8000;
    s.reset_rate = 0.7;
    s.require_delivery_rate = 0.4;
  } else if (name == "keep-alive") {
    // Pipelined requests on few connections; connection-phase tasks wait for the close.
    s.connections = 2;
    s.requests = 24;
    s.pipelined = true;
    s.max_tasks = 6;
    s.connection_phase_rate = 0.35;
    s.half_close_rate = 0.5;
    s.reset_rate = 0.1;
  } else {
    return std::nullopt;
  }
  return s;
}

}  // namespace crosstown::sim
