// Tests for crosstown/thread_pool.hpp: one hand-off per batch yet parallel workers, survival of
// throwing tasks, bounded capacity with the three overflow policies, drain and shutdown with
// deadlines, and a destructor that loses nothing. No sleeps: every wait has a deadline and the
// test asserts that it did not expire.

#include <crosstown/thread_pool.hpp>

#include <crosstown/executor.hpp>
#include <crosstown/fault.hpp>
#include <crosstown/job.hpp>
#include <crosstown/metrics.hpp>
#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include "test_support.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using crosstown::overflow_policy;
using crosstown::response_scope;
using crosstown::runtime;
using crosstown::task_info;
using crosstown::task_state;
using crosstown::thread_pool;
using testing::ElementsAre;
using namespace crosstown::test_support;

// How long a wait that is expected to expire lasts (a drain that cannot complete, a producer
// that must stay blocked). Not a sleep: the test waits for a condition that must not happen.
constexpr auto short_wait = std::chrono::milliseconds(100);

// Spins (yielding) until `ready` holds or the deadline passes; for states with no notification.
bool eventually(const std::function<bool()>& ready) {
  const auto until = clock_type::now() + deadline;
  while (!ready()) {
    if (clock_type::now() > until) return false;
    std::this_thread::yield();
  }
  return true;
}

// Forwards each batch to another executor, counting hand-offs and their sizes.
class counting_executor final : public crosstown::executor {
 public:
  explicit counting_executor(crosstown::executor& next) : next_(next) {}
  void execute(crosstown::job_batch batch) override {
    {
      std::lock_guard lock(mutex_);
      sizes_.push_back(batch.size());
    }
    next_.execute(std::move(batch));
  }
  std::vector<std::size_t> sizes() const {
    std::lock_guard lock(mutex_);
    return sizes_;
  }

 private:
  crosstown::executor& next_;
  mutable std::mutex mutex_;
  std::vector<std::size_t> sizes_;
};

std::string described(std::uint64_t request, std::uint32_t index, std::string_view name) {
  return task_info{request, index, name}.describe();
}

// =============================================================================================

TEST(ThreadPool, HasTheRequestedNumberOfWorkers) {
  thread_pool three({.threads = 3});
  EXPECT_EQ(three.thread_count(), 3u);
  thread_pool automatic({.threads = 0});
  EXPECT_EQ(automatic.thread_count(),
            std::max<std::size_t>(1, std::thread::hardware_concurrency()));
}

// The ids of this process's threads named "crosstown-pool", as Linux lists them. (By name:
// a sanitizer's runtime may start a thread of its own when the first one is created.)
std::set<std::string> pool_thread_ids() {
  std::set<std::string> ids;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(entry.path() / "comm");
    std::string name;
    if (std::getline(comm, name) && name == "crosstown-pool") {
      ids.insert(entry.path().filename().string());
    }
  }
  return ids;
}

// Threads in `after` that were not in `before`. (Threads that ended meanwhile - say, of an
// earlier test's pool - only leave the list, so they cannot be mistaken for new ones.)
std::size_t started_between(const std::set<std::string>& before,
                            const std::set<std::string>& after) {
  return static_cast<std::size_t>(std::count_if(
      after.begin(), after.end(), [&](const std::string& id) { return !before.contains(id); }));
}

TEST(ThreadPool, StartsItsWorkersWithTheFirstBatchOnly) {
  const std::set<std::string> before = pool_thread_ids();
  runtime rt({.threads = 3});
  {
    response_scope scope(rt);
    scope.defer([] {}, {.same_thread = true});  // runs here: the pool is never handed work
    complete(scope);
  }
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::ran), 1u);
  const std::set<std::string> idle = pool_thread_ids();
  EXPECT_EQ(started_between(before, idle), 0u)
      << "a pool that was never handed work started threads";
  {
    response_scope scope(rt);
    scope.defer([] {});
    complete(scope);
  }
  EXPECT_EQ(started_between(idle, pool_thread_ids()), 3u);
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::ran), 2u);
}

