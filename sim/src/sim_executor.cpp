#include <crosstown/sim/sim_executor.hpp>

#include <crosstown/sim/oracle.hpp>

#include <algorithm>
#include <cstddef>
#include <utility>

namespace crosstown::sim {

sim_executor::sim_executor(scheduler& sched, rng& costs, sim_executor_options options,
                           oracle* observer)
    : sched_(sched),
      costs_(costs),
      options_(options),
      observer_(observer),
      busy_(std::max<std::uint32_t>(options.workers, 1), false) {}

sim_executor::~sim_executor() = default;

std::size_t sim_executor::busy() const noexcept {
  return static_cast<std::size_t>(std::count(busy_.begin(), busy_.end(), true));
}

void sim_executor::execute(job_batch batch) {
  ++handoffs_;
  for (job& j : batch) {
    if (observer_ != nullptr) observer_->task_released(j.info());
    ++jobs_seen_;
    if (options_.drop_every != 0 && jobs_seen_ % options_.drop_every == 0) {
      job lost = std::move(j);  // destroyed here: counted as dropped, reported as lost
      continue;
    }
    queue_.push_back(std::move(j));
  }
  dispatch();
}

void sim_executor::dispatch() {
  for (std::uint32_t w = 0; w < busy_.size() && queued() > 0; ++w) {
    if (busy_[w]) continue;
    busy_[w] = true;
    sched_.post(item_name::lazy("worker {}: take a job", w), options_.first_actor + w,
                [this, w] { take(w); });
  }
}

void sim_executor::take(std::uint32_t worker) {
  if (queued() == 0) {
    busy_[worker] = false;
    return;
  }
  job j = std::move(queue_[head_++]);
  if (head_ == queue_.size()) {
    queue_.clear();
    head_ = 0;
  } else if (head_ >= 64 && head_ * 2 >= queue_.size()) {
    queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(head_));
    head_ = 0;
  }
  const task_info info = j.info();
  const std::uint64_t request = info.request_id;
  const std::uint32_t index = info.index;
  const std::int64_t started = sched_.time().now_ns();
  if (observer_ != nullptr) observer_->task_started(request, index, worker);
  j.run();
  const duration cost(costs_.between(options_.min_cost.count(), options_.max_cost.count()));
  sched_.post_after(
      cost, item_name::lazy("worker {}: finish task {} of request {}", worker, index, request),
      options_.first_actor + worker, [this, worker, request, index, started] {
        if (observer_ != nullptr) {
          observer_->task_finished(request, index, worker, started);
        }
        busy_[worker] = false;
        dispatch();
      });
}

}  // namespace crosstown::sim
