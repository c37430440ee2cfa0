// The virtual clock: timers fire at their own deadlines in order, auto-advance, manual mode,
// and Boost.Asio timers on the virtual clock.
#include <crosstown/sim/virtual_clock.hpp>

#include <crosstown/sim/scheduler.hpp>

#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/io_context.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using crosstown::sim::clock_binding;
using crosstown::sim::duration;
using crosstown::sim::scheduler;
using crosstown::sim::strategy_kind;
using crosstown::sim::virtual_clock;
using crosstown::sim::virtual_time;
using crosstown::sim::virtual_wait_traits;
using ::testing::ElementsAre;

TEST(VirtualClock, AdvanceFiresEachTimerAtItsOwnDeadlineInOrder) {
  virtual_time t;
  std::vector<std::pair<std::string, std::int64_t>> fired;
  auto note = [&](std::string name) { return [&, name] { fired.emplace_back(name, t.now_ns()); }; };
  t.call_after(30us, note("c"));
  t.call_after(10us, note("a"));
  t.call_after(20us, note("b1"));
  t.call_after(20us, note("b2"));  // same deadline: creation order
  t.call_after(50us, note("late"));
  t.advance(40us);
  EXPECT_THAT(fired, ElementsAre(std::pair<std::string, std::int64_t>{"a", 10000},
                                 std::pair<std::string, std::int64_t>{"b1", 20000},
                                 std::pair<std::string, std::int64_t>{"b2", 20000},
                                 std::pair<std::string, std::int64_t>{"c", 30000}));
  EXPECT_EQ(t.now_ns(), 40000);
  EXPECT_EQ(t.pending(), 1u);
}

TEST(VirtualClock, TimersScheduledByTimersFireWithinTheSameAdvance) {
  virtual_time t;
  std::vector<std::int64_t> at;
  t.call_after(5us, [&] {
    at.push_back(t.now_ns());
    t.call_after(5us, [&] { at.push_back(t.now_ns()); });
  });
  t.advance(20us);
  EXPECT_THAT(at, ElementsAre(5000, 10000));
}

TEST(VirtualClock, CancelledTimerNeverFires) {
  virtual_time t;
  bool fired = false;
  const auto id = t.call_after(1us, [&] { fired = true; });
  EXPECT_TRUE(t.cancel(id));
  EXPECT_FALSE(t.cancel(id));
  t.advance(1ms);
  EXPECT_FALSE(fired);
}

TEST(VirtualClock, SchedulerAutoAdvancesToTheNextTimerWhenNothingIsRunnable) {
  virtual_time t;
  scheduler s(t, {.kind = strategy_kind::fifo}, 1);
  std::vector<std::int64_t> at;
  s.post_after(3ms, "late", 1, [&] { at.push_back(t.now_ns()); });
  s.post_after(1ms, "early", 1, [&] { at.push_back(t.now_ns()); });
  s.run(100);
  EXPECT_THAT(at, ElementsAre(1'000'000, 3'000'000));
  EXPECT_EQ(t.now_ns(), 3'000'000) << "time jumps straight to each event, no further";
}

TEST(VirtualClock, NoAdvanceWhileAutoAdvanceIsOff) {
  virtual_time t;
  scheduler s(t, {.kind = strategy_kind::fifo}, 1);
  bool fired = false;
  s.post_after(1ms, "timer", 1, [&] { fired = true; });
  {
    virtual_time::manual_advance manual(t);
    EXPECT_FALSE(t.auto_advance());
    s.run(100);
    EXPECT_FALSE(fired);
    EXPECT_EQ(t.now_ns(), 0);
    t.advance(999us);
    s.run(100);
    EXPECT_FALSE(fired);
    t.advance(1us);
    s.run(100);
    EXPECT_TRUE(fired) << "an explicit advance still fires it";
  }
  EXPECT_TRUE(t.auto_advance());
}

TEST(VirtualClock, AsioTimerOnTheVirtualClockFiresOnlyWhenVirtualTimeReachesIt) {
  virtual_time t;
  clock_binding bind(t);
  boost::asio::io_context io;
  boost::asio::basic_waitable_timer<virtual_clock, virtual_wait_traits> timer(io);
  timer.expires_after(5ms);
  bool fired = false;
  timer.async_wait([&](const boost::system::error_code& ec) { fired = !ec; });
  io.poll();
  EXPECT_FALSE(fired);
  t.advance(4ms);
  io.poll();
  EXPECT_FALSE(fired);
  t.advance(1ms);
  io.poll();
  EXPECT_TRUE(fired);
  EXPECT_EQ(virtual_clock::now().time_since_epoch(), duration(5ms));
}

TEST(VirtualClock, NowIsTheEpochWithNoBinding) {
  EXPECT_EQ(virtual_clock::now().time_since_epoch().count(), 0);
}

}  // namespace
