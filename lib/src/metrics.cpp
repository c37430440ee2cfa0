#include <crosstown/metrics.hpp>

#include <crosstown/defer_options.hpp>

namespace crosstown {

std::string_view to_string(task_state state) noexcept {
  switch (state) {
    case task_state::pending: return "pending";
    case task_state::queued: return "queued";
    case task_state::running: return "running";
    case task_state::ran: return "ran";
    case task_state::failed: return "failed";
    case task_state::skipped_by_status: return "skipped_by_status";
    case task_state::skipped_by_delivery: return "skipped_by_delivery";
    case task_state::cancelled: return "cancelled";
    case task_state::rejected_by_overflow: return "rejected_by_overflow";
    case task_state::dropped_at_shutdown: return "dropped_at_shutdown";
  }
  return "unknown";
}

std::ostream& operator<<(std::ostream& out, task_state state) { return out << to_string(state); }

std::string_view to_string(phase p) noexcept {
  switch (p) {
    case phase::headers_sent: return "headers_sent";
    case phase::response_sent: return "response_sent";
    case phase::connection_closed: return "connection_closed";
  }
  return "unknown";
}

std::ostream& operator<<(std::ostream& out, phase p) { return out << to_string(p); }

std::ostream& operator<<(std::ostream& out, const metrics_snapshot& m) {
  return out << "registered=" << m.registered << " ran=" << m.ran << " failed=" << m.failed
             << " skipped_by_status=" << m.skipped_by_status
             << " skipped_by_delivery=" << m.skipped_by_delivery << " cancelled=" << m.cancelled
             << " rejected_by_overflow=" << m.rejected_by_overflow
             << " dropped_at_shutdown=" << m.dropped_at_shutdown << " queued=" << m.queued
             << " in_flight=" << m.in_flight << " pool_queue_depth=" << m.pool_queue_depth;
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