TEST(ThreadPool, WorkersRunAtTheRequestedNiceness) {
  const int process = ::getpriority(PRIO_PROCESS, 0);
  runtime rt({.threads = 1, .worker_nice = 7});
  std::atomic<int> seen{-100};
  {
    response_scope scope(rt);
    scope.defer([&] { seen = ::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid())); });
    complete(scope);
  }
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  EXPECT_EQ(seen.load(), std::min(process + 7, 19));
  EXPECT_EQ(::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid())), process)
      << "the thread handing over keeps its priority";
}

TEST(ThreadPool, NicenessOutsideItsRangeIsRejectedByName) {
  for (int bad : {-1, 20}) {
    try {
      thread_pool pool({.threads = 1, .nice = bad});
      ADD_FAILURE() << "nice = " << bad << " was accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_EQ(std::string(e.what()), "crosstown::thread_pool_options::nice is " +
                                           std::to_string(bad) + "; it must be in 0-19");
    }
  }
}

TEST(ThreadPool, KnowsItsOwnWorkerThreads) {
  runtime rt({.threads = 1});
  thread_pool pool({.threads = 1});
  std::atomic<bool> on_own{false};
  std::atomic<bool> on_other{true};
  {
    response_scope scope(rt);
    scope.defer(
        [&] {
          on_own = pool.on_worker_thread();
          on_other = rt.pool().on_worker_thread();
        },
        {.executor = pool});
    complete(scope);
  }
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  EXPECT_TRUE(on_own.load());
  EXPECT_FALSE(on_other.load());
  EXPECT_FALSE(pool.on_worker_thread());
}

TEST(ThreadPool, BatchOfHundredJobsEntersInOneHandoffButRunsOnSeveralWorkers) {
  runtime rt({.threads = 2});
  counting_executor counted(rt.pool());
  std::mutex mutex;
  std::condition_variable cv;
  std::set<std::thread::id> workers;  // guarded by mutex
  std::atomic<int> timeouts{0};
  std::atomic<int> ran{0};
  constexpr int tasks = 100;
  {
    response_scope scope(rt);
    for (int i = 0; i < tasks; ++i) {
      // Each task waits until two different workers have run tasks of this batch: with one
      // worker (or a batch that is not shared out), the first task would time out.
      scope.defer(
          [&] {
            std::unique_lock lock(mutex);
            workers.insert(std::this_thread::get_id());
            cv.notify_all();
            if (!cv.wait_for(lock, deadline, [&] { return workers.size() >= 2; })) ++timeouts;
            ++ran;
          },
          {.executor = counted});
    }
    complete(scope);
  }
  EXPECT_THAT(counted.sizes(), ElementsAre(100u)) << "the whole batch in one hand-off";
  ASSERT_TRUE(rt.drain_for(2 * deadline).complete);
  EXPECT_EQ(timeouts.load(), 0) << "two tasks of the batch never ran at the same time";
  EXPECT_EQ(ran.load(), tasks);
  std::lock_guard lock(mutex);
  EXPECT_EQ(workers.size(), 2u);
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::ran), static_cast<std::uint64_t>(tasks));
}

TEST(ThreadPool, JobsLeaveTheQueueInTheOrderTheyEntered) {
  runtime rt({.threads = 1});
  gate g;
  std::vector<int> order;  // written by the single worker only
  {
    response_scope holder(rt);
    holder.defer(g.task());
    complete(holder);
  }
  ASSERT_TRUE(g.started.wait());
  for (int r = 0; r < 3; ++r) {
    response_scope scope(rt);
    for (int i = 0; i < 10; ++i)
      scope.defer([&order, label = r * 10 + i] { order.push_back(label); });
    complete(scope);
  }
  EXPECT_EQ(rt.pool().queue_depth(), 30u);
  g.opened.set();
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  std::vector<int> expected(30);
  for (int i = 0; i < 30; ++i) expected[i] = i;
  EXPECT_EQ(order, expected);
  EXPECT_FALSE(g.timed_out.load());
}

