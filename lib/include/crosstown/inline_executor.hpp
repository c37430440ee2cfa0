// crosstown/inline_executor.hpp - runs jobs synchronously at hand-off and remembers them.
//
// For application test suites: a batch runs, in order, inside `execute`, on the thread that
// reported the phase event; afterwards the test can read which tasks ran, in which order.
// Thread-safe. Unlike `same_thread_executor` it keeps a log, so use one instance per test.
#pragma once

#include <crosstown/executor.hpp>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace crosstown {

class inline_executor final : public executor {
 public:
  /// One executed task, copied out of its job.
  struct record {
    std::uint64_t request_id;
    std::uint32_t index;
    std::string name;
  };

  void execute(job_batch batch) override;

  /// Tasks run so far, in the order they ran.
  std::vector<record> executed() const;
  /// Number of `execute` calls (hand-offs) so far.
  std::size_t handoffs() const;

 private:
  mutable std::mutex mutex_;
  std::vector<record> executed_;  // guarded by mutex_
  std::size_t handoffs_ = 0;      // guarded by mutex_
};

}  // namespace crosstown
