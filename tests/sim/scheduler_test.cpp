// The seeded scheduler: FIFO order, exact replay, PCT finding an ordering bug, the step cap.
#include <crosstown/sim/scheduler.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace {

using namespace crosstown::sim;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Three "threads", each a chain of steps: a step posts its successor when it runs.
struct chains {
  virtual_time time;
  scheduler sched;
  std::vector<std::string> order;

  chains(strategy_options o, std::uint64_t seed, std::uint32_t threads = 3, int steps = 6)
      : sched(time, std::move(o), seed) {
    for (std::uint32_t t = 0; t < threads; ++t) start(t, steps);
  }
  void start(std::uint32_t thread, int steps) { step(thread, 0, steps); }
  void step(std::uint32_t thread, int i, int steps) {
    const std::string name = std::string(1, static_cast<char>('a' + thread)) + std::to_string(i);
    sched.post(name, thread, [this, thread, i, steps, name] {
      order.push_back(name);
      if (i + 1 < steps) step(thread, i + 1, steps);
    });
  }
};

TEST(Scheduler, FifoRunsItemsInPostingOrder) {
  chains c({.kind = strategy_kind::fifo}, 1, 2, 3);
  c.sched.run(1000);
  EXPECT_THAT(c.order, ElementsAre("a0", "b0", "a1", "b1", "a2", "b2"));
}

TEST(Scheduler, ReplayReproducesARandomScheduleExactly) {
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    chains random({.kind = strategy_kind::random}, seed);
    random.sched.run(1000);
    chains replay({.kind = strategy_kind::replay, .schedule = random.sched.decisions()}, 999);
    replay.sched.run(1000);
    EXPECT_EQ(replay.order, random.order) << "seed " << seed;
  }
}

TEST(Scheduler, ReplayReportsAScheduleThatDoesNotFit) {
  chains c({.kind = strategy_kind::replay, .schedule = {0, 7}}, 1);
  EXPECT_THROW(c.sched.run(1000), replay_divergence);
}

TEST(Scheduler, SameSeedSameScheduleDifferentSeedsDiffer) {
  chains a({.kind = strategy_kind::random}, 42), b({.kind = strategy_kind::random}, 42),
      c({.kind = strategy_kind::random}, 43);
  a.sched.run(1000);
  b.sched.run(1000);
  c.sched.run(1000);
  EXPECT_EQ(a.order, b.order);
  EXPECT_NE(a.order, c.order);
}

// The planted bug needs depth 2: thread b must run its first step after a has done three
// steps but before a4 - i.e. b preempts a in the middle of its chain. FIFO alternates and
// never gets there.
bool planted_bug(const std::vector<std::string>& order) {
  auto pos = [&](const std::string& n) {
    return std::find(order.begin(), order.end(), n) - order.begin();
  };
  return pos("a3") < pos("b0") && pos("b0") < pos("a4");
}

TEST(Scheduler, PctFindsAPlantedOrderingBugThatFifoMisses) {
  int fifo_hits = 0, pct_hits = 0;
  for (std::uint64_t seed = 1; seed <= 200; ++seed) {
    chains fifo({.kind = strategy_kind::fifo}, seed, 2, 8);
    fifo.sched.run(1000);
    fifo_hits += planted_bug(fifo.order) ? 1 : 0;
    chains pct({.kind = strategy_kind::pct, .pct_depth = 2, .pct_steps = 16}, seed, 2, 8);
    pct.sched.run(1000);
    pct_hits += planted_bug(pct.order) ? 1 : 0;
  }
  EXPECT_EQ(fifo_hits, 0);
  EXPECT_GT(pct_hits, 0) << "PCT with depth 2 must find the bug within 200 seeds";
  std::printf("planted ordering bug: PCT(d=2) found it in %d of 200 seeds, FIFO in %d\n", pct_hits,
              fifo_hits);
}

TEST(Scheduler, StepCapNamesTheItemThatNeverFinishes) {
  virtual_time time;
  scheduler s(time, {.kind = strategy_kind::random}, 1);
  std::function<void()> spin = [&] { s.post("retry-forever task", 7, spin); };
  s.post("retry-forever task", 7, spin);
  s.post("one-shot", 8, [] {});
  const run_outcome out = s.run(500);
  EXPECT_TRUE(out.capped);
  ASSERT_FALSE(out.live.empty());
  EXPECT_THAT(out.live.front(), HasSubstr("retry-forever"));
}

TEST(Scheduler, TimeLimitStopsBeforeLaterTimers) {
  virtual_time time;
  scheduler s(time, {.kind = strategy_kind::fifo}, 1);
  bool late = false;
  s.post_after(std::chrono::milliseconds(10), "late", 1, [&] { late = true; });
  const run_outcome out = s.run(100, time.now() + std::chrono::milliseconds(5));
  EXPECT_TRUE(out.time_limit);
  EXPECT_FALSE(late);
}

}  // namespace
