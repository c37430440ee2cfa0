// crosstown/fault.hpp - fault sites: places in library code where a test may inject a failure.
//
// `CROSSTOWN_FAULT("site")` is a boolean expression. When fault sites are compiled in
// (`CROSSTOWN_FAULTS_ENABLED` is 1, set by the CMake option `CROSSTOWN_FAULTS`, default ON
// except for Release/MinSizeRel builds) it asks the injector installed on the calling thread
// whether this hit of `site` should fail; with no injector installed it is `false` and costs a
// thread-local load. When compiled out it is the constant `false`, so the failure branch is
// dead code and release builds pay nothing.
//
// The library itself never installs an injector. The simulator (crosstown::sim) installs one
// per run with `fault::scoped_injector`, decides from the run's seed which sites are armed and
// how often they fire, and counts the hits. A site must only guard a failure path that the
// library already handles (an executor that throws, a full queue): injecting it tests that
// handling, never invents a new failure mode.
//
// The per-thread injector pointer is the one global this facility needs: sites sit deep in
// code that has no handle to a test harness. It is thread-local, so simulations running on
// different threads do not see each other's injectors.
#pragma once

#include <string_view>

#ifndef CROSSTOWN_FAULTS_ENABLED
#define CROSSTOWN_FAULTS_ENABLED 0
#endif

namespace crosstown::fault {

/// Decides whether a hit of a fault site fails. Called on the thread that installed it.
class injector {
 public:
  virtual ~injector() = default;
  /// True if this hit of `site` must fail.
  virtual bool should_fail(std::string_view site) noexcept = 0;

 protected:
  injector() = default;
  injector(const injector&) = default;
  injector& operator=(const injector&) = default;
};

/// The injector installed on the calling thread, or null.
inline injector*& current() noexcept {
  static thread_local injector* installed = nullptr;
  return installed;
}

/// True if fault sites were compiled into this build.
constexpr bool compiled_in() noexcept { return CROSSTOWN_FAULTS_ENABLED != 0; }

/// Asks the calling thread's injector, if any, about a hit of `site`.
inline bool hit(std::string_view site) noexcept {
  injector* inj = current();
  return inj != nullptr && inj->should_fail(site);
}

/// Installs an injector on the calling thread for the scope's lifetime (restores the previous).
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

#if CROSSTOWN_FAULTS_ENABLED
/// True when the injected fault at `site` should fire now (see crosstown/fault.hpp).
#define CROSSTOWN_FAULT(site) (::crosstown::fault::hit(site))
#else
#define CROSSTOWN_FAULT(site) false
#endif
