#include <crosstown/sim/oracle.hpp>

#include "driver.hpp"

#include <algorithm>
#include <cstdio>
#include <utility>

namespace crosstown::sim {

std::string_view to_string(event_kind k) noexcept {
  switch (k) {
    case event_kind::connection_opened: return "connection opened";
    case event_kind::connection_closed: return "connection closed";
    case event_kind::request_started: return "request started";
    case event_kind::task_registered: return "task registered";
    case event_kind::task_cancelled: return "task cancelled";
    case event_kind::status_chosen: return "status chosen";
    case event_kind::headers_accepted: return "headers accepted";
    case event_kind::last_byte_accepted: return "last byte accepted";
    case event_kind::delivery_failed: return "delivery failed";
    case event_kind::scope_ended: return "scope ended";
    case event_kind::bytes_accepted: return "bytes accepted";
    case event_kind::reset: return "connection reset";
    case event_kind::stall: return "client stalls";
    case event_kind::unstall: return "client reads again";
    case event_kind::task_released: return "task released";
    case event_kind::task_started: return "task started";
    case event_kind::task_finished: return "task finished";
    case event_kind::task_failed: return "task threw";
    case event_kind::task_lost: return "task lost";
    case event_kind::fault_fired: return "fault fired";
    case event_kind::healed: return "network healed";
  }
  return "?";
}

std::string describe(const event& e) {
  char when[48];
  std::snprintf(when, sizeof when, "t=%.6fms", static_cast<double>(e.time_ns) / 1e6);
  std::string out(when);
  if (e.conn != 0) out += " conn " + std::to_string(e.conn);
  if (e.request != 0) out += " request " + std::to_string(e.request);
  const bool about_task =
      e.kind == event_kind::task_registered || e.kind == event_kind::task_cancelled ||
      e.kind == event_kind::task_released || e.kind == event_kind::task_started ||
      e.kind == event_kind::task_finished || e.kind == event_kind::task_failed ||
      e.kind == event_kind::task_lost;
  if (about_task) out += " task " + std::to_string(e.task);
  out += ": ";
  out += to_string(e.kind);
  switch (e.kind) {
    case event_kind::status_chosen: out += " " + std::to_string(e.value); break;
    case event_kind::bytes_accepted:
      out += " " + std::to_string(e.value) + " (took " + std::to_string(e.value2) + "ns)";
      break;
    case event_kind::reset: out += " after byte " + std::to_string(e.value); break;
    case event_kind::task_started:
    case event_kind::task_finished:
      out +=
          e.value < 0 ? std::string(" (same thread)") : " (worker " + std::to_string(e.value) + ")";
      break;
    case event_kind::task_lost:
      out += " (" + std::string(to_string(static_cast<task_state>(e.value))) + ")";
      break;
    default: break;
  }
  return out;
}

std::size_t oracle::record(event e) {
  if (log_ != nullptr) {
    log_->add(journal_kind::event, "oracle",
              (static_cast<std::uint64_t>(e.kind) << 56U) ^ (e.request << 24U) ^ e.task ^
                  (static_cast<std::uint64_t>(e.conn) << 40U),
              static_cast<std::uint64_t>(e.value), e.time_ns);
  }
  if (!keep_trace_) return 0;
  trace_.push_back(e);
  return trace_.size() - 1;
}

void oracle::violate(const char* invariant, std::string message) {
  ++violations_;
  if (first_) return;
  first_ = violation{invariant, std::move(message), trace_.empty() ? 0 : trace_.size() - 1};
}

void oracle::report(std::string invariant, std::string message) {
  ++violations_;
  if (first_) return;
  first_ =
      violation{std::move(invariant), std::move(message), trace_.empty() ? 0 : trace_.size() - 1};
}

const oracle::response_rec* oracle::find(std::uint64_t request) const noexcept {
  if (consecutive_) {
    if (request < first_id_ || request - first_id_ >= responses_.size()) return nullptr;
    return &responses_[request - first_id_];
  }
  auto it = index_.find(request);
  return it == index_.end() ? nullptr : &responses_[it->second];
}

oracle::response_rec* oracle::find(std::uint64_t request) noexcept {
  return const_cast<response_rec*>(std::as_const(*this).find(request));
}

std::string oracle::who(std::uint64_t request, std::uint32_t index) const {
  const response_rec* r = find(request);
  std::string name;
  if (r != nullptr && index < r->tasks.size()) name = r->tasks[index].spec.name;
  return task_info{request, index, name}.describe();
}

void oracle::connection_opened(std::uint32_t conn) {
  conn_closed_[conn] = false;
  record({now(), event_kind::connection_opened, conn});
}

void oracle::connection_closed(std::uint32_t conn) {
  conn_closed_[conn] = true;
  record({now(), event_kind::connection_closed, conn});
}

void oracle::request_started(std::uint64_t request, std::uint32_t conn, std::uint32_t seq,
                             std::uint32_t planned_tasks) {
  response_rec* r = find(request);
  if (r == nullptr) {
    if (responses_.empty()) first_id_ = request;
    if (consecutive_ && request != first_id_ + responses_.size()) {
      consecutive_ = false;
      for (std::size_t i = 0; i < responses_.size(); ++i) index_.emplace(responses_[i].id, i);
    }
    if (!consecutive_) index_.emplace(request, responses_.size());
    r = &responses_.emplace_back();
    r->id = request;
    r->tasks.reserve(planned_tasks);
  }
  r->conn = conn;
  r->seq = seq;
  record({now(), event_kind::request_started, conn, request, 0, seq});
}

void oracle::task_registered(std::uint64_t request, std::uint32_t index, task_spec spec) {
  response_rec* r = find(request);
  if (r == nullptr) return;
  if (r->tasks.size() <= index) r->tasks.resize(index + 1);
  // A later task of the same name replaces a pending one.
  if (!spec.name.empty()) {
    for (task_rec& t : r->tasks) {
      if (!t.cancelled && t.spec.name == spec.name && t.released == 0 && t.started == 0 &&
          !phase_reached(*r, t.spec.phase)) {
        t.cancelled = true;
      }
    }
  }
  r->tasks[index].spec = std::move(spec);
  record({now(), event_kind::task_registered, r->conn, request, index,
          static_cast<std::int64_t>(r->tasks[index].spec.phase)});
}

void oracle::task_cancelled(std::uint64_t request, std::string_view name, bool core_result) {
  response_rec* r = find(request);
  if (r == nullptr) return;
  bool expected = false;
  for (std::uint32_t i = 0; i < r->tasks.size(); ++i) {
    task_rec& t = r->tasks[i];
    if (!t.cancelled && t.spec.name == name && t.released == 0 && t.started == 0 &&
        !phase_reached(*r, t.spec.phase)) {
      t.cancelled = true;
      expected = true;
      record({now(), event_kind::task_cancelled, r->conn, request, i});
    }
  }
  if (expected != core_result) {
    violate("I6 accounting", "cancel(\"" + std::string(name) + "\") on request " +
                                 std::to_string(request) + " returned " +
                                 (core_result ? "true" : "false") + ", expected " +
                                 (expected ? "true" : "false"));
  }
}

void oracle::status_chosen(std::uint64_t request, int status) {
  if (response_rec* r = find(request)) {
    r->status = status;
    record({now(), event_kind::status_chosen, r->conn, request, 0, status});
  }
}

void oracle::headers_accepted(std::uint64_t request) {
  if (response_rec* r = find(request)) {
    r->headers = true;
    record({now(), event_kind::headers_accepted, r->conn, request});
  }
}

void oracle::last_byte_accepted(std::uint64_t request) {
  if (response_rec* r = find(request)) {
    r->headers = true;
    r->delivered = true;
    r->done_ns = now();
    record({now(), event_kind::last_byte_accepted, r->conn, request});
  }
}

void oracle::delivery_failed(std::uint64_t request) {
  if (response_rec* r = find(request)) {
    r->failed = true;
    r->done_ns = -now() - 1;
    record({now(), event_kind::delivery_failed, r->conn, request});
  }
}

void oracle::scope_ended(std::uint64_t request) {
  if (response_rec* r = find(request)) {
    r->ended = true;
    record({now(), event_kind::scope_ended, r->conn, request});
  }
}

void oracle::transport_event(event_kind kind, std::uint32_t conn, std::int64_t value,
                             std::int64_t value2) {
  record({now(), kind, conn, 0, 0, value, value2});
}

void oracle::healed() { record({now(), event_kind::healed}); }

bool oracle::phase_reached(const response_rec& r, task_phase p) const {
  switch (p) {
    case task_phase::headers_sent: return r.headers || r.failed || r.ended;
    case task_phase::response_sent: return r.delivered || r.failed || r.ended;
    case task_phase::connection_closed: {
      auto it = conn_closed_.find(r.conn);
      return r.ended && it != conn_closed_.end() && it->second;
    }
  }
  return false;
}

bool oracle::delivered_for(const response_rec& r, task_phase p) const {
  return p == task_phase::headers_sent ? r.headers : r.delivered;
}

bool oracle::skipped_by_status(const response_rec& r, const task_rec& t) const {
  return !t.spec.always && t.spec.no_go.contains(r.status);
}

void oracle::check_release(std::uint64_t request, std::uint32_t index, const char* what) {
  response_rec* r = find(request);
  if (r == nullptr || index >= r->tasks.size()) {
    violate("I6 accounting", std::string(what) + " an unknown task: " + who(request, index));
    return;
  }
  task_rec& t = r->tasks[index];
  // I5 first: the most specific explanation when another response's event released it.
  const bool own_event =
      (context_.what == core_context::kind::response && context_.request == request) ||
      (context_.what == core_context::kind::connection && context_.conn == r->conn);
  if (!own_event) {
    std::string by = context_.what == core_context::kind::response
                         ? "a lifecycle event of request " + std::to_string(context_.request)
                     : context_.what == core_context::kind::connection
                         ? "the close of connection " + std::to_string(context_.conn)
                         : std::string("no lifecycle event");
    violate("I5 isolation", who(request, index) + " " + what + " by " + by);
  }
  if (!phase_reached(*r, t.spec.phase)) {
    violate("I1 after", who(request, index) + " " + what + " before its phase (" +
                            std::string(to_string(t.spec.phase)) + ") happened on the transport");
  }
  if (skipped_by_status(*r, t)) {
    violate("I2 status", who(request, index) + " " + what + " although the final status " +
                             std::to_string(r->status) + " is in its no-go set " +
                             t.spec.no_go.to_string());
  }
  if (t.spec.require_delivery && r->failed && !delivered_for(*r, t.spec.phase)) {
    violate("I3 once", who(request, index) + " " + what +
                           " although it requires delivery and delivery failed");
  }
  if (t.cancelled) violate("I3 once", who(request, index) + " " + what + " after it was cancelled");
}

void oracle::enter_epoch(response_rec& r) noexcept {
  if (r.epoch == core_epoch_) return;
  r.epoch = core_epoch_;
  r.last_released = -1;
  r.last_same_thread = -1;
}

void oracle::task_released(const task_info& info) {
  response_rec* r = find(info.request_id);
  record(
      {now(), event_kind::task_released, r != nullptr ? r->conn : 0, info.request_id, info.index});
  check_release(info.request_id, info.index, "was released");
  if (r == nullptr || info.index >= r->tasks.size()) return;
  task_rec& t = r->tasks[info.index];
  enter_epoch(*r);
  if (++t.released > 1)
    violate("I3 once", who(info.request_id, info.index) + " was released twice");
  if (static_cast<std::int64_t>(info.index) <= r->last_released) {
    violate("I4 order", who(info.request_id, info.index) + " was handed over after task " +
                            std::to_string(r->last_released) + " of the same response");
  }
  r->last_released = std::max<std::int64_t>(r->last_released, info.index);
}

void oracle::task_started(std::uint64_t request, std::uint32_t index, std::uint32_t worker) {
  response_rec* r = find(request);
  const bool same_thread =
      r != nullptr && index < r->tasks.size() && r->tasks[index].spec.same_thread;
  record({now(), event_kind::task_started, r != nullptr ? r->conn : 0, request, index,
          same_thread ? -1 : static_cast<std::int64_t>(worker)});
  ++started_;
  if (r == nullptr || index >= r->tasks.size()) {
    violate("I6 accounting", "an unknown task started: " + who(request, index));
    return;
  }
  task_rec& t = r->tasks[index];
  if (same_thread) {
    check_release(request, index, "started on the same thread");
    enter_epoch(*r);
    if (static_cast<std::int64_t>(index) <= r->last_same_thread) {
      violate("I4 order", who(request, index) + " (same thread) started after task " +
                              std::to_string(r->last_same_thread) + " of the same response");
    }
    r->last_same_thread = std::max<std::int64_t>(r->last_same_thread, index);
  } else if (!phase_reached(*r, t.spec.phase)) {
    violate("I1 after", who(request, index) + " started before its phase (" +
                            std::string(to_string(t.spec.phase)) + ")");
  }
  if (++t.started > 1) violate("I3 once", who(request, index) + " started a second time");
}

void oracle::task_finished(std::uint64_t request, std::uint32_t index, std::uint32_t worker,
                           std::int64_t started_ns) {
  response_rec* r = find(request);
  const bool same_thread =
      r != nullptr && index < r->tasks.size() && r->tasks[index].spec.same_thread;
  record({now(), event_kind::task_finished, r != nullptr ? r->conn : 0, request, index,
          same_thread ? -1 : static_cast<std::int64_t>(worker), now() - started_ns});
}

void oracle::task_failed(const task_info& info) {
  ++failed_;
  response_rec* r = find(info.request_id);
  record({now(), event_kind::task_failed, r != nullptr ? r->conn : 0, info.request_id, info.index});
}

void oracle::task_lost(const task_info& info, task_state state) {
  ++lost_;
  response_rec* r = find(info.request_id);
  record({now(), event_kind::task_lost, r != nullptr ? r->conn : 0, info.request_id, info.index,
          static_cast<std::int64_t>(state)});
  if (r == nullptr || info.index >= r->tasks.size()) return;
  task_rec& t = r->tasks[info.index];
  t.lost = true;
  t.lost_to_fault = fault_in_context_;
  if (!fault_in_context_) {
    violate("I3 once", who(info.request_id, info.index) + " was allowed but never ran: " +
                           std::string(to_string(state)) + " with no shutdown or injected fault");
  }
}

void oracle::fault_fired(std::string_view site) {
  fault_in_context_ = true;
  record({now(), event_kind::fault_fired, context_.conn, context_.request, 0,
          static_cast<std::int64_t>(site.size())});
}

std::vector<std::string> oracle::never_ran() const {
  std::vector<std::string> out;
  std::vector<std::uint64_t> ids;
  for (const response_rec& r : responses_) ids.push_back(r.id);
  std::sort(ids.begin(), ids.end());
  for (std::uint64_t id : ids) {
    const response_rec& r = *find(id);
    for (std::uint32_t i = 0; i < r.tasks.size(); ++i) {
      const task_rec& t = r.tasks[i];
      if (t.cancelled || t.started > 0 || t.lost_to_fault || skipped_by_status(r, t)) continue;
      if (t.spec.require_delivery && phase_reached(r, t.spec.phase) &&
          !delivered_for(r, t.spec.phase))
        continue;
      std::string why = phase_reached(r, t.spec.phase)
                            ? std::string("its phase was reached")
                            : "its phase (" + std::string(to_string(t.spec.phase)) + ") never came";
      out.push_back(who(id, i) + " (" + why + ")");
    }
  }
  return out;
}

void oracle::check_final(const metrics_snapshot& m) {
  const std::vector<std::string> missing = never_ran();
  if (!missing.empty()) {
    violate("I3 once",
            std::to_string(missing.size()) +
                " allowed task(s) never ran within the liveness budget, first: " + missing.front());
  }
  std::uint64_t registered = 0, cancelled = 0, by_status = 0, by_delivery = 0;
  for (const response_rec& r : responses_) {
    for (const task_rec& t : r.tasks) {
      ++registered;
      if (t.cancelled) {
        ++cancelled;
      } else if (skipped_by_status(r, t)) {
        ++by_status;
      } else if (t.spec.require_delivery && !delivered_for(r, t.spec.phase)) {
        ++by_delivery;
      }
    }
  }
  auto expect = [&](const char* what, std::uint64_t got, std::uint64_t want) {
    if (got != want) {
      violate("I6 accounting", std::string("metrics: ") + what + " = " + std::to_string(got) +
                                   ", the oracle counted " + std::to_string(want));
    }
  };
  expect("registered", m.registered, registered);
  expect("terminal total", m.terminal(), m.registered);
  expect("ran + failed", m.count(task_state::ran) + m.count(task_state::failed), started_);
  expect("failed", m.count(task_state::failed), failed_);
  expect("cancelled", m.count(task_state::cancelled), cancelled);
  expect("skipped_by_status", m.count(task_state::skipped_by_status), by_status);
  expect("skipped_by_delivery", m.count(task_state::skipped_by_delivery), by_delivery);
  expect("rejected + dropped",
         m.count(task_state::rejected_by_overflow) + m.count(task_state::dropped_at_shutdown) +
             m.count(task_state::rejected_by_executor) + m.count(task_state::dropped_out_of_memory),
         lost_);
  expect("queued", m.queued, 0);
  expect("in_flight", m.in_flight, 0);
}

std::map<std::pair<std::uint32_t, std::uint32_t>, std::int64_t> oracle::completions() const {
  std::map<std::pair<std::uint32_t, std::uint32_t>, std::int64_t> out;
  for (const response_rec& r : responses_) {
    if (r.done_ns != 0) out[{r.conn, r.seq}] = r.done_ns;
  }
  return out;
}

std::string oracle::story(std::size_t max_events) const {
  return detail::story_of(trace_, first_, max_events);
}

}  // namespace crosstown::sim
