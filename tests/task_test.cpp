// Tests for crosstown/task.hpp: a move-only, type-erased void() callable with 48 bytes of
// inline storage. Allocation counts are proven in task_allocation_test.cpp.

#include <crosstown/task.hpp>

#include <gtest/gtest.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using crosstown::task;

// Counts the lives of a probe: every instance (moved-from or not) is destroyed once, and the
// one instance that still owns the "resource" at the end is destroyed exactly once.
struct probe_counters {
  int constructed = 0;      // every constructor, including moves
  int destroyed = 0;        // every destructor
  int owner_destroyed = 0;  // destructors of the instance holding the resource
  int calls = 0;
};

class probe {
 public:
  explicit probe(probe_counters& c) noexcept : counters_(&c), owner_(true) { ++c.constructed; }
  probe(probe&& other) noexcept
      : counters_(other.counters_), owner_(std::exchange(other.owner_, false)) {
    ++counters_->constructed;
  }
  probe(const probe&) = delete;
  probe& operator=(const probe&) = delete;
  probe& operator=(probe&&) = delete;
  ~probe() {
    ++counters_->destroyed;
    if (owner_) ++counters_->owner_destroyed;
  }
  void touch() const { ++counters_->calls; }

 private:
  probe_counters* counters_;
  bool owner_;
};

// A callable of exactly `Size` bytes (a multiple of the pointer size, at least two pointers)
// that records a call through its probe and checks its payload is intact.
template <std::size_t Size>
struct sized_callable {
  static_assert(Size >= 2 * sizeof(void*) && Size % sizeof(void*) == 0);
  explicit sized_callable(probe_counters& c, int* checksum_out) : p(c), out(checksum_out) {
    std::iota(payload.begin(), payload.end(), std::uint8_t{1});
  }
  void operator()() {
    p.touch();
    *out = std::accumulate(payload.begin(), payload.end(), 0);
  }
  probe p;
  int* out;
  std::array<std::uint8_t, Size - sizeof(probe) - sizeof(int*)> payload{};
};

int expected_checksum(std::size_t payload_size) {
  int sum = 0;
  for (std::size_t i = 1; i <= payload_size; ++i) sum += static_cast<std::uint8_t>(i);
  return sum;
}

using inline_sized = sized_callable<task::inline_capacity>;    // 48 bytes: inline
using heap_sized = sized_callable<task::inline_capacity + 8>;  // 56 bytes: heap

static_assert(sizeof(inline_sized) == 48);
static_assert(sizeof(heap_sized) == 56);

struct alignas(64) over_aligned_callable {
  int* out;
  void operator()() const { *out = reinterpret_cast<std::uintptr_t>(this) % 64 == 0 ? 1 : -1; }
};

struct throwing_move_callable {
  int* out;
  throwing_move_callable(int* o) : out(o) {}  // NOLINT
  throwing_move_callable(throwing_move_callable&& other) noexcept(false) : out(other.out) {}
  void operator()() const { ++*out; }
};

struct lvalue_only_callable {
  int* out;
  void operator()() & { ++*out; }
};

struct forty_nine_bytes {
  static inline std::string last_seen;
  std::array<char, 49> bytes;
  void operator()() const { last_seen.assign(bytes.begin(), bytes.end()); }
};

int free_function_calls = 0;
void free_function() { ++free_function_calls; }

// --- type properties -----------------------------------------------------------------------

TEST(Task, IsMoveOnly) {
  static_assert(!std::is_copy_constructible_v<task>);
  static_assert(!std::is_copy_assignable_v<task>);
  static_assert(std::is_nothrow_move_constructible_v<task>);
  static_assert(std::is_nothrow_move_assignable_v<task>);
  static_assert(std::is_nothrow_default_constructible_v<task>);
  // A lambda converts implicitly: a closure *is* a task.
  static_assert(std::is_convertible_v<decltype([] {}), task>);
  // Not a task: something that cannot be called with no arguments.
  static_assert(!std::is_constructible_v<task, int>);
  static_assert(!std::is_constructible_v<task, decltype([](int) {})>);
  SUCCEED();
}

