// benchmarks/support/summary.hpp - runs a suite and prints crosstown-vs-baseline ratios.
//
// Each suite's `main` lists its comparisons and calls `run_suite`. Benchmarks run as usual
// (every Google Benchmark flag works); a reporter also collects the results and, at the end,
// prints one line per comparison: the subject's and the baseline's value of a metric, their
// ratio, the target and whether it is met. Values are medians: the `median` aggregate when
// the run used `--benchmark_repetitions=N` (recommended, with
// `--benchmark_report_aggregates_only=true`), otherwise the median of the runs seen.
//
// `--crosstown_summary=FILE` also appends the summary to FILE (used by benchmarks/run.sh).
// The summary reports; it never fails the run, whatever the ratios.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace crosstown_bench {

/// One line of the summary: `metric(subject) / metric(baseline)` checked against a target,
/// or, with no baseline, `metric(subject)` itself.
struct comparison {
  std::string label{};     ///< what is compared, e.g. "registration, 10 per scope"
  std::string subject{};   ///< run name of the crosstown benchmark
  std::string baseline{};  ///< run name of the baseline; empty: an absolute check
  /// A counter name, or "real_time" / "cpu_time" (per iteration, in the run's time unit).
  std::string metric{};
  /// Target on the ratio (or value): "<=" or ">=" and a bound; no op means "report only".
  std::string op{};
  double bound = 0;
  std::string note{};  ///< printed after the line, e.g. how the target was phrased
};

/// Initializes Google Benchmark, runs the selected benchmarks, prints the summary.
int run_suite(int argc, char** argv, const std::string& suite,
              const std::vector<comparison>& comparisons);

}  // namespace crosstown_bench
