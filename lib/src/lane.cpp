#include <crosstown/lane.hpp>

#include <crosstown/detail/io_runtime.hpp>

#include <algorithm>
#include <sstream>
#include <stdexcept>
#include <utility>

namespace crosstown {

namespace detail {

task_plan::task_plan(io_runtime& owner) noexcept : io(&owner) {}

task_plan::~task_plan() {
  if (lane != nullptr && in_lane) lane->settled(outcome, holds_slot);
}

lane_state::lane_state(io_runtime& io, std::string name, lane_options options)
    : io_(io), name_(std::move(name)), options_(options) {}

bool lane_state::arrive(job& work, task_plan& plan) noexcept {
  std::unique_lock lock(mutex_);
  plan.in_lane = true;
  if (in_flight_ < options_.max_in_flight && waiting_.empty()) {
    ++in_flight_;
    ++admitted_;
    plan.holds_slot = true;
    return true;
  }
  if (io_.stopping()) {
    lock.unlock();
    work.drop();  // counted dropped_at_shutdown, here and in the ledger
    return false;
  }
  if (waiting_.size() >= options_.capacity) {
    lock.unlock();
    // Counted by the plan's destructor (in completed_) and by the ledger.
    work.reject();
    return false;
  }
  plan.arrived = io_.clock().now();
  try {
    waiting_.push_back(std::move(work));
  } catch (...) {
    lock.unlock();
    work.reject();  // no memory for one more waiting task: refused like a full lane
    return false;
  }
  return false;
}

void lane_state::settled(task_state state, bool held) noexcept {
  std::unique_lock lock(mutex_);
  ++completed_[metrics_snapshot::terminal_slot(state)];
  if (held) --in_flight_;
  pump(lock);
  lock.unlock();
  io_.notify_quiet();
}

void lane_state::pump(std::unique_lock<std::mutex>& lock) noexcept {
  if (pumping_) return;  // the thread pumping will see the freed slot
  pumping_ = true;
  while (in_flight_ < options_.max_in_flight && !waiting_.empty()) {
    job next = std::move(waiting_.front());
    waiting_.pop_front();
    task_plan& plan = io_runtime::plan_of(next);
    if (io_.stopping()) {
      lock.unlock();
      next.drop();
      lock.lock();
      continue;
    }
    ++in_flight_;
    ++admitted_;
    ++waited_;
    const std::chrono::nanoseconds now = io_.clock().now();
    if (now > plan.arrived) waited_time_ += now - plan.arrived;
    plan.holds_slot = true;
    const bool awaitable = plan.body != nullptr;
    lock.unlock();
    if (awaitable) {
      io_.start(std::move(next));
    } else {
      io_.resume_blocking(std::move(next));
    }
    lock.lock();
  }
  pumping_ = false;
}

void lane_state::drop_waiting() noexcept {
  std::deque<job> dropped;
  {
    std::lock_guard lock(mutex_);
    dropped.swap(waiting_);
  }
  // Destroying them counts each `dropped_at_shutdown` (and settles it here, in completed_).
  dropped.clear();
}

bool lane_state::quiet() const {
  std::lock_guard lock(mutex_);
  return in_flight_ == 0 && waiting_.empty();
}

lane_snapshot lane_state::snapshot() const {
  std::lock_guard lock(mutex_);
  lane_snapshot s;
  s.name = name_;
  s.options = options_;
  s.in_flight = in_flight_;
  s.waiting = waiting_.size();
  s.admitted = admitted_;
  s.waited = waited_;
  s.waited_time = waited_time_;
  s.completed = completed_;
  return s;
}

namespace {

void check_lane(std::string_view name, const lane_options& options) {
  const bool valid_name =
      !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '.' || c == ':' || c == '-';
      });
  const std::string quoted = "\"" + std::string(name) + "\"";
  if (!valid_name) {
    throw std::invalid_argument("crosstown::runtime::lane: name " + quoted +
                                " must be 1-64 characters of [A-Za-z0-9_.:-]");
  }
  if (options.max_in_flight == 0) {
    throw std::invalid_argument("crosstown::runtime::lane " + quoted +
                                ": max_in_flight is 0; it must be at least 1");
  }
  if (options.capacity == 0) {
    throw std::invalid_argument("crosstown::runtime::lane " + quoted +
                                ": capacity is 0; it must be at least 1");
  }
}

}  // namespace

