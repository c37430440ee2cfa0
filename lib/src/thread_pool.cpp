#include <crosstown/thread_pool.hpp>

#include <crosstown/detail/wait.hpp>

#if defined(__linux__)
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

namespace crosstown {

namespace {

thread_local const thread_pool* current_pool = nullptr;

std::size_t resolve_threads(std::size_t requested) {
  if (requested != 0) return requested;
  return std::max<std::size_t>(1, std::thread::hardware_concurrency());
}

job_batch take_range(job_batch& from, std::size_t first, std::size_t last) {
  job_batch out;
  out.reserve(last - first);
  std::move(from.begin() + static_cast<std::ptrdiff_t>(first),
            from.begin() + static_cast<std::ptrdiff_t>(last), std::back_inserter(out));
  return out;
}

int checked_nice(int nice) {
  if (nice < 0 || nice > 19) {
    throw std::invalid_argument("crosstown::thread_pool_options::nice is " + std::to_string(nice) +
                                "; it must be in 0-19");
  }
  return nice;
}

// Raising a thread's niceness is always permitted, so this cannot fail for 0-19.
void lower_this_threads_priority(int nice) {
#if defined(__linux__)
  if (nice != 0) {
    const int current = ::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()));
    ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), std::min(current + nice, 19));
  }
#else
  (void)nice;
#endif
}

}  // namespace

thread_pool::thread_pool(thread_pool_options options)
    : options_{resolve_threads(options.threads), options.capacity, options.overflow,
               checked_nice(options.nice)} {
  slots_.reserve(options_.threads);
  workers_.reserve(options_.threads);
  for (std::size_t i = 0; i < options_.threads; ++i) {
    slots_.push_back(std::make_unique<worker_slot>());
  }
}

void thread_pool::start_locked() {
  if (started_) return;
  started_ = true;
  for (std::size_t i = 0; i < options_.threads; ++i) {
    workers_.emplace_back([this, slot = slots_[i].get()] { work(*slot); });
#if defined(__linux__)
    // Named here, not by the worker itself: the name is in place when `execute` returns.
    ::pthread_setname_np(workers_.back().native_handle(), "crosstown-pool");
#endif
  }
}

thread_pool::~thread_pool() { shutdown(clock::time_point::max()); }

bool thread_pool::on_worker_thread() const noexcept { return current_pool == this; }

std::size_t thread_pool::queue_depth() const {
  std::lock_guard lock(mutex_);
  return queued_;
}

bool thread_pool::accepting() const noexcept {
  if (!open_.load(std::memory_order_relaxed)) return false;
  return options_.capacity == 0 || held_.load(std::memory_order_relaxed) < options_.capacity;
}

std::size_t thread_pool::room_locked() const noexcept {
  if (options_.capacity == 0) return std::numeric_limits<std::size_t>::max();
  const std::size_t held = queued_ + claimed_;
  return held >= options_.capacity ? 0 : options_.capacity - held;
}

void thread_pool::execute(job_batch batch) {
  if (batch.empty()) return;
  std::unique_lock lock(mutex_);
  if (accepting_) start_locked();
  std::size_t start = 0;
  while (accepting_) {
    const std::size_t remaining = batch.size() - start;
    const std::size_t room = room_locked();
    if (room > 0) {
      const std::size_t n = std::min(room, remaining);
      job_batch part = (start == 0 && n == batch.size()) ? std::move(batch)
                                                         : take_range(batch, start, start + n);
      start += n;
      queued_ += n;
      held_.store(queued_ + claimed_, std::memory_order_relaxed);
      queue_.push_back(segment{std::move(part), 0});
      if (n == 1) {
        work_cv_.notify_one();
      } else {
        work_cv_.notify_all();
      }
      if (n == remaining) return;
    }
    // The rest does not fit.
    overflow_policy policy = options_.overflow;
    if (policy == overflow_policy::block && on_worker_thread()) {
      policy = overflow_policy::run_on_caller;  // a worker waiting on its own pool may deadlock
    }
    if (policy == overflow_policy::block) {
      room_cv_.wait(lock, [this] { return room_locked() > 0 || !accepting_; });
      continue;
    }
    lock.unlock();
    for (std::size_t i = start; i < batch.size(); ++i) {
      if (policy == overflow_policy::reject) {
        batch[i].reject();
      } else {
        batch[i].run();
      }
    }
    return;
  }
  // Not accepting: the pool is shut down. The jobs left are dropped (counted, reported).
  lock.unlock();
  for (std::size_t i = start; i < batch.size(); ++i) batch[i].drop();
}

