#include <crosstown/thread_pool.hpp>

#include <crosstown/detail/wait.hpp>
#include <crosstown/fault.hpp>

#if defined(__linux__)
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#elif defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <sched.h>
#endif

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <iostream>
#include <iterator>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace crosstown {

namespace {

thread_local const void* current_pool = nullptr;  // the state of the pool this thread works for
thread_local int io_thread_depth = 0;             // io_thread_guards alive on this thread
std::atomic<std::size_t> abandoned_running{0};

std::size_t resolve_threads(std::size_t requested) {
  if (requested != 0) return requested;
  return std::max<std::size_t>(1, std::thread::hardware_concurrency());
}

std::size_t resolve_capacity(std::size_t requested, std::size_t threads) {
  if (requested != 0) return requested;
  return threads > unbounded / default_capacity_per_thread ? unbounded
                                                           : threads * default_capacity_per_thread;
}

int checked_nice(int nice) {
  if (nice < 0 || nice > 19) {
    throw std::invalid_argument("crosstown::thread_pool_options::nice is " + std::to_string(nice) +
                                "; it must be in 0-19");
  }
  return nice;
}

// Lowering a thread's priority is always permitted, so this cannot fail for 0-19; SCHED_IDLE
// may be refused (a seccomp profile), and then the thread gets nice 19, the next lowest.
void lower_this_threads_priority(int nice, bool lowest) {
#if defined(__linux__)
  const auto tid = static_cast<id_t>(::gettid());
  if (lowest) {
    sched_param param{};
    param.sched_priority = 0;
    if (::pthread_setschedparam(::pthread_self(), SCHED_IDLE, &param) == 0) return;
    ::setpriority(PRIO_PROCESS, tid, 19);
    return;
  }
  if (nice != 0) {
    const int current = ::getpriority(PRIO_PROCESS, tid);
    ::setpriority(PRIO_PROCESS, tid, std::min(current + nice, 19));
  }
#elif defined(__unix__) || defined(__APPLE__)
  (void)nice;
  if (lowest) {
    sched_param param{};
    param.sched_priority = ::sched_get_priority_min(SCHED_OTHER);
    ::pthread_setschedparam(::pthread_self(), SCHED_OTHER, &param);
  }
#else
  (void)nice;
  (void)lowest;
#endif
}

// A futex-style word: `wait(seen)` sleeps while the word still holds `seen`; `wake` changes
// it and wakes sleepers. Neither takes a lock, so a producer waking a worker never waits for
// one (std::atomic::wait elsewhere).
class wake_word {
 public:
  std::uint32_t load() const noexcept { return word_.load(std::memory_order_seq_cst); }
  void wait(std::uint32_t seen) noexcept {
#if defined(__linux__)
    while (word_.load(std::memory_order_seq_cst) == seen) {
      ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word_), FUTEX_WAIT_PRIVATE, seen,
                nullptr, nullptr, 0);
    }
#else
    word_.wait(seen, std::memory_order_seq_cst);
#endif
  }
  void wake(bool all) noexcept {
    word_.fetch_add(1, std::memory_order_seq_cst);
#if defined(__linux__)
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word_), FUTEX_WAKE_PRIVATE,
              all ? INT32_MAX : 1, nullptr, nullptr, 0);
#else
    if (all) {
      word_.notify_all();
    } else {
      word_.notify_one();
    }
#endif
  }

 private:
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
  std::atomic<std::uint32_t> word_{0};
};

// The jobs of one hand-off, in the inbox (a lock-free stack) or the queue (a FIFO list).
struct batch_node {
  job_batch jobs;
  std::size_t next = 0;  // first job not taken
  batch_node* link = nullptr;
};

void delete_list(batch_node* n) noexcept {
  while (n != nullptr) delete std::exchange(n, n->link);  // jobs not taken are dropped
}

}  // namespace

io_thread_guard::io_thread_guard() noexcept { ++io_thread_depth; }
io_thread_guard::~io_thread_guard() { --io_thread_depth; }
bool on_io_thread() noexcept { return io_thread_depth > 0; }

struct thread_pool::state : std::enable_shared_from_this<state> {
  struct worker {
    std::thread thread;
    std::mutex mutex;        // guards current and busy: this worker and reports take it
    job current;             // the job being run (its identity is not touched while it runs)
    bool busy = false;       // current holds a job
    bool exited = false;     // guarded by wait_mutex
    bool abandoned = false;  // guarded by wait_mutex
  };

