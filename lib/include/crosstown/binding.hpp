// crosstown/binding.hpp - defer from deep inside a synchronous handler.
//
// `scope_binding` binds a response scope to the current thread for its lifetime, so code that
// has no access to the scope can call the free `crosstown::defer(...)` - the C++ counterpart
// of hendrix's `@crosstown_traffic.follow_response()` decorator:
//
//     void handle(request& req, response_scope& scope) {
//       crosstown::scope_binding bound{scope};
//       place_calls(req);   // deep inside: crosstown::defer([=] { call(number); });
//     }
//
// Bindings nest: a binding restores the previous one when destroyed. The binding is a
// thread_local pointer - the one global in crosstown, and optional.
//
// Bindings must end in the reverse order of their creation, on the thread that made them.
// Both mistakes are detected. A binding destroyed while a later one on its thread is alive is
// taken out of the thread's chain where it stands, so `current_scope()` is always the scope of
// the innermost binding still alive (never one whose bindings are all gone), and a line on
// stderr names the mistake. A binding destroyed on another thread (a coroutine that resumed
// elsewhere) cannot be repaired - its thread would keep a dangling pointer - so crosstown
// prints what happened and calls std::abort().
//
// Coroutine handlers must not use it: a coroutine can suspend while a binding is alive and
// resume on another thread, and other requests' coroutines run on this thread meanwhile, so
// their `defer` calls would land in the wrong scope (breaking invariant I5). Pass the
// `response_scope&` to coroutines explicitly instead.
//
// With no scope bound, `defer` follows `defer_options::if_unbound`: `run_now` (default, as in
// hendrix: the task runs immediately on this thread, exceptions propagate) or `fail` (throws
// `no_bound_scope`).
#pragma once

#include <crosstown/defer_options.hpp>
#include <crosstown/response_scope.hpp>
#include <crosstown/task.hpp>

#include <stdexcept>

namespace crosstown {

/// Thrown by `crosstown::defer` with `if_unbound = unbound_policy::fail` and no bound scope.
class no_bound_scope : public std::logic_error {
 public:
  no_bound_scope();
};

/// RAII: binds `scope` to the calling thread until destroyed. Not movable.
class scope_binding {
 public:
  explicit scope_binding(response_scope& scope) noexcept;
  scope_binding(const scope_binding&) = delete;
  scope_binding& operator=(const scope_binding&) = delete;
  ~scope_binding();

 private:
  friend response_scope* current_scope() noexcept;
  response_scope* scope_;
  scope_binding* outer_;  // the binding this one hides, if alive
  scope_binding* inner_;  // the binding that hides this one, if alive
  const void* thread_;    // identifies the thread's chain (its thread_local head)
};

/// The scope bound to the calling thread, or null.
response_scope* current_scope() noexcept;

/// Defers `fn` on the bound scope, or applies `options.if_unbound` when none is bound.
void defer(task fn, defer_options options);
/// `defer(fn, {})`: the default options, without building them on every call.
void defer(task fn);

namespace detail {

/// Not API: the testing toolkit's seam for deferrals that escape a test harness (made with no
/// scope bound, e.g. from a helper thread while a handler runs). While installed, it sees
/// every `crosstown::defer` that finds no bound scope, on any thread, before the policy
/// applies; returning true takes the task (it does not run now). Must be thread-safe.
class unbound_deferral_observer {
 public:
  virtual ~unbound_deferral_observer() = default;
  virtual bool escaped(task& fn, const defer_options* options) noexcept = 0;
};

/// Installs `observer` (null: none) process-wide; returns the one it replaces.
unbound_deferral_observer* observe_unbound_deferrals(unbound_deferral_observer* observer) noexcept;

}  // namespace detail

}  // namespace crosstown