TEST(Task, StoresSmallNothrowMovableClosuresInline) {
  static_assert(task::inline_capacity == 48);
  static_assert(task::stored_inline<inline_sized>);
  static_assert(task::stored_inline<void (*)()>);
  static_assert(task::stored_inline<decltype([] {})>);
  static_assert(task::stored_inline<std::unique_ptr<int>>);  // size and move are what count
  SUCCEED();
}

TEST(Task, StoresLargeOverAlignedOrThrowingMoveClosuresOnTheHeap) {
  static_assert(!task::stored_inline<heap_sized>);
  static_assert(!task::stored_inline<std::array<char, 49>>);
  static_assert(!task::stored_inline<over_aligned_callable>);
  static_assert(!task::stored_inline<throwing_move_callable>);
  SUCCEED();
}

// --- empty and non-empty ---------------------------------------------------------------------

TEST(Task, DefaultConstructedTaskIsEmpty) {
  task t;
  EXPECT_FALSE(static_cast<bool>(t));
}

TEST(Task, TaskHoldingAClosureIsNotEmpty) {
  task t([] {});
  EXPECT_TRUE(static_cast<bool>(t));
}

TEST(Task, InvokingRunsTheClosureEachTime) {
  int calls = 0;
  task t([&calls] { ++calls; });
  t();
  t();
  EXPECT_EQ(calls, 2);
}

TEST(Task, MutableClosureKeepsItsStateBetweenCalls) {
  std::vector<int> seen;
  task t([&seen, n = 0]() mutable { seen.push_back(++n); });
  t();
  t();
  t();
  EXPECT_EQ(seen, (std::vector<int>{1, 2, 3}));
}

TEST(Task, AcceptsFunctionPointersAndFunctions) {
  free_function_calls = 0;
  task from_pointer(&free_function);
  task from_function(free_function);
  from_pointer();
  from_function();
  EXPECT_EQ(free_function_calls, 2);
}

TEST(Task, CallsTheCallableAsAnLvalue) {
  int calls = 0;
  task t(lvalue_only_callable{&calls});
  t();
  EXPECT_EQ(calls, 1);
}

TEST(Task, DiscardsTheResultOfANonVoidCallable) {
  int calls = 0;
  task t([&calls] { return ++calls; });
  t();
  EXPECT_EQ(calls, 1);
}

TEST(Task, HoldsMoveOnlyCaptures) {
  auto owned = std::make_unique<int>(41);
  int seen = 0;
  task t([p = std::move(owned), &seen] { seen = *p + 1; });
  EXPECT_EQ(owned, nullptr);
  task moved(std::move(t));
  moved();
  EXPECT_EQ(seen, 42);
}

// --- moves -----------------------------------------------------------------------------------

TEST(Task, MovedFromInlineTaskIsEmptyAndTheTargetRuns) {
  int calls = 0;
  task source([&calls] { ++calls; });
  task target(std::move(source));
  EXPECT_FALSE(static_cast<bool>(source));  // NOLINT(bugprone-use-after-move): the contract
  ASSERT_TRUE(static_cast<bool>(target));
  target();
  EXPECT_EQ(calls, 1);
}

TEST(Task, MovedFromHeapTaskIsEmptyAndTheTargetRuns) {
  probe_counters c;
  int checksum = 0;
  task source(heap_sized(c, &checksum));
  task target(std::move(source));
  EXPECT_FALSE(static_cast<bool>(source));  // NOLINT(bugprone-use-after-move)
  ASSERT_TRUE(static_cast<bool>(target));
  target();
  EXPECT_EQ(c.calls, 1);
  EXPECT_EQ(checksum, expected_checksum(sizeof(heap_sized::payload)));
}

