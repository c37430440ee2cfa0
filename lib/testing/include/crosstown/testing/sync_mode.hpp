// crosstown/testing/sync_mode.hpp - run deferred work synchronously, with the real rules.
//
// One line in a test or fixture:
//
//     crosstown::testkit::run_deferred_synchronously sync{rt};
//
// While it lives, every task released by `rt`'s scopes runs inline on the thread that reports
// the phase event (response sent, usually), in registration order - but only if the status
// and delivery rules allow it. A 404 still skips the task; `require_delivery` still skips on a
// failed delivery. This is the difference from an "always eager" switch, which would change
// what the test tests.
//
// Nests (restores the previous redirection on destruction). Not for concurrent use with
// another redirection of the same runtime.
#pragma once

#include <crosstown/inline_executor.hpp>
#include <crosstown/runtime.hpp>

namespace crosstown::testkit {

class run_deferred_synchronously {
 public:
  explicit run_deferred_synchronously(runtime& rt) noexcept
      : rt_(rt), previous_(rt.redirected_to()) {
    rt_.redirect_all_to(inline_);
  }
  run_deferred_synchronously(const run_deferred_synchronously&) = delete;
  run_deferred_synchronously& operator=(const run_deferred_synchronously&) = delete;
  ~run_deferred_synchronously() {
    rt_.redirect_all_to(previous_ != nullptr ? executor_ref(*previous_) : executor_ref());
  }

  /// The tasks that ran in this mode, in order.
  std::vector<inline_executor::record> executed() const { return inline_.executed(); }

 private:
  runtime& rt_;
  executor* previous_;
  inline_executor inline_;
};

}  // namespace crosstown::testkit