lane_state& io_runtime::make_lane(std::string_view name, const lane_options& options) {
  check_lane(name, options);
  std::lock_guard lock(mutex_);
  auto it = lanes_.find(name);
  if (it != lanes_.end()) {
    const lane_options& have = it->second->options();
    if (have.max_in_flight != options.max_in_flight || have.capacity != options.capacity) {
      throw std::invalid_argument(
          "crosstown::runtime::lane \"" + std::string(name) + "\" exists with max_in_flight " +
          std::to_string(have.max_in_flight) + " and capacity " + std::to_string(have.capacity) +
          "; asked for " + std::to_string(options.max_in_flight) + " and " +
          std::to_string(options.capacity));
    }
    return *it->second;
  }
  auto made = std::make_unique<lane_state>(*this, std::string(name), options);
  lane_state& out = *made;
  lanes_.emplace(std::string(name), std::move(made));
  return out;
}

lane_state* io_runtime::find_lane(std::string_view name) const {
  std::lock_guard lock(mutex_);
  auto it = lanes_.find(name);
  return it == lanes_.end() ? nullptr : it->second.get();
}

std::vector<lane_snapshot> io_runtime::lane_snapshots() const {
  std::vector<const lane_state*> lanes;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [name, lane] : lanes_) lanes.push_back(lane.get());
  }
  std::vector<lane_snapshot> out;
  out.reserve(lanes.size());
  for (const lane_state* lane : lanes) out.push_back(lane->snapshot());
  return out;
}

}  // namespace detail

const std::string& lane::name() const noexcept { return state_->name(); }
const lane_options& lane::options() const noexcept { return state_->options(); }
lane_snapshot lane::snapshot() const { return state_->snapshot(); }

std::string to_prometheus(const metrics_snapshot& m, const std::vector<lane_snapshot>& lanes,
                          std::string_view prefix) {
  std::ostringstream out;
  out << to_prometheus(m, prefix);
  if (lanes.empty()) return std::move(out).str();
  auto family = [&](std::string_view name, std::string_view type, std::string_view help,
                    auto value) {
    out << "# HELP " << prefix << "_lane_" << name << ' ' << help << "\n# TYPE " << prefix
        << "_lane_" << name << ' ' << type << '\n';
    for (const lane_snapshot& l : lanes) {
      out << prefix << "_lane_" << name << "{lane=\"" << l.name << "\"} " << value(l) << '\n';
    }
  };
  family("in_flight", "gauge", "Tasks of the lane running now.",
         [](const lane_snapshot& l) { return l.in_flight; });
  family("waiting", "gauge", "Tasks waiting for a slot in the lane.",
         [](const lane_snapshot& l) { return l.waiting; });
  family("max_in_flight", "gauge", "The lane's limit of tasks running at once.",
         [](const lane_snapshot& l) { return l.options.max_in_flight; });
  family("capacity", "gauge", "Tasks that may wait in the lane.",
         [](const lane_snapshot& l) { return l.options.capacity; });
  family("admitted_total", "counter", "Tasks that got a slot in the lane.",
         [](const lane_snapshot& l) { return l.admitted; });
  family("waited_total", "counter", "Tasks that waited for their slot.",
         [](const lane_snapshot& l) { return l.waited; });
  family(
      "wait_seconds_total", "counter", "Time tasks waited for a slot in the lane.",
      [](const lane_snapshot& l) { return std::chrono::duration<double>(l.waited_time).count(); });
  out << "# HELP " << prefix << "_lane_tasks_total Tasks of the lane by terminal state.\n# TYPE "
      << prefix << "_lane_tasks_total counter\n";
  for (const lane_snapshot& l : lanes) {
    for (task_state state : terminal_states) {
      out << prefix << "_lane_tasks_total{lane=\"" << l.name << "\",state=\"" << state << "\"} "
          << l.count(state) << '\n';
    }
  }
  return std::move(out).str();
}

}  // namespace crosstown
