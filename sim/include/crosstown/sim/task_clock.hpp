// crosstown/sim/task_clock.hpp - the task clock of a simulated run: virtual time.
//
// `sim_task_clock` is the `crosstown::task_clock` that `run_app` gives the runtime
// (`redirect_awaitables`) and that `app_env::task_clock()` hands to the application: `now()`
// is the run's virtual time, and `wait(d)` is a `sim_timer` on the awaiting coroutine's
// executor, so awaitable tasks' timeouts, retry backoffs, lane wait times and the
// application's own waits (a fake API's latency) pass on virtual time - the scheduler
// auto-advances to them when nothing else is runnable - and never read the real clock.
//
// `wait` honours the coroutine's cancellation slot (which `sim_timer` itself does not): a task
// whose timeout wins the race has its pending wait aborted at once, so it ends `timed_out` at
// the virtual moment of its timeout, as with Asio's own timers in production. A cancelled
// wait throws boost::system::system_error(operation_aborted). The coroutine must run on an
// io_actor's executor (a strand of one is fine); otherwise `wait` throws
// std::invalid_argument. Not thread-safe: one run, one thread.
#pragma once

#include <crosstown/awaitable_task.hpp>
#include <crosstown/sim/virtual_clock.hpp>

#include <boost/asio/awaitable.hpp>

#include <chrono>

namespace crosstown::sim {

class sim_task_clock final : public crosstown::task_clock {
 public:
  explicit sim_task_clock(virtual_time& time) noexcept : time_(time) {}

  std::chrono::nanoseconds now() const noexcept override;
  boost::asio::awaitable<void> wait(std::chrono::nanoseconds d) override;

 private:
  virtual_time& time_;
};

}  // namespace crosstown::sim
