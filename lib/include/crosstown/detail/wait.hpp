// crosstown/detail/wait.hpp - not API. Condition waits where "no deadline" is time_point::max().
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

namespace crosstown::detail {

// Waits for `ready` until `deadline`; `time_point::max()` waits without a timeout (a timed
// wait on max() may overflow inside the C library).
template <class Predicate>
bool wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                std::chrono::steady_clock::time_point deadline, Predicate ready) {
  if (deadline == std::chrono::steady_clock::time_point::max()) {
    cv.wait(lock, ready);
    return true;
  }
  return cv.wait_until(lock, deadline, ready);
}

}  // namespace crosstown::detail
