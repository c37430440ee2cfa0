// Tests for the executors: crosstown/manual_executor.hpp, inline_executor.hpp, asio_executor.hpp
// and same_thread_executor (executor.hpp). Jobs are produced the way an application produces
// them: tasks deferred on a response_scope, released by the response's lifecycle.

#include <crosstown/manual_executor.hpp>

#include <crosstown/asio_executor.hpp>
#include <crosstown/executor.hpp>
#include <crosstown/inline_executor.hpp>
#include <crosstown/job.hpp>
#include <crosstown/metrics.hpp>
#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "test_support.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using crosstown::defer_options;
using crosstown::inline_executor;
using crosstown::manual_executor;
using crosstown::response_scope;
using crosstown::runtime;
using crosstown::same_thread_executor;
using crosstown::task_info;
using crosstown::task_state;
using testing::ElementsAre;
using namespace crosstown::test_support;

// A thread-safe log of labels, in the order they were appended.
class order_log {
 public:
  void add(int label) {
    std::lock_guard lock(mutex_);
    labels_.push_back(label);
  }
  std::vector<int> labels() const {
    std::lock_guard lock(mutex_);
    return labels_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<int> labels_;
};

// =============================================================================================
// manual_executor
// =============================================================================================

TEST(ManualExecutor, QueuesReleasedJobsWithoutRunningThem) {
  runtime rt({.threads = 1});
  manual_executor manual;
  order_log log;
  response_scope scope(rt);
  for (int i = 0; i < 3; ++i) scope.defer([&log, i] { log.add(i); }, {.executor = manual});
  EXPECT_EQ(manual.pending(), 0u) << "nothing is handed over before the response is sent";
  complete(scope);
  EXPECT_EQ(manual.pending(), 3u);
  EXPECT_TRUE(log.labels().empty());
  EXPECT_EQ(rt.metrics().queued, 3u);
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::ran), 0u);
  EXPECT_EQ(manual.run_all(), 3u);
  EXPECT_THAT(log.labels(), ElementsAre(0, 1, 2));
}

TEST(ManualExecutor, OneResponsesJobsArriveInOneHandoff) {
  runtime rt({.threads = 1});
  manual_executor manual;
  response_scope scope(rt);
  for (int i = 0; i < 5; ++i) scope.defer([] {}, {.executor = manual});
  complete(scope);
  EXPECT_EQ(manual.handoffs(), 1u);
  EXPECT_EQ(manual.pending(), 5u);

  response_scope second(rt);
  for (int i = 0; i < 4; ++i) second.defer([] {}, {.executor = manual});
  complete(second);
  EXPECT_EQ(manual.handoffs(), 2u) << "one hand-off per response, never one per task";
  EXPECT_EQ(manual.pending(), 9u);
  EXPECT_EQ(manual.run_all(), 9u);
}

TEST(ManualExecutor, RunOneRunsTheOldestJobOnTheCallingThread) {
  runtime rt({.threads = 1});
  manual_executor manual;
  order_log log;
  std::vector<std::thread::id> threads(3);
  response_scope first(rt);
  response_scope second(rt);
  first.defer(
      [&log, &threads] {
        log.add(0);
        threads[0] = std::this_thread::get_id();
      },
      {.executor = manual});
  first.defer(
      [&log, &threads] {
        log.add(1);
        threads[1] = std::this_thread::get_id();
      },
      {.executor = manual});
  second.defer(
      [&log, &threads] {
        log.add(2);
        threads[2] = std::this_thread::get_id();
      },
      {.executor = manual});
  complete(second);  // the second response completes first: its job is the oldest
  complete(first);

  ASSERT_TRUE(manual.run_one());
  EXPECT_THAT(log.labels(), ElementsAre(2));
  EXPECT_EQ(manual.pending(), 2u);
  ASSERT_TRUE(manual.run_one());
  ASSERT_TRUE(manual.run_one());
  EXPECT_THAT(log.labels(), ElementsAre(2, 0, 1));
  EXPECT_FALSE(manual.run_one()) << "the queue is empty";
  for (const auto& id : threads) EXPECT_EQ(id, std::this_thread::get_id());
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::ran), 3u);
}

