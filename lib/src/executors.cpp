#include <crosstown/executor.hpp>
#include <crosstown/inline_executor.hpp>
#include <crosstown/manual_executor.hpp>

#include <utility>

namespace crosstown {

same_thread_executor& same_thread_executor::instance() noexcept {
  static same_thread_executor shared;
  return shared;
}

void inline_executor::execute(job_batch batch) {
  {
    std::lock_guard lock(mutex_);
    ++handoffs_;
  }
  for (job& j : batch) {
    const task_info info = j.info();
    record rec{info.request_id, info.index, std::string(info.name)};
    j.run();
    std::lock_guard lock(mutex_);
    executed_.push_back(std::move(rec));
  }
}

std::vector<inline_executor::record> inline_executor::executed() const {
  std::lock_guard lock(mutex_);
  return executed_;
}

std::size_t inline_executor::handoffs() const {
  std::lock_guard lock(mutex_);
  return handoffs_;
}

manual_executor::~manual_executor() { drop_all(); }

void manual_executor::execute(job_batch batch) {
  std::lock_guard lock(mutex_);
  ++handoffs_;
  for (job& j : batch) queue_.push_back(std::move(j));
}

bool manual_executor::run_one() {
  job next;
  {
    std::lock_guard lock(mutex_);
    if (queue_.empty()) return false;
    next = std::move(queue_.front());
    queue_.pop_front();
  }
  next.run();
  return true;
}

std::size_t manual_executor::run_all() {
  std::size_t count = 0;
  while (run_one()) ++count;
  return count;
}

std::size_t manual_executor::pending() const {
  std::lock_guard lock(mutex_);
  return queue_.size();
}

std::vector<std::string> manual_executor::pending_tasks() const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out;
  out.reserve(queue_.size());
  for (const job& j : queue_) out.push_back(j.info().describe());
  return out;
}

std::size_t manual_executor::handoffs() const {
  std::lock_guard lock(mutex_);
  return handoffs_;
}

std::size_t manual_executor::drop_all() {
  std::deque<job> dropped;
  {
    std::lock_guard lock(mutex_);
    dropped.swap(queue_);
  }
  const std::size_t n = dropped.size();
  for (job& j : dropped) j.drop();
  return n;
}

}  // namespace crosstown