TEST(ThreadPool, ThrowingTaskDoesNotStopItsSiblings) {
  struct failure_seen {
    std::uint64_t request;
    std::uint32_t index;
    std::string name;
    std::string message;
  };
  std::mutex mutex;
  std::vector<failure_seen> failures;
  runtime rt(
      {.threads = 2, .on_error = [&](const crosstown::task_failure& f) {
         std::lock_guard lock(mutex);
         failures.push_back({f.task.request_id, f.task.index, std::string(f.task.name), f.message});
       }});
  std::atomic<int> ran{0};
  std::uint64_t request = 0;
  {
    response_scope scope(rt);
    request = scope.id();
    for (int i = 0; i < 100; ++i) {
      if (i == 50) {
        scope.defer([] { throw std::runtime_error("kaboom"); }, {.name = "boom"});
      } else {
        scope.defer([&ran] { ++ran; });
      }
    }
    complete(scope);
  }
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  EXPECT_EQ(ran.load(), 99);
  const auto m = rt.metrics();
  EXPECT_EQ(m.count(crosstown::task_state::ran), 99u);
  EXPECT_EQ(m.count(crosstown::task_state::failed), 1u);
  std::lock_guard lock(mutex);
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0].name, "boom");
  EXPECT_EQ(failures[0].message, "kaboom");
  EXPECT_EQ(failures[0].request, request);
  EXPECT_EQ(failures[0].index, 50u);
}

TEST(ThreadPool, WorkerSurvivesAThrowingTask) {
  runtime rt({.threads = 1, .on_error = [](const crosstown::task_failure&) {}});
  {
    response_scope scope(rt);
    scope.defer([] { throw 42; });  // not even a std::exception
    complete(scope);
  }
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  std::atomic<bool> ran_on_worker{false};
  {
    response_scope scope(rt);
    scope.defer([&] { ran_on_worker = rt.pool().on_worker_thread(); });
    complete(scope);
  }
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  EXPECT_TRUE(ran_on_worker.load()) << "the only worker still runs tasks";
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::failed), 1u);
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::ran), 1u);
}

// --- scheduling: one task at a time, in order, visible until it starts ------------------------

TEST(ThreadPool, IdleWorkerTakesTasksQueuedBehindASlowOne) {
  // One slow task then 99 trivial ones in one response, two workers: while the slow one runs,
  // the other worker runs all 99 (none waits in the slow worker's share of the batch).
  runtime rt({.threads = 2});
  gate slow;
  std::atomic<int> ran{0};
  event all_ran;
  std::vector<int> order;  // written by the one free worker only
  {
    response_scope scope(rt);
    scope.defer(slow.task(), {.name = "slow"});
    for (int i = 0; i < 99; ++i) {
      scope.defer([&, i] {
        order.push_back(i);
        if (++ran == 99) all_ran.set();
      });
    }
    complete(scope);
  }
  ASSERT_TRUE(slow.started.wait());
  EXPECT_TRUE(all_ran.wait()) << "only " << ran.load() << " of 99 ran while a worker was idle";
  EXPECT_FALSE(slow.finished.load()) << "the slow task still holds its worker";
  EXPECT_EQ(rt.pool().queue_depth(), 0u);
  ASSERT_EQ(order.size(), 99u);
  EXPECT_TRUE(std::is_sorted(order.begin(), order.end())) << "they started in registration order";
  slow.opened.set();
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  EXPECT_EQ(rt.metrics().count(task_state::ran), 100u);
  EXPECT_FALSE(slow.timed_out.load());
}

TEST(ThreadPool, QueueDepthCountsEveryTaskNotStarted) {
  // Two workers held by the first two tasks of a batch of twelve: the other ten have not
  // started, and all ten are in the queue depth (none hidden in a worker's claimed share).
  runtime rt({.threads = 2});
  gate first;
  gate second;
  {
    response_scope scope(rt);
    scope.defer(first.task());
    scope.defer(second.task());
    for (int i = 0; i < 10; ++i) scope.defer([] {});
    complete(scope);
  }
  ASSERT_TRUE(first.started.wait());
  ASSERT_TRUE(second.started.wait());
  EXPECT_EQ(rt.pool().queue_depth(), 10u);
  const auto m = rt.metrics();
  EXPECT_EQ(m.pool_queue_depth, 10u);
  EXPECT_EQ(m.queued, 10u);
  EXPECT_EQ(m.in_flight, 2u);
  const auto report = rt.pool().drain(clock_type::now());
  EXPECT_EQ(report.running, 2u);
  EXPECT_EQ(report.queued, 10u);
  EXPECT_EQ(report.unfinished.size(), 12u);
  first.opened.set();
  second.opened.set();
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  EXPECT_EQ(rt.metrics().count(task_state::ran), 12u);
}