TEST(ManualExecutor, RunAllRunsEverythingInOrderAndReturnsHowMany) {
  runtime rt({.threads = 1});
  manual_executor manual;
  order_log log;
  response_scope scope(rt);
  for (int i = 0; i < 10; ++i) scope.defer([&log, i] { log.add(i); }, {.executor = manual});
  complete(scope);
  EXPECT_EQ(manual.run_all(), 10u);
  EXPECT_THAT(log.labels(), ElementsAre(0, 1, 2, 3, 4, 5, 6, 7, 8, 9));
  EXPECT_EQ(manual.pending(), 0u);
  EXPECT_EQ(manual.run_all(), 0u);
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::ran), 10u);
  EXPECT_EQ(rt.metrics().queued, 0u);
}

TEST(ManualExecutor, RunAllIncludesJobsQueuedWhileRunning) {
  runtime rt({.threads = 1});
  manual_executor manual;
  order_log log;
  response_scope scope(rt);
  scope.defer(
      [&] {
        log.add(1);
        // The response was sent already: a late registration is handed over at once.
        scope.defer(
            [&] {
              log.add(2);
              scope.defer([&] { log.add(3); }, {.executor = manual});
            },
            {.executor = manual});
      },
      {.executor = manual});
  complete(scope);
  ASSERT_EQ(manual.pending(), 1u);
  EXPECT_EQ(manual.run_all(), 3u);
  EXPECT_THAT(log.labels(), ElementsAre(1, 2, 3));
  EXPECT_EQ(manual.pending(), 0u);
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::ran), 3u);
}

TEST(ManualExecutor, PendingTasksDescribesQueuedJobsOldestFirst) {
  runtime rt({.threads = 1});
  manual_executor manual;
  response_scope scope(rt);
  scope.defer([] {}, {.executor = manual, .name = "send-mail"});
  scope.defer([] {}, {.executor = manual});
  scope.defer([] {}, {.executor = manual, .name = "audit"});
  complete(scope);
  const std::string id = std::to_string(scope.id());
  EXPECT_THAT(manual.pending_tasks(),
              ElementsAre("\"send-mail\" (request " + id + ", task 0)", "task 1 of request " + id,
                          "\"audit\" (request " + id + ", task 2)"));
  manual.run_one();
  EXPECT_THAT(manual.pending_tasks(),
              ElementsAre("task 1 of request " + id, "\"audit\" (request " + id + ", task 2)"));
  manual.run_all();
  EXPECT_THAT(manual.pending_tasks(), testing::IsEmpty());
}

TEST(ManualExecutor, ThrowingJobCountsAsFailedAndRunAllCarriesOn) {
  std::vector<std::string> failures;
  std::mutex failures_mutex;
  runtime rt({.threads = 1, .on_error = [&](const crosstown::task_failure& f) {
                std::lock_guard lock(failures_mutex);
                failures.push_back(std::string(f.task.name) + ": " + f.message);
              }});
  manual_executor manual;
  order_log log;
  response_scope scope(rt);
  scope.defer([&] { log.add(0); }, {.executor = manual});
  scope.defer([] { throw std::runtime_error("no line"); }, {.executor = manual, .name = "call"});
  scope.defer([&] { log.add(2); }, {.executor = manual});
  complete(scope);
  EXPECT_EQ(manual.run_all(), 3u);
  EXPECT_THAT(log.labels(), ElementsAre(0, 2));
  EXPECT_THAT(failures, ElementsAre("call: no line"));
  const auto m = rt.metrics();
  EXPECT_EQ(m.count(crosstown::task_state::ran), 2u);
  EXPECT_EQ(m.count(crosstown::task_state::failed), 1u);
}

