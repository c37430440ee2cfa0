// The README's test example, written as an application's suite is: `using namespace
// crosstown;` beside GoogleTest, whose `testing::` must stay unambiguous. The two TESTs
// below are the README's, word for word; the handlers above them are the application's.
#include <crosstown/crosstown.hpp>
#include <crosstown/testing/harness.hpp>
#include <crosstown/testing/matchers.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

using namespace crosstown;
using namespace crosstown::testkit;
using testing::Each;
using testing::SizeIs;

namespace {

struct request {
  int calls = 100;
};
const request request{};

// The application's handlers: they reach the scope through the thread-local binding.
int handle_calls(const struct request& r) {
  for (int i = 0; i < r.calls; ++i) {
    crosstown::defer([] {}, {.name = "call-" + std::to_string(i)});
  }
  return 202;
}

int handle_missing(const struct request&) {
  crosstown::defer([] {}, {.name = "call-0"});
  return 404;
}

}  // namespace

TEST(Calls, PlacedOnlyAfterThe202) {
  harness h;
  const int status = h.call([&] { return handle_calls(request); });  // scope bound to the thread
  EXPECT_THAT(h.deferred(), SizeIs(100));  // registered, none ran; options inspectable
  EXPECT_THAT(h.deferred(), Each(WaitsFor(task_phase::response_sent)));
  h.respond(status);                                   // status, headers, last byte
  h.next_task();                                       // one at a time ...
  h.run_all();                                         // ... or all
  EXPECT_THAT(h.history(), AllRanAfterResponse(100));  // exactly 100; fails on none
}

TEST(Calls, SkippedOn404) {
  harness h;
  h.call([&] { return handle_missing(request); });
  h.respond(404);
  EXPECT_THAT(*h.find("call-0"), SkippedByStatus(404));
}