// Stalls the worker it is installed on at "thread_pool.take", inside the lock the workers
// take work under, until released.
class stall_at_take final : public crosstown::fault::injector {
 public:
  bool should_fail(std::string_view site) noexcept override {
    if (site != "thread_pool.take" || done_.exchange(true)) return false;
    stalled.set();
    if (!release.wait()) timed_out = true;
    return false;
  }
  event stalled;
  event release;
  std::atomic<bool> timed_out{false};

 private:
  std::atomic<bool> done_{false};
};

TEST(ThreadPool, HandoffDoesNotWaitForAWorkerStalledWhileTakingWork) {
  // A low-priority worker preempted while it takes work must not delay the next hand-off: the
  // hand-off takes no lock a worker holds.
  stall_at_take stall;  // outlives the pool, whose worker holds a pointer to it
  runtime rt({.threads = 1});
  thread_pool pool({.threads = 1});
  {
    response_scope scope(rt);
    // Installs the injector on the worker thread; it stalls at the worker's next take.
    scope.defer([&stall] { crosstown::fault::current() = &stall; }, {.executor = pool});
    complete(scope);
  }
  ASSERT_TRUE(stall.stalled.wait()) << "the worker never came back for work";
  std::atomic<int> ran{0};
  background producer([&] {
    response_scope scope(rt);
    for (int i = 0; i < 5; ++i) scope.defer([&ran] { ++ran; }, {.executor = pool});
    complete(scope);
  });
  EXPECT_TRUE(producer.wait_done()) << "the hand-off waited for the stalled worker";
  EXPECT_EQ(pool.queue_depth(), 5u);
  EXPECT_EQ(ran.load(), 0);
  stall.release.set();
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  EXPECT_EQ(ran.load(), 5);
  EXPECT_FALSE(stall.timed_out.load());
  pool.shutdown(clock_type::now() + deadline);
}

TEST(ThreadPool, LowestPriorityWorkersRunInTheIdleSchedulingClass) {
  runtime rt({.threads = 1, .worker_lowest_priority = true});
  std::atomic<int> policy{-1};
  {
    response_scope scope(rt);
    scope.defer([&] { policy = ::sched_getscheduler(0); });
    complete(scope);
  }
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  EXPECT_EQ(policy.load(), SCHED_IDLE);
  EXPECT_NE(::sched_getscheduler(0), SCHED_IDLE) << "the thread handing over keeps its class";
}

// --- capacity and overflow -------------------------------------------------------------------

TEST(ThreadPool, BlockPolicyMakesTheProducerWaitForRoom) {
  runtime rt({.threads = 1});
  thread_pool pool({.threads = 1, .capacity = 2, .overflow = overflow_policy::block});
  gate g;
  {
    response_scope holder(rt);
    holder.defer(g.task(), {.executor = pool});
    complete(holder);
  }
  ASSERT_TRUE(g.started.wait());  // one unit of capacity is taken by the running gate

  std::vector<std::thread::id> ran_on(3);
  std::atomic<int> ran{0};
  background producer([&] {
    response_scope scope(rt);
    for (int i = 0; i < 3; ++i) {
      scope.defer(
          [&, i] {
            ran_on[static_cast<std::size_t>(i)] = std::this_thread::get_id();
            ++ran;
          },
          {.executor = pool});
    }
    complete(scope);  // one job fits, the producer waits with the other two
  });
  ASSERT_TRUE(eventually([&] { return pool.queue_depth() == 1; }));
  EXPECT_FALSE(producer.wait_done(short_wait)) << "the producer must wait while the pool is full";
  EXPECT_EQ(pool.queue_depth(), 1u);
  EXPECT_EQ(ran.load(), 0);

  g.opened.set();
  ASSERT_TRUE(producer.wait_done()) << "room appeared: the producer must go on";
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  EXPECT_EQ(ran.load(), 3);
  for (const auto& id : ran_on) EXPECT_NE(id, producer.id()) << "block never runs on the caller";
  const auto m = rt.metrics();
  EXPECT_EQ(m.count(crosstown::task_state::ran), 4u);
  EXPECT_EQ(m.count(crosstown::task_state::rejected_by_overflow), 0u);
  EXPECT_EQ(m.registered, m.terminal());
  EXPECT_FALSE(g.timed_out.load());
}