  explicit state(const thread_pool_options& o)
      : threads(resolve_threads(o.threads)),
        capacity(resolve_capacity(o.capacity, threads)),
        overflow(o.overflow),
        nice(checked_nice(o.nice)),
        lowest_priority(o.lowest_priority) {
    workers.reserve(threads);
    for (std::size_t i = 0; i < threads; ++i) workers.push_back(std::make_unique<worker>());
  }
  state(const state&) = delete;
  state& operator=(const state&) = delete;
  ~state() {
    // Only jobs handed over after every worker had gone can be left: they are dropped here.
    delete_list(inbox.exchange(nullptr));
    delete_list(front);
  }

  const std::size_t threads;
  const std::size_t capacity;
  const overflow_policy overflow;
  const int nice;
  const bool lowest_priority;

  // Hand-off: lock-free.
  std::atomic<batch_node*> inbox{nullptr};  // pushed by producers, newest first
  std::atomic<std::size_t> queued{0};       // handed over, not started
  std::atomic<std::size_t> held{0};         // handed over, not finished
  std::atomic<bool> open{true};             // accepting hand-offs
  std::atomic<std::size_t> entering{0};     // hand-offs between their `open` check and push
  std::atomic<std::uint32_t> sleepers{0};   // workers about to sleep on `wake`
  wake_word wake;
  std::atomic<bool> stopping{false};  // workers exit once nothing is queued
  std::atomic<bool> started{false};
  std::mutex start_mutex;

  // Taking: workers (and reports) only.
  std::mutex take_mutex;
  batch_node* front = nullptr;  // the queue, oldest first; guarded by take_mutex
  batch_node* back = nullptr;   // guarded by take_mutex

  // Waiting for idleness, room or exits.
  std::mutex wait_mutex;
  std::condition_variable wait_cv;
  std::atomic<std::size_t> waiters{0};  // threads waiting on wait_cv for idleness or room

  std::vector<std::unique_ptr<worker>> workers;  // fixed size; threads start with the first batch

  std::mutex keep_mutex;
  std::vector<std::shared_ptr<const void>> keep;       // guarded by keep_mutex
  std::function<void(const task_info&)> on_abandoned;  // set before work arrives
  std::atomic<std::uint64_t> io_refusals{0};
  std::atomic<bool> io_refusal_told{false};
  std::atomic<std::size_t> abandoned{0};
  std::once_flag shut;
  drain_report shutdown_report;  // written once under `shut`

  bool on_worker() const noexcept { return current_pool == this; }

  void start() {
    if (started.load(std::memory_order_acquire)) return;
    std::lock_guard lock(start_mutex);
    if (started.load(std::memory_order_relaxed)) return;
    for (const auto& w : workers) {
      if (w->thread.joinable()) continue;  // started by an earlier try that ran out of threads
      worker* slot = w.get();
      w->thread = std::thread([self = shared_from_this(), slot]() mutable {
        self->work(*slot);
        bool abandoned_here = false;
        {
          std::lock_guard wait_lock(self->wait_mutex);
          slot->exited = true;
          abandoned_here = slot->abandoned;
          self->wait_cv.notify_all();
        }
        self.reset();  // perhaps the last owner: the pool and what it keeps alive go here
        if (abandoned_here) abandoned_running.fetch_sub(1, std::memory_order_seq_cst);
      });
#if defined(__linux__)
      // Named here, not by the worker itself: the name is in place when `execute` returns.
      ::pthread_setname_np(w->thread.native_handle(), "crosstown-pool");
#endif
    }
    started.store(true, std::memory_order_release);
  }

  // Reserves room for up to `want` jobs; returns how many fit.
  std::size_t reserve(std::size_t want) noexcept {
    if (capacity == unbounded) {
      held.fetch_add(want, std::memory_order_seq_cst);
      return want;
    }
    std::size_t now = held.load(std::memory_order_relaxed);
    for (;;) {
      const std::size_t room = now >= capacity ? 0 : capacity - now;
      const std::size_t n = std::min(room, want);
      if (n == 0) return 0;
      if (held.compare_exchange_weak(now, now + n, std::memory_order_seq_cst)) return n;
    }
  }