TEST(Task, MoveAssignmentEmptiesTheSourceAndDestroysTheTargetsOldClosureOnce) {
  probe_counters old_counters;
  probe_counters new_counters;
  int checksum = 0;
  task target(inline_sized(old_counters, &checksum));
  task source(inline_sized(new_counters, &checksum));
  target = std::move(source);
  EXPECT_FALSE(static_cast<bool>(source));  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(old_counters.owner_destroyed, 1);
  EXPECT_EQ(old_counters.destroyed, old_counters.constructed);
  EXPECT_EQ(new_counters.owner_destroyed, 0);
  target();
  EXPECT_EQ(new_counters.calls, 1);
  EXPECT_EQ(old_counters.calls, 0);
}

TEST(Task, MoveAssigningAnEmptyTaskEmptiesTheTarget) {
  probe_counters c;
  int checksum = 0;
  task target(inline_sized(c, &checksum));
  task empty;
  target = std::move(empty);
  EXPECT_FALSE(static_cast<bool>(target));
  EXPECT_EQ(c.owner_destroyed, 1);
}

TEST(Task, SelfMoveAssignmentKeepsTheClosure) {
  int calls = 0;
  task t([&calls] { ++calls; });
  task& alias = t;
  t = std::move(alias);
  ASSERT_TRUE(static_cast<bool>(t));
  t();
  EXPECT_EQ(calls, 1);
}

TEST(Task, ClosureSurvivesAChainOfMovesBetweenInlineAndHeapTasks) {
  probe_counters c;
  int checksum = 0;
  task a(inline_sized(c, &checksum));
  task b(std::move(a));
  task d;
  d = std::move(b);
  std::vector<task> many;
  many.push_back(std::move(d));
  for (int i = 0; i < 20; ++i) many.emplace_back([] {});  // forces reallocation: moves again
  many.front()();
  EXPECT_EQ(c.calls, 1);
  EXPECT_EQ(checksum, expected_checksum(sizeof(inline_sized::payload)));
  EXPECT_EQ(c.owner_destroyed, 0);
}

// --- destruction -----------------------------------------------------------------------------

TEST(Task, DestroysAnInlineClosureExactlyOnce) {
  probe_counters c;
  int checksum = 0;
  {
    task t(inline_sized(c, &checksum));
    task moved(std::move(t));
    task assigned;
    assigned = std::move(moved);
    assigned();
    EXPECT_EQ(c.owner_destroyed, 0);
  }
  EXPECT_EQ(c.owner_destroyed, 1);
  EXPECT_EQ(c.destroyed, c.constructed);  // every moved-from shell was destroyed too
  EXPECT_EQ(c.calls, 1);
}

TEST(Task, DestroysAHeapClosureExactlyOnce) {
  probe_counters c;
  int checksum = 0;
  {
    task t(heap_sized(c, &checksum));
    task moved(std::move(t));
    task assigned;
    assigned = std::move(moved);
    assigned();
    EXPECT_EQ(c.owner_destroyed, 0);
  }
  EXPECT_EQ(c.owner_destroyed, 1);
  EXPECT_EQ(c.destroyed, c.constructed);
  EXPECT_EQ(c.calls, 1);
}

TEST(Task, ResetDestroysTheClosureAndEmptiesTheTask) {
  probe_counters c;
  int checksum = 0;
  task t(inline_sized(c, &checksum));
  t.reset();
  EXPECT_FALSE(static_cast<bool>(t));
  EXPECT_EQ(c.owner_destroyed, 1);
  t.reset();  // no-op on an empty task
  EXPECT_EQ(c.owner_destroyed, 1);
}

TEST(Task, ResetOfAHeapTaskDestroysTheClosureOnce) {
  probe_counters c;
  int checksum = 0;
  {
    task t(heap_sized(c, &checksum));
    t.reset();
    EXPECT_FALSE(static_cast<bool>(t));
    EXPECT_EQ(c.owner_destroyed, 1);
  }
  EXPECT_EQ(c.owner_destroyed, 1);
  EXPECT_EQ(c.destroyed, c.constructed);
}

