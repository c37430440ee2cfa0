// Tests for crosstown/runtime.hpp: the error and loss hooks, the I6 accounting of a mixed
// multi-threaded workload (meaningful under ThreadSanitizer), and destruction with queued work,
// with and without a shutdown timeout. No sleeps: every wait has a deadline that is asserted.

#include <crosstown/runtime.hpp>

#include <crosstown/executor.hpp>
#include <crosstown/inline_executor.hpp>
#include <crosstown/job.hpp>
#include <crosstown/manual_executor.hpp>
#include <crosstown/metrics.hpp>
#include <crosstown/response_scope.hpp>
#include <crosstown/status_set.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "test_support.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using crosstown::overflow_policy;
using crosstown::response_scope;
using crosstown::runtime;
using crosstown::status_set;
using crosstown::task_failure;
using crosstown::task_info;
using crosstown::task_phase;
using crosstown::task_state;
using testing::ElementsAre;
using namespace crosstown::test_support;

// =============================================================================================
// hooks
// =============================================================================================

TEST(Runtime, ErrorHookReceivesTheTaskNameAndMessage) {
  struct seen {
    std::uint64_t request;
    std::uint32_t index;
    std::string name;
    std::string message;
    bool rethrows_original = false;
  };
  std::mutex mutex;
  std::vector<seen> failures;
  runtime rt({.threads = 2, .on_error = [&](const task_failure& f) {
                seen s{f.task.request_id, f.task.index, std::string(f.task.name), f.message};
                try {
                  std::rethrow_exception(f.error);
                } catch (const std::out_of_range& e) {
                  s.rethrows_original = std::string(e.what()) == "no such customer";
                } catch (...) {
                }
                std::lock_guard lock(mutex);
                failures.push_back(std::move(s));
              }});
  std::uint64_t request = 0;
  {
    response_scope scope(rt);
    request = scope.id();
    scope.defer([] {});
    scope.defer([] { throw std::out_of_range("no such customer"); }, {.name = "send-invoice"});
    complete(scope);
  }
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  std::lock_guard lock(mutex);
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0].request, request);
  EXPECT_EQ(failures[0].index, 1u);
  EXPECT_EQ(failures[0].name, "send-invoice");
  EXPECT_EQ(failures[0].message, "no such customer");
  EXPECT_TRUE(failures[0].rethrows_original);
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::failed), 1u);
  EXPECT_EQ(rt.metrics().count(crosstown::task_state::ran), 1u);
}

TEST(Runtime, ErrorHookSaysUnknownExceptionForANonStandardThrow) {
  std::mutex mutex;
  std::vector<std::string> messages;
  runtime rt({.threads = 1, .on_error = [&](const task_failure& f) {
                std::lock_guard lock(mutex);
                messages.push_back(f.message);
              }});
  {
    response_scope scope(rt);
    scope.defer([] { throw 7; });
    complete(scope);
  }
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  std::lock_guard lock(mutex);
  EXPECT_THAT(messages, ElementsAre("unknown exception"));
}

TEST(Runtime, ErrorHookThatThrowsIsIgnored) {
  std::atomic<int> hook_calls{0};
  runtime rt({.threads = 1, .on_error = [&](const task_failure&) {
                ++hook_calls;
                throw std::runtime_error("the hook itself fails");
              }});
  std::atomic<int> ran{0};
  {
    response_scope scope(rt);
    scope.defer([] { throw std::runtime_error("first"); });
    scope.defer([&ran] { ++ran; });
    scope.defer([] { throw std::runtime_error("second"); });
    scope.defer([&ran] { ++ran; });
    complete(scope);
  }
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  EXPECT_EQ(hook_calls.load(), 2) << "the worker survived the first throwing hook";
  EXPECT_EQ(ran.load(), 2);
  const auto m = rt.metrics();
  EXPECT_EQ(m.count(crosstown::task_state::failed), 2u);
  EXPECT_EQ(m.count(crosstown::task_state::ran), 2u);
  EXPECT_EQ(m.registered, m.terminal());
}

TEST(Runtime, LostHookThatThrowsIsIgnored) {
  std::atomic<int> hook_calls{0};
  runtime rt({.threads = 1, .on_lost = [&](const task_info&, task_state) {
                ++hook_calls;
                throw std::runtime_error("the hook itself fails");
              }});
  crosstown::manual_executor manual;
  {
    response_scope scope(rt);
    for (int i = 0; i < 3; ++i) scope.defer([] {}, {.executor = manual});
    complete(scope);
  }
  EXPECT_EQ(manual.drop_all(), 3u);
  EXPECT_EQ(hook_calls.load(), 3);
  const auto m = rt.metrics();
  EXPECT_EQ(m.count(crosstown::task_state::dropped_at_shutdown), 3u);
  EXPECT_EQ(m.registered, m.terminal());
}

TEST(Runtime, HooksAreCalledOnTheThreadWhereTheEventHappens) {
  std::mutex mutex;
  std::thread::id error_thread;
  runtime rt({.threads = 1, .on_error = [&](const task_failure&) {
                std::lock_guard lock(mutex);
                error_thread = std::this_thread::get_id();
              }});
  std::thread::id task_thread;
  {
    response_scope scope(rt);
    scope.defer([&] {
      {
        std::lock_guard lock(mutex);
        task_thread = std::this_thread::get_id();
      }
      throw std::runtime_error("x");
    });
    complete(scope);
  }
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  std::lock_guard lock(mutex);
  EXPECT_EQ(error_thread, task_thread);
  EXPECT_NE(error_thread, std::this_thread::get_id());
}

// =============================================================================================
// identity, default executor, drain
// =============================================================================================

