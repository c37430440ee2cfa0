// crosstown/sim/gtest.hpp - GoogleTest integration of app_test.hpp (header-only; include it in
// a test that links GoogleTest).
//
//     TEST(MyServer, HoldsUnderTheSimulator) {
//       crosstown::sim::expect_app_holds({}, start_my_server, my_client_script, my_checks);
//     }
//
// runs `app_seed_count()` seeds (1,000 unless the environment variable CROSSTOWN_SIM_RUNS
// says otherwise) and, on the first failure, fails the test with the seed, the invariant, the
// story and the replay command: the same test binary with CROSSTOWN_SIM_SEED=<seed>, which
// makes the helper run that one seed.
#pragma once

#include <crosstown/sim/app_test.hpp>

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace crosstown::sim {

/// CROSSTOWN_SIM_RUNS if set (a positive number), else `fallback`.
inline std::uint64_t app_seed_count(std::uint64_t fallback = 1000) {
  const char* text = std::getenv("CROSSTOWN_SIM_RUNS");
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  const unsigned long long n = std::strtoull(text, &end, 10);
  return end != nullptr && *end == '\0' && n > 0 ? n : fallback;
}

/// Runs the seeds (or the one of CROSSTOWN_SIM_SEED) and fails the current test at the first
/// violation. Returns the summary, for tests that expect a failure.
inline app_seeds_result run_app_test(app_config config, const server_factory& server,
                                     const client_script& client, const app_check& check = {},
                                     std::uint64_t runs = app_seed_count()) {
  std::uint64_t first = 1;
  if (const char* seed = std::getenv("CROSSTOWN_SIM_SEED"); seed != nullptr && *seed != '\0') {
    first = std::strtoull(seed, nullptr, 10);
    runs = 1;
  }
  const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
  if (test != nullptr) {
    config.replay_prefix = std::string("--gtest_filter=") + test->test_suite_name() + "." +
                           test->name() + " CROSSTOWN_SIM_SEED=";
  }
  return run_app_seeds(config, first, runs, server, client, check);
}

/// `run_app_test` that must pass.
inline void expect_app_holds(app_config config, const server_factory& server,
                             const client_script& client, const app_check& check = {},
                             std::uint64_t runs = app_seed_count()) {
  const app_seeds_result r = run_app_test(std::move(config), server, client, check, runs);
  if (r.failure)
    ADD_FAILURE() << "simulated run failed after " << r.runs << " seeds: " << describe(*r.failure);
}

}  // namespace crosstown::sim
