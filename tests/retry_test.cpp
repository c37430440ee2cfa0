// Tests for crosstown/retry.hpp: the backoff, attempts on the task clock, one terminal state
// per task whatever the number of attempts, the predicate, and the last failure reported.
// Deterministic: an io_context and a manual clock stepped by the test.

#include <crosstown/retry.hpp>

#include <crosstown/awaitable_task.hpp>
#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>
#include <crosstown/testing/awaitable.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using boost::asio::awaitable;
using crosstown::response_scope;
using crosstown::retry_policy;
using crosstown::runtime;
using crosstown::task_state;
using crosstown::testkit::awaitable_driver;

void respond(response_scope& s) {
  s.status_known(200);
  s.response_sent();
}

TEST(RetryBackoff, DoublesFromBaseUpToCap) {
  const retry_policy p{.max_attempts = 10, .base = 100ms, .cap = 1s, .jitter = 0};
  EXPECT_EQ(crosstown::retry_backoff(p, 1, 0.9), 100ms);
  EXPECT_EQ(crosstown::retry_backoff(p, 2, 0.9), 200ms);
  EXPECT_EQ(crosstown::retry_backoff(p, 3, 0.9), 400ms);
  EXPECT_EQ(crosstown::retry_backoff(p, 4, 0.9), 800ms);
  EXPECT_EQ(crosstown::retry_backoff(p, 5, 0.9), 1s);
  EXPECT_EQ(crosstown::retry_backoff(p, 60, 0.9), 1s) << "no overflow for late attempts";
}

TEST(RetryBackoff, JitterTakesAtMostItsFractionOff) {
  const retry_policy p{.base = 100ms, .cap = 1s, .jitter = 0.5};
  EXPECT_EQ(crosstown::retry_backoff(p, 1, 0.0), 100ms);
  EXPECT_EQ(crosstown::retry_backoff(p, 1, 0.5), 75ms);
  EXPECT_GT(crosstown::retry_backoff(p, 1, 0.999999), 50ms);
  const retry_policy full{.base = 100ms, .cap = 1s, .jitter = 1};
  EXPECT_EQ(crosstown::retry_backoff(full, 1, 0.25), 75ms);
}

class RetryTest : public ::testing::Test {
 protected:
  std::vector<std::string> errors_;
  runtime rt_{{.threads = 1, .on_error = [this](const crosstown::task_failure& f) {
                 errors_.push_back(f.message);
               }}};
  awaitable_driver io_{rt_};
};

TEST_F(RetryTest, FailedAttemptIsRetriedAfterItsBackoffOnTheTaskClock) {
  int attempts = 0;
  response_scope s(rt_);
  s.defer(
      [&]() -> awaitable<void> {
        ++attempts;
        if (attempts < 3) throw std::runtime_error("busy " + std::to_string(attempts));
        co_return;
      },
      {.retry = {.max_attempts = 5, .base = 100ms, .cap = 1s, .jitter = 0}});
  respond(s);
  io_.poll();
  EXPECT_EQ(attempts, 1);
  io_.advance(99ms);
  EXPECT_EQ(attempts, 1) << "retried before its backoff";
  io_.advance(1ms);
  EXPECT_EQ(attempts, 2);
  io_.advance(199ms);
  EXPECT_EQ(attempts, 2);
  io_.advance(1ms);
  EXPECT_EQ(attempts, 3);
  const auto m = rt_.metrics();
  EXPECT_EQ(m.count(task_state::ran), 1u);
  EXPECT_EQ(m.count(task_state::failed), 0u);
  EXPECT_EQ(m.retries, 2u);
  EXPECT_EQ(m.registered, m.terminal()) << "one terminal state for three attempts";
  EXPECT_TRUE(errors_.empty()) << "a failure that was retried away is not reported";
}

TEST_F(RetryTest, ExhaustedRetriesEndFailedOnceReportingTheLastFailure) {
  int attempts = 0;
  response_scope s(rt_);
  s.defer(
      [&]() -> awaitable<void> {
        ++attempts;
        throw std::runtime_error("attempt " + std::to_string(attempts));
        co_return;
      },
      {.retry = {.max_attempts = 3, .base = 10ms, .jitter = 0}});
  respond(s);
  while (io_.advance_to_next()) {
  }
  EXPECT_EQ(attempts, 3);
  EXPECT_EQ(rt_.metrics().count(task_state::failed), 1u);
  EXPECT_EQ(rt_.metrics().retries, 2u);
  EXPECT_EQ(errors_, std::vector<std::string>{"attempt 3"});
}

TEST_F(RetryTest, PredicateDecidesWhichFailuresAreRetried) {
  int attempts = 0;
  auto only_runtime_errors = [](const std::exception_ptr& e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::runtime_error&) {
      return true;
    } catch (...) {
      return false;
    }
  };
  response_scope s(rt_);
  s.defer(
      [&]() -> awaitable<void> {
        ++attempts;
        if (attempts == 1) throw std::runtime_error("transient");
        throw std::logic_error("bad request");
        co_return;
      },
      {.retry = {.max_attempts = 5, .base = 10ms, .jitter = 0, .retry_if = only_runtime_errors}});
  respond(s);
  while (io_.advance_to_next()) {
  }
  EXPECT_EQ(attempts, 2) << "the logic_error must not be retried";
  EXPECT_EQ(errors_, std::vector<std::string>{"bad request"});
}

TEST_F(RetryTest, TimedOutAttemptsAreRetriedAndTheLastTimeoutIsTheState) {
  int attempts = 0;
  response_scope s(rt_);
  s.defer(
      [&]() -> awaitable<void> {
        ++attempts;
        co_await io_.clock().wait(1h);
      },
      {.timeout = 1s, .retry = {.max_attempts = 2, .base = 100ms, .jitter = 0}});
  respond(s);
  io_.advance(1s);
  EXPECT_EQ(attempts, 1);
  io_.advance(100ms);
  EXPECT_EQ(attempts, 2);
  io_.advance(1s);
  const auto m = rt_.metrics();
  EXPECT_EQ(m.count(task_state::timed_out), 1u);
  EXPECT_EQ(m.retries, 1u);
  ASSERT_EQ(errors_.size(), 1u);
  EXPECT_NE(errors_[0].find("timed out after 1000 ms"), std::string::npos) << errors_[0];
}

TEST_F(RetryTest, RetryOnABlockingTaskAndZeroAttemptsAreRefused) {
  response_scope s(rt_);
  EXPECT_THROW(s.defer([] {}, {.retry = {.max_attempts = 3}}), std::invalid_argument);
  EXPECT_THROW(s.defer([]() -> awaitable<void> { co_return; }, {.retry = {.max_attempts = 0}}),
               std::invalid_argument);
  EXPECT_EQ(s.pending(), 0u);
}

}  // namespace