TEST(Runtime, RequestIdsAreUniqueFromOneInCreationOrder) {
  runtime rt({.threads = 1});
  response_scope first(rt);
  response_scope second(rt);
  response_scope third(rt);
  EXPECT_EQ(first.id(), 1u);
  EXPECT_EQ(second.id(), 2u);
  EXPECT_EQ(third.id(), 3u);
  runtime other({.threads = 1});
  response_scope elsewhere(other);
  EXPECT_EQ(elsewhere.id(), 1u) << "ids are per runtime";
}

TEST(Runtime, TasksThatNameNoExecutorRunOnTheRuntimesPool) {
  runtime rt({.threads = 2});
  std::atomic<bool> on_pool{false};
  {
    response_scope scope(rt);
    scope.defer([&] { on_pool = rt.pool().on_worker_thread(); });
    complete(scope);
  }
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  EXPECT_TRUE(on_pool.load());
  EXPECT_EQ(rt.pool().thread_count(), 2u);
}

TEST(Runtime, DrainCountsTasksOfOtherExecutorsButNamesOnlyThePools) {
  runtime rt({.threads = 1});
  crosstown::manual_executor manual;
  gate g;
  std::uint64_t request = 0;
  {
    response_scope scope(rt);
    request = scope.id();
    scope.defer(g.task(), {.name = "on-pool"});
    scope.defer([] {}, {.executor = manual, .name = "on-manual"});
    complete(scope);
  }
  ASSERT_TRUE(g.started.wait());
  const auto report = rt.drain(clock_type::now() + std::chrono::milliseconds(50));
  EXPECT_FALSE(report.complete);
  EXPECT_EQ(report.running, 1u);
  EXPECT_EQ(report.queued, 1u);
  EXPECT_THAT(report.unfinished, ElementsAre(task_info{request, 0, "on-pool"}.describe()));
  g.opened.set();
  manual.run_all();
  const auto done = rt.drain_for(deadline);
  EXPECT_TRUE(done.complete);
  EXPECT_TRUE(done.unfinished.empty());
}

TEST(Runtime, DrainDoesNotWaitForTasksStillWaitingForTheirPhase) {
  runtime rt({.threads = 1});
  response_scope scope(rt);
  scope.defer([] {});
  const auto report = rt.drain_for(deadline);
  EXPECT_TRUE(report.complete);
  const auto m = rt.metrics();
  EXPECT_EQ(m.registered, 1u);
  EXPECT_EQ(m.unfinished(), 1u) << "still pending in its scope";
  complete(scope);
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  EXPECT_EQ(rt.metrics().unfinished(), 0u);
}

TEST(Runtime, MetricsAndReportsPrintEveryFigure) {
  crosstown::metrics_snapshot m;
  m.registered = 9;
  m.terminal_count(crosstown::task_state::ran) = 1;
  m.terminal_count(crosstown::task_state::failed) = 2;
  m.terminal_count(crosstown::task_state::skipped_by_status) = 1;
  m.terminal_count(crosstown::task_state::skipped_by_delivery) = 1;
  m.terminal_count(crosstown::task_state::cancelled) = 1;
  m.terminal_count(crosstown::task_state::rejected_by_overflow) = 1;
  m.terminal_count(crosstown::task_state::dropped_at_shutdown) = 1;
  EXPECT_EQ(m.terminal(), 8u);
  EXPECT_EQ(m.unfinished(), 1u);
  std::ostringstream text;
  text << m;
  for (const char* field :
       {"registered=9", "ran=1", "failed=2", "skipped_by_status=1", "skipped_by_delivery=1",
        "cancelled=1", "rejected_by_overflow=1", "dropped_at_shutdown=1"}) {
    EXPECT_NE(text.str().find(field), std::string::npos) << field << " in " << text.str();
  }
  crosstown::drain_report r{false, 2, 1, {"task 0 of request 1"}};
  std::ostringstream report;
  report << r;
  EXPECT_EQ(report.str(), "incomplete queued=2 running=1 unfinished=[task 0 of request 1]");
}

// =============================================================================================
// I6 accounting under a mixed multi-threaded workload
// =============================================================================================

enum class outcome : std::uint8_t {
  ran,
  failed,
  skipped_by_status,
  skipped_by_delivery,
  cancelled
};
enum class target : std::uint8_t { pool, same_thread, manual, inline_exec };

// One deferred task as the test's model sees it.
struct model_task {
  std::uint64_t request_id = 0;
  std::uint32_t index = 0;
  std::string name;
  task_phase phase = task_phase::response_sent;
  status_set no_go = status_set::default_no_go();
  bool always = false;
  bool require_delivery = false;
  bool throws = false;
  target where = target::pool;
  bool pending = true;  // registered and its phase not yet reached
  bool cancelled = false;
  outcome expected = outcome::ran;  // filled in when the scope is done
};

struct workload_options {
  std::size_t pool_threads = 3;
  std::size_t queue_capacity = 0;
  overflow_policy overflow = overflow_policy::block;
  int producers = 8;
  int tasks_per_producer = 1250;
  std::uint32_t seed = 20240611;
};

struct workload_result {
  std::vector<model_task> tasks;        // every task, in no particular order
  std::vector<std::atomic<int>>* runs;  // per task id: times its body started
  crosstown::metrics_snapshot metrics;
  crosstown::drain_report drained;
  std::vector<lost_task> lost;
  int error_hook_calls = 0;
  int wrong_thread = 0;
};

// The counters each task body touches; one per task, at a fixed address.
struct task_probe {
  std::atomic<int>* runs;
  std::atomic<int>* wrong_thread;
  std::thread::id required_thread;  // default id: any thread
  bool throws;
  void operator()() const {
    runs->fetch_add(1, std::memory_order_relaxed);
    if (required_thread != std::thread::id() && std::this_thread::get_id() != required_thread) {
      wrong_thread->fetch_add(1, std::memory_order_relaxed);
    }
    if (throws) throw std::runtime_error("planned failure");
  }
};
static_assert(crosstown::task::stored_inline<task_probe>);

