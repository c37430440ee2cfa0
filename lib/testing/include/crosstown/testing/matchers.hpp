// crosstown/testing/matchers.hpp - GoogleMock matchers for deferred work.
//
//     EXPECT_THAT(h.deferred(), SizeIs(3));
//     EXPECT_THAT(h.deferred(), Contains(IsNamed("welcome-mail")));
//     EXPECT_THAT(h.history(), AllRanAfterResponse(3));  // exactly 3 records, each ran after
//     EXPECT_THAT(*h.find("calls"), SkippedByStatus(404));
//
// `IsNamed` and `WaitsFor` apply to `crosstown::pending_task` (h.deferred()); the others to
// `task_record` (h.history()). Failure messages print the records in full (see PrintTo).
#pragma once

#include <crosstown/defer_options.hpp>
#include <crosstown/metrics.hpp>
#include <crosstown/response_scope.hpp>
#include <crosstown/testing/harness.hpp>

#include <gmock/gmock.h>

#include <cstddef>
#include <ostream>
#include <string>

namespace crosstown {

inline void PrintTo(const pending_task& t, std::ostream* out) {
  *out << "{task " << t.index << (t.name.empty() ? "" : " \"" + t.name + "\"") << ", waits for "
       << t.phase << ", no_go \"" << t.no_go.to_string() << "\"" << (t.always ? ", always" : "")
       << (t.require_delivery ? ", require_delivery" : "") << (t.same_thread ? ", same_thread" : "")
       << "}";
}

namespace testkit {

/// The task ran (returned normally) after its response was sent or had failed.
MATCHER(RanAfterResponse, negation ? "did not run after its response" : "ran after its response") {
  return arg.state == task_state::ran && arg.after_response;
}

/// A history of exactly `count` records (count > 0), every one of which ran after its
/// response. Unlike `Each(RanAfterResponse())`, it fails on an empty history: a test that
/// expected work and got none does not pass. A count of 0 never matches.
MATCHER_P(AllRanAfterResponse, count,
          std::string(negation ? "is not" : "is") + " " + ::testing::PrintToString(count) +
              " task(s), all of which ran after their response") {
  const auto expected = static_cast<std::size_t>(count);
  if (expected == 0) {
    *result_listener << "a count of 0 proves nothing; expect an empty history with IsEmpty()";
    return false;
  }
  std::size_t n = 0;
  std::size_t i = 0;
  for (const auto& record : arg) {
    ++n;
    if (!(record.state == task_state::ran && record.after_response)) {
      *result_listener << "record " << i
                       << " did not run after its response: " << ::testing::PrintToString(record);
      return false;
    }
    ++i;
  }
  if (n != expected) {
    *result_listener << "has " << n << " record(s)";
    return false;
  }
  return true;
}

/// At least one record, and every record ran after its response (fails on an empty history).
MATCHER(AllRanAfterResponse, negation ? "is empty or has a task that did not run after its response"
                                      : "is non-empty and every task ran after its response") {
  std::size_t i = 0;
  for (const auto& record : arg) {
    if (!(record.state == task_state::ran && record.after_response)) {
      *result_listener << "record " << i
                       << " did not run after its response: " << ::testing::PrintToString(record);
      return false;
    }
    ++i;
  }
  if (i == 0) {
    *result_listener << "is empty: no task ran at all";
    return false;
  }
  return true;
}

/// The task was skipped because its response's status was `status`.
MATCHER_P(SkippedByStatus, status,
          std::string(negation ? "was not" : "was") + " skipped by status " +
              ::testing::PrintToString(status)) {
  return arg.state == task_state::skipped_by_status && arg.status == status;
}

/// The task was skipped because its response was not delivered.
MATCHER(SkippedByDelivery, negation ? "was not skipped by delivery" : "was skipped by delivery") {
  return arg.state == task_state::skipped_by_delivery;
}

/// The task reached `state`.
MATCHER_P(EndedAs, state,
          std::string(negation ? "did not end" : "ended") + " as " +
              std::string(to_string(state))) {
  return arg.state == state;
}

/// The task (record or pending task) has this name.
MATCHER_P(IsNamed, name,
          std::string(negation ? "is not" : "is") + " named " +
              ::testing::PrintToString(std::string(name))) {
  return arg.name == name;
}

/// The pending task waits for `phase`.
MATCHER_P(WaitsFor, phase,
          std::string(negation ? "does not wait" : "waits") + " for " +
              std::string(to_string(phase))) {
  return arg.phase == phase;
}

}  // namespace testkit
}  // namespace crosstown