TEST(ManualExecutor, DropAllCountsEachQueuedJobAsDroppedAtShutdown) {
  lost_log lost;
  runtime rt({.threads = 1, .on_lost = lost.hook()});
  manual_executor manual;
  bool ran = false;
  response_scope scope(rt);
  scope.defer([&ran] { ran = true; }, {.executor = manual, .name = "a"});
  scope.defer([&ran] { ran = true; }, {.executor = manual});
  complete(scope);
  EXPECT_EQ(manual.drop_all(), 2u);
  EXPECT_EQ(manual.pending(), 0u);
  EXPECT_FALSE(manual.run_one());
  EXPECT_FALSE(ran);
  const auto m = rt.metrics();
  EXPECT_EQ(m.count(crosstown::task_state::dropped_at_shutdown), 2u);
  EXPECT_EQ(m.queued, 0u);
  EXPECT_EQ(m.registered, m.terminal());
  EXPECT_THAT(lost.seen(),
              ElementsAre(lost_task{scope.id(), 0, "a", task_state::dropped_at_shutdown},
                          lost_task{scope.id(), 1, "", task_state::dropped_at_shutdown}));
  EXPECT_EQ(manual.drop_all(), 0u);
}

TEST(ManualExecutor, DestructorDropsQueuedJobsAndCountsThem) {
  lost_log lost;
  runtime rt({.threads = 1, .on_lost = lost.hook()});
  bool ran = false;
  std::uint64_t request = 0;
  {
    manual_executor manual;
    response_scope scope(rt);
    request = scope.id();
    for (int i = 0; i < 3; ++i) scope.defer([&ran] { ran = true; }, {.executor = manual});
    complete(scope);
    ASSERT_EQ(manual.pending(), 3u);
  }
  EXPECT_FALSE(ran);
  const auto m = rt.metrics();
  EXPECT_EQ(m.count(crosstown::task_state::dropped_at_shutdown), 3u);
  EXPECT_EQ(m.registered, 3u);
  EXPECT_EQ(m.registered, m.terminal());
  EXPECT_EQ(lost.seen().size(), 3u);
  for (const lost_task& t : lost.seen()) {
    EXPECT_EQ(t.request_id, request);
    EXPECT_EQ(t.state, task_state::dropped_at_shutdown);
  }
}

TEST(ManualExecutor, JobsQueuedFromSeveralThreadsAllRun) {
  runtime rt({.threads = 1});
  manual_executor manual;
  std::atomic<int> ran{0};
  std::vector<std::thread> producers;
  for (int t = 0; t < 4; ++t) {
    producers.emplace_back([&] {
      for (int r = 0; r < 25; ++r) {
        response_scope scope(rt);
        scope.defer([&ran] { ran.fetch_add(1); }, {.executor = manual});
        scope.defer([&ran] { ran.fetch_add(1); }, {.executor = manual});
        complete(scope);
      }
    });
  }
  std::size_t ran_here = 0;
  // Run concurrently with the producers, then whatever is left.
  for (int i = 0; i < 50; ++i) ran_here += manual.run_all();
  for (std::thread& p : producers) p.join();
  ran_here += manual.run_all();
  EXPECT_EQ(ran_here, 200u);
  EXPECT_EQ(ran.load(), 200);
  EXPECT_EQ(manual.handoffs(), 100u);
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::ran), 200u);
}

TEST(ManualExecutor, DrainOfTheRuntimeWaitsForJobsHeldByAManualExecutor) {
  runtime rt({.threads = 1});
  manual_executor manual;
  response_scope scope(rt);
  scope.defer([] {}, {.executor = manual});
  complete(scope);
  const auto stuck = rt.drain_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(stuck.complete);
  EXPECT_EQ(stuck.queued, 1u);
  manual.run_all();
  const auto done = rt.drain_for(deadline);
  EXPECT_TRUE(done.complete);
  EXPECT_EQ(done.queued, 0u);
}

// =============================================================================================
// inline_executor
// =============================================================================================

TEST(InlineExecutor, RunsTheBatchInOrderDuringTheHandoffAndLogsIt) {
  runtime rt({.threads = 1});
  inline_executor inl;
  order_log log;
  response_scope scope(rt);
  scope.defer([&log] { log.add(0); }, {.executor = inl, .name = "first"});
  scope.defer([&log] { log.add(1); }, {.executor = inl});
  scope.defer([&log] { log.add(2); }, {.executor = inl, .name = "third"});
  scope.status_known(200);
  EXPECT_TRUE(log.labels().empty());
  EXPECT_TRUE(inl.executed().empty());
  scope.response_sent();
  EXPECT_THAT(log.labels(), ElementsAre(0, 1, 2)) << "ran before response_sent returned";
  const auto records = inl.executed();
  ASSERT_EQ(records.size(), 3u);
  for (std::uint32_t i = 0; i < 3; ++i) {
    EXPECT_EQ(records[i].request_id, scope.id());
    EXPECT_EQ(records[i].index, i);
  }
  EXPECT_EQ(records[0].name, "first");
  EXPECT_EQ(records[1].name, "");
  EXPECT_EQ(records[2].name, "third");
  EXPECT_EQ(inl.handoffs(), 1u);
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::ran), 3u);
}

