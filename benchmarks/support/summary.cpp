#include "summary.hpp"

#include <benchmark/benchmark.h>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

namespace crosstown_bench {
namespace {

struct collected {
  std::optional<benchmark::BenchmarkReporter::Run> median;
  std::vector<benchmark::BenchmarkReporter::Run> runs;
  int repetitions = 1;
};

// The console output Google Benchmark would print, plus a copy of every result.
class collecting_reporter final : public benchmark::ConsoleReporter {
 public:
  explicit collecting_reporter(OutputOptions options) : ConsoleReporter(options) {}

  void ReportRuns(const std::vector<Run>& reports) override {
    for (const Run& r : reports) {
      if (r.error_occurred) continue;
      collected& c = results_[r.run_name.str()];
      c.repetitions = static_cast<int>(r.repetitions);
      if (r.run_type == Run::RT_Aggregate) {
        if (r.aggregate_name == "median") c.median = r;
      } else {
        c.runs.push_back(r);
      }
    }
    ConsoleReporter::ReportRuns(reports);
  }

  const std::map<std::string, collected>& results() const { return results_; }

 private:
  std::map<std::string, collected> results_;
};

std::optional<double> metric_of(const benchmark::BenchmarkReporter::Run& r,
                                const std::string& metric) {
  if (metric == "real_time") return r.GetAdjustedRealTime();
  if (metric == "cpu_time") return r.GetAdjustedCPUTime();
  auto it = r.counters.find(metric);
  if (it == r.counters.end()) return std::nullopt;
  return it->second.value;
}

std::optional<double> median_of(const collected& c, const std::string& metric) {
  if (c.median) return metric_of(*c.median, metric);
  std::vector<double> values;
  for (const auto& r : c.runs) {
    if (auto v = metric_of(r, metric)) values.push_back(*v);
  }
  if (values.empty()) return std::nullopt;
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

std::string number(double v) {
  char buf[32];
  if (v != 0 && (v >= 1e6 || v < 1e-2)) {
    std::snprintf(buf, sizeof buf, "%.3g", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f", v);
  }
  return buf;
}

std::string render(const std::string& suite, const std::vector<comparison>& comparisons,
                   const std::map<std::string, collected>& results) {
  int repetitions = 1;
  bool from_aggregates = false;
  for (const auto& [name, c] : results) {
    repetitions = std::max(repetitions, c.repetitions);
    from_aggregates = from_aggregates || c.median.has_value();
  }
  std::ostringstream out;
  out << "\n== " << suite << ": crosstown vs baselines (medians of " << repetitions
      << (repetitions == 1 ? " run" : " repetitions")
      << (from_aggregates ? ", from the median aggregates" : "") << ") ==\n";
  char line[512];
  std::snprintf(line, sizeof line, "%-52s %-18s %12s %12s %9s  %-10s %s\n", "comparison", "metric",
                "crosstown", "baseline", "ratio", "target", "");
  out << line;
  for (const comparison& c : comparisons) {
    auto find = [&](const std::string& name) -> std::optional<double> {
      auto it = results.find(name);
      if (it == results.end()) return std::nullopt;
      return median_of(it->second, c.metric);
    };
    const std::optional<double> subject = find(c.subject);
    if (!subject) continue;  // filtered out, or not run
    std::optional<double> base;
    if (!c.baseline.empty()) {
      base = find(c.baseline);
      if (!base) continue;
    }
    const double value = base ? (*base != 0 ? *subject / *base : 0) : *subject;
    std::string target = c.op.empty() ? "-" : c.op + " " + number(c.bound);
    std::string verdict;
    if (!c.op.empty()) {
      const bool met = c.op == "<=" ? value <= c.bound : value >= c.bound;
      verdict = met ? "met" : "MISSED";
    }
    std::snprintf(line, sizeof line, "%-52s %-18s %12s %12s %9s  %-10s %s\n", c.label.c_str(),
                  c.metric.c_str(), number(*subject).c_str(), base ? number(*base).c_str() : "-",
                  base ? number(value).c_str() : "-", target.c_str(), verdict.c_str());
    out << line;
    if (!c.note.empty()) out << "    " << c.note << '\n';
  }
  return out.str();
}

}  // namespace

int run_suite(int argc, char** argv, const std::string& suite,
              const std::vector<comparison>& comparisons) {
  std::string summary_path;
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    constexpr const char* flag = "--crosstown_summary=";
    if (std::strncmp(argv[i], flag, std::strlen(flag)) == 0) {
      summary_path = argv[i] + std::strlen(flag);
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  argv[argc] = nullptr;

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  auto options = benchmark::ConsoleReporter::OO_Tabular;
  if (isatty(STDOUT_FILENO) != 0) {
    options = static_cast<benchmark::ConsoleReporter::OutputOptions>(
        options | benchmark::ConsoleReporter::OO_Color);
  }
  collecting_reporter reporter(options);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();

  const std::string text = render(suite, comparisons, reporter.results());
  std::cout << text << std::flush;
  if (!summary_path.empty()) {
    std::ofstream file(summary_path, std::ios::app);
    file << text;
  }
  return 0;
}

}  // namespace crosstown_bench
