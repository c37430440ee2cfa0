#include <crosstown/metrics.hpp>

#include <crosstown/defer_options.hpp>

#include <sstream>
#include <utility>

namespace crosstown {

std::string_view to_string(task_state state) noexcept {
  switch (state) {
    case task_state::pending: return "pending";
    case task_state::queued: return "queued";
    case task_state::running: return "running";
    case task_state::ran: return "ran";
    case task_state::failed: return "failed";
    case task_state::timed_out: return "timed_out";
    case task_state::skipped_by_status: return "skipped_by_status";
    case task_state::skipped_by_delivery: return "skipped_by_delivery";
    case task_state::cancelled: return "cancelled";
    case task_state::rejected_by_overflow: return "rejected_by_overflow";
    case task_state::dropped_at_shutdown: return "dropped_at_shutdown";
    case task_state::dropped_out_of_memory: return "dropped_out_of_memory";
    case task_state::rejected_by_executor: return "rejected_by_executor";
  }
  return "unknown";
}

std::ostream& operator<<(std::ostream& out, task_state state) { return out << to_string(state); }

std::string_view to_string(task_phase p) noexcept {
  switch (p) {
    case task_phase::headers_sent: return "headers_sent";
    case task_phase::response_sent: return "response_sent";
    case task_phase::connection_closed: return "connection_closed";
  }
  return "unknown";
}

std::ostream& operator<<(std::ostream& out, task_phase p) { return out << to_string(p); }

std::ostream& operator<<(std::ostream& out, const metrics_snapshot& m) {
  out << "registered=" << m.registered;
  for (task_state state : terminal_states) out << ' ' << state << '=' << m.count(state);
  return out << " queued=" << m.queued << " in_flight=" << m.in_flight
             << " pool_queue_depth=" << m.pool_queue_depth << " retries=" << m.retries
             << " overruns=" << m.overruns;
}

std::string to_prometheus(const metrics_snapshot& m, std::string_view prefix) {
  std::ostringstream out;
  auto metric = [&](std::string_view name, std::string_view type, std::string_view help) {
    out << "# HELP " << prefix << '_' << name << ' ' << help << "\n# TYPE " << prefix << '_' << name
        << ' ' << type << '\n';
  };
  metric("tasks_registered_total", "counter", "Tasks deferred on response scopes.");
  out << prefix << "_tasks_registered_total " << m.registered << '\n';
  metric("tasks_total", "counter", "Tasks by terminal state.");
  for (task_state state : terminal_states) {
    out << prefix << "_tasks_total{state=\"" << state << "\"} " << m.count(state) << '\n';
  }
  metric("tasks_queued", "gauge", "Tasks handed to an executor, not started.");
  out << prefix << "_tasks_queued " << m.queued << '\n';
  metric("tasks_in_flight", "gauge", "Tasks running now.");
  out << prefix << "_tasks_in_flight " << m.in_flight << '\n';
  metric("pool_queue_depth", "gauge", "Tasks waiting in the runtime's pool.");
  out << prefix << "_pool_queue_depth " << m.pool_queue_depth << '\n';
  metric("task_retries_total", "counter", "Attempts of awaitable tasks beyond their first.");
  out << prefix << "_task_retries_total " << m.retries << '\n';
  metric("task_overruns_total", "counter", "Blocking tasks still running at their timeout.");
  out << prefix << "_task_overruns_total " << m.overruns << '\n';
  return std::move(out).str();
}

std::ostream& operator<<(std::ostream& out, const drain_report& r) {
  out << (r.complete ? "complete" : "incomplete") << " queued=" << r.queued
      << " running=" << r.running;
  if (!r.unfinished.empty()) {
    out << " unfinished=[";
    for (std::size_t i = 0; i < r.unfinished.size(); ++i) {
      out << (i == 0 ? "" : ", ") << r.unfinished[i];
    }
    out << ']';
  }
  return out;
}

}  // namespace crosstown
