// crosstown/executor.hpp - where released tasks run.
//
// An executor receives, at a response's phase, that response's released jobs bound for it as
// one `job_batch` in registration order: one hand-off per response and executor, never one
// call per task. It must eventually `run()`, `reject()` or destroy every job (see job.hpp);
// accounting follows from that. `execute` may be called concurrently from several threads
// (different responses complete on different threads), so implementations must be
// thread-safe.
//
// `executor_ref` is the cheap, copyable, non-owning handle that deferral options carry. The
// executor it names must outlive every scope that may hand it work.
//
// Implementations: `same_thread_executor` (here), `thread_pool`, `asio_executor`,
// `inline_executor` and `manual_executor`.
#pragma once

#include <crosstown/job.hpp>

namespace crosstown {

class executor {
 public:
  virtual ~executor() = default;

  /// Takes ownership of a batch of jobs, in registration order.
  virtual void execute(job_batch batch) = 0;

 protected:
  executor() = default;
  executor(const executor&) = default;
  executor& operator=(const executor&) = default;
};

/// Non-owning handle to an executor; empty means "the runtime's default pool".
class executor_ref {
 public:
  constexpr executor_ref() noexcept = default;
  constexpr executor_ref(executor& target) noexcept  // NOLINT(google-explicit-constructor)
      : target_(&target) {}

  constexpr executor* get() const noexcept { return target_; }
  constexpr explicit operator bool() const noexcept { return target_ != nullptr; }
  friend constexpr bool operator==(executor_ref, executor_ref) noexcept = default;

 private:
  executor* target_ = nullptr;
};

/// Runs each job at once, in order, on the thread that hands the batch over - for a response,
/// the thread that reports the phase event. This is what `defer_options::same_thread` selects.
/// Stateless; one shared instance is `same_thread_executor::instance()`.
class same_thread_executor final : public executor {
 public:
  void execute(job_batch batch) override {
    for (job& j : batch) j.run();
  }
  static same_thread_executor& instance() noexcept;
};

}  // namespace crosstown
