#include <crosstown/detail/ledger.hpp>

#include <crosstown/detail/wait.hpp>

#include <exception>
#include <iostream>
#include <utility>

namespace crosstown::detail {

namespace {
// The innermost drop_reason of this thread.
thread_local drop_reason* active_drop_reason = nullptr;
}  // namespace

drop_reason::drop_reason(ledger& l, task_state state, bool only_while_unwinding) noexcept
    : ledger_(&l),
      state_(state),
      unwinding_base_(only_while_unwinding ? std::uncaught_exceptions() : -1),
      outer_(std::exchange(active_drop_reason, this)) {}

drop_reason::~drop_reason() { active_drop_reason = outer_; }

task_state ledger::drop_state(task_state state) const noexcept {
  if (state != task_state::dropped_at_shutdown) return state;
  for (const drop_reason* r = active_drop_reason; r != nullptr; r = r->outer_) {
    if (r->ledger_ != this) continue;
    if (r->unwinding_base_ < 0 || std::uncaught_exceptions() > r->unwinding_base_) {
      return r->state_;
    }
  }
  return state;
}

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

ledger::shard& ledger::mine() noexcept {
  // Threads take shards round-robin on first use; a shard is shared only by threads that
  // collide modulo shard_count.
  static std::atomic<std::size_t> next_thread{0};
  thread_local const std::size_t index =
      next_thread.fetch_add(1, std::memory_order_relaxed) % shard_count;
  return shards_[index];
}

void ledger::finished(task_state reported, origin from, const task_info& info) noexcept {
  const task_state state = drop_state(reported);
  shard& s = mine();
  add(s.terminal[slot(state)], 1);
  // Before the active count drops: a drain that returns has seen every observer call.
  notify_settled(info, state);
  if (from == origin::unreleased) return;
  sub(from == origin::running ? s.in_flight : s.queued, 1);
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

void ledger::report_lost(const task_info& info, task_state reported) noexcept {
  const task_state state = drop_state(reported);
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
  return detail::wait_until(idle_cv_, lock, deadline,
                            [this] { return active_.load(std::memory_order_acquire) == 0; });
}

metrics_snapshot ledger::snapshot() const noexcept {
  auto sum = [this](auto member) {
    std::uint64_t total = 0;  // unsigned wrap-around: per-shard gauges may "go negative"
    for (const shard& s : shards_) total += (s.*member).load(std::memory_order_relaxed);
    return total;
  };
  metrics_snapshot m;
  m.registered = sum(&shard::registered);
  for (const shard& s : shards_) {
    for (std::size_t i = 0; i < terminal_state_count; ++i) {
      m.terminal_counts[i] += s.terminal[i].load(std::memory_order_relaxed);
    }
  }
  // A gauge read while tasks move may see a fall before the rise it follows: clamp at zero.
  auto gauge = [](std::uint64_t wrapped) {
    const auto value = static_cast<std::int64_t>(wrapped);
    return value < 0 ? std::uint64_t{0} : static_cast<std::uint64_t>(value);
  };
  m.queued = gauge(sum(&shard::queued));
  m.in_flight = gauge(sum(&shard::in_flight));
  return m;
}

}  // namespace crosstown::detail
