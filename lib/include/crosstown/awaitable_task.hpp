// crosstown/awaitable_task.hpp - deferred tasks that are coroutines, their executor and clock.
//
//     scope.defer([n]() -> boost::asio::awaitable<void> { co_await api.call(n); },
//                 {.lane = "telephony", .timeout = 2s, .retry = {.max_attempts = 3}});
//
// `response_scope::defer` accepts a callable returning `boost::asio::awaitable<void>`. The task
// is judged and handed over by the same rules as any other (phase, status, delivery, order of
// hand-off, names, cancel); once released it starts as a coroutine on the runtime's I/O
// executor - by default an io_context the runtime owns, run by `runtime_options::io_threads`
// threads started with the first awaitable task (a runtime that never defers one starts no
// thread), or `runtime_options::io_executor`. Thousands may be in flight on one thread. The
// task counts as running until its coroutine completes: `ran` when it returns, `failed` when
// it throws (reported to the error hook with the task's name), `timed_out` past its timeout.
//
// Timeout (`defer_options::timeout`, per attempt): the coroutine races a timer on the task
// clock; when the timer wins, the coroutine's pending operation is cancelled through Asio's
// per-operation cancellation (terminal), the task waits for the coroutine to unwind and ends
// `timed_out`, reported to the error hook with a `task_timed_out` exception. Cancellation is
// cooperative: a coroutine that never awaits a cancellable operation runs on until it
// returns, and still ends `timed_out`. A blocking task cannot be stopped: when its timeout
// passes while it runs, an I/O thread reports a `task_overrun` to the error hook at that
// moment and counts it in `metrics_snapshot::overruns`; the task runs on and ends as it ends.
//
// The task clock measures timeouts, retry backoffs (retry.hpp) and lane wait times. The
// default is std::chrono::steady_clock with Asio steady timers; tests install a manual clock
// (crosstown/testing/awaitable.hpp) and step everything on virtual time.
//
// Shutdown: the runtime's destructor waits (until its shutdown timeout) for awaitable tasks
// and lanes to empty, then stops its io_context; a coroutine still suspended is destroyed and
// counted `dropped_at_shutdown`, reported to `on_lost`. With `io_executor`, the application
// must stop and destroy that execution context before the runtime.
#pragma once

#include <crosstown/defer_options.hpp>
#include <crosstown/response_scope.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace crosstown {

class runtime;

/// The clock of timeouts, backoffs and lane waits. Implementations are thread-safe.
class task_clock {
 public:
  virtual ~task_clock() = default;
  /// Time since the clock's epoch.
  virtual std::chrono::nanoseconds now() const noexcept = 0;
  /// Completes `d` after now, on the awaiting coroutine's executor. Cancellable through the
  /// coroutine's cancellation slot: then throws boost::system::system_error
  /// (operation_aborted).
  virtual boost::asio::awaitable<void> wait(std::chrono::nanoseconds d) = 0;

 protected:
  task_clock() = default;
  task_clock(const task_clock&) = default;
  task_clock& operator=(const task_clock&) = default;
};

/// std::chrono::steady_clock and Asio steady timers: the default task clock.
class steady_task_clock final : public task_clock {
 public:
  std::chrono::nanoseconds now() const noexcept override;
  boost::asio::awaitable<void> wait(std::chrono::nanoseconds d) override;
};

/// An Asio executor for awaitable tasks, given to `runtime_options::io_executor` (non-owning:
/// it must outlive the runtime's awaitable tasks).
class awaitable_executor {
 public:
  explicit awaitable_executor(boost::asio::any_io_executor ex) : ex_(std::move(ex)) {}
  const boost::asio::any_io_executor& get() const noexcept { return ex_; }

 private:
  boost::asio::any_io_executor ex_;
};

/// What the error hook receives when an attempt of an awaitable task ran past its timeout.
class task_timed_out : public std::runtime_error {
 public:
  explicit task_timed_out(std::chrono::nanoseconds timeout);
  std::chrono::nanoseconds timeout() const noexcept { return timeout_; }

 private:
  std::chrono::nanoseconds timeout_;
};

/// What the error hook receives when a blocking task is still running at its timeout.
class task_overrun : public std::runtime_error {
 public:
  explicit task_overrun(std::chrono::nanoseconds timeout);
  std::chrono::nanoseconds timeout() const noexcept { return timeout_; }

 private:
  std::chrono::nanoseconds timeout_;
};

/// Test seam: from now on the runtime starts awaitable tasks on `ex` (null: its own
/// io_context) and measures time with `clock` (null: steady_task_clock). Tasks already started
/// stay where they are. Not meant to be switched while tasks run.
void redirect_awaitables(runtime& rt, awaitable_executor* ex, task_clock* clock);
/// Test seam: while true, awaitable tasks that would start are dropped (counted
/// `dropped_at_shutdown`) - for tearing an executor down before the runtime.
void refuse_awaitables(runtime& rt, bool refuse);

namespace detail {

/// The coroutine factory of an awaitable task, type-erased.
struct awaitable_body {
  virtual ~awaitable_body() = default;
  virtual boost::asio::awaitable<void> start() = 0;
};

template <class F>
struct awaitable_body_of final : awaitable_body {
  template <class G>
  explicit awaitable_body_of(G&& g) : fn(std::forward<G>(g)) {}
  boost::asio::awaitable<void> start() override { return std::invoke(fn); }
  F fn;
};

void defer_awaitable_body(response_scope& scope, std::unique_ptr<awaitable_body> body,
                          defer_options&& options);

template <class F>
void defer_awaitable(response_scope& scope, F&& fn, defer_options&& options) {
  using stored = std::decay_t<F>;
  static_assert(std::is_same_v<std::invoke_result_t<stored&>, boost::asio::awaitable<void>>,
                "crosstown: an awaitable task returns boost::asio::awaitable<void>");
  defer_awaitable_body(scope, std::make_unique<awaitable_body_of<stored>>(std::forward<F>(fn)),
                       std::move(options));
}

}  // namespace detail

}  // namespace crosstown
