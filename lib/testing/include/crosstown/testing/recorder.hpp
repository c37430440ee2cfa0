// crosstown/testing/recorder.hpp - capture deferrals made outside any request.
//
// Code under test may call `crosstown::defer` with no response scope bound (a job, a CLI
// command, a unit test of a helper). By default that runs the task at once; with a
// `deferral_recorder` alive on the test's thread, the tasks are recorded instead, so the test
// can see what was deferred and run it when it chooses:
//
//     crosstown::testkit::deferral_recorder recorder;
//     send_welcome_mails(users);                  // calls crosstown::defer(...) inside
//     EXPECT_THAT(recorder.recorded(), SizeIs(3));
//     recorder.run_all(200);                      // as if a 200 response went out
//     crosstown::defer(log_it);                   // after run_all: judged and run at once
//
// It binds a private response scope to this thread (restoring any previous binding when
// destroyed). Not thread-safe; use it on the thread that defers.
#pragma once

#include <crosstown/binding.hpp>
#include <crosstown/manual_executor.hpp>
#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>

#include <cstddef>
#include <memory>
#include <vector>

namespace crosstown::testkit {

class deferral_recorder {
 public:
  deferral_recorder()
      : rt_(std::make_unique<runtime>(runtime_options{.threads = 1})),
        scope_(std::make_unique<response_scope>(*rt_)),
        binding_(std::make_unique<scope_binding>(*scope_)) {
    rt_->redirect_all_to(manual_);
  }
  deferral_recorder(const deferral_recorder&) = delete;
  deferral_recorder& operator=(const deferral_recorder&) = delete;
  ~deferral_recorder() {
    binding_.reset();
    scope_.reset();
    manual_.drop_all();
  }

  /// What was deferred so far and not yet run, with its options.
  std::vector<pending_task> recorded() const { return scope_->pending_tasks(); }

  /// Completes the recorded "response" with `status` and runs every task the rules allow, on
  /// this thread. Returns how many ran. Deferrals made afterwards are judged by the same
  /// status and, if allowed, run at once, on the deferring thread, inside `defer` (their
  /// phase has passed); later calls of `run_all` run nothing more and ignore `status`.
  std::size_t run_all(int status = 200) {
    if (scope_->delivery_state() == delivery::pending) {
      scope_->status_known(status);
      scope_->response_sent();
    }
    const std::size_t ran = manual_.run_all();
    // From now on nothing waits: released tasks run where they are released.
    rt_->redirect_all_to(same_thread_executor::instance());
    return ran + manual_.run_all();
  }

  metrics_snapshot metrics() const { return rt_->metrics(); }

 private:
  manual_executor manual_;
  std::unique_ptr<runtime> rt_;
  std::unique_ptr<response_scope> scope_;
  std::unique_ptr<scope_binding> binding_;
};

}  // namespace crosstown::testkit
