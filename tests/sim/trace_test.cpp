// Traces: the Chrome Trace Event JSON shape, and the text form.
#include <crosstown/sim/trace.hpp>

#include <crosstown/sim/simulation.hpp>

#include <boost/json.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>
#include <string>

namespace {

using namespace crosstown::sim;
using ::testing::HasSubstr;

run_result small_run() {
  run_config cfg;
  cfg.seed = 11;
  cfg.world = *scenario_by_name("keep-alive");
  cfg.world.requests = 6;
  return run_once(cfg);
}

TEST(Trace, ChromeTraceJsonHasTheTraceEventShape) {
  const run_result r = small_run();
  ASSERT_TRUE(r.ok()) << r.first->message;
  const boost::json::value doc = boost::json::parse(chrome_trace_json(r.trace));
  ASSERT_TRUE(doc.is_object());
  const boost::json::array& events = doc.as_object().at("traceEvents").as_array();
  ASSERT_FALSE(events.empty());
  std::set<std::string> phases, categories;
  for (const boost::json::value& v : events) {
    const boost::json::object& e = v.as_object();
    for (const char* field : {"ph", "ts", "pid", "tid", "name"}) {
      EXPECT_TRUE(e.contains(field))
          << "missing \"" << field << "\" in " << boost::json::serialize(e);
    }
    EXPECT_TRUE(e.at("ph").is_string());
    EXPECT_TRUE(e.at("name").is_string());
    EXPECT_TRUE(e.at("ts").is_number());
    EXPECT_TRUE(e.at("pid").is_int64());
    EXPECT_TRUE(e.at("tid").is_int64());
    const std::string ph(e.at("ph").as_string());
    phases.insert(ph);
    if (ph == "X") {
      EXPECT_TRUE(e.contains("dur"));
      EXPECT_GE(e.at("dur").to_number<double>(), 0.0);
    }
    if (e.contains("cat")) categories.insert(std::string(e.at("cat").as_string()));
  }
  EXPECT_TRUE(phases.count("X"));
  EXPECT_TRUE(phases.count("M"));
  EXPECT_TRUE(categories.count("request"));
  EXPECT_TRUE(categories.count("bytes"));
  EXPECT_TRUE(categories.count("task"));
}

TEST(Trace, TextTraceTellsTheStoryInOrder) {
  const run_result r = small_run();
  const std::string text = text_trace(r.trace);
  EXPECT_THAT(text, HasSubstr("request started"));
  EXPECT_THAT(text, HasSubstr("last byte accepted"));
  EXPECT_THAT(text, HasSubstr("task started"));
  EXPECT_LT(text.find("request started"), text.find("last byte accepted"));
}

}  // namespace