  void push(job_batch&& jobs) {
    const std::size_t n = jobs.size();
    auto* node = new batch_node{std::move(jobs)};
    queued.fetch_add(n, std::memory_order_seq_cst);  // before the push: never seen negative
    node->link = inbox.load(std::memory_order_relaxed);
    while (!inbox.compare_exchange_weak(node->link, node, std::memory_order_seq_cst,
                                        std::memory_order_relaxed)) {
    }
    if (sleepers.load(std::memory_order_seq_cst) > 0) wake.wake(n > 1);
  }

  // Moves what producers pushed since the last call to the back of the queue, oldest first:
  // everything in the queue entered before anything in the inbox.
  void refill_locked() noexcept {
    batch_node* newest = inbox.exchange(nullptr, std::memory_order_seq_cst);
    batch_node* oldest = nullptr;
    while (newest != nullptr) {
      batch_node* n = std::exchange(newest, newest->link);
      n->link = oldest;
      oldest = n;
    }
    if (oldest == nullptr) return;
    if (back != nullptr) {
      back->link = oldest;
    } else {
      front = oldest;
    }
    for (back = oldest; back->link != nullptr; back = back->link) {
    }
  }

  void finished_one() noexcept {
    held.fetch_sub(1, std::memory_order_seq_cst);
    if (waiters.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard lock(wait_mutex);
      wait_cv.notify_all();
    }
  }

  void work(worker& w) {
    current_pool = this;
    lower_this_threads_priority(nice, lowest_priority);
    for (;;) {
      batch_node* spent = nullptr;
      bool got = false;
      {
        std::lock_guard take(take_mutex);
        // Test seam: an injector installed on this worker can stall it here, holding the lock
        // workers take work under, to show that hand-offs do not wait for it.
        (void)fault::hit("thread_pool.take");
        if (front == nullptr) refill_locked();
        if (front != nullptr) {
          batch_node* n = front;
          {
            std::lock_guard slot(w.mutex);
            w.current = std::move(n->jobs[n->next++]);
            w.busy = true;
          }
          queued.fetch_sub(1, std::memory_order_seq_cst);
          if (n->next == n->jobs.size()) {
            spent = n;
            front = n->link;
            if (front == nullptr) back = nullptr;
          }
          got = true;
        }
      }
      delete spent;  // its jobs were all taken
      if (got) {
        if (w.current.work().plan() != nullptr) {
          // A planned task (awaitable, lane, timeout) moves itself on when run: it is no
          // longer this worker's to name.
          job planned;
          {
            std::lock_guard slot(w.mutex);
            planned = std::move(w.current);
            w.busy = false;
          }
          planned.run();
        } else {
          w.current.run();
          job done;
          {
            std::lock_guard slot(w.mutex);
            w.busy = false;
            done = std::move(w.current);
          }
        }
        finished_one();
        continue;
      }
      if (stopping.load(std::memory_order_seq_cst) && queued.load(std::memory_order_seq_cst) == 0) {
        return;
      }
      const std::uint32_t seen = wake.load();
      sleepers.fetch_add(1, std::memory_order_seq_cst);
      if (queued.load(std::memory_order_seq_cst) == 0 &&
          !stopping.load(std::memory_order_seq_cst)) {
        wake.wait(seen);
      } else if (queued.load(std::memory_order_seq_cst) != 0) {
        std::this_thread::yield();  // a producer counted its jobs and is about to push them
      }
      sleepers.fetch_sub(1, std::memory_order_seq_cst);
    }
  }

  template <class Predicate>
  bool wait_for(clock::time_point deadline, Predicate ready) {
    std::unique_lock lock(wait_mutex);
    waiters.fetch_add(1, std::memory_order_seq_cst);
    const bool ok = detail::wait_until(wait_cv, lock, deadline, ready);
    waiters.fetch_sub(1, std::memory_order_seq_cst);
    return ok;
  }

  bool idle() const noexcept { return held.load(std::memory_order_seq_cst) == 0; }

  drain_report report(bool complete) {
    drain_report out;
    out.complete = complete;
    std::lock_guard take(take_mutex);
    refill_locked();
    // Running first: they left the queue before anything still in it.
    for (const auto& w : workers) {
      std::lock_guard slot(w->mutex);
      if (!w->busy) continue;
      ++out.running;
      out.unfinished.push_back(w->current.info().describe());
    }
    for (const batch_node* n = front; n != nullptr; n = n->link) {
      for (std::size_t i = n->next; i < n->jobs.size(); ++i) {
        ++out.queued;
        out.unfinished.push_back(n->jobs[i].info().describe());
      }
    }
    return out;
  }