// Drives one producer's share: scopes with random options, events and cancellations, keeping
// the model in step with the rules of response_scope.hpp and defer_options.hpp.
void produce(runtime& rt, crosstown::manual_executor& manual, crosstown::inline_executor& inl,
             bool drains_manual, std::uint32_t seed, int quota, std::size_t first_id,
             std::vector<std::atomic<int>>& runs, std::atomic<int>& wrong_thread,
             std::vector<model_task>& out) {
  std::mt19937 rng(seed);
  auto chance = [&rng](double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; };
  auto pick = [&rng](int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng); };
  static constexpr std::array<int, 10> statuses{200, 201, 204, 302, 304, 400, 404, 409, 500, 503};
  static constexpr std::array<const char*, 3> names{"a", "b", "c"};
  const std::thread::id self = std::this_thread::get_id();
  int made = 0;

  while (made < quota) {
    response_scope scope(rt);
    std::vector<model_task> tasks;
    std::uint32_t next_index = 0;
    bool headers_sent = false;
    bool delivered = false;
    bool failed = false;

    // Is a task of this phase due now (mirrors response_scope's rule)?
    auto due = [&](task_phase p) {
      switch (p) {
        case task_phase::headers_sent: return headers_sent || delivered || failed;
        case task_phase::response_sent: return delivered || failed;
        case task_phase::connection_closed: return false;  // the scope has not ended yet
      }
      return false;
    };
    auto settle_due = [&] {
      for (model_task& t : tasks) {
        if (t.pending && due(t.phase)) t.pending = false;
      }
    };
    auto pending_named = [&](const std::string& name) -> model_task* {
      for (model_task& t : tasks) {
        if (t.pending && !t.cancelled && !t.name.empty() && t.name == name) return &t;
      }
      return nullptr;
    };
    auto defer_one = [&] {
      model_task t;
      t.request_id = scope.id();
      t.index = next_index++;
      const int roll = pick(100);
      t.where = roll < 55   ? target::pool
                : roll < 72 ? target::same_thread
                : roll < 88 ? target::manual
                            : target::inline_exec;
      const int rule = pick(100);
      if (rule < 50) {
        t.no_go = status_set::default_no_go();
      } else if (rule < 70) {
        t.no_go = "5xx,302";
      } else if (rule < 85) {
        t.always = true;
      } else {
        t.no_go = status_set{404, "5xx"};
      }
      t.require_delivery = chance(0.25);
      t.throws = chance(0.1);
      if (chance(0.3)) t.name = names[static_cast<std::size_t>(pick(3))];
      const int ph = pick(100);
      t.phase = ph < 10   ? task_phase::headers_sent
                : ph < 85 ? task_phase::response_sent
                          : task_phase::connection_closed;

      const std::size_t id = first_id + out.size() + tasks.size();
      const bool on_this_thread = t.where == target::same_thread || t.where == target::inline_exec;
      task_probe body{&runs[id], &wrong_thread, on_this_thread ? self : std::thread::id(),
                      t.throws};
      crosstown::defer_options options{.no_go = t.no_go,
                                       .always = t.always,
                                       .name = t.name,
                                       .phase = t.phase,
                                       .require_delivery = t.require_delivery};
      switch (t.where) {
        case target::pool: break;
        case target::same_thread: options.same_thread = true; break;
        case target::manual: options.executor = manual; break;
        case target::inline_exec: options.executor = inl; break;
      }
      // A pending task of the same name is replaced (cancelled) first.
      if (!t.name.empty()) {
        if (model_task* earlier = pending_named(t.name)) {
          earlier->cancelled = true;
          earlier->pending = false;
        }
      }
      t.pending = !due(t.phase);
      tasks.push_back(t);
      scope.defer(body, std::move(options));
      ++made;
    };
    auto maybe_cancel = [&] {
      if (!chance(0.08)) return;
      const std::string name = names[static_cast<std::size_t>(pick(3))];
      model_task* victim = pending_named(name);
      const bool cancelled = scope.cancel(name);
      EXPECT_EQ(cancelled, victim != nullptr) << "cancel(\"" << name << "\")";
      if (victim != nullptr) {
        victim->cancelled = true;
        victim->pending = false;
      }
    };

    const int before = std::min(quota - made, 1 + pick(8));
    for (int i = 0; i < before; ++i) {
      defer_one();
      maybe_cancel();
    }

    const int status = statuses[static_cast<std::size_t>(pick(static_cast<int>(statuses.size())))];
    int final_status = status;
    const int lifecycle = pick(100);
    if (lifecycle < 60) {  // delivered
      scope.status_known(status);
      scope.response_sent();
      headers_sent = delivered = true;
    } else if (lifecycle < 75) {  // the client went away
      scope.status_known(status);
      if (chance(0.5)) {
        scope.headers_sent();
        headers_sent = true;
        settle_due();
      }
      scope.delivery_failed("connection reset");
      failed = true;
    } else if (lifecycle < 85) {  // headers out, then the scope ends before the body
      scope.status_known(status);
      scope.headers_sent();
      headers_sent = true;
    } else if (lifecycle < 92) {  // failed before any status: a 500
      scope.delivery_failed();
      failed = true;
      final_status = 500;
    } else {  // no response at all: the scope just ends, a 500
      final_status = 500;
    }
    settle_due();

    // Late registrations, judged at once unless their phase is still ahead.
    if (lifecycle < 75) {
      const int after = std::min(quota - made, pick(3));
      for (int i = 0; i < after; ++i) {
        defer_one();
        maybe_cancel();
      }
    }

    if (drains_manual && chance(0.2)) manual.run_all();
    scope.end();  // explicit, then the destructor: idempotent

    for (model_task& t : tasks) {
      if (t.cancelled) {
        t.expected = outcome::cancelled;
        continue;
      }
      const bool task_delivered = t.phase == task_phase::headers_sent ? headers_sent : delivered;
      if (!t.always && t.no_go.contains(final_status)) {
        t.expected = outcome::skipped_by_status;
      } else if (t.require_delivery && !task_delivered) {
        t.expected = outcome::skipped_by_delivery;
      } else {
        t.expected = t.throws ? outcome::failed : outcome::ran;
      }
    }
    for (model_task& t : tasks) out.push_back(std::move(t));
  }
}

