// The built-in scenarios, run by the one simulated server: the scenario's application
// (scenario_server.cpp: a Beast server over sim_stream writing with the real adapter) under
// run_app (app_test.cpp), which drives the phases (driver.cpp) and judges from the wire.
#include <crosstown/sim/simulation.hpp>

#include <crosstown/sim/app_test.hpp>

#include "scenario_server.hpp"

#include <utility>

namespace crosstown::sim {

namespace {

run_result run_scenario(const run_config& config, bool no_drag, bool determinism) {
  detail::scenario_app app = detail::make_scenario_app(config);
  app.config.no_drag = no_drag && config.defer_tasks;
  app.config.determinism = determinism;
  app_result r = run_app(app.config, app.server, app.client);
  run_result out;
  out.seed = config.seed;
  out.first = std::move(r.first);
  out.story = std::move(r.story);
  out.requests = app.counts->requests;
  out.steps = r.steps;
  out.end_ns = r.end_ns;
  out.metrics = r.metrics;
  out.digest = r.digest;
  out.log = std::move(r.log);
  out.schedule = std::move(r.schedule);
  out.faults = std::move(r.faults);
  out.trace = std::move(r.trace);
  out.completions = std::move(r.completions);
  return out;
}

}  // namespace

run_result run_once(const run_config& config) { return run_scenario(config, false, false); }

run_result run_checked(const run_config& config, check_options checks) {
  run_config first = config;
  if (checks.determinism) first.keep_journal = true;  // to name the first divergence
  return run_scenario(first, checks.no_drag, checks.determinism);
}

}  // namespace crosstown::sim