TEST(InlineExecutor, RunsOnTheThreadThatReportsTheEvent) {
  runtime rt({.threads = 1});
  inline_executor inl;
  std::thread::id ran_on;
  std::thread::id reporter;
  response_scope scope(rt);
  scope.defer([&ran_on] { ran_on = std::this_thread::get_id(); }, {.executor = inl});
  std::thread t([&] {
    reporter = std::this_thread::get_id();
    complete(scope);
  });
  t.join();
  EXPECT_EQ(ran_on, reporter);
  EXPECT_NE(ran_on, std::this_thread::get_id());
}

TEST(InlineExecutor, LogsOnlyTasksThatWereAllowedToRun) {
  runtime rt({.threads = 1});
  inline_executor inl;
  response_scope scope(rt);
  scope.defer([] {}, {.executor = inl, .name = "skipped"});
  scope.defer([] {}, {.executor = inl, .always = true, .name = "always"});
  complete(scope, 503);
  const auto records = inl.executed();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].name, "always");
  EXPECT_EQ(records[0].index, 1u);
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::skipped_by_status), 1u);
}

TEST(InlineExecutor, ThrowingTaskIsLoggedCountedAndDoesNotStopTheBatch) {
  std::atomic<int> errors{0};
  runtime rt({.threads = 1, .on_error = [&](const crosstown::task_failure&) { ++errors; }});
  inline_executor inl;
  order_log log;
  response_scope scope(rt);
  scope.defer([] { throw std::runtime_error("x"); }, {.executor = inl});
  scope.defer([&log] { log.add(1); }, {.executor = inl});
  EXPECT_NO_THROW(complete(scope));
  EXPECT_THAT(log.labels(), ElementsAre(1));
  EXPECT_EQ(inl.executed().size(), 2u);
  EXPECT_EQ(errors.load(), 1);
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::failed), 1u);
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::ran), 1u);
}

TEST(InlineExecutor, CountsOneHandoffPerResponse) {
  runtime rt({.threads = 1});
  inline_executor inl;
  for (int r = 0; r < 3; ++r) {
    response_scope scope(rt);
    for (int i = 0; i < 4; ++i) scope.defer([] {}, {.executor = inl});
    complete(scope);
  }
  EXPECT_EQ(inl.handoffs(), 3u);
  EXPECT_EQ(inl.executed().size(), 12u);
}

// =============================================================================================
// same_thread_executor
// =============================================================================================

TEST(SameThreadExecutor, InstanceIsOneSharedObject) {
  EXPECT_EQ(&same_thread_executor::instance(), &same_thread_executor::instance());
}

TEST(SameThreadExecutor, SameThreadOptionRunsOnTheThreadCompletingTheResponse) {
  runtime rt({.threads = 2});
  std::thread::id ran_on;
  std::thread::id reporter;
  bool ran_before_return = false;
  response_scope scope(rt);
  scope.defer([&ran_on] { ran_on = std::this_thread::get_id(); }, {.same_thread = true});
  std::thread t([&] {
    reporter = std::this_thread::get_id();
    complete(scope);
    ran_before_return = ran_on == reporter;
  });
  t.join();
  EXPECT_EQ(ran_on, reporter);
  EXPECT_TRUE(ran_before_return);
}

TEST(SameThreadExecutor, NamedAsTheExecutorItAlsoRunsOnTheReportingThread) {
  runtime rt({.threads = 2});
  std::vector<std::thread::id> ran_on;
  std::thread::id reporter;
  response_scope scope(rt);
  for (int i = 0; i < 3; ++i) {
    scope.defer([&ran_on] { ran_on.push_back(std::this_thread::get_id()); },
                {.executor = same_thread_executor::instance()});
  }
  std::thread t([&] {
    reporter = std::this_thread::get_id();
    complete(scope);
  });
  t.join();
  ASSERT_EQ(ran_on.size(), 3u);
  for (const auto& id : ran_on) EXPECT_EQ(id, reporter);
}