TEST(ThreadPool, RejectPolicyRejectsTheExcessAndReportsEachTask) {
  lost_log lost;
  runtime rt({.threads = 1,
              .queue_capacity = 2,
              .overflow = overflow_policy::reject,
              .on_lost = lost.hook()});
  gate g;
  {
    response_scope holder(rt);
    holder.defer(g.task(), {.name = "gate"});
    complete(holder);
  }
  ASSERT_TRUE(g.started.wait());
  std::atomic<int> ran{0};
  std::uint64_t request = 0;
  {
    background producer([&] {
      response_scope scope(rt);
      request = scope.id();
      for (const char* name : {"r0", "r1", "r2", "r3"}) {
        scope.defer([&ran] { ++ran; }, {.name = name});
      }
      complete(scope);
    });
    EXPECT_TRUE(producer.wait_done()) << "reject never makes the producer wait";
    const auto m = rt.metrics();
    EXPECT_EQ(m.count(crosstown::task_state::rejected_by_overflow), 3u);
    EXPECT_EQ(m.pool_queue_depth, 1u);
    g.opened.set();
  }
  EXPECT_THAT(lost.seen(),
              ElementsAre(lost_task{request, 1, "r1", task_state::rejected_by_overflow},
                          lost_task{request, 2, "r2", task_state::rejected_by_overflow},
                          lost_task{request, 3, "r3", task_state::rejected_by_overflow}));
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  EXPECT_EQ(ran.load(), 1);
  const auto m = rt.metrics();
  EXPECT_EQ(m.count(crosstown::task_state::ran), 2u);  // the gate and r0
  EXPECT_EQ(m.count(crosstown::task_state::rejected_by_overflow), 3u);
  EXPECT_EQ(m.registered, 5u);
  EXPECT_EQ(m.registered, m.terminal());
}

TEST(ThreadPool, RunOnCallerPolicyRunsTheExcessOnTheCallingThread) {
  runtime rt({.threads = 1});
  thread_pool pool({.threads = 1, .capacity = 2, .overflow = overflow_policy::run_on_caller});
  gate g;
  {
    response_scope holder(rt);
    holder.defer(g.task(), {.executor = pool});
    complete(holder);
  }
  ASSERT_TRUE(g.started.wait());
  std::vector<std::thread::id> ran_on(3);
  std::vector<std::atomic<bool>> ran(3);
  {
    response_scope scope(rt);
    for (std::size_t i = 0; i < 3; ++i) {
      scope.defer(
          [&, i] {
            ran_on[i] = std::this_thread::get_id();
            ran[i] = true;
          },
          {.executor = pool});
    }
    complete(scope);  // task 0 fits; tasks 1 and 2 run here, now
  }
  EXPECT_FALSE(ran[0].load()) << "the queued task waits for the worker held by the gate";
  ASSERT_TRUE(ran[1].load());
  ASSERT_TRUE(ran[2].load());
  EXPECT_EQ(ran_on[1], std::this_thread::get_id());
  EXPECT_EQ(ran_on[2], std::this_thread::get_id());
  g.opened.set();
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  EXPECT_TRUE(ran[0].load());
  EXPECT_NE(ran_on[0], std::this_thread::get_id());
  const auto m = rt.metrics();
  EXPECT_EQ(m.count(crosstown::task_state::ran), 4u);
  EXPECT_EQ(m.count(crosstown::task_state::rejected_by_overflow), 0u);
}

