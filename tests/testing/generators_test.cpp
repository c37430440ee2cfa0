// The public RapidCheck generators produce what they promise.
#include <crosstown/testing/generators.hpp>

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>  // needs gtest.h first

namespace gen = crosstown::testkit::gen;

RC_GTEST_PROP(Generators, StatusCodesAreInRange, ()) {
  const int code = *gen::status_code();
  RC_ASSERT(code >= 100);
  RC_ASSERT(code <= 999);
}

RC_GTEST_PROP(Generators, ValidSpecsParse, ()) {
  const std::string spec = *gen::valid_spec();
  RC_ASSERT(!crosstown::status_set::parse(spec).empty());
}

RC_GTEST_PROP(Generators, InvalidItemsAreRejectedOnTheirOwn, ()) {
  const std::string item = *gen::invalid_item();
  RC_ASSERT_THROWS_AS(crosstown::status_set::parse(item), crosstown::status_spec_error);
}

RC_GTEST_PROP(Generators, InvalidSpecsNameTheirBadItem, ()) {
  const crosstown::testkit::invalid_spec bad = *gen::invalid_spec_value();
  try {
    (void)crosstown::status_set::parse(bad.spec);
    RC_FAIL("accepted " + bad.spec);
  } catch (const crosstown::status_spec_error& e) {
    RC_ASSERT(e.item_index() == bad.item_index);
    RC_ASSERT(e.item() == bad.bad_item);
  }
}

RC_GTEST_PROP(Generators, LifecyclesThatDeliverSentTheirHeaders, ()) {
  const crosstown::testkit::lifecycle l = *gen::lifecycle_value();
  RC_ASSERT(l.status >= 100 && l.status <= 999);
  RC_ASSERT(l.outcome != crosstown::testkit::lifecycle::delivered || l.headers_sent);
}