workload_result run_workload(const workload_options& options, std::vector<std::atomic<int>>& runs) {
  workload_result result;
  result.runs = &runs;
  std::atomic<int> error_hook_calls{0};
  std::atomic<int> wrong_thread{0};
  lost_log lost;
  runtime rt({.threads = options.pool_threads,
              .queue_capacity = options.queue_capacity,
              .overflow = options.overflow,
              .on_error = [&](const task_failure&) { ++error_hook_calls; },
              .on_lost = lost.hook()});
  crosstown::manual_executor manual;
  crosstown::inline_executor inl;

  std::vector<std::vector<model_task>> per_producer(static_cast<std::size_t>(options.producers));
  {
    std::vector<std::thread> producers;
    for (int p = 0; p < options.producers; ++p) {
      producers.emplace_back([&, p] {
        produce(rt, manual, inl, /*drains_manual=*/p == 0,
                options.seed + static_cast<std::uint32_t>(p), options.tasks_per_producer,
                static_cast<std::size_t>(p) * static_cast<std::size_t>(options.tasks_per_producer),
                runs, wrong_thread, per_producer[static_cast<std::size_t>(p)]);
      });
    }
    for (std::thread& t : producers) t.join();
  }
  manual.run_all();
  result.drained = rt.drain_for(6 * deadline);
  result.metrics = rt.metrics();
  result.lost = lost.seen();
  result.error_hook_calls = error_hook_calls.load();
  result.wrong_thread = wrong_thread.load();
  for (auto& tasks : per_producer) {
    for (model_task& t : tasks) result.tasks.push_back(std::move(t));
  }
  return result;
}

struct expected_counts {
  std::uint64_t ran = 0, failed = 0, skipped_by_status = 0, skipped_by_delivery = 0, cancelled = 0;
};

expected_counts count(const std::vector<model_task>& tasks) {
  expected_counts c;
  for (const model_task& t : tasks) {
    switch (t.expected) {
      case outcome::ran: ++c.ran; break;
      case outcome::failed: ++c.failed; break;
      case outcome::skipped_by_status: ++c.skipped_by_status; break;
      case outcome::skipped_by_delivery: ++c.skipped_by_delivery; break;
      case outcome::cancelled: ++c.cancelled; break;
    }
  }
  return c;
}