TEST(ThreadPool, WorkerOverflowingItsOwnPoolUnderBlockRunsTheExcessItself) {
  runtime rt({.threads = 1});
  thread_pool pool({.threads = 1, .capacity = 2, .overflow = overflow_policy::block});
  std::thread::id outer_thread;
  std::vector<std::thread::id> inner_thread(3);
  std::vector<std::atomic<bool>> inner_ran(3);
  std::vector<bool> ran_before_outer_returned(3);
  std::atomic<bool> outer_done{false};
  {
    response_scope scope(rt);
    scope.defer(
        [&] {
          outer_thread = std::this_thread::get_id();
          {
            // This task holds one unit of capacity; three more do not fit in the other one.
            response_scope inner(rt);
            for (std::size_t i = 0; i < 3; ++i) {
              inner.defer(
                  [&, i] {
                    inner_thread[i] = std::this_thread::get_id();
                    inner_ran[i] = true;
                  },
                  {.executor = pool});
            }
            complete(inner);
          }
          for (std::size_t i = 0; i < 3; ++i) ran_before_outer_returned[i] = inner_ran[i].load();
          outer_done = true;
        },
        {.executor = pool});
    complete(scope);
  }
  ASSERT_TRUE(rt.drain_for(deadline).complete) << "the worker deadlocked on its own pool";
  ASSERT_TRUE(outer_done.load());
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(inner_ran[i].load()) << i;
    EXPECT_EQ(inner_thread[i], outer_thread) << i;
  }
  EXPECT_FALSE(ran_before_outer_returned[0]) << "the job that fitted was queued";
  EXPECT_TRUE(ran_before_outer_returned[1]) << "the excess ran inside the hand-off";
  EXPECT_TRUE(ran_before_outer_returned[2]);
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::ran), 4u);
}

TEST(ThreadPool, QueueDepthCountsJobsNotYetClaimed) {
  runtime rt({.threads = 1});
  gate g;
  {
    response_scope holder(rt);
    holder.defer(g.task());
    complete(holder);
  }
  ASSERT_TRUE(g.started.wait());
  EXPECT_EQ(rt.pool().queue_depth(), 0u);
  {
    response_scope scope(rt);
    for (int i = 0; i < 3; ++i) scope.defer([] {});
    complete(scope);
  }
  EXPECT_EQ(rt.pool().queue_depth(), 3u);
  const auto m = rt.metrics();
  EXPECT_EQ(m.pool_queue_depth, 3u);
  EXPECT_EQ(m.queued, 3u);
  EXPECT_EQ(m.in_flight, 1u);
  g.opened.set();
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  EXPECT_EQ(rt.pool().queue_depth(), 0u);
  EXPECT_EQ(rt.metrics().in_flight, 0u);
}

// --- drain and shutdown ----------------------------------------------------------------------

TEST(ThreadPool, DrainWithABlockedTaskNamesTheBlockedAndQueuedTasks) {
  runtime rt({.threads = 1});
  gate g;
  std::uint64_t stuck_request = 0;
  std::uint64_t queued_request = 0;
  {
    response_scope holder(rt);
    stuck_request = holder.id();
    holder.defer(g.task(), {.name = "stuck"});
    complete(holder);
  }
  ASSERT_TRUE(g.started.wait());
  {
    response_scope scope(rt);
    queued_request = scope.id();
    scope.defer([] {}, {.name = "queued-1"});
    scope.defer([] {});
    complete(scope);
  }
  const std::vector<std::string> expected{described(stuck_request, 0, "stuck"),
                                          described(queued_request, 0, "queued-1"),
                                          described(queued_request, 1, "")};
  EXPECT_EQ(expected[0], "\"stuck\" (request " + std::to_string(stuck_request) + ", task 0)");

  const auto from_runtime = rt.drain(clock_type::now() + short_wait);
  EXPECT_FALSE(from_runtime.complete);
  EXPECT_EQ(from_runtime.running, 1u);
  EXPECT_EQ(from_runtime.queued, 2u);
  EXPECT_EQ(from_runtime.unfinished, expected);

  const auto from_pool = rt.pool().drain(clock_type::now() + short_wait);
  EXPECT_FALSE(from_pool.complete);
  EXPECT_EQ(from_pool.running, 1u);
  EXPECT_EQ(from_pool.queued, 2u);
  EXPECT_EQ(from_pool.unfinished, expected);

  g.opened.set();
  const auto done = rt.drain_for(deadline);
  EXPECT_TRUE(done.complete);
  EXPECT_EQ(done.queued, 0u);
  EXPECT_EQ(done.running, 0u);
  EXPECT_TRUE(done.unfinished.empty());
  const auto pool_done = rt.pool().drain(clock_type::now() + deadline);
  EXPECT_TRUE(pool_done.complete);
  EXPECT_TRUE(pool_done.unfinished.empty());
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::ran), 3u);
  EXPECT_FALSE(g.timed_out.load());
}