  void refuse_block_on_io_thread(std::size_t rejected) {
    io_refusals.fetch_add(1, std::memory_order_relaxed);
    if (io_refusal_told.exchange(true)) return;
    std::cerr << "crosstown: overflow_policy::block refused on an I/O thread "
                 "(crosstown::io_thread_guard): waiting for room in the full pool would stall "
                 "its event loop, so "
              << rejected
              << " task(s) were rejected instead (counted rejected_by_overflow). Use reject or "
                 "run_on_caller, or a larger capacity. (Said once per pool.)\n";
  }

  // Counts a hand-off in `entering` while it may push (shutdown waits for none to be left).
  class entry {
   public:
    explicit entry(std::atomic<std::size_t>& count) noexcept : count_(count) { enter(); }
    entry(const entry&) = delete;
    entry& operator=(const entry&) = delete;
    ~entry() { leave(); }
    void enter() noexcept {
      count_.fetch_add(1, std::memory_order_seq_cst);
      in_ = true;
    }
    void leave() noexcept {
      if (in_) count_.fetch_sub(1, std::memory_order_seq_cst);
      in_ = false;
    }

   private:
    std::atomic<std::size_t>& count_;
    bool in_ = false;
  };

  // Pushes jobs [first, first + n) of `batch` (all of it when they are all), for which room
  // was reserved; gives the room back if that fails (out of memory: the jobs stay in `batch`).
  void push_reserved(job_batch& batch, std::size_t first, std::size_t n) {
    try {
      if (first == 0 && n == batch.size()) {
        push(std::move(batch));
        return;
      }
      job_batch part;
      part.reserve(n);
      std::move(batch.begin() + static_cast<std::ptrdiff_t>(first),
                batch.begin() + static_cast<std::ptrdiff_t>(first + n), std::back_inserter(part));
      try {
        push(std::move(part));
      } catch (...) {
        std::move(part.begin(), part.end(), batch.begin() + static_cast<std::ptrdiff_t>(first));
        throw;
      }
    } catch (...) {
      held.fetch_sub(n, std::memory_order_seq_cst);
      throw;
    }
  }

  void execute(job_batch batch) {
    if (batch.empty()) return;
    entry entered(entering);
    if (!open.load(std::memory_order_seq_cst)) {
      return;  // the batch's destructor drops every job: counted and reported
    }
    start();
    const std::size_t total = batch.size();  // the batch may be moved into the queue whole
    std::size_t first = 0;
    for (;;) {
      const std::size_t n = reserve(total - first);
      if (n > 0) {
        push_reserved(batch, first, n);
        first += n;
        if (first == total) return;
      }
      // The rest does not fit.
      overflow_policy policy = overflow;
      if (policy == overflow_policy::block && on_worker()) {
        policy = overflow_policy::run_on_caller;  // a worker waiting on its own pool may deadlock
      }
      if (policy == overflow_policy::block && on_io_thread()) {
        policy = overflow_policy::reject;
        refuse_block_on_io_thread(batch.size() - first);
      }
      entered.leave();  // waiting, rejecting or running here must not hold up a shutdown
      if (policy == overflow_policy::block) {
        wait_for(clock::time_point::max(), [this] {
          return held.load(std::memory_order_seq_cst) < capacity ||
                 !open.load(std::memory_order_seq_cst);
        });
        entered.enter();
        if (!open.load(std::memory_order_seq_cst)) {
          return;  // shut down meanwhile: the rest is dropped by the batch's destructor
        }
        continue;
      }
      for (std::size_t i = first; i < batch.size(); ++i) {
        if (policy == overflow_policy::reject) {
          batch[i].reject();
        } else {
          batch[i].run();
        }
      }
      return;
    }
  }

