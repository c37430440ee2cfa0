// The testing toolkit from an installed package, written as an application's suite is:
// `using namespace crosstown;` beside GoogleTest's `testing::`.
#include <crosstown/crosstown.hpp>
#include <crosstown/testing/harness.hpp>
#include <crosstown/testing/matchers.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

using namespace crosstown;
using namespace crosstown::testkit;
using testing::Each;
using testing::SizeIs;

TEST(Consumer, TasksRunAfterThe202) {
  harness h;
  h.call([](response_scope& scope) {
    for (int i = 0; i < 3; ++i) scope.defer([] {});
    return 202;
  });
  EXPECT_THAT(h.deferred(), SizeIs(3));
  h.respond(202);
  h.run_all();
  EXPECT_THAT(h.history(), SizeIs(3));
  EXPECT_THAT(h.history(), Each(RanAfterResponse()));
}
