// The thread-local binding: deep code defers onto the bound scope; no scope -> run now or fail.
#include <crosstown/binding.hpp>

#include <crosstown/manual_executor.hpp>
#include <crosstown/runtime.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using crosstown::manual_executor;
using crosstown::response_scope;
using crosstown::runtime;
using crosstown::scope_binding;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Stands for code far below the handler that cannot see the scope.
void place_calls(std::vector<std::string>& log, manual_executor& ex, int n) {
  for (int i = 0; i < n; ++i) {
    crosstown::defer([&log, i] { log.push_back("call " + std::to_string(i)); }, {.executor = ex});
  }
}

TEST(Binding, DeepCodeDefersOntoTheBoundScope) {
  runtime rt({.threads = 1});
  manual_executor manual;
  std::vector<std::string> log;
  response_scope scope(rt);
  {
    scope_binding bound(scope);
    EXPECT_EQ(crosstown::current_scope(), &scope);
    place_calls(log, manual, 3);
  }
  EXPECT_EQ(crosstown::current_scope(), nullptr);
  EXPECT_TRUE(log.empty());
  EXPECT_EQ(scope.pending(), 3u);
  scope.status_known(200);
  scope.response_sent();
  manual.run_all();
  EXPECT_THAT(log, ElementsAre("call 0", "call 1", "call 2"));
}

TEST(Binding, BindingsNestAndRestoreThePreviousScope) {
  runtime rt({.threads = 1});
  response_scope outer(rt);
  response_scope inner(rt);
  scope_binding a(outer);
  {
    scope_binding b(inner);
    EXPECT_EQ(crosstown::current_scope(), &inner);
    crosstown::defer([] {});
  }
  EXPECT_EQ(crosstown::current_scope(), &outer);
  EXPECT_EQ(inner.pending(), 1u);
  EXPECT_EQ(outer.pending(), 0u);
}

TEST(Binding, BindingIsPerThread) {
  runtime rt({.threads = 1});
  response_scope scope(rt);
  scope_binding bound(scope);
  crosstown::response_scope* seen = &scope;
  std::thread other([&] { seen = crosstown::current_scope(); });
  other.join();
  EXPECT_EQ(seen, nullptr);
}

TEST(Binding, WithNoScopeBoundTheTaskRunsNowByDefault) {
  ASSERT_EQ(crosstown::current_scope(), nullptr);
  int ran = 0;
  crosstown::defer([&] { ++ran; });
  EXPECT_EQ(ran, 1);
}

TEST(Binding, WithNoScopeBoundRunNowLetsExceptionsPropagate) {
  EXPECT_THROW(crosstown::defer([] { throw std::runtime_error("x"); }), std::runtime_error);
}

TEST(Binding, WithNoScopeBoundFailPolicyThrowsAClearError) {
  int ran = 0;
  try {
    crosstown::defer([&] { ++ran; }, {.if_unbound = crosstown::unbound_policy::fail});
    FAIL() << "expected crosstown::no_bound_scope";
  } catch (const crosstown::no_bound_scope& e) {
    EXPECT_THAT(e.what(), HasSubstr("no response scope is bound"));
    EXPECT_THAT(e.what(), HasSubstr("scope_binding"));
  }
  EXPECT_EQ(ran, 0);
}

TEST(Binding, FailPolicyIsIgnoredWhenAScopeIsBound) {
  runtime rt({.threads = 1});
  response_scope scope(rt);
  scope_binding bound(scope);
  crosstown::defer([] {}, {.if_unbound = crosstown::unbound_policy::fail});
  EXPECT_EQ(scope.pending(), 1u);
}

// ---- bindings destroyed out of order (issue 10, item 13) -----------------------------------

TEST(Binding, BindingDestroyedOutOfOrderIsTakenOutAndNoScopeIsLeftBoundWithoutABinding) {
  runtime rt({.threads = 1});
  auto outer_scope = std::make_unique<response_scope>(rt);
  response_scope inner_scope(rt);
  auto outer = std::make_unique<scope_binding>(*outer_scope);
  auto inner = std::make_unique<scope_binding>(inner_scope);
  ::testing::internal::CaptureStderr();
  outer.reset();  // out of order: `inner` was made after it and is still alive
  const std::string said = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(said, HasSubstr("destroyed before a binding made after it"));
  EXPECT_EQ(crosstown::current_scope(), &inner_scope) << "the later binding stays in force";
  inner.reset();
  EXPECT_EQ(crosstown::current_scope(), nullptr)
      << "restored the scope of a binding that no longer exists";
  outer_scope.reset();  // would dangle if it were still bound
  EXPECT_EQ(crosstown::current_scope(), nullptr);
}

TEST(Binding, AMiddleBindingDestroyedFirstLeavesTheOthersNested) {
  runtime rt({.threads = 1});
  response_scope a(rt), b(rt), c(rt);
  auto ba = std::make_unique<scope_binding>(a);
  auto bb = std::make_unique<scope_binding>(b);
  auto bc = std::make_unique<scope_binding>(c);
  ::testing::internal::CaptureStderr();
  bb.reset();
  (void)::testing::internal::GetCapturedStderr();
  EXPECT_EQ(crosstown::current_scope(), &c);
  bc.reset();
  EXPECT_EQ(crosstown::current_scope(), &a) << "c's binding restores a, b's is gone";
  ba.reset();
  EXPECT_EQ(crosstown::current_scope(), nullptr);
}

TEST(BindingDeathTest, BindingDestroyedOnAnotherThreadAbortsNamingTheMistake) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        runtime rt({.threads = 1});
        response_scope scope(rt);
        auto binding = std::make_unique<scope_binding>(scope);
        std::thread other([&] { binding.reset(); });
        other.join();
      },
      "destroyed on another thread");
}

}  // namespace
