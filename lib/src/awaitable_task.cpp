#include <crosstown/awaitable_task.hpp>

#include <crosstown/detail/io_runtime.hpp>
#include <crosstown/detail/ledger.hpp>
#include <crosstown/runtime.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#if defined(__linux__)
#include <pthread.h>
#endif

#include <algorithm>
#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

namespace crosstown {

namespace asio = boost::asio;

namespace {

std::string describe(std::chrono::nanoseconds d) {
  using namespace std::chrono;
  if (d % milliseconds(1) == nanoseconds::zero()) {
    return std::to_string(duration_cast<milliseconds>(d).count()) + " ms";
  }
  return std::to_string(d.count()) + " ns";
}

bool is_timeout(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const task_timed_out&) {
    return true;
  } catch (...) {
    return false;
  }
}

bool should_retry(const retry_policy& p, const std::exception_ptr& e) noexcept {
  if (!p.retry_if) return true;
  try {
    return p.retry_if(e);
  } catch (...) {
    return false;  // documented: a predicate that throws means "do not retry"
  }
}

// Keeps io_runtime::live_ counting this coroutine while its frame exists, however it ends.
class live_token {
 public:
  explicit live_token(detail::io_runtime& io) noexcept : io_(&io) {}
  live_token(live_token&& other) noexcept : io_(std::exchange(other.io_, nullptr)) {}
  live_token& operator=(live_token&&) = delete;
  ~live_token() {
    if (io_ != nullptr) io_->coroutine_ended();
  }

 private:
  detail::io_runtime* io_;
};

// One attempt raced against the task's timeout. Returns the attempt's failure (null: it
// succeeded in time).
asio::awaitable<std::exception_ptr> attempt(detail::task_plan& plan, task_clock& clock) {
  auto ex = co_await asio::this_coro::executor;
  // wait_for_one: whichever ends first - even by throwing - cancels the other, and the group
  // completes once both have (the body unwound, its captures still alive until then).
  auto [order, body_error, timer_error] =
      co_await asio::experimental::make_parallel_group(
          asio::co_spawn(ex, plan.body->start(), asio::deferred),
          asio::co_spawn(ex, clock.wait(plan.timeout), asio::deferred))
          .async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
  if (order[0] == 0) co_return body_error;
  if (timer_error) co_return timer_error;  // the clock failed: report that, not a timeout
  co_return std::make_exception_ptr(task_timed_out(plan.timeout));
}

asio::awaitable<void> run_awaitable(detail::io_runtime& io, running_job work, live_token) {
  detail::task_plan& plan = *work.work().plan();
  task_clock& clock = io.clock();
  std::exception_ptr last;
  task_state outcome = task_state::ran;
  for (std::uint32_t attempts = 1;; ++attempts) {
    last = nullptr;
    try {
      if (plan.timeout == std::chrono::nanoseconds::zero()) {
        co_await plan.body->start();  // no race to run: no frame for `attempt`
      } else {
        last = co_await attempt(plan, clock);
      }
    } catch (...) {
      last = std::current_exception();  // the factory itself threw, or the race could not start
    }
    if (!last) {
      outcome = task_state::ran;
      break;
    }
    outcome = is_timeout(last) ? task_state::timed_out : task_state::failed;
    if (attempts >= plan.retry.max_attempts || io.stopping() || !should_retry(plan.retry, last)) {
      break;
    }
    io.count_retry();
    bool waited = true;
    try {
      co_await clock.wait(retry_backoff(plan.retry, attempts, io.jitter_unit()));
    } catch (...) {
      waited = false;  // the wait was cancelled: end with the failure we have
    }
    if (!waited) break;
  }
  work.finish(outcome, std::move(last));
}

// Watches a blocking task with a timeout; reports the overrun if the task is still running.
struct overrun_watch {
  asio::cancellation_signal stop;
  asio::any_io_executor ex;  // where `stop` may be emitted
  std::atomic<bool> done{false};
  std::chrono::nanoseconds timeout{0};
  task_info info;
  std::string name;
  detail::ledger* ledger = nullptr;
};

asio::awaitable<void> watch_overrun(detail::io_runtime& io, std::shared_ptr<overrun_watch> w,
                                    live_token) {
  try {
    co_await io.clock().wait(w->timeout);
  } catch (...) {
    co_return;  // the task ended first and cancelled the watch
  }
  if (w->done.load(std::memory_order_acquire)) co_return;
  io.count_overrun();
  task_failure failure{w->info, std::make_exception_ptr(task_overrun(w->timeout)), {}};
  failure.task.name = w->name;
  failure.message = task_overrun(w->timeout).what();
  w->ledger->report_failure(failure);
}

}  // namespace

