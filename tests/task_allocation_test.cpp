// Allocation tests for crosstown/task.hpp and response_scope::defer: "deferring a small closure
// allocates nothing". This binary replaces the global operator new/delete (every usual
// overload) with counting versions; counting is per thread and enabled only inside a measured
// region, so gtest's own allocations and other threads' never count.

#include <crosstown/task.hpp>

#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>
#include <utility>

namespace {

struct allocation_counts {
  std::size_t allocations = 0;
  std::size_t deallocations = 0;
};

// constinit: usable from operator new before any dynamic initialisation.
constinit thread_local bool counting = false;
constinit thread_local allocation_counts counts{};

void* allocate(std::size_t size, std::size_t alignment) {
  if (counting) ++counts.allocations;
  if (size == 0) size = 1;
  void* p = nullptr;
  if (alignment <= alignof(std::max_align_t)) {
    p = std::malloc(size);
  } else {
    const std::size_t rounded = (size + alignment - 1) / alignment * alignment;
    p = std::aligned_alloc(alignment, rounded);
  }
  return p;
}

void deallocate(void* p) noexcept {
  if (p == nullptr) return;
  if (counting) ++counts.deallocations;
  std::free(p);
}

void* allocate_or_throw(std::size_t size, std::size_t alignment) {
  void* p = allocate(size, alignment);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

}  // namespace

// --- the replacements ------------------------------------------------------------------------
// NOLINTBEGIN(misc-new-delete-overloads)
void* operator new(std::size_t size) { return allocate_or_throw(size, 0); }
void* operator new[](std::size_t size) { return allocate_or_throw(size, 0); }
void* operator new(std::size_t size, std::align_val_t al) {
  return allocate_or_throw(size, static_cast<std::size_t>(al));
}
void* operator new[](std::size_t size, std::align_val_t al) {
  return allocate_or_throw(size, static_cast<std::size_t>(al));
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept { return allocate(size, 0); }
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept { return allocate(size, 0); }
void* operator new(std::size_t size, std::align_val_t al, const std::nothrow_t&) noexcept {
  return allocate(size, static_cast<std::size_t>(al));
}
void* operator new[](std::size_t size, std::align_val_t al, const std::nothrow_t&) noexcept {
  return allocate(size, static_cast<std::size_t>(al));
}

void operator delete(void* p) noexcept { deallocate(p); }
void operator delete[](void* p) noexcept { deallocate(p); }
void operator delete(void* p, std::size_t) noexcept { deallocate(p); }
void operator delete[](void* p, std::size_t) noexcept { deallocate(p); }
void operator delete(void* p, std::align_val_t) noexcept { deallocate(p); }
void operator delete[](void* p, std::align_val_t) noexcept { deallocate(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { deallocate(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { deallocate(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { deallocate(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { deallocate(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { deallocate(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { deallocate(p); }
// NOLINTEND(misc-new-delete-overloads)

namespace {

using crosstown::task;

// Counts this thread's allocations while alive. Assertions belong outside (gtest allocates).
class measured_region {
 public:
  measured_region() {
    counts = {};
    counting = true;
  }
  measured_region(const measured_region&) = delete;
  measured_region& operator=(const measured_region&) = delete;
  ~measured_region() { stop(); }
  allocation_counts stop() {
    counting = false;
    return counts;
  }
};

// Closures of an exact size: a pointer to a hit counter and a byte payload.
template <std::size_t Size>
struct closure_of {
  int* hits;
  std::array<std::uint8_t, Size - sizeof(int*)> payload{};
  void operator()() { ++*hits; }
};
static_assert(sizeof(closure_of<48>) == 48);
static_assert(task::stored_inline<closure_of<48>>);

struct forty_nine_bytes {
  static inline int hits = 0;
  std::array<char, 49> bytes{};
  void operator()() const { ++hits; }
};
static_assert(sizeof(forty_nine_bytes) == 49);

std::size_t growth_allowance(std::size_t n) {
  return static_cast<std::size_t>(std::ceil(std::log2(static_cast<double>(n)))) + 1;
}

// --- the counting allocator itself must be seen to count -------------------------------------

TEST(TaskAllocation, CountingAllocatorSeesOrdinaryAllocations) {
  allocation_counts seen;
  {
    measured_region region;
    auto* p = new std::uint64_t(7);
    delete p;
    auto* q = new std::array<char, 256>();
    delete q;
    seen = region.stop();
  }
  EXPECT_EQ(seen.allocations, 2u);
  EXPECT_EQ(seen.deallocations, 2u);
}

// --- task --------------------------------------------------------------------------------------

TEST(TaskAllocation, FortyEightByteClosureLivesItsWholeLifeWithoutAllocating) {
  int hits = 0;
  allocation_counts seen;
  {
    measured_region region;
    {
      task t(closure_of<48>{&hits});
      task moved(std::move(t));
      task assigned;
      assigned = std::move(moved);
      assigned();
      assigned();
    }
    seen = region.stop();
  }
  EXPECT_EQ(hits, 2);
  EXPECT_EQ(seen.allocations, 0u);
  EXPECT_EQ(seen.deallocations, 0u);
}

TEST(TaskAllocation, LambdaCapturingFortyEightBytesDoesNotAllocate) {
  std::array<std::uint64_t, 5> values{1, 2, 3, 4, 5};
  std::uint64_t sum = 0;
  auto closure = [values, &sum] {
    for (std::uint64_t v : values) sum += v;
  };
  static_assert(sizeof(closure) == 48);
  allocation_counts seen;
  {
    measured_region region;
    task t(std::move(closure));
    task moved(std::move(t));
    moved();
    moved.reset();
    seen = region.stop();
  }
  EXPECT_EQ(sum, 15u);
  EXPECT_EQ(seen.allocations, 0u);
  EXPECT_EQ(seen.deallocations, 0u);
}

TEST(TaskAllocation, FortyNineByteClosureAllocatesExactlyOnce) {
  forty_nine_bytes::hits = 0;
  allocation_counts after_construction;
  allocation_counts after_moves_and_calls;
  allocation_counts at_end;
  {
    measured_region region;
    {
      task t(forty_nine_bytes{});
      after_construction = counts;
      task moved(std::move(t));
      task assigned;
      assigned = std::move(moved);
      assigned();
      after_moves_and_calls = counts;
    }
    at_end = region.stop();
  }
  EXPECT_EQ(forty_nine_bytes::hits, 1);
  EXPECT_EQ(after_construction.allocations, 1u);
  EXPECT_EQ(after_moves_and_calls.allocations, 1u) << "moving a heap task must not allocate";
  EXPECT_EQ(after_moves_and_calls.deallocations, 0u);
  EXPECT_EQ(at_end.allocations, 1u);
  EXPECT_EQ(at_end.deallocations, 1u);
}

TEST(TaskAllocation, LargeClosureAllocatesExactlyOnce) {
  int hits = 0;
  allocation_counts seen;
  {
    measured_region region;
    {
      task t(closure_of<512>{&hits});
      task moved(std::move(t));
      moved();
    }
    seen = region.stop();
  }
  EXPECT_EQ(hits, 1);
  EXPECT_EQ(seen.allocations, 1u);
  EXPECT_EQ(seen.deallocations, 1u);
}

TEST(TaskAllocation, OverAlignedClosureAllocatesExactlyOnce) {
  struct alignas(64) over_aligned {
    int* hits;
    void operator()() const { ++*hits; }
  };
  static_assert(!task::stored_inline<over_aligned>);
  int hits = 0;
  allocation_counts seen;
  {
    measured_region region;
    {
      task t(over_aligned{&hits});
      t();
    }
    seen = region.stop();
  }
  EXPECT_EQ(hits, 1);
  EXPECT_EQ(seen.allocations, 1u);
  EXPECT_EQ(seen.deallocations, 1u);
}

// --- response_scope::defer ---------------------------------------------------------------------

// Defers `n` small unnamed closures on a fresh scope; returns the allocations of the defers only.
std::size_t allocations_to_defer(crosstown::runtime& rt, std::size_t n, int& hits) {
  crosstown::response_scope scope(rt);
  allocation_counts seen;
  {
    measured_region region;
    for (std::size_t i = 0; i < n; ++i) scope.defer(closure_of<48>{&hits});
    seen = region.stop();
  }
  EXPECT_EQ(scope.pending(), n);
  return seen.allocations;
}

TEST(DeferAllocation, DeferringASmallClosureAllocatesNothingPerTask) {
  crosstown::runtime rt({.threads = 1});
  int hits = 0;
  for (std::size_t n : {16u, 64u, 256u}) {
    const std::size_t allocations = allocations_to_defer(rt, n, hits);
    // Only the scope's task list may allocate, as it grows geometrically: never once per task.
    EXPECT_LE(allocations, growth_allowance(n)) << "deferring " << n << " tasks";
  }
  EXPECT_EQ(hits, 0);  // the scopes ended without a response: a 500, in the default no-go set
}

TEST(DeferAllocation, DoublingTheTasksAddsAtMostOneListGrowth) {
  crosstown::runtime rt({.threads = 1});
  int hits = 0;
  const std::size_t for_128 = allocations_to_defer(rt, 128, hits);
  const std::size_t for_256 = allocations_to_defer(rt, 256, hits);
  EXPECT_LE(for_256, for_128 + 1);
}

TEST(DeferAllocation, DeferringIntoAListWithRoomAllocatesNothing) {
  crosstown::runtime rt({.threads = 1});
  int hits = 0;
  crosstown::response_scope scope(rt);
  // Grow the list past 32 tasks first.
  std::size_t growths_for_first_33 = 0;
  {
    measured_region region;
    for (int i = 0; i < 33; ++i) scope.defer(closure_of<48>{&hits});
    growths_for_first_33 = region.stop().allocations;
  }
  // A list of 33 that grows geometrically (x2 or x1.5) has room for at least 8 more, so these
  // defers must not allocate at all.
  allocation_counts seen;
  {
    measured_region region;
    for (int i = 0; i < 8; ++i) scope.defer(closure_of<48>{&hits});
    seen = region.stop();
  }
  EXPECT_LE(growths_for_first_33, growth_allowance(33));
  EXPECT_EQ(seen.allocations, 0u);
  EXPECT_EQ(scope.pending(), 41u);
}

TEST(DeferAllocation, DeferringWithAShortNameAndCustomOptionsAllocatesNothingPerTask) {
  crosstown::runtime rt({.threads = 1});
  int hits = 0;
  crosstown::response_scope scope(rt);
  constexpr std::size_t n = 64;
  // Names built beforehand; each fits the small-string buffer of every standard library.
  std::array<std::string, n> names;
  for (std::size_t i = 0; i < n; ++i) names[i] = "t" + std::to_string(i);
  allocation_counts seen;
  {
    measured_region region;
    for (std::size_t i = 0; i < n; ++i) {
      scope.defer(closure_of<48>{&hits}, {.no_go = "5xx,302",
                                          .always = (i % 2 == 0),
                                          .name = names[i],
                                          .require_delivery = (i % 3 == 0)});
    }
    seen = region.stop();
  }
  EXPECT_LE(seen.allocations, growth_allowance(n));
  EXPECT_EQ(scope.pending(), n);
}

TEST(DeferAllocation, DeferringALargeClosureAllocatesOncePerTaskForItsStorage) {
  // The control for the tests above: the counter does see per-task allocations when they exist.
  crosstown::runtime rt({.threads = 1});
  int hits = 0;
  crosstown::response_scope scope(rt);
  constexpr std::size_t n = 64;
  allocation_counts seen;
  {
    measured_region region;
    for (std::size_t i = 0; i < n; ++i) scope.defer(closure_of<64>{&hits});
    seen = region.stop();
  }
  EXPECT_GE(seen.allocations, n);
  EXPECT_LE(seen.allocations, n + growth_allowance(n));
}

}  // namespace