  drain_report shutdown(clock::time_point deadline) {
    std::call_once(shut, [&] {
      open.store(false, std::memory_order_seq_cst);
      {
        std::lock_guard lock(wait_mutex);
        wait_cv.notify_all();  // producers blocked on a full pool drop their rest
      }
      while (entering.load(std::memory_order_seq_cst) != 0) std::this_thread::yield();
      // No hand-off can push from here on.
      const bool complete = wait_for(deadline, [this] { return idle(); });
      shutdown_report = report(complete);
      batch_node* dropped = nullptr;
      if (!complete) {
        std::lock_guard take(take_mutex);
        refill_locked();
        dropped = std::exchange(front, nullptr);
        back = nullptr;
        std::size_t n = 0;
        for (const batch_node* d = dropped; d != nullptr; d = d->link)
          n += d->jobs.size() - d->next;
        queued.fetch_sub(n, std::memory_order_seq_cst);
        held.fetch_sub(n, std::memory_order_seq_cst);
      }
      stopping.store(true, std::memory_order_seq_cst);
      wake.wake(true);
      delete_list(dropped);  // each job left counts as dropped_at_shutdown and is reported
      if (!started.load(std::memory_order_acquire)) return;
      const bool unbounded_wait = complete || deadline > clock::time_point::max() - abandon_grace;
      leave_or_join(unbounded_wait ? clock::time_point::max() : deadline + abandon_grace);
    });
    return shutdown_report;
  }

  void leave_or_join(clock::time_point until) {
    auto all_exited = [this] {
      return std::all_of(workers.begin(), workers.end(), [](const auto& w) {
        return w->exited || !w->thread.joinable();  // a worker that never started is gone too
      });
    };
    std::vector<std::pair<task_info, std::string>> left;  // info.name points into the string
    {
      std::unique_lock lock(wait_mutex);
      detail::wait_until(wait_cv, lock, until, all_exited);
      for (const auto& w : workers) {
        if (w->exited || !w->thread.joinable()) continue;
        w->abandoned = true;
        abandoned.fetch_add(1, std::memory_order_relaxed);
        abandoned_running.fetch_add(1, std::memory_order_seq_cst);
        std::lock_guard slot(w->mutex);
        if (w->busy) {
          const task_info info = w->current.info();
          left.emplace_back(info, std::string(info.name));
        }
      }
    }
    for (const auto& w : workers) {
      if (!w->thread.joinable()) continue;
      bool gone = false;
      {
        std::lock_guard lock(wait_mutex);
        gone = !w->abandoned;
      }
      if (gone) {
        w->thread.join();
      } else {
        w->thread.detach();  // it finishes its task on its own, keeping this state alive
      }
    }
    if (!on_abandoned) return;
    for (auto& [info, name] : left) {
      info.name = name;
      try {
        on_abandoned(info);
      } catch (...) {
        // Reporting must not stop the shutdown; the report names the task as running.
      }
    }
  }
};

thread_pool::thread_pool(thread_pool_options options) : state_(std::make_shared<state>(options)) {}

thread_pool::~thread_pool() { shutdown(clock::time_point::max()); }

void thread_pool::execute(job_batch batch) { state_->execute(std::move(batch)); }

drain_report thread_pool::drain(clock::time_point deadline) {
  const bool idle = state_->wait_for(deadline, [this] { return state_->idle(); });
  return state_->report(idle);
}

drain_report thread_pool::shutdown(clock::time_point deadline) {
  return state_->shutdown(deadline);
}

std::size_t thread_pool::thread_count() const noexcept { return state_->threads; }

std::size_t thread_pool::queue_depth() const noexcept {
  return state_->queued.load(std::memory_order_relaxed);
}

std::size_t thread_pool::capacity() const noexcept { return state_->capacity; }

std::size_t thread_pool::unfinished() const noexcept {
  return state_->held.load(std::memory_order_relaxed);
}

bool thread_pool::accepting() const noexcept {
  if (!state_->open.load(std::memory_order_relaxed)) return false;
  return state_->held.load(std::memory_order_relaxed) < state_->capacity;
}

std::uint64_t thread_pool::io_thread_refusals() const noexcept {
  return state_->io_refusals.load(std::memory_order_relaxed);
}

std::size_t thread_pool::abandoned_workers() const noexcept {
  return state_->abandoned.load(std::memory_order_relaxed);
}

bool thread_pool::on_worker_thread() const noexcept { return state_->on_worker(); }

void thread_pool::keep_alive(std::shared_ptr<const void> owner) {
  std::lock_guard lock(state_->keep_mutex);
  state_->keep.push_back(std::move(owner));
}

void thread_pool::on_abandoned(std::function<void(const task_info&)> hook) {
  state_->on_abandoned = std::move(hook);
}

std::size_t thread_pool::abandoned_threads_running() noexcept {
  return abandoned_running.load(std::memory_order_seq_cst);
}

}  // namespace crosstown