TEST(SameThreadExecutor, RunsJobsInRegistrationOrder) {
  runtime rt({.threads = 1});
  order_log log;
  response_scope scope(rt);
  for (int i = 0; i < 6; ++i) scope.defer([&log, i] { log.add(i); }, {.same_thread = true});
  complete(scope);
  EXPECT_THAT(log.labels(), ElementsAre(0, 1, 2, 3, 4, 5));
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::ran), 6u);
}

TEST(SameThreadExecutor, OtherExecutorsReceiveTheirBatchesBeforeSameThreadTasksRun) {
  runtime rt({.threads = 1});
  manual_executor manual;
  std::optional<std::size_t> manual_pending_seen;
  response_scope scope(rt);
  scope.defer([&] { manual_pending_seen = manual.pending(); }, {.same_thread = true});
  scope.defer([] {}, {.executor = manual});
  complete(scope);
  ASSERT_TRUE(manual_pending_seen.has_value());
  EXPECT_EQ(*manual_pending_seen, 1u);
  manual.run_all();
}

TEST(SameThreadExecutor, ExecuteRunsAHandedOverBatchDirectly) {
  // Hand the executor a batch through a forwarding executor, as the pool would receive one.
  class forward final : public crosstown::executor {
   public:
    void execute(crosstown::job_batch batch) override {
      sizes.push_back(batch.size());
      same_thread_executor::instance().execute(std::move(batch));
    }
    std::vector<std::size_t> sizes;
  };
  runtime rt({.threads = 1});
  forward fwd;
  order_log log;
  response_scope scope(rt);
  for (int i = 0; i < 4; ++i) scope.defer([&log, i] { log.add(i); }, {.executor = fwd});
  complete(scope);
  EXPECT_THAT(fwd.sizes, ElementsAre(4u));
  EXPECT_THAT(log.labels(), ElementsAre(0, 1, 2, 3));
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::ran), 4u);
}

// =============================================================================================
// asio_executor
// =============================================================================================

TEST(AsioExecutor, IoContextRunsTheTasksWhenRunIsCalledInOrder) {
  runtime rt({.threads = 1});
  boost::asio::io_context io;
  crosstown::asio_executor ex(io.get_executor());
  order_log log;
  std::vector<std::thread::id> threads;
  response_scope scope(rt);
  for (int i = 0; i < 5; ++i) {
    scope.defer(
        [&log, &threads, i] {
          log.add(i);
          threads.push_back(std::this_thread::get_id());
        },
        {.executor = ex});
  }
  complete(scope);
  EXPECT_TRUE(log.labels().empty()) << "nothing runs before io_context::run";
  EXPECT_EQ(rt.metrics().queued, 5u);
  EXPECT_EQ(io.run(), 5u);
  EXPECT_THAT(log.labels(), ElementsAre(0, 1, 2, 3, 4));
  for (const auto& id : threads) EXPECT_EQ(id, std::this_thread::get_id());
  const auto m = rt.metrics();
  EXPECT_EQ(m.count(crosstown::task_state::ran), 5u);
  EXPECT_EQ(m.queued, 0u);
}

TEST(AsioExecutor, KeepsTheWrappedExecutor) {
  boost::asio::io_context io;
  crosstown::asio_executor ex(io.get_executor());
  EXPECT_TRUE(ex.get_inner_executor() == io.get_executor());
}