TEST(ThreadPool, DrainOfAnIdlePoolIsCompleteAtOnce) {
  runtime rt({.threads = 2});
  const auto report = rt.drain(clock_type::now());
  EXPECT_TRUE(report.complete);
  EXPECT_EQ(report.queued, 0u);
  EXPECT_EQ(report.running, 0u);
  EXPECT_TRUE(rt.pool().drain(clock_type::now()).complete);
}

TEST(ThreadPool, ShutdownDropsQueuedWorkAndCountsEachAsDroppedAtShutdown) {
  gate g;
  event first_lost;
  lost_log lost;
  runtime rt({.threads = 1, .on_lost = lost.hook([&first_lost] { first_lost.set(); })});
  std::atomic<bool> release_timed_out{false};
  // Shutdown waits for the running gate; the gate opens once something was reported lost,
  // or after the deadline - so a failure cannot hang the test.
  background releaser([&] {
    if (!first_lost.wait()) release_timed_out = true;
    g.opened.set();
  });

  std::uint64_t stuck_request = 0;
  std::uint64_t queued_request = 0;
  {
    response_scope holder(rt);
    stuck_request = holder.id();
    holder.defer(g.task(), {.name = "stuck"});
    complete(holder);
  }
  ASSERT_TRUE(g.started.wait());
  std::atomic<int> ran{0};
  {
    response_scope scope(rt);
    queued_request = scope.id();
    for (const char* name : {"d0", "d1", "d2"}) scope.defer([&ran] { ++ran; }, {.name = name});
    complete(scope);
  }

  const auto report = rt.shutdown(clock_type::now() + short_wait);
  EXPECT_FALSE(release_timed_out.load()) << "nothing was reported lost";
  EXPECT_FALSE(report.complete);
  EXPECT_EQ(report.queued, 3u);
  EXPECT_EQ(report.running, 1u);
  EXPECT_THAT(report.unfinished,
              ElementsAre(described(stuck_request, 0, "stuck"), described(queued_request, 0, "d0"),
                          described(queued_request, 1, "d1"), described(queued_request, 2, "d2")));
  EXPECT_EQ(ran.load(), 0);
  EXPECT_THAT(lost.seen(),
              ElementsAre(lost_task{queued_request, 0, "d0", task_state::dropped_at_shutdown},
                          lost_task{queued_request, 1, "d1", task_state::dropped_at_shutdown},
                          lost_task{queued_request, 2, "d2", task_state::dropped_at_shutdown}));
  auto m = rt.metrics();
  EXPECT_EQ(m.count(crosstown::task_state::dropped_at_shutdown), 3u);
  EXPECT_EQ(m.count(crosstown::task_state::ran), 1u) << "the running gate finished";
  EXPECT_EQ(m.registered, m.terminal());
  EXPECT_FALSE(g.timed_out.load());

  // Idempotent: a second shutdown returns the same report.
  const auto again = rt.shutdown(clock_type::now());
  EXPECT_EQ(again.unfinished, report.unfinished);
  EXPECT_EQ(again.complete, report.complete);
}

TEST(ThreadPool, HandoffAfterShutdownIsDroppedAndCounted) {
  lost_log lost;
  runtime rt({.threads = 2, .on_lost = lost.hook()});
  const auto report = rt.shutdown(clock_type::now() + deadline);
  EXPECT_TRUE(report.complete);
  EXPECT_TRUE(report.unfinished.empty());
  std::atomic<int> ran{0};
  std::uint64_t request = 0;
  {
    response_scope scope(rt);
    request = scope.id();
    scope.defer([&ran] { ++ran; }, {.name = "late"});
    scope.defer([&ran] { ++ran; });
    complete(scope);
  }
  EXPECT_EQ(ran.load(), 0);
  const auto m = rt.metrics();
  EXPECT_EQ(m.count(crosstown::task_state::dropped_at_shutdown), 2u);
  EXPECT_EQ(m.registered, m.terminal());
  EXPECT_THAT(lost.seen(),
              ElementsAre(lost_task{request, 0, "late", task_state::dropped_at_shutdown},
                          lost_task{request, 1, "", task_state::dropped_at_shutdown}));
}

