#include <crosstown/binding.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <utility>

namespace crosstown {

namespace {
// The one thread_local of crosstown (see binding.hpp): the innermost live binding.
thread_local scope_binding* innermost = nullptr;

std::atomic<detail::unbound_deferral_observer*> unbound_observer{nullptr};

// Called with no scope bound: true if the testing toolkit took the task.
bool escaped(task& fn, const defer_options* options) noexcept {
  detail::unbound_deferral_observer* observer = unbound_observer.load(std::memory_order_acquire);
  return observer != nullptr && observer->escaped(fn, options);
}
}  // namespace

no_bound_scope::no_bound_scope()
    : std::logic_error(
          "crosstown::defer: no response scope is bound to this thread (bind one with "
          "crosstown::scope_binding, call response_scope::defer directly, or use "
          "if_unbound = unbound_policy::run_now)") {}

scope_binding::scope_binding(response_scope& scope) noexcept
    : scope_(&scope), outer_(innermost), inner_(nullptr), thread_(&innermost) {
  if (outer_ != nullptr) outer_->inner_ = this;
  innermost = this;
}

scope_binding::~scope_binding() {
  if (thread_ != &innermost) {
    std::fputs(
        "crosstown: a scope_binding was destroyed on another thread than the one it bound; a "
        "binding is thread-local (did a coroutine resume elsewhere? pass response_scope& to "
        "coroutines instead). Aborting: the first thread would keep a dangling binding.\n",
        stderr);
    std::abort();
  }
  if (inner_ != nullptr) {
    // Out of order: a later binding is still alive. Take this one out of the chain where it
    // stands; the later one now restores the binding before this one.
    std::fputs(
        "crosstown: a scope_binding was destroyed before a binding made after it on the same "
        "thread; bindings must end in reverse order. The later binding stays in force.\n",
        stderr);
    inner_->outer_ = outer_;
    if (outer_ != nullptr) outer_->inner_ = inner_;
    return;
  }
  innermost = outer_;
  if (outer_ != nullptr) outer_->inner_ = nullptr;
}

response_scope* current_scope() noexcept {
  return innermost != nullptr ? innermost->scope_ : nullptr;
}

void defer(task fn, defer_options options) {
  if (response_scope* scope = current_scope()) {
    scope->defer(std::move(fn), std::move(options));
    return;
  }
  if (fn && escaped(fn, &options)) return;
  if (options.if_unbound == unbound_policy::fail) throw no_bound_scope();
  if (!fn) throw std::invalid_argument("crosstown::defer: the task is empty");
  fn();
}

void defer(task fn) {
  if (response_scope* scope = current_scope()) {
    scope->defer(std::move(fn));
    return;
  }
  // The default policy is run_now.
  if (!fn) throw std::invalid_argument("crosstown::defer: the task is empty");
  if (escaped(fn, nullptr)) return;
  fn();
}

namespace detail {

unbound_deferral_observer* observe_unbound_deferrals(unbound_deferral_observer* observer) noexcept {
  return unbound_observer.exchange(observer, std::memory_order_acq_rel);
}

}  // namespace detail

}  // namespace crosstown
