#include <crosstown/detail/ledger.hpp>

#include <crosstown/detail/wait.hpp>

#include <iostream>
#include <utility>

namespace crosstown::detail {

ledger::ledger(error_hook on_error, lost_hook on_lost, settled_hook on_settled)
    : on_error_(std::move(on_error)),
      on_settled_(std::move(on_settled)),
      on_lost_(std::move(on_lost)) {}

void ledger::notify_settled(const task_info& info, task_state state) noexcept {
  if (!on_settled_) return;
  try {
    on_settled_(info, state);
  } catch (...) {
    // Observation must not change the outcome; the state is counted already.
  }
}

void ledger::finished(task_state state, origin from, const task_info& info) noexcept {
  add(terminal_[slot(state)], 1);
  // Before the active count drops: a drain that returns has seen every observer call.
  notify_settled(info, state);
  if (from == origin::unreleased) return;
  sub(from == origin::running ? in_flight_ : queued_, 1);
  // acq_rel: a waiter that sees zero also sees the work of every finished task.
  if (active_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    std::lock_guard lock(idle_mutex_);
    idle_cv_.notify_all();
  }
}

void ledger::report_failure(const task_failure& failure) noexcept {
  try {
    if (on_error_) {
      on_error_(failure);
    } else {
      std::cerr << "crosstown: " << failure.task.describe() << " threw: " << failure.message
                << '\n';
    }
  } catch (...) {
    // A hook that throws must not take the worker down; the failure is already counted.
  }
}

void ledger::report_lost(const task_info& info, task_state state) noexcept {
  try {
    if (on_lost_) {
      on_lost_(info, state);
    } else {
      std::cerr << "crosstown: " << info.describe() << ' ' << to_string(state) << '\n';
    }
  } catch (...) {
    // Counted already; see report_failure.
  }
}

bool ledger::wait_idle(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(idle_mutex_);
  return detail::wait_until(idle_cv_, lock, deadline, [this] {
    return active_.load(std::memory_order_acquire) == 0;
  });
}

metrics_snapshot ledger::snapshot() const noexcept {
  auto get = [](const std::atomic<std::uint64_t>& c) { return c.load(std::memory_order_relaxed); };
  metrics_snapshot m;
  m.registered = get(registered_);
  m.ran = get(terminal_[slot(task_state::ran)]);
  m.failed = get(terminal_[slot(task_state::failed)]);
  m.skipped_by_status = get(terminal_[slot(task_state::skipped_by_status)]);
  m.skipped_by_delivery = get(terminal_[slot(task_state::skipped_by_delivery)]);
  m.cancelled = get(terminal_[slot(task_state::cancelled)]);
  m.rejected_by_overflow = get(terminal_[slot(task_state::rejected_by_overflow)]);
  m.dropped_at_shutdown = get(terminal_[slot(task_state::dropped_at_shutdown)]);
  m.queued = get(queued_);
  m.in_flight = get(in_flight_);
  return m;
}

}  // namespace crosstown::detail
