// crosstown/defer_options.hpp - how one deferred task is treated.
//
// Written with designated initializers, in declaration order:
//
//     scope.defer(send_mail, {.no_go = "5xx,400-405,302", .name = "welcome-mail"});
//     scope.defer(audit, {.always = true, .require_delivery = true});
//
// Rules, applied when the task's phase is reached:
//   - status: the task is skipped (`skipped_by_status`) if the response's final status is in
//     `no_go`, unless `always` is set. The default no-go set is 4xx and 5xx.
//   - delivery: if the response was not delivered (the adapter reported a failure, or the scope
//     ended before the response was sent), the task still runs - the application had decided -
//     unless `require_delivery` is set, which skips it (`skipped_by_delivery`).
//   - executor: released tasks go to `executor` (default: the runtime's pool), or run on the
//     thread that reports the phase when `same_thread` is set. Setting both is an error.
//   - name: a later task of the same name in the same scope replaces a still-pending one (the
//     earlier counts as `cancelled`); `response_scope::cancel(name)` cancels it.
//   - lane, timeout, retry (after `if_unbound`, in that order): see lane.hpp, awaitable_task.hpp
//     and retry.hpp. A task naming a lane that the runtime does not have is refused with
//     std::invalid_argument; so is a retry policy on a blocking task.
#pragma once

#include <crosstown/executor.hpp>
#include <crosstown/retry.hpp>
#include <crosstown/status_set.hpp>

#include <chrono>
#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>

namespace crosstown {

/// The lifecycle event a task waits for.
enum class task_phase : std::uint8_t {
  headers_sent,       ///< the status line and headers were accepted by the transport
  response_sent,      ///< the last byte of the response was accepted by the transport (default)
  connection_closed,  ///< the connection that carried the response closed
};

std::string_view to_string(task_phase p) noexcept;
std::ostream& operator<<(std::ostream& out, task_phase p);

/// What `defer` does when no response scope is bound to the calling thread.
enum class unbound_policy : std::uint8_t {
  run_now,  ///< run the task at once on this thread; exceptions propagate (hendrix's behaviour)
  fail,     ///< throw `no_bound_scope`
};

struct defer_options {
  /// Where the task runs; empty means the runtime's pool.
  executor_ref executor{};
  /// Run on the thread that reports the phase event, after the other executors' hand-offs.
  bool same_thread = false;
  /// Statuses that skip the task. String literals are checked at compile time.
  status_set no_go = status_set::default_no_go();
  /// Run whatever the status (the no-go set is ignored).
  bool always = false;
  /// Optional name: replaces a pending task of the same name; cancellable by name.
  std::string name{};
  /// The event the task waits for.
  task_phase phase = task_phase::response_sent;
  /// Skip the task when the response was not delivered.
  bool require_delivery = false;
  /// Only for the free `crosstown::defer`: what to do when no scope is bound.
  unbound_policy if_unbound = unbound_policy::run_now;
  /// The runtime lane (`runtime::lane`) limiting how many such tasks run at once; empty: none.
  std::string lane{};
  /// Per attempt. An awaitable task past it is cancelled (`timed_out`); a blocking task's
  /// overrun is reported and counted. Zero: no timeout.
  std::chrono::nanoseconds timeout{0};
  /// Retries of an awaitable task's failed attempts; the default makes one attempt.
  retry_policy retry{};
};

}  // namespace crosstown