void thread_pool::work(worker_slot& slot) {
  current_pool = this;
  lower_this_threads_priority(options_.nice);
  const std::size_t spread = 2 * options_.threads;
  std::unique_lock lock(mutex_);
  for (;;) {
    work_cv_.wait(lock, [this] { return !queue_.empty() || stopping_; });
    if (queue_.empty()) break;  // stopping, and nothing left

    segment& front = queue_.front();
    const std::size_t left = front.jobs.size() - front.next;
    const std::size_t take = std::clamp<std::size_t>((left + spread - 1) / spread, 1, left);
    {
      std::lock_guard slot_lock(slot.mutex);
      for (std::size_t i = 0; i < take; ++i) {
        slot.chunk.push_back(std::move(front.jobs[front.next++]));
      }
      slot.next.store(0, std::memory_order_relaxed);
    }
    if (front.next == front.jobs.size()) queue_.pop_front();
    queued_ -= take;
    claimed_ += take;
    lock.unlock();

    for (std::size_t i = 0; i < take; ++i) {
      if (slot.abandon.load(std::memory_order_relaxed)) break;
      slot.chunk[i].run();
      slot.next.store(i + 1, std::memory_order_release);
    }
    job_batch abandoned;
    {
      std::lock_guard slot_lock(slot.mutex);
      const std::size_t done = slot.next.load(std::memory_order_relaxed);
      if (done < slot.chunk.size()) abandoned = take_range(slot.chunk, done, slot.chunk.size());
      slot.chunk.clear();
      slot.next.store(0, std::memory_order_relaxed);
    }
    abandoned.clear();  // drops them: counted and reported, outside every lock

    lock.lock();
    claimed_ -= take;
    held_.store(queued_ + claimed_, std::memory_order_relaxed);
    if (options_.capacity != 0) room_cv_.notify_all();
    if (idle_locked()) idle_cv_.notify_all();
  }
}

drain_report thread_pool::report_locked(bool complete) {
  drain_report report;
  report.complete = complete;
  // Queue order: the workers' chunks left the front of the queue before anything still in it.
  std::uint64_t in_chunks = 0;
  for (const auto& slot : slots_) {
    std::lock_guard slot_lock(slot->mutex);
    // Jobs from `next` on have not finished: their identity is not touched while they run.
    const std::size_t next = slot->next.load(std::memory_order_acquire);
    if (next < slot->chunk.size()) ++report.running;
    for (std::size_t i = next; i < slot->chunk.size(); ++i) {
      ++in_chunks;
      report.unfinished.push_back(slot->chunk[i].info().describe());
    }
  }
  for (const segment& s : queue_) {
    for (std::size_t i = s.next; i < s.jobs.size(); ++i) {
      report.unfinished.push_back(s.jobs[i].info().describe());
    }
  }
  report.queued = queued_ + (in_chunks - report.running);
  return report;
}

drain_report thread_pool::drain(clock::time_point deadline) {
  std::unique_lock lock(mutex_);
  const bool idle = detail::wait_until(idle_cv_, lock, deadline, [this] { return idle_locked(); });
  return report_locked(idle);
}

drain_report thread_pool::shutdown(clock::time_point deadline) {
  std::call_once(joined_, [&] {
    std::deque<segment> dropped;
    {
      std::unique_lock lock(mutex_);
      accepting_ = false;
      open_.store(false, std::memory_order_relaxed);
      room_cv_.notify_all();  // producers blocked on a full queue drop their rest
      const bool idle =
          detail::wait_until(idle_cv_, lock, deadline, [this] { return idle_locked(); });
      shutdown_report_ = report_locked(idle);
      if (!idle) {
        dropped.swap(queue_);
        queued_ = 0;
        held_.store(claimed_, std::memory_order_relaxed);
        for (const auto& slot : slots_) {
          slot->abandon.store(true, std::memory_order_relaxed);
        }
      }
      stopping_ = true;
      work_cv_.notify_all();
    }
    dropped.clear();  // each job left counts as dropped_at_shutdown and is reported
    for (std::thread& w : workers_) w.join();
  });
  return shutdown_report_;
}

}  // namespace crosstown
