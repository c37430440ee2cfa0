// crosstown/fault.hpp - the seam through which a test injects failures into the core.
//
// The core asks `fault::hit("site")` at each place where it already handles a failure (today
// one: an executor whose `execute` throws). With no injector installed on the calling thread
// the answer is `false`, for the cost of one thread-local load per hand-off. The library never
// installs one; the simulator installs one per run (`scoped_injector`), decides from the
// run's seed which sites fire, and counts the hits. Thread-local, so simulations on different
// threads do not see each other's injectors.
#pragma once

#include <string_view>

namespace crosstown::fault {

/// Decides whether a hit of a fault site fails. Called on the thread that installed it.
class injector {
 public:
  virtual ~injector() = default;
  /// True if this hit of `site` must fail.
  virtual bool should_fail(std::string_view site) noexcept = 0;
};

/// The injector installed on the calling thread, or null.
inline injector*& current() noexcept {
  static thread_local injector* installed = nullptr;
  return installed;
}

/// True if the calling thread's injector says this hit of `site` fails.
inline bool hit(std::string_view site) noexcept {
  injector* inj = current();
  return inj != nullptr && inj->should_fail(site);
}

/// Installs an injector on the calling thread for its lifetime (restores the previous one).
class scoped_injector {
 public:
  explicit scoped_injector(injector& inj) noexcept : previous_(current()) { current() = &inj; }
  scoped_injector(const scoped_injector&) = delete;
  scoped_injector& operator=(const scoped_injector&) = delete;
  ~scoped_injector() { current() = previous_; }

 private:
  injector* previous_;
};

}  // namespace crosstown::fault