// --- public pieces ---

std::chrono::nanoseconds steady_task_clock::now() const noexcept {
  return std::chrono::steady_clock::now().time_since_epoch();
}

asio::awaitable<void> steady_task_clock::wait(std::chrono::nanoseconds d) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  timer.expires_after(d);
  co_await timer.async_wait(asio::use_awaitable);
}

task_timed_out::task_timed_out(std::chrono::nanoseconds timeout)
    : std::runtime_error("timed out after " + describe(timeout) + " and was cancelled"),
      timeout_(timeout) {}

task_overrun::task_overrun(std::chrono::nanoseconds timeout)
    : std::runtime_error("still running after its timeout of " + describe(timeout) +
                         " (a blocking task cannot be stopped; it runs on)"),
      timeout_(timeout) {}

void redirect_awaitables(runtime& rt, awaitable_executor* ex, task_clock* clock) {
  detail::io_runtime::of(rt).redirect(ex, clock);
}

void refuse_awaitables(runtime& rt, bool refuse) { detail::io_runtime::of(rt).refuse(refuse); }

namespace detail {

void run_planned(job&& work) noexcept {
  task_plan& plan = *work.fn_.plan();
  if (plan.lane != nullptr && !plan.holds_slot && !plan.lane->arrive(work, plan)) return;
  plan.io->start(std::move(work));
}

namespace {

lane_state* lane_of(io_runtime& io, const defer_options& options) {
  if (options.lane.empty()) return nullptr;
  lane_state* lane = io.find_lane(options.lane);
  if (lane == nullptr) {
    throw std::invalid_argument("crosstown::defer_options::lane: the runtime has no lane named \"" +
                                options.lane + "\"; create it first with runtime::lane");
  }
  return lane;
}

void check_timeout(const defer_options& options) {
  if (options.timeout < std::chrono::nanoseconds::zero()) {
    throw std::invalid_argument("crosstown::defer_options::timeout is negative (" +
                                std::to_string(options.timeout.count()) + " ns)");
  }
}

}  // namespace

task plan_blocking(runtime& rt, task&& fn, const defer_options& options, executor* target) {
  if (options.retry.max_attempts != 1) {
    throw std::invalid_argument(
        "crosstown::defer_options::retry: only awaitable tasks are retried (a blocking task "
        "would hold a pool thread through its backoff); max_attempts is " +
        std::to_string(options.retry.max_attempts));
  }
  check_timeout(options);
  io_runtime& io = io_runtime::of(rt);
  auto plan = std::make_unique<task_plan>(io);
  plan->lane = lane_of(io, options);
  plan->target = target;
  plan->timeout = options.timeout;
  plan->blocking = std::move(fn);
  return task(plan_carrier(plan.release()));
}

void defer_awaitable_body(response_scope& scope, std::unique_ptr<awaitable_body> body,
                          defer_options&& options) {
  if (options.same_thread || options.executor) {
    throw std::invalid_argument(
        "crosstown::defer_options: an awaitable task runs on the runtime's I/O executor; "
        "executor and same_thread cannot be set for it");
  }
  if (options.retry.max_attempts == 0) {
    throw std::invalid_argument("crosstown::retry_policy::max_attempts is 0; it must be >= 1");
  }
  check_timeout(options);
  io_runtime& io = io_runtime::of(scope.owner());
  auto plan = std::make_unique<task_plan>(io);
  plan->lane = lane_of(io, options);
  plan->timeout = options.timeout;
  plan->retry = std::move(options.retry);
  plan->body = std::move(body);
  // The plan holds them now; the plain path of defer must not plan the task again.
  options.lane.clear();
  options.timeout = std::chrono::nanoseconds::zero();
  options.retry = retry_policy{};
  options.executor = io.entry();
  scope.defer(task(plan_carrier(plan.release())), std::move(options));
}

// --- io_runtime ---

io_runtime::io_runtime(runtime& owner, std::size_t threads, awaitable_executor* external,
                       task_clock* clock)
    : owner_(owner),
      threads_(threads == 0 ? 1 : threads),
      external_(external),
      clock_(clock != nullptr ? clock : &steady_) {}

io_runtime::~io_runtime() { shutdown(); }

io_runtime& io_runtime::of(runtime& rt) noexcept { return rt.io(core_key{}); }

task_clock& io_runtime::clock() noexcept { return *clock_.load(std::memory_order_acquire); }

void io_runtime::redirect(awaitable_executor* external, task_clock* clock) {
  {
    std::lock_guard lock(mutex_);
    external_ = external;
  }
  clock_.store(clock != nullptr ? clock : &steady_, std::memory_order_release);
}

double io_runtime::jitter_unit() noexcept {
  // splitmix64 over a counter: the n-th draw of a runtime is always the same number.
  std::uint64_t z = draws_.fetch_add(1, std::memory_order_relaxed) * 0x9e3779b97f4a7c15ULL +
                    0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

asio::any_io_executor io_runtime::spawn_executor(bool* one_thread) {
  std::lock_guard lock(mutex_);
  if (stopping()) throw std::logic_error("crosstown: the runtime's I/O side has shut down");
  if (one_thread != nullptr) *one_thread = external_ == nullptr;
  if (external_ != nullptr) return external_->get();
  if (contexts_.empty()) {
    // Several threads run several io_contexts, not one shared context: a task and the timer
    // racing it then always run on one thread, and need no strand. A strand there had to be
    // type-erased into an any_io_executor, i.e. a heap-shared executor whose reference count
    // was dropped on the request's thread and on two I/O threads, released by Asio with a
    // fence ThreadSanitizer does not model - and a strand per task cost an allocation.
    // All or nothing: a context without its thread would keep its tasks until shutdown.
    std::vector<std::unique_ptr<asio::io_context>> contexts;
    std::vector<asio::executor_work_guard<asio::io_context::executor_type>> work;
    std::vector<std::thread> threads;
    try {
      contexts.reserve(threads_);
      work.reserve(threads_);
      threads.reserve(threads_);
      for (std::size_t i = 0; i < threads_; ++i) {
        contexts.push_back(std::make_unique<asio::io_context>(1));
        work.push_back(asio::make_work_guard(*contexts.back()));
      }
      for (std::size_t i = 0; i < threads_; ++i) {
        asio::io_context* context = contexts[i].get();  // outlives the thread: joined first
        threads.emplace_back([context] { context->run(); });
#if defined(__linux__)
        // Named from here, so the name is set once the first awaitable task has been started.
        ::pthread_setname_np(threads.back().native_handle(), "crosstown-io");
#endif
      }
    } catch (...) {
      for (auto& context : contexts) context->stop();
      for (std::thread& t : threads) t.join();  // each ran an empty context: returns at once
      throw;
    }
    contexts_ = std::move(contexts);
    work_ = std::move(work);
    pool_ = std::move(threads);
  }
  asio::io_context& context = *contexts_[next_context_];
  next_context_ = (next_context_ + 1) % contexts_.size();
  return context.get_executor();
}

void io_runtime::start(job&& work) noexcept {
  task_plan& plan = *work.fn_.plan();
  if (plan.body) {
    start_awaitable(std::move(work));
  } else {
    run_blocking(std::move(work));
  }
}

void io_runtime::start_awaitable(job&& work) noexcept {
  if (stopping() || refusing_.load(std::memory_order_acquire)) {
    work.drop();
    return;
  }
  try {
    bool one_thread = false;
    asio::any_io_executor ex = spawn_executor(&one_thread);
    // A timeout races the body against a timer, and the winner cancels the loser: on an
    // executor that may have several threads both must run on one strand, or the cancellation
    // could meet the other coroutine running. (The runtime's own contexts have one thread
    // each and need none; an external executor may have several.)
    if (!one_thread && io_runtime::plan_of(work).timeout > std::chrono::nanoseconds::zero()) {
      ex = asio::make_strand(ex);
    }
    live_.fetch_add(1, std::memory_order_relaxed);
    live_token token(*this);
    // Counted running from here: the coroutine owns the job and records its outcome.
    asio::co_spawn(ex, run_awaitable(*this, work.start_detached(), std::move(token)),
                   asio::detached);
  } catch (...) {
    // No thread or no memory for the frame: a job not yet started is dropped; a started one
    // was destroyed with the failed spawn's arguments, which counted it.
    work.drop();
  }
}

void io_runtime::run_blocking(job&& work) noexcept {
  running_job running = work.start_detached();
  task_plan& plan = *running.work().plan();
  std::shared_ptr<overrun_watch> watch;
  if (plan.timeout > std::chrono::nanoseconds::zero() && !stopping()) {
    try {
      watch = std::make_shared<overrun_watch>();
      watch->timeout = plan.timeout;
      watch->info = running.info();
      watch->name = std::string(running.info().name);
      watch->ledger = running.ledger();
      bool one_thread = false;
      watch->ex = spawn_executor(&one_thread);
      if (!one_thread) watch->ex = asio::make_strand(watch->ex);  // `stop` is emitted on it
      live_.fetch_add(1, std::memory_order_relaxed);
      live_token token(*this);
      asio::co_spawn(watch->ex, watch_overrun(*this, watch, std::move(token)),
                     asio::bind_cancellation_slot(watch->stop.slot(), asio::detached));
    } catch (...) {
      watch.reset();  // the task runs unwatched rather than not at all
    }
  }
  task_state outcome = task_state::ran;
  std::exception_ptr error;
  try {
    plan.blocking();
  } catch (...) {
    outcome = task_state::failed;
    error = std::current_exception();
  }
  if (watch) {
    watch->done.store(true, std::memory_order_release);
    // A cancellation signal is not thread-safe: emit it on the watch's executor.
    try {
      asio::post(watch->ex, [watch] { watch->stop.emit(asio::cancellation_type::terminal); });
    } catch (...) {
      // The watch then ends at its timeout and, seeing `done`, reports nothing.
    }
  }
  running.finish(outcome, std::move(error));
}

void io_runtime::resume_blocking(job&& work) noexcept {
  task_plan& plan = *work.fn_.plan();
  executor* target = owner_.redirected_to();
  if (target == nullptr) target = plan.target != nullptr ? plan.target : &owner_.pool();
  try {
    job_batch batch;
    batch.push_back(std::move(work));
    target->execute(std::move(batch));
  } catch (...) {
    // The batch was destroyed with its job: counted dropped and reported.
  }
}

void io_runtime::coroutine_ended() noexcept {
  if (live_.fetch_sub(1, std::memory_order_acq_rel) == 1) notify_quiet();
}

void io_runtime::notify_quiet() noexcept {
  { std::lock_guard lock(quiet_mutex_); }
  quiet_cv_.notify_all();
}

bool io_runtime::wait_quiet(std::chrono::steady_clock::time_point deadline) {
  auto quiet = [this] {
    if (live_.load(std::memory_order_acquire) != 0) return false;
    std::lock_guard lock(mutex_);
    return std::all_of(lanes_.begin(), lanes_.end(),
                       [](const auto& l) { return l.second->quiet(); });
  };
  std::unique_lock lock(quiet_mutex_);
  if (deadline == std::chrono::steady_clock::time_point::max()) {
    quiet_cv_.wait(lock, quiet);
    return true;
  }
  return quiet_cv_.wait_until(lock, deadline, quiet);
}

void io_runtime::shutdown() noexcept {
  if (stopping_.exchange(true, std::memory_order_acq_rel)) return;
  std::vector<lane_state*> lanes;
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mutex_);
    for (auto& [name, lane] : lanes_) lanes.push_back(lane.get());
    work_.clear();
    for (auto& context : contexts_) context->stop();
    threads.swap(pool_);
  }
  for (lane_state* lane : lanes) lane->drop_waiting();
  for (std::thread& t : threads) t.join();
  // Destroying a context destroys its suspended coroutines: each job is counted
  // `dropped_at_shutdown` and reported, while the ledger still exists. Outside the lock: a
  // job settling may reach a lane, which may call back in here.
  std::vector<std::unique_ptr<asio::io_context>> contexts;
  {
    std::lock_guard lock(mutex_);
    work_.clear();
    contexts.swap(contexts_);
  }
  contexts.clear();
}

}  // namespace detail

}  // namespace crosstown