TEST(AsioExecutor, StrandOverAThreadPoolPreservesRegistrationOrder) {
  runtime rt({.threads = 1});
  boost::asio::thread_pool asio_pool(4);
  auto strand = boost::asio::make_strand(asio_pool.get_executor());
  crosstown::asio_executor ex(strand);
  std::vector<int> order;  // written only on the strand
  std::atomic<int> inside{0};
  std::atomic<int> overlaps{0};
  constexpr int per_response = 50;
  {
    response_scope first(rt);
    response_scope second(rt);
    for (int i = 0; i < per_response; ++i) {
      auto record = [&, i](int label) {
        return [&, label] {
          if (inside.fetch_add(1) != 0) overlaps.fetch_add(1);
          order.push_back(label);
          inside.fetch_sub(1);
        };
      };
      first.defer(record(i), {.executor = ex});
      second.defer(record(per_response + i), {.executor = ex});
    }
    complete(first);
    complete(second);
  }
  asio_pool.join();  // returns once the pool has no outstanding work
  std::vector<int> expected;
  for (int i = 0; i < 2 * per_response; ++i) expected.push_back(i);
  EXPECT_EQ(order, expected);
  EXPECT_EQ(overlaps.load(), 0) << "a strand runs one task at a time";
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::ran), 2u * per_response);
}

TEST(AsioExecutor, ThreadPoolRunsEveryTask) {
  runtime rt({.threads = 1});
  boost::asio::thread_pool asio_pool(3);
  crosstown::asio_executor ex(asio_pool.get_executor());
  constexpr int tasks = 200;
  std::vector<std::atomic<int>> runs(tasks);
  {
    response_scope scope(rt);
    for (int i = 0; i < tasks; ++i)
      scope.defer([&runs, i] { runs[i].fetch_add(1); }, {.executor = ex});
    complete(scope);
  }
  asio_pool.join();
  for (int i = 0; i < tasks; ++i) EXPECT_EQ(runs[i].load(), 1) << "task " << i;
  const auto drained = rt.drain_for(deadline);
  EXPECT_TRUE(drained.complete);
  const auto m = rt.metrics();
  EXPECT_EQ(m.count(crosstown::task_state::ran), static_cast<std::uint64_t>(tasks));
  EXPECT_EQ(m.registered, m.terminal());
}

TEST(AsioExecutor, ThrowingTaskOnAnAsioPoolIsReportedAndTheOthersRun) {
  std::atomic<int> errors{0};
  runtime rt({.threads = 1, .on_error = [&](const crosstown::task_failure& f) {
                if (f.task.name == "boom" && f.message == "bad") ++errors;
              }});
  boost::asio::thread_pool asio_pool(2);
  crosstown::asio_executor ex(asio_pool.get_executor());
  std::atomic<int> ran{0};
  {
    response_scope scope(rt);
    scope.defer([] { throw std::runtime_error("bad"); }, {.executor = ex, .name = "boom"});
    for (int i = 0; i < 10; ++i) scope.defer([&ran] { ++ran; }, {.executor = ex});
    complete(scope);
  }
  asio_pool.join();
  EXPECT_EQ(ran.load(), 10);
  EXPECT_EQ(errors.load(), 1);
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::failed), 1u);
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::ran), 10u);
}

TEST(AsioExecutor, JobsDestroyedWithAnUnrunIoContextCountAsDropped) {
  lost_log lost;
  runtime rt({.threads = 1, .on_lost = lost.hook()});
  bool ran = false;
  std::uint64_t request = 0;
  {
    boost::asio::io_context io;
    crosstown::asio_executor ex(io.get_executor());
    response_scope scope(rt);
    request = scope.id();
    scope.defer([&ran] { ran = true; }, {.executor = ex, .name = "never"});
    scope.defer([&ran] { ran = true; }, {.executor = ex});
    complete(scope);
  }  // the io_context is destroyed without having run: its handlers are destroyed
  EXPECT_FALSE(ran);
  const auto m = rt.metrics();
  EXPECT_EQ(m.count(crosstown::task_state::dropped_at_shutdown), 2u);
  EXPECT_EQ(m.queued, 0u);
  EXPECT_EQ(m.registered, m.terminal());
  EXPECT_THAT(lost.seen(), testing::UnorderedElementsAre(
                               lost_task{request, 0, "never", task_state::dropped_at_shutdown},
                               lost_task{request, 1, "", task_state::dropped_at_shutdown}));
}

TEST(AsioExecutor, StrandOverAnIoContextRunsInOrderOnTheRunningThread) {
  runtime rt({.threads = 1});
  boost::asio::io_context io;
  crosstown::asio_executor ex(boost::asio::make_strand(io));
  order_log log;
  response_scope scope(rt);
  for (int i = 0; i < 8; ++i) scope.defer([&log, i] { log.add(i); }, {.executor = ex});
  complete(scope);
  std::thread runner([&io] { io.run(); });
  runner.join();
  EXPECT_THAT(log.labels(), ElementsAre(0, 1, 2, 3, 4, 5, 6, 7));
}

