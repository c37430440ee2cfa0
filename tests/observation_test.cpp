// Test seams of the core: the settled hook, pending-task inspection and redirection.
#include <crosstown/runtime.hpp>

#include <crosstown/inline_executor.hpp>
#include <crosstown/manual_executor.hpp>
#include <crosstown/response_scope.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using crosstown::response_scope;
using crosstown::runtime;
using crosstown::task_phase;
using crosstown::task_state;
using ::testing::ElementsAre;

struct settled_log {
  std::mutex mutex;
  std::map<std::string, task_state> by_name;
  int calls = 0;
  auto hook() {
    return [this](const crosstown::task_info& info, task_state state) {
      std::lock_guard lock(mutex);
      ++calls;
      by_name[std::string(info.name)] = state;
    };
  }
};

TEST(SettledHook, ReportsEveryTaskOnceWithItsTerminalState) {
  settled_log log;
  crosstown::manual_executor manual;
  {
    runtime rt({.threads = 1,
                .on_error = [](const crosstown::task_failure&) {},
                .on_lost = [](const crosstown::task_info&, task_state) {},
                .on_settled = log.hook()});
    {
      response_scope scope(rt);
      scope.defer([] {}, {.executor = manual, .name = "ran"});
      scope.defer([] { throw std::runtime_error("x"); }, {.executor = manual, .name = "failed"});
      scope.defer([] {}, {.executor = manual, .no_go = "2xx", .name = "skipped-status"});
      scope.defer([] {}, {.executor = manual, .name = "replaced"});
      scope.defer([] {}, {.executor = manual, .name = "replaced"});  // replaces the first
      scope.defer([] {}, {.executor = manual, .name = "cancelled"});
      scope.cancel("cancelled");
      scope.defer([] {}, {.executor = manual, .name = "dropped"});
      scope.status_known(200);
      scope.delivery_failed("reset");
    }
    EXPECT_EQ(log.calls, 3) << "skipped, replaced and cancelled settle before anything runs";
    manual.run_one();
    manual.run_one();
    manual.run_one();  // the replacement
    manual.drop_all();
    rt.drain_for(std::chrono::seconds(10));
    EXPECT_EQ(rt.metrics().registered, static_cast<std::uint64_t>(log.calls));
  }
  EXPECT_EQ(log.calls, 7);
  EXPECT_EQ(log.by_name["ran"], task_state::ran);
  EXPECT_EQ(log.by_name["failed"], task_state::failed);
  EXPECT_EQ(log.by_name["skipped-status"], task_state::skipped_by_status);
  EXPECT_EQ(log.by_name["replaced"], task_state::ran) << "the replacement ran last";
  EXPECT_EQ(log.by_name["cancelled"], task_state::cancelled);
  EXPECT_EQ(log.by_name["dropped"], task_state::dropped_at_shutdown);
}

TEST(PendingTasks, ShowEachTasksOptionsInRegistrationOrder) {
  runtime rt({.threads = 1});
  crosstown::manual_executor manual;
  response_scope scope(rt);
  scope.defer([] {}, {.executor = manual, .name = "a"});
  scope.defer([] {}, {.same_thread = true,
                      .no_go = "5xx",
                      .always = true,
                      .phase = task_phase::headers_sent,
                      .require_delivery = true});
  const auto tasks = scope.pending_tasks();
  ASSERT_EQ(tasks.size(), 2u);
  EXPECT_EQ(tasks[0].index, 0u);
  EXPECT_EQ(tasks[0].name, "a");
  EXPECT_EQ(tasks[0].target, &manual);
  EXPECT_EQ(tasks[0].no_go, crosstown::status_set::default_no_go());
  EXPECT_EQ(tasks[0].phase, task_phase::response_sent);
  EXPECT_FALSE(tasks[0].same_thread);
  EXPECT_EQ(tasks[1].index, 1u);
  EXPECT_TRUE(tasks[1].same_thread);
  EXPECT_TRUE(tasks[1].always);
  EXPECT_TRUE(tasks[1].require_delivery);
  EXPECT_EQ(tasks[1].phase, task_phase::headers_sent);
  EXPECT_EQ(tasks[1].no_go.to_string(), "5xx");
}

TEST(Redirection, SendsEveryReleasedTaskToTheTargetButKeepsTheRules) {
  runtime rt({.threads = 1});
  crosstown::manual_executor named;
  crosstown::inline_executor here;
  rt.redirect_all_to(here);
  std::vector<std::string> ran;
  {
    response_scope scope(rt);
    scope.defer([&] { ran.push_back("pool"); });
    scope.defer([&] { ran.push_back("named"); }, {.executor = named});
    scope.defer([&] { ran.push_back("same-thread"); }, {.same_thread = true});
    scope.status_known(200);
    scope.response_sent();
  }
  {
    response_scope scope(rt);
    scope.defer([&] { ran.push_back("404"); });
    scope.status_known(404);
    scope.response_sent();
  }
  EXPECT_THAT(ran, ElementsAre("pool", "named", "same-thread"));
  EXPECT_EQ(named.pending(), 0u);
  EXPECT_EQ(here.executed().size(), 3u);
  rt.redirect_all_to({});
  EXPECT_EQ(rt.redirected_to(), nullptr);
  {
    response_scope scope(rt);
    scope.defer([] {}, {.executor = named});
    scope.status_known(200);
    scope.response_sent();
  }
  EXPECT_EQ(named.pending(), 1u) << "normal routing restored";
  named.run_all();
}

}  // namespace
