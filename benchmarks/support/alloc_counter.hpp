// benchmarks/support/alloc_counter.hpp - counts heap allocations in a benchmark binary.
//
// Linking alloc_counter.cpp into a binary replaces every usual overload of the global
// operator new/delete with versions that count. Counting is per thread and always on (a
// thread-local increment), so a benchmark reads its own thread's allocations around the
// region it measures and other threads never disturb it. `process_wide(true)` additionally
// counts every thread's allocations in shared atomics, for measurements that span the pool's
// workers (the memory suite); it is off by default so that the throughput suites do not pay
// for a contended counter.
//
// Bytes: `requested` is what the caller asked for; `live` tracks malloc_usable_size, so it
// returns to its starting value when everything allocated in a region has been freed.
#pragma once

#include <cstdint>

namespace crosstown_bench {

struct alloc_stats {
  std::uint64_t allocations = 0;
  std::uint64_t deallocations = 0;
  std::uint64_t requested_bytes = 0;  ///< sum of sizes asked for
  std::int64_t live_bytes = 0;        ///< usable bytes allocated minus usable bytes freed

  friend alloc_stats operator-(const alloc_stats& a, const alloc_stats& b) noexcept {
    return {a.allocations - b.allocations, a.deallocations - b.deallocations,
            a.requested_bytes - b.requested_bytes, a.live_bytes - b.live_bytes};
  }
};

/// This thread's counts since it started.
alloc_stats thread_allocs() noexcept;
/// Every thread's counts while `process_wide(true)` was in effect.
alloc_stats process_allocs() noexcept;
/// Turns the shared, all-threads counting on or off.
void process_wide(bool on) noexcept;

}  // namespace crosstown_bench
