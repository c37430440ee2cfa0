// The simulator from an installed package: a few seeded runs of the built-in scenario.
#include <crosstown/sim/simulation.hpp>

#include <cstdio>

int main() {
  for (std::uint64_t seed = 1; seed <= 5; ++seed) {
    crosstown::sim::run_config config;
    config.seed = seed;
    const crosstown::sim::run_result r = crosstown::sim::run_checked(config);
    if (!r.ok()) {
      std::printf("sim consumer: seed %llu broke %s\n", static_cast<unsigned long long>(seed),
                  r.first->invariant.c_str());
      return 1;
    }
  }
  std::printf("sim consumer: 5 runs ok\n");
  return 0;
}