// =============================================================================================
// an executor whose execute throws (issue 10, item 15)
// =============================================================================================

// Queues the first `accept` jobs of a batch, then throws, as an executor whose own queue
// cannot grow might.
class refusing_executor final : public crosstown::executor {
 public:
  explicit refusing_executor(std::size_t accept) : accept_(accept) {}
  void execute(crosstown::job_batch batch) override {
    std::size_t taken = 0;
    for (crosstown::job& j : batch) {
      if (taken == accept_) break;
      kept_.push_back(std::move(j));
      ++taken;
    }
    throw std::runtime_error("executor refused the batch");
  }
  std::size_t run_kept() {
    std::size_t n = 0;
    for (crosstown::job& j : kept_) {
      j.run();
      ++n;
    }
    kept_.clear();
    return n;
  }

 private:
  std::size_t accept_;
  std::vector<crosstown::job> kept_;
};

TEST(ThrowingExecutor, ItsTasksAreCountedAndReportedAsRejectedByTheExecutor) {
  std::vector<lost_task> lost;
  std::mutex lost_mutex;
  runtime rt({.threads = 1, .on_lost = [&](const task_info& t, task_state s) {
                std::lock_guard lock(lost_mutex);
                lost.push_back({t.request_id, t.index, std::string(t.name), s});
              }});
  refusing_executor refusing(0);
  manual_executor manual;
  std::uint64_t request = 0;
  {
    response_scope scope(rt);
    request = scope.id();
    scope.defer([] {}, {.executor = refusing, .name = "a"});
    scope.defer([] {}, {.executor = manual, .name = "other"});
    scope.defer([] {}, {.executor = refusing});
    scope.status_known(200);
    EXPECT_NO_THROW(scope.response_sent()) << "an executor's exception never escapes an event";
  }
  EXPECT_EQ(manual.run_all(), 1u) << "the other executor's batch still went";
  const auto m = rt.metrics();
  EXPECT_EQ(m.count(task_state::rejected_by_executor), 2u) << m;
  EXPECT_EQ(m.count(task_state::dropped_at_shutdown), 0u) << "nothing was shut down: " << m;
  EXPECT_EQ(m.registered, m.terminal());
  EXPECT_THAT(lost, ElementsAre(lost_task{request, 0, "a", task_state::rejected_by_executor},
                                lost_task{request, 2, "", task_state::rejected_by_executor}));
}

TEST(ThrowingExecutor, JobsItTookBeforeThrowingStillRunTheRestAreRejected) {
  runtime rt({.threads = 1, .on_lost = [](const task_info&, task_state) {}});
  refusing_executor refusing(2);
  {
    response_scope scope(rt);
    for (int i = 0; i < 5; ++i) scope.defer([] {}, {.executor = refusing});
    scope.status_known(200);
    scope.response_sent();
  }
  EXPECT_EQ(refusing.run_kept(), 2u);
  const auto m = rt.metrics();
  EXPECT_EQ(m.count(task_state::ran), 2u) << m;
  EXPECT_EQ(m.count(task_state::rejected_by_executor), 3u) << m;
  EXPECT_EQ(m.registered, m.terminal());
}

TEST(ThrowingExecutor, AnExecutorDroppingJobsWithoutThrowingStillCountsThemDropped) {
  // The control: destroying jobs deliberately (a shut-down executor) is not a refusal.
  class dropping_executor final : public crosstown::executor {
   public:
    void execute(crosstown::job_batch batch) override { batch.clear(); }
  } dropping;
  runtime rt({.threads = 1, .on_lost = [](const task_info&, task_state) {}});
  {
    response_scope scope(rt);
    scope.defer([] {}, {.executor = dropping});
    scope.status_known(200);
    scope.response_sent();
  }
  EXPECT_EQ(rt.metrics().count(task_state::dropped_at_shutdown), 1u);
  EXPECT_EQ(rt.metrics().count(task_state::rejected_by_executor), 0u);
}

}  // namespace