TEST(ThreadPool, ShutdownWithTimeToSpareRunsEverythingQueued) {
  runtime rt({.threads = 1});
  std::atomic<int> ran{0};
  {
    response_scope scope(rt);
    for (int i = 0; i < 50; ++i) scope.defer([&ran] { ++ran; });
    complete(scope);
  }
  const auto report = rt.shutdown(clock_type::now() + deadline);
  EXPECT_TRUE(report.complete);
  EXPECT_EQ(report.queued, 0u);
  EXPECT_EQ(ran.load(), 50);
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::dropped_at_shutdown), 0u);
}

TEST(ThreadPool, BlockedProducerIsReleasedByShutdownAndItsRestIsDropped) {
  event dropped;
  lost_log lost;
  runtime rt({.threads = 1, .on_lost = lost.hook([&dropped] { dropped.set(); })});
  thread_pool pool({.threads = 1, .capacity = 1, .overflow = overflow_policy::block});
  gate g;
  {
    response_scope holder(rt);
    holder.defer(g.task(), {.executor = pool});
    complete(holder);
  }
  ASSERT_TRUE(g.started.wait());
  std::atomic<int> ran{0};
  std::uint64_t request = 0;
  std::atomic<bool> request_known{false};
  background producer([&] {
    response_scope scope(rt);
    request = scope.id();
    request_known = true;
    scope.defer([&ran] { ++ran; }, {.executor = pool, .name = "waiting"});
    complete(scope);  // the pool is full: waits
  });
  EXPECT_FALSE(producer.wait_done(short_wait));
  background releaser([&] {
    // Opens the gate once the producer's job was dropped, so shutdown can join the worker.
    dropped.wait();
    g.opened.set();
  });
  const auto report = pool.shutdown(clock_type::now() + deadline);
  ASSERT_TRUE(producer.wait_done());
  ASSERT_TRUE(request_known.load());
  EXPECT_EQ(ran.load(), 0);
  EXPECT_THAT(lost.seen(),
              ElementsAre(lost_task{request, 0, "waiting", task_state::dropped_at_shutdown}));
  EXPECT_TRUE(report.complete) << "the gate finished before the deadline";
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::dropped_at_shutdown), 1u);
  EXPECT_FALSE(g.timed_out.load());
}

TEST(ThreadPool, DestructorRunsAllQueuedWork) {
  lost_log lost;
  runtime rt({.threads = 1, .on_lost = lost.hook()});
  auto pool = std::make_unique<thread_pool>(crosstown::thread_pool_options{.threads = 1});
  gate g;
  {
    response_scope holder(rt);
    holder.defer(g.task(), {.executor = *pool});
    complete(holder);
  }
  ASSERT_TRUE(g.started.wait());
  constexpr int tasks = 200;
  std::atomic<int> ran{0};
  {
    response_scope scope(rt);
    for (int i = 0; i < tasks; ++i) scope.defer([&ran] { ++ran; }, {.executor = *pool});
    complete(scope);
  }
  ASSERT_EQ(pool->queue_depth(), static_cast<std::size_t>(tasks));
  {
    event destroying;
    background destroyer([&] {
      destroying.set();
      pool.reset();  // the gate opens about now: the destructor finds the work still queued
    });
    ASSERT_TRUE(destroying.wait());
    g.opened.set();
    ASSERT_TRUE(destroyer.wait_done(2 * deadline));
  }
  EXPECT_EQ(ran.load(), tasks);
  EXPECT_TRUE(lost.seen().empty());
  const auto m = rt.metrics();
  EXPECT_EQ(m.count(crosstown::task_state::ran), static_cast<std::uint64_t>(tasks) + 1);
  EXPECT_EQ(m.count(crosstown::task_state::dropped_at_shutdown), 0u);
  EXPECT_EQ(m.registered, m.terminal());
}

}  // namespace
