#include <crosstown/binding.hpp>

#include <stdexcept>
#include <utility>

namespace crosstown {

namespace {
// The one thread_local of crosstown (see binding.hpp).
thread_local response_scope* bound_scope = nullptr;
}  // namespace

no_bound_scope::no_bound_scope()
    : std::logic_error(
          "crosstown::defer: no response scope is bound to this thread (bind one with "
          "crosstown::scope_binding, call response_scope::defer directly, or use "
          "if_unbound = unbound_policy::run_now)") {}

scope_binding::scope_binding(response_scope& scope) noexcept
    : previous_(std::exchange(bound_scope, &scope)) {}

scope_binding::~scope_binding() { bound_scope = previous_; }

response_scope* current_scope() noexcept { return bound_scope; }

void defer(task fn, defer_options options) {
  if (response_scope* scope = bound_scope) {
    scope->defer(std::move(fn), std::move(options));
    return;
  }
  if (options.if_unbound == unbound_policy::fail) throw no_bound_scope();
  if (!fn) throw std::invalid_argument("crosstown::defer: the task is empty");
  fn();
}

void defer(task fn) {
  if (response_scope* scope = bound_scope) {
    scope->defer(std::move(fn));
    return;
  }
  // The default policy is run_now.
  if (!fn) throw std::invalid_argument("crosstown::defer: the task is empty");
  fn();
}

}  // namespace crosstown