TEST(Task, EmptyTaskCanBeReassignedAfterReset) {
  int calls = 0;
  task t([] {});
  t.reset();
  t = task([&calls] { ++calls; });
  t();
  EXPECT_EQ(calls, 1);
}

// --- exceptions ------------------------------------------------------------------------------

TEST(Task, ExceptionFromTheClosurePropagatesToTheCaller) {
  task t([] { throw std::runtime_error("boom"); });
  try {
    t();
    FAIL() << "expected the closure's exception";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "boom");
  }
}

TEST(Task, ExceptionFromAHeapClosurePropagatesToTheCaller) {
  std::array<char, 200> big{};
  big[0] = 'x';
  task t([big] { throw std::string(1, big[0]); });
  EXPECT_THROW(t(), std::string);
}

TEST(Task, TaskStillHoldsItsClosureAfterItThrew) {
  int calls = 0;
  task t([&calls] {
    if (++calls == 1) throw std::logic_error("first call fails");
  });
  EXPECT_THROW(t(), std::logic_error);
  ASSERT_TRUE(static_cast<bool>(t));
  EXPECT_NO_THROW(t());
  EXPECT_EQ(calls, 2);
}

TEST(Task, ThrowingClosureIsStillDestroyedExactlyOnce) {
  probe_counters c;
  {
    task t([p = probe(c)] {
      p.touch();
      throw std::runtime_error("boom");
    });
    EXPECT_THROW(t(), std::runtime_error);
  }
  EXPECT_EQ(c.calls, 1);
  EXPECT_EQ(c.owner_destroyed, 1);
  EXPECT_EQ(c.destroyed, c.constructed);
}

// --- large and unusual closures -------------------------------------------------------------

TEST(Task, LargeClosureRunsWithItsWholePayload) {
  std::array<std::uint64_t, 64> payload{};  // 512 bytes
  std::iota(payload.begin(), payload.end(), std::uint64_t{1});
  std::uint64_t sum = 0;
  auto closure = [payload, &sum] {
    for (std::uint64_t v : payload) sum += v;
  };
  static_assert(sizeof(closure) > task::inline_capacity);
  static_assert(!task::stored_inline<decltype(closure)>);
  task t(std::move(closure));
  task moved(std::move(t));
  moved();
  EXPECT_EQ(sum, 64u * 65u / 2u);
}

TEST(Task, ClosureOfFortyNineBytesRunsFromTheHeap) {
  forty_nine_bytes closure{};
  closure.bytes.fill('a');
  closure.bytes.back() = 'z';
  static_assert(sizeof(closure) == task::inline_capacity + 1);
  static_assert(!task::stored_inline<forty_nine_bytes>);
  forty_nine_bytes::last_seen.clear();
  task t(closure);
  task moved(std::move(t));
  moved();
  EXPECT_EQ(forty_nine_bytes::last_seen, std::string(48, 'a') + "z");
}

TEST(Task, OverAlignedClosureIsStoredSuitablyAligned) {
  int result = 0;
  task t(over_aligned_callable{&result});
  task moved(std::move(t));
  moved();
  EXPECT_EQ(result, 1);
}

TEST(Task, ClosureWithAThrowingMoveWorks) {
  int calls = 0;
  task t{throwing_move_callable(&calls)};
  task moved(std::move(t));
  moved();
  EXPECT_EQ(calls, 1);
}

TEST(Task, LvalueCallableIsCopiedIntoTheTask) {
  int calls = 0;
  auto closure = [&calls] { ++calls; };
  task a(closure);
  task b(closure);
  a();
  b();
  closure();
  EXPECT_EQ(calls, 3);
}

}  // namespace