TEST(RuntimeAccounting, MetricsAddUpForAMixedWorkloadAcrossEightThreads) {
  const workload_options options{};
  SCOPED_TRACE("seed " + std::to_string(options.seed));
  const std::size_t total = static_cast<std::size_t>(options.producers) *
                            static_cast<std::size_t>(options.tasks_per_producer);
  std::vector<std::atomic<int>> runs(total);
  const workload_result r = run_workload(options, runs);

  ASSERT_TRUE(r.drained.complete) << r.drained;
  ASSERT_EQ(r.tasks.size(), total);
  const expected_counts want = count(r.tasks);
  const auto& m = r.metrics;
  // Each terminal state was actually exercised, or the test would prove little.
  EXPECT_GT(want.ran, 0u);
  EXPECT_GT(want.failed, 0u);
  EXPECT_GT(want.skipped_by_status, 0u);
  EXPECT_GT(want.skipped_by_delivery, 0u);
  EXPECT_GT(want.cancelled, 0u);

  EXPECT_EQ(m.registered, total) << m;
  EXPECT_EQ(m.count(crosstown::task_state::ran), want.ran) << m;
  EXPECT_EQ(m.count(crosstown::task_state::failed), want.failed) << m;
  EXPECT_EQ(m.count(crosstown::task_state::skipped_by_status), want.skipped_by_status) << m;
  EXPECT_EQ(m.count(crosstown::task_state::skipped_by_delivery), want.skipped_by_delivery) << m;
  EXPECT_EQ(m.count(crosstown::task_state::cancelled), want.cancelled) << m;
  EXPECT_EQ(m.count(crosstown::task_state::rejected_by_overflow), 0u) << m;
  EXPECT_EQ(m.count(crosstown::task_state::dropped_at_shutdown), 0u) << m;
  EXPECT_EQ(m.registered, m.count(crosstown::task_state::ran) +
                              m.count(crosstown::task_state::failed) +
                              m.count(crosstown::task_state::skipped_by_status) +
                              m.count(crosstown::task_state::skipped_by_delivery) +
                              m.count(crosstown::task_state::cancelled) +
                              m.count(crosstown::task_state::rejected_by_overflow) +
                              m.count(crosstown::task_state::dropped_at_shutdown))
      << m;
  EXPECT_EQ(m.queued, 0u);
  EXPECT_EQ(m.in_flight, 0u);
  EXPECT_EQ(m.pool_queue_depth, 0u);
  EXPECT_EQ(r.error_hook_calls, static_cast<int>(want.failed));
  EXPECT_TRUE(r.lost.empty());
  EXPECT_EQ(r.wrong_thread, 0) << "a same-thread or inline task ran on another thread";

  // Per task: it ran exactly once when allowed, never otherwise (I2, I3).
  int mismatches = 0;
  // r.tasks is ordered producer by producer, in the order each producer created them, which is
  // the order of their ids.
  for (std::size_t id = 0; id < total; ++id) {
    const model_task& t = r.tasks[id];
    const int expected_runs = (t.expected == outcome::ran || t.expected == outcome::failed) ? 1 : 0;
    if (runs[id].load() != expected_runs && ++mismatches <= 10) {
      ADD_FAILURE() << "task " << t.index << " of request " << t.request_id << " ran "
                    << runs[id].load() << " times, expected " << expected_runs;
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(RuntimeAccounting, MetricsAddUpWhenABoundedQueueRejects) {
  workload_options options;
  options.pool_threads = 2;
  options.queue_capacity = 4;
  options.overflow = overflow_policy::reject;
  options.producers = 6;
  options.tasks_per_producer = 600;
  options.seed = 77;
  SCOPED_TRACE("seed " + std::to_string(options.seed));
  const std::size_t total = static_cast<std::size_t>(options.producers) *
                            static_cast<std::size_t>(options.tasks_per_producer);
  std::vector<std::atomic<int>> runs(total);
  const workload_result r = run_workload(options, runs);

  ASSERT_TRUE(r.drained.complete) << r.drained;
  ASSERT_EQ(r.tasks.size(), total);
  std::map<std::pair<std::uint64_t, std::uint32_t>, std::size_t> id_of;
  for (std::size_t id = 0; id < total; ++id)
    id_of[{r.tasks[id].request_id, r.tasks[id].index}] = id;

  // Every rejection was reported, for a pool task the rules allowed to run; it never ran.
  std::uint64_t rejected_ran = 0;
  std::uint64_t rejected_failed = 0;
  std::vector<bool> rejected(total, false);
  for (const lost_task& l : r.lost) {
    ASSERT_EQ(l.state, task_state::rejected_by_overflow) << l;
    const auto it = id_of.find({l.request_id, l.index});
    ASSERT_NE(it, id_of.end()) << l;
    const model_task& t = r.tasks[it->second];
    EXPECT_EQ(t.where, target::pool) << "only the bounded pool rejects: " << l;
    EXPECT_FALSE(rejected[it->second]) << "reported twice: " << l;
    rejected[it->second] = true;
    if (t.expected == outcome::ran)
      ++rejected_ran;
    else if (t.expected == outcome::failed)
      ++rejected_failed;
    else
      ADD_FAILURE() << "a task the rules skipped was rejected: " << l;
  }

  const expected_counts want = count(r.tasks);
  const auto& m = r.metrics;
  EXPECT_EQ(m.registered, total) << m;
  EXPECT_GT(m.count(crosstown::task_state::rejected_by_overflow), 0u)
      << "the bounded queue never filled: the test proved little";
  EXPECT_EQ(m.count(crosstown::task_state::rejected_by_overflow), r.lost.size()) << m;
  EXPECT_EQ(m.count(crosstown::task_state::ran), want.ran - rejected_ran) << m;
  EXPECT_EQ(m.count(crosstown::task_state::failed), want.failed - rejected_failed) << m;
  EXPECT_EQ(m.count(crosstown::task_state::skipped_by_status), want.skipped_by_status) << m;
  EXPECT_EQ(m.count(crosstown::task_state::skipped_by_delivery), want.skipped_by_delivery) << m;
  EXPECT_EQ(m.count(crosstown::task_state::cancelled), want.cancelled) << m;
  EXPECT_EQ(m.count(crosstown::task_state::dropped_at_shutdown), 0u) << m;
  EXPECT_EQ(m.registered, m.terminal()) << m;
  EXPECT_EQ(r.error_hook_calls, static_cast<int>(m.count(crosstown::task_state::failed)));
  EXPECT_EQ(r.wrong_thread, 0);

  int mismatches = 0;
  for (std::size_t id = 0; id < total; ++id) {
    const model_task& t = r.tasks[id];
    const bool allowed = t.expected == outcome::ran || t.expected == outcome::failed;
    const int expected_runs = allowed && !rejected[id] ? 1 : 0;
    if (runs[id].load() != expected_runs && ++mismatches <= 10) {
      ADD_FAILURE() << "task " << t.index << " of request " << t.request_id << " ran "
                    << runs[id].load() << " times, expected " << expected_runs;
    }
  }
  EXPECT_EQ(mismatches, 0);
}

// =============================================================================================
// admission
// =============================================================================================

TEST(RuntimeAdmission, StopsAcceptingWhenThePoolHoldsItsCapacityAndResumesWhenItEmpties) {
  runtime rt({.threads = 1, .queue_capacity = 4, .overflow = overflow_policy::reject});
  EXPECT_TRUE(rt.accepting());
  EXPECT_EQ(rt.pressure(), 0.0);
  gate g;
  {
    response_scope holder(rt);
    holder.defer(g.task());
    complete(holder);
  }
  ASSERT_TRUE(g.started.wait());
  EXPECT_TRUE(rt.accepting()) << "one of four held";
  EXPECT_DOUBLE_EQ(rt.pressure(), 0.25);
  {
    response_scope scope(rt);
    for (int i = 0; i < 2; ++i) scope.defer([] {});
    complete(scope);
  }
  EXPECT_TRUE(rt.accepting()) << "three of four held";
  EXPECT_DOUBLE_EQ(rt.pressure(), 0.75);
  {
    response_scope scope(rt);
    scope.defer([] {});
    complete(scope);
  }
  EXPECT_FALSE(rt.accepting()) << "four of four held: the next task would be rejected";
  EXPECT_DOUBLE_EQ(rt.pressure(), 1.0);
  EXPECT_EQ(rt.metrics().count(task_state::rejected_by_overflow), 0u)
      << "the admission check refused before anything was rejected";
  g.opened.set();
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  // The pool counts a task until its worker is done with it, a moment after the runtime's
  // accounting saw it finish: the pool's own drain waits for that.
  ASSERT_TRUE(rt.pool().drain(clock_type::now() + deadline).complete);
  EXPECT_TRUE(rt.accepting());
  EXPECT_EQ(rt.pressure(), 0.0);
  EXPECT_FALSE(g.timed_out.load());
}

TEST(RuntimeAdmission, ARuntimeThatIsShutDownAcceptsNothing) {
  runtime rt({.threads = 1, .queue_capacity = 8});
  ASSERT_TRUE(rt.accepting());
  ASSERT_TRUE(rt.shutdown(clock_type::now() + deadline).complete);
  EXPECT_FALSE(rt.accepting());
  EXPECT_EQ(rt.pressure(), 1.0);
}

TEST(RuntimeAdmission, AdmissionCheckIsSafeWhileWorkersAndProducersRun) {
  // Readers poll the lock-free figures while producers hand over and workers finish; TSan
  // checks that, and every figure read stays in range.
  runtime rt({.threads = 2,
              .queue_capacity = 16,
              .overflow = overflow_policy::reject,
              .on_lost = [](const task_info&, task_state) {}});
  std::atomic<bool> stop{false};
  std::atomic<int> out_of_range{0};
  std::atomic<int> refusals{0};
  background reader([&] {
    while (!stop.load()) {
      const double p = rt.pressure();
      if (p < 0.0 || p > 1.0) ++out_of_range;
      if (!rt.accepting()) ++refusals;
    }
  });
  {
    std::vector<std::unique_ptr<background>> producers;
    for (int t = 0; t < 2; ++t) {
      producers.push_back(std::make_unique<background>([&] {
        for (int r = 0; r < 200; ++r) {
          response_scope scope(rt);
          for (int i = 0; i < 8; ++i) scope.defer([] {});
          complete(scope);
        }
      }));
    }
  }
  stop = true;
  ASSERT_TRUE(reader.wait_done());
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  ASSERT_TRUE(rt.pool().drain(clock_type::now() + deadline).complete);
  EXPECT_EQ(out_of_range.load(), 0);
  const auto m = rt.metrics();
  EXPECT_EQ(m.registered, m.terminal()) << m;
  EXPECT_TRUE(rt.accepting());
  EXPECT_EQ(rt.pressure(), 0.0);
}

// =============================================================================================
// destruction
// =============================================================================================

TEST(RuntimeDestruction, DestroyingARuntimeWithQueuedWorkRunsEveryTask) {
  std::atomic<int> lost{0};
  auto rt = std::make_unique<runtime>(crosstown::runtime_options{
      .threads = 1, .on_lost = [&lost](const task_info&, task_state) { ++lost; }});
  gate g;
  {
    response_scope holder(*rt);
    holder.defer(g.task());
    complete(holder);
  }
  ASSERT_TRUE(g.started.wait());
  constexpr int tasks = 100;
  std::atomic<int> ran{0};
  for (int r = 0; r < 4; ++r) {
    response_scope scope(*rt);
    for (int i = 0; i < tasks / 4; ++i) scope.defer([&ran] { ++ran; });
    complete(scope);
  }
  ASSERT_EQ(rt->metrics().pool_queue_depth, static_cast<std::uint64_t>(tasks));
  {
    event destroying;
    background destroyer([&] {
      destroying.set();
      rt.reset();
    });
    ASSERT_TRUE(destroying.wait());
    g.opened.set();  // about as the destructor starts, with the work still queued
    ASSERT_TRUE(destroyer.wait_done(2 * deadline));
  }
  EXPECT_TRUE(g.finished.load());
  EXPECT_FALSE(g.timed_out.load());
  EXPECT_EQ(ran.load() + lost.load(), tasks) << "every task ran or was reported";
  EXPECT_EQ(lost.load(), 0) << "without a shutdown timeout nothing is dropped";
}

TEST(RuntimeDestruction, ShutdownTimeoutDropsAndReportsWhatDidNotStart) {
  gate g;
  event first_lost;
  lost_log lost;
  auto rt = std::make_unique<runtime>(
      crosstown::runtime_options{.threads = 1,
                                 .on_lost = lost.hook([&first_lost] { first_lost.set(); }),
                                 .shutdown_timeout = std::chrono::milliseconds(50)});
  std::atomic<bool> release_timed_out{false};
  // The destructor waits for the running gate after dropping the queue; the gate opens when the
  // first drop is reported (or at the deadline, so a failure cannot hang the test).
  background releaser([&] {
    if (!first_lost.wait()) release_timed_out = true;
    g.opened.set();
  });
  std::uint64_t request = 0;
  {
    response_scope holder(*rt);
    holder.defer(g.task(), {.name = "running"});
    complete(holder);
  }
  ASSERT_TRUE(g.started.wait());
  std::atomic<int> ran{0};
  {
    response_scope scope(*rt);
    request = scope.id();
    for (const char* name : {"q0", "q1", "q2", "q3", "q4"}) {
      scope.defer([&ran] { ++ran; }, {.name = name});
    }
    complete(scope);
  }
  rt.reset();
  EXPECT_FALSE(release_timed_out.load()) << "nothing was reported lost";
  EXPECT_TRUE(g.finished.load()) << "the running task was allowed to finish";
  EXPECT_EQ(ran.load(), 0);
  EXPECT_THAT(lost.seen(),
              ElementsAre(lost_task{request, 0, "q0", task_state::dropped_at_shutdown},
                          lost_task{request, 1, "q1", task_state::dropped_at_shutdown},
                          lost_task{request, 2, "q2", task_state::dropped_at_shutdown},
                          lost_task{request, 3, "q3", task_state::dropped_at_shutdown},
                          lost_task{request, 4, "q4", task_state::dropped_at_shutdown}));
}

TEST(RuntimeDestruction, ShutdownTimeoutThatIsNotReachedDropsNothing) {
  std::atomic<int> lost{0};
  std::atomic<int> ran{0};
  {
    runtime rt({.threads = 2,
                .on_lost = [&lost](const task_info&, task_state) { ++lost; },
                .shutdown_timeout = std::chrono::seconds(30)});
    response_scope scope(rt);
    for (int i = 0; i < 100; ++i) scope.defer([&ran] { ++ran; });
    complete(scope);
  }
  EXPECT_EQ(ran.load(), 100);
  EXPECT_EQ(lost.load(), 0);
}

TEST(RuntimeDestruction, ExplicitShutdownDropsLaterHandoffsAndTheCountersStillAddUp) {
  lost_log lost;
  runtime rt({.threads = 1, .on_lost = lost.hook()});
  EXPECT_TRUE(rt.shutdown(clock_type::now() + deadline).complete);
  std::atomic<int> ran{0};
  {
    response_scope scope(rt);
    scope.defer([&ran] { ++ran; });
    scope.defer([&ran] { ++ran; }, {.same_thread = true});  // not the pool: still runs
    complete(scope);
  }
  EXPECT_EQ(ran.load(), 1);
  const auto m = rt.metrics();
  EXPECT_EQ(m.count(crosstown::task_state::dropped_at_shutdown), 1u);
  EXPECT_EQ(m.count(crosstown::task_state::ran), 1u);
  EXPECT_EQ(m.registered, m.terminal());
  EXPECT_EQ(lost.seen().size(), 1u);
}

TEST(RuntimeDestruction, ShutdownTimeoutBoundsTheDestructorWhenATaskIsStuck) {
  // A task that blocks until the test releases it cannot be stopped. The destructor drops
  // what is queued, waits `abandon_grace` for the stuck task, then abandons its worker: it
  // reports the task (on_lost, state `running`) and returns within the timeout plus that
  // margin. The task finishes later on its own thread; the hooks are not called for it then.
  gate stuck;
  lost_log lost;
  std::atomic<int> settled_after{0};
  std::atomic<bool> destroyed{false};
  constexpr auto timeout = std::chrono::milliseconds(200);
  auto rt =
      std::make_unique<runtime>(crosstown::runtime_options{.threads = 1,
                                                           .on_lost = lost.hook(),
                                                           .on_settled =
                                                               [&](const task_info&, task_state) {
                                                                 if (destroyed.load())
                                                                   ++settled_after;
                                                               },
                                                           .shutdown_timeout = timeout});
  std::uint64_t stuck_request = 0;
  std::uint64_t queued_request = 0;
  {
    response_scope holder(*rt);
    stuck_request = holder.id();
    holder.defer(stuck.task(), {.name = "stuck"});
    complete(holder);
  }
  ASSERT_TRUE(stuck.started.wait());
  {
    response_scope scope(*rt);
    queued_request = scope.id();
    scope.defer([] {}, {.name = "behind"});
    complete(scope);
  }
  // Abandoned threads of all pools: an earlier test's may still be ending (gtest_repeat).
  auto others_gone = [] {
    const auto until = clock_type::now() + deadline;
    while (crosstown::thread_pool::abandoned_threads_running() != 0 && clock_type::now() < until) {
      std::this_thread::yield();
    }
    return crosstown::thread_pool::abandoned_threads_running() == 0;
  };
  ASSERT_TRUE(others_gone());
  const auto started = clock_type::now();
  rt.reset();
  const auto took = clock_type::now() - started;
  destroyed = true;
  EXPECT_GE(took, timeout);
  EXPECT_LT(took, timeout + crosstown::thread_pool::abandon_grace + std::chrono::seconds(2))
      << "the destructor waited for the stuck task";
  EXPECT_FALSE(stuck.finished.load()) << "the destructor returned while the task was stuck";
  EXPECT_THAT(lost.seen(),
              ElementsAre(lost_task{queued_request, 0, "behind", task_state::dropped_at_shutdown},
                          lost_task{stuck_request, 0, "stuck", task_state::running}));
  EXPECT_EQ(crosstown::thread_pool::abandoned_threads_running(), 1u);

  stuck.opened.set();  // the task ends on its abandoned thread, touching only what it keeps
  EXPECT_TRUE(others_gone()) << "the abandoned worker did not end after its task returned";
  EXPECT_TRUE(stuck.finished.load());
  EXPECT_FALSE(stuck.timed_out.load());
  EXPECT_EQ(settled_after.load(), 0) << "a hook was called after the runtime was destroyed";
  EXPECT_EQ(lost.seen().size(), 2u);
}

TEST(RuntimeDestruction, ExplicitShutdownAbandonsAStuckTaskAndItStillCountsWhenItEnds) {
  gate stuck;
  lost_log lost;
  runtime rt({.threads = 2, .on_lost = lost.hook()});
  std::uint64_t request = 0;
  {
    response_scope holder(rt);
    request = holder.id();
    holder.defer(stuck.task(), {.name = "stuck"});
    complete(holder);
  }
  ASSERT_TRUE(stuck.started.wait());
  const auto report = rt.shutdown(clock_type::now() + std::chrono::milliseconds(50));
  EXPECT_FALSE(report.complete);
  EXPECT_EQ(report.running, 1u);
  EXPECT_THAT(report.unfinished, ElementsAre(task_info{request, 0, "stuck"}.describe()));
  EXPECT_EQ(rt.pool().abandoned_workers(), 1u) << "only the stuck worker; the idle one joined";
  EXPECT_THAT(lost.seen(), ElementsAre(lost_task{request, 0, "stuck", task_state::running}));
  stuck.opened.set();
  ASSERT_TRUE(rt.drain_for(deadline).complete) << "the abandoned task still counts when it ends";
  const auto m = rt.metrics();
  EXPECT_EQ(m.count(task_state::ran), 1u);
  EXPECT_EQ(m.registered, m.terminal());
}

// =============================================================================================
// backpressure
// =============================================================================================

TEST(RuntimeBackpressure, DefaultRuntimeBoundsItsPoolByItsThreadsAndRejects) {
  const crosstown::runtime_options defaults;
  EXPECT_EQ(defaults.overflow, overflow_policy::reject);
  {
    runtime two({.threads = 2});
    EXPECT_EQ(two.pool().capacity(), 2 * crosstown::default_capacity_per_thread);
  }
  lost_log lost;
  runtime rt({.threads = 1, .on_lost = lost.hook()});
  ASSERT_EQ(rt.pool().capacity(), crosstown::default_capacity_per_thread);
  gate g;
  {
    response_scope holder(rt);
    holder.defer(g.task());
    complete(holder);
  }
  ASSERT_TRUE(g.started.wait());
  std::uint64_t request = 0;
  {
    response_scope scope(rt);
    request = scope.id();
    for (std::size_t i = 0; i < crosstown::default_capacity_per_thread; ++i) scope.defer([] {});
    complete(scope);  // one more than fits with the gate
  }
  EXPECT_FALSE(rt.accepting());
  const auto last = static_cast<std::uint32_t>(crosstown::default_capacity_per_thread - 1);
  EXPECT_THAT(lost.seen(),
              ElementsAre(lost_task{request, last, "", task_state::rejected_by_overflow}));
  g.opened.set();
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  const auto m = rt.metrics();
  EXPECT_EQ(m.count(task_state::rejected_by_overflow), 1u);
  EXPECT_EQ(m.count(task_state::ran), crosstown::default_capacity_per_thread);
  EXPECT_EQ(m.registered, m.terminal());
}

TEST(RuntimeBackpressure, UnboundedCapacityHoldsEverything) {
  runtime rt({.threads = 1, .queue_capacity = crosstown::unbounded});
  gate g;
  {
    response_scope holder(rt);
    holder.defer(g.task());
    complete(holder);
  }
  ASSERT_TRUE(g.started.wait());
  constexpr std::size_t tasks = 3 * crosstown::default_capacity_per_thread;
  {
    response_scope scope(rt);
    for (std::size_t i = 0; i < tasks; ++i) scope.defer([] {});
    complete(scope);
  }
  EXPECT_TRUE(rt.accepting());
  EXPECT_EQ(rt.pressure(), 0.0);
  EXPECT_EQ(rt.pool().queue_depth(), tasks);
  g.opened.set();
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  EXPECT_EQ(rt.metrics().count(task_state::ran), tasks + 1);
  EXPECT_EQ(rt.metrics().count(task_state::rejected_by_overflow), 0u);
}

TEST(RuntimeBackpressure, BlockPolicyOnAnIoThreadRejectsTheExcessInsteadOfWaiting) {
  lost_log lost;
  runtime rt({.threads = 1,
              .queue_capacity = 2,
              .overflow = overflow_policy::block,
              .on_lost = lost.hook()});
  gate g;
  {
    response_scope holder(rt);
    holder.defer(g.task());
    complete(holder);
  }
  ASSERT_TRUE(g.started.wait());
  std::uint64_t request = 0;
  background io_thread([&] {
    const crosstown::io_thread_guard marked;
    EXPECT_TRUE(crosstown::on_io_thread());
    response_scope scope(rt);
    request = scope.id();
    for (const char* name : {"fits", "over-1", "over-2"}) scope.defer([] {}, {.name = name});
    complete(scope);
  });
  EXPECT_TRUE(io_thread.wait_done()) << "block made an I/O thread wait";
  EXPECT_EQ(rt.pool().io_thread_refusals(), 1u);
  EXPECT_THAT(lost.seen(),
              ElementsAre(lost_task{request, 1, "over-1", task_state::rejected_by_overflow},
                          lost_task{request, 2, "over-2", task_state::rejected_by_overflow}));
  g.opened.set();
  ASSERT_TRUE(rt.drain_for(deadline).complete);
  const auto m = rt.metrics();
  EXPECT_EQ(m.count(task_state::ran), 2u);
  EXPECT_EQ(m.count(task_state::rejected_by_overflow), 2u);
  EXPECT_EQ(m.registered, m.terminal());
}

TEST(RuntimeBackpressure, IoThreadGuardMarksOnlyItsThreadForItsLifetime) {
  EXPECT_FALSE(crosstown::on_io_thread());
  {
    const crosstown::io_thread_guard outer;
    EXPECT_TRUE(crosstown::on_io_thread());
    {
      const crosstown::io_thread_guard inner;
      EXPECT_TRUE(crosstown::on_io_thread());
    }
    EXPECT_TRUE(crosstown::on_io_thread()) << "guards nest";
    std::atomic<bool> elsewhere{true};
    background other([&] { elsewhere = crosstown::on_io_thread(); });
    ASSERT_TRUE(other.wait_done());
    EXPECT_FALSE(elsewhere.load());
  }
  EXPECT_FALSE(crosstown::on_io_thread());
}

}  // namespace
