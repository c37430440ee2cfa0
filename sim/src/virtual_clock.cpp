#include <crosstown/sim/virtual_clock.hpp>

#include <utility>

namespace crosstown::sim {

namespace {
// Only for Asio's static Clock::now(); the simulator itself passes its virtual_time around.
thread_local const virtual_time* bound_time = nullptr;
}  // namespace

virtual_clock::time_point virtual_clock::now() noexcept {
  return bound_time != nullptr ? bound_time->now() : time_point{};
}

clock_binding::clock_binding(const virtual_time& t) noexcept : previous_(bound_time) {
  bound_time = &t;
}

clock_binding::~clock_binding() { bound_time = previous_; }

timer_id virtual_time::call_at(time_point deadline, std::function<void()> fn) {
  const timer_id id = next_id_++;
  if (callbacks_.size() == id) {
    callbacks_.push_back(std::move(fn));  // ids are consecutive: the usual case
  } else {
    if (callbacks_.size() < id) callbacks_.resize(id + 1);
    callbacks_[id] = std::move(fn);
  }
  queue_.push({deadline < now_ ? now_ : deadline, id});
  ++live_;
  if (!callbacks_[id]) ++cancelled_queued_;  // an empty callback is dropped like a cancelled one
  return id;
}

bool virtual_time::cancel(timer_id id) {
  if (id >= callbacks_.size() || !callbacks_[id]) return false;
  callbacks_[id] = nullptr;
  --live_;
  ++cancelled_queued_;
  return true;
}

void virtual_time::drop_cancelled() {
  // Only cancelled timers leave an empty callback in the queue; most runs cancel none.
  while (cancelled_queued_ > 0 && !queue_.empty() && !callbacks_[queue_.top().id]) {
    queue_.pop();
    --cancelled_queued_;
  }
}

bool virtual_time::fire_one(time_point limit) {
  drop_cancelled();
  if (queue_.empty() || queue_.top().deadline > limit) return false;
  const timer t = queue_.top();
  queue_.pop();
  now_ = t.deadline;
  std::function<void()> fn = std::exchange(callbacks_[t.id], nullptr);
  --live_;
  fn();
  return true;
}

void virtual_time::advance(duration d) {
  const time_point target = now_ + d;
  while (fire_one(target)) {
  }
  now_ = target;
}

bool virtual_time::advance_to_next() {
  drop_cancelled();
  if (queue_.empty()) return false;
  const time_point at = queue_.top().deadline;
  while (fire_one(at)) {
  }
  return true;
}

std::optional<time_point> virtual_time::next_deadline() {
  drop_cancelled();
  if (queue_.empty()) return std::nullopt;
  return queue_.top().deadline;
}

}  // namespace crosstown::sim
