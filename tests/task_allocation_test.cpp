// Allocation tests for crosstown/task.hpp and response_scope::defer: "deferring a small closure
// allocates nothing". This binary replaces the global operator new/delete (every usual
// overload) with counting versions; counting is per thread and enabled only inside a measured
// region, so gtest's own allocations and other threads' never count.

#include <crosstown/task.hpp>

#include <crosstown/manual_executor.hpp>
#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

namespace {

struct allocation_counts {
  std::size_t allocations = 0;
  std::size_t deallocations = 0;
};

// constinit: usable from operator new before any dynamic initialisation.
constinit thread_local bool counting = false;
constinit thread_local allocation_counts counts{};
// Failing on demand, on this thread only: after `let_through` more allocations, the next one
// fails (and, if `keep_failing`, every one after it) as if memory were exhausted.
constinit thread_local long let_through = -1;  // -1: never fail
constinit thread_local bool keep_failing = false;
constinit thread_local std::size_t failed_allocations = 0;

void* allocate(std::size_t size, std::size_t alignment) {
  if (let_through == 0) {
    ++failed_allocations;
    if (!keep_failing) let_through = -1;
    return nullptr;
  }
  if (let_through > 0) --let_through;
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

// Where the pointers go: a new-expression whose result nothing observes may be elided (C++14
// [expr.new]/10; GCC's -fallocation-dce does it at -O1), which would leave this check
// counting nothing. Stored to a volatile, each allocation is observable and must happen.
void* volatile allocation_sink = nullptr;

TEST(TaskAllocation, CountingAllocatorSeesOrdinaryAllocations) {
  allocation_counts seen;
  {
    measured_region region;
    auto* p = new std::uint64_t(7);
    allocation_sink = p;
    delete p;
    auto* q = new std::array<char, 256>();
    allocation_sink = q;
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

// --- running out of memory on the release path (issue 10, item 2) ---------------------------

// Fails allocations of this thread from the `n`th on (once, or every one after it) while alive.
class failing_allocations {
 public:
  failing_allocations(long n, bool persistent) {
    failed_allocations = 0;
    keep_failing = persistent;
    let_through = n;
  }
  failing_allocations(const failing_allocations&) = delete;
  failing_allocations& operator=(const failing_allocations&) = delete;
  ~failing_allocations() { stop(); }
  // True if an allocation was failed.
  bool stop() {
    let_through = -1;
    keep_failing = false;
    return failed_allocations > 0;
  }
};

struct lost_report {
  std::uint64_t request_id;
  std::uint32_t index;
  crosstown::task_state state;
};

// One response with tasks of every kind: pool, another executor, named, same-thread,
// headers-phase, connection-phase, skipped. Its lifecycle events and end run with the `n`th
// allocation failing; none may throw, and every task must end counted, the lost ones
// reported to on_lost.
struct release_run {
  bool failure_injected = false;
  bool escaped = false;
  crosstown::metrics_snapshot metrics;
  std::vector<lost_report> lost;
};

release_run release_with_failing_allocation(long n, bool persistent) {
  release_run out;
  std::mutex lost_mutex;
  out.lost.reserve(256);  // the hook must not allocate: its own allocation could fail too
  int ran = 0;
  std::mutex ran_mutex;
  {
    crosstown::runtime rt(
        {.threads = 1, .on_lost = [&](const crosstown::task_info& t, crosstown::task_state state) {
           std::lock_guard lock(lost_mutex);
           out.lost.push_back({t.request_id, t.index, state});
         }});
    crosstown::manual_executor manual;
    {
      // Warm-up: the pool's threads start with its first batch, before anything fails.
      crosstown::response_scope warm(rt);
      warm.defer([] {});
      warm.status_known(200);
      warm.response_sent();
      (void)rt.drain_for(std::chrono::seconds(20));
    }
    crosstown::connection_scope connection(rt);
    auto count = [&ran, &ran_mutex] {
      std::lock_guard lock(ran_mutex);
      ++ran;
    };
    auto scope = std::make_unique<crosstown::response_scope>(connection);
    for (int i = 0; i < 8; ++i) scope->defer(count);
    for (int i = 0; i < 4; ++i) {
      scope->defer(count, {.executor = manual, .name = "named-" + std::to_string(i)});
    }
    for (int i = 0; i < 3; ++i) scope->defer(count, {.same_thread = true});
    for (int i = 0; i < 3; ++i) {
      scope->defer(count, {.executor = manual, .phase = crosstown::task_phase::headers_sent});
    }
    for (int i = 0; i < 3; ++i) {
      scope->defer(count, {.executor = manual, .phase = crosstown::task_phase::connection_closed});
    }
    for (int i = 0; i < 3; ++i) scope->defer(count, {.no_go = "2xx"});
    scope->status_known(200);
    {
      failing_allocations failing(n, persistent);
      try {
        scope->headers_sent();
        scope->response_sent();
        scope->end();
        scope.reset();
        connection.closed();
      } catch (...) {
        out.escaped = true;
      }
      out.failure_injected = failing.stop();
    }
    manual.run_all();
    (void)rt.drain_for(std::chrono::seconds(20));
    out.metrics = rt.metrics();
  }
  return out;
}

TEST(ReleaseUnderMemoryPressure, NoBadAllocEscapesAnEventOrTheEndAndEveryTaskIsCounted) {
  for (const bool persistent : {false, true}) {
    long n = 0;
    for (;; ++n) {
      SCOPED_TRACE(std::string(persistent ? "every allocation from #" : "only allocation #") +
                   std::to_string(n) + " fails");
      const release_run run = release_with_failing_allocation(n, persistent);
      EXPECT_FALSE(run.escaped) << "an exception escaped an event, end() or a destructor";
      const crosstown::metrics_snapshot& m = run.metrics;
      EXPECT_EQ(m.registered, 1u + 24u);
      EXPECT_EQ(m.unfinished(), 0u) << m;
      EXPECT_EQ(m.count(crosstown::task_state::skipped_by_status), 3u) << m;
      const std::uint64_t lost_states = m.count(crosstown::task_state::dropped_out_of_memory) +
                                        m.count(crosstown::task_state::rejected_by_executor);
      EXPECT_EQ(m.count(crosstown::task_state::ran) + lost_states, 1u + 21u) << m;
      EXPECT_EQ(m.count(crosstown::task_state::dropped_at_shutdown), 0u)
          << "a task lost for lack of memory is not a shutdown: " << m;
      EXPECT_EQ(run.lost.size(), lost_states) << "every lost task is reported to on_lost";
      for (const lost_report& r : run.lost) {
        EXPECT_TRUE(r.state == crosstown::task_state::dropped_out_of_memory ||
                    r.state == crosstown::task_state::rejected_by_executor)
            << "task " << r.index << ": " << r.state;
      }
      if (!run.failure_injected) break;  // the release needed fewer allocations: all were tried
      ASSERT_LT(n, 10'000) << "the release path never stops allocating";
    }
    EXPECT_GT(n, 3) << "the release path was expected to allocate a few times";
  }
}

TEST(ReleaseUnderMemoryPressure, ATaskLostForLackOfMemoryIsReportedByItsName) {
  std::vector<std::pair<std::string, crosstown::task_state>> lost;
  lost.reserve(16);
  {
    crosstown::runtime rt(
        {.threads = 1, .on_lost = [&](const crosstown::task_info& t, crosstown::task_state state) {
           lost.emplace_back(std::string(t.name), state);
         }});
    crosstown::manual_executor manual;
    crosstown::response_scope scope(rt);
    scope.defer([] {}, {.executor = manual, .name = "audit"});
    scope.status_known(200);
    {
      failing_allocations failing(0, true);  // nothing can be allocated from here on
      scope.response_sent();
      scope.end();
    }
    EXPECT_EQ(manual.pending(), 0u);
    EXPECT_EQ(rt.metrics().count(crosstown::task_state::dropped_out_of_memory), 1u);
  }
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_EQ(lost[0].first, "audit");
  EXPECT_EQ(lost[0].second, crosstown::task_state::dropped_out_of_memory);
}

}  // namespace
