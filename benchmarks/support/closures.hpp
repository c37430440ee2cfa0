// benchmarks/support/closures.hpp - the closures the suites defer, and their sizes.
#pragma once

#include <benchmark/benchmark.h>

#include <crosstown/task.hpp>

#include <array>
#include <cstdint>

namespace crosstown_bench {

/// The common case: a closure capturing one pointer (8 bytes). Trivial work, no contention.
struct small_closure {
  const std::uint64_t* value;
  void operator()() const { benchmark::DoNotOptimize(*value); }
};

/// The largest closure a task stores inline: six words of captures (48 bytes). Too big for
/// std::function's small buffer (16 bytes in libstdc++), so the baseline allocates for it.
struct closure_48 {
  std::array<std::uint64_t, 6> words;
  void operator()() const { benchmark::DoNotOptimize(words[0]); }
};

static_assert(sizeof(small_closure) == 8 && crosstown::task::stored_inline<small_closure>);
static_assert(sizeof(closure_48) == 48 && crosstown::task::stored_inline<closure_48>);

}  // namespace crosstown_bench
