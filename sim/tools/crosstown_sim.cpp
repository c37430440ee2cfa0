// crosstown-sim: run seeded simulations of a server using crosstown and check invariants I1-I8.
//
// Exit status: 0 when every run kept every invariant, 1 on a violation (the replay command is
// printed), 2 on bad arguments (the message names the argument).
#include <crosstown/sim/simulation.hpp>
#include <crosstown/sim/trace.hpp>

#include <crosstown/fault.hpp>

#ifdef CROSSTOWN_SIM_WITH_DEMO
#include "demo_sim.hpp"  // examples/demo: the demo app's real server under the simulator
#endif

#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace crosstown::sim;

constexpr const char* usage = R"(usage: crosstown-sim [options]

Runs seeded simulations of a server that defers work with crosstown - virtual time, a
byte-level network with resets and stalls, a controlled scheduler - and checks invariants
I1-I8 on every run. Run i uses seed (--seed + i). A scenario is a handler and a client
script run by a Beast server on the simulated stream, writing with the real
crosstown::beast adapter.

  --scenario NAME         phone-calls (default), slow-readers, resets, keep-alive
  --app demo              run the demo app instead: its own server, handler and the real
                          Beast adapter on the simulated stream (--seed, --runs,
                          --connections, --strategy, --reset-rate, --stall-rate,
                          --determinism-every, --no-drag-check, --trace, --text-trace
                          and --quiet apply)
  --app-bug NAME          with --app demo: run a copy of the demo with a planted bug:
                          stale-scope, sent-before-write, ignore-write-error,
                          blocking-task, control (the copy without a bug)
  --seed N                first seed (default 1)
  --runs N                number of runs (default 100)
  --requests N            requests per run (default: the scenario's)
  --connections N         concurrent connections per run (default: the scenario's)
  --tasks N               deferred tasks per request (default: the scenario's)
  --strategy S            fifo | random (default) | pct | replay
  --pct-depth D           PCT depth (default 3)
  --schedule FILE         decisions to replay (with --strategy replay)
  --save-schedule FILE    write the last run's decisions (for --strategy replay)
  --reset-rate P          probability that a connection resets at a random byte
  --stall-rate P          probability that a client stops reading at a random byte
  --half-close-rate P     probability that a client half-closes after its last request
  --fault-rate P          probability that a run arms the core's fault sites
  --fault-hit-rate P      probability that an armed fault site fires on a hit
  --determinism-every N   run-twice determinism check every N runs (default 100, 0: off)
  --no-drag-check         skip the I7 rerun without deferred tasks
  --trace FILE            write the failing (else the first) run as Chrome Trace JSON
  --text-trace FILE       write the same run as text
  --mutation NAME         test-only planted bug: sent-at-headers, status-200,
                          cross-release, drop-job
  --quiet                 no progress line
  --help                  this text
)";

struct bad_argument {
  std::string message;
};

struct options {
  std::string scenario_name = "phone-calls";
  std::string app;      // "demo": the demo app's own server instead of a scenario
  std::string app_bug;  // --app-bug: a planted bug in a copy of the app (checked by the app)
  std::uint64_t seed = 1;
  std::uint64_t runs = 100;
  std::optional<std::uint32_t> requests, connections, tasks;
  strategy_options strategy{};
  std::optional<double> reset_rate, stall_rate, half_close_rate, fault_rate, fault_hit_rate;
  std::uint64_t determinism_every = 100;
  bool no_drag = true;
  std::string trace_file, text_trace_file, schedule_file, save_schedule_file;
  mutation planted = mutation::none;
  bool quiet = false;
  bool help = false;
  std::vector<std::string> replay_args;  // the arguments that shape a run, for the replay line
};

template <class T>
T parse_number(std::string_view name, std::string_view text) {
  T value{};
  const auto* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || ptr != end || text.empty()) {
    throw bad_argument{std::string(name) + ": expected a non-negative integer, got '" +
                       std::string(text) + "'"};
  }
  return value;
}

double parse_rate(std::string_view name, std::string_view text) {
  double value = -1;
  std::istringstream in{std::string(text)};
  in >> value;
  if (in.fail() || !in.eof() || value < 0 || value > 1) {
    throw bad_argument{std::string(name) + ": expected a probability between 0 and 1, got '" +
                       std::string(text) + "'"};
  }
  return value;
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_value = false;
    if (const auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    auto next = [&]() -> std::string {
      if (has_value) return value;
      if (i + 1 >= argc) throw bad_argument{arg + ": missing value"};
      return argv[++i];
    };
    auto keep = [&](const std::string& v) {
      o.replay_args.push_back(arg);
      o.replay_args.push_back(v);
    };
    if (arg == "--help" || arg == "-h") {
      o.help = true;
    } else if (arg == "--quiet") {
      o.quiet = true;
    } else if (arg == "--no-drag-check") {
      o.no_drag = false;
      o.replay_args.push_back(arg);
    } else if (arg == "--scenario") {
      o.scenario_name = next();
      if (!scenario_by_name(o.scenario_name)) {
        throw bad_argument{"--scenario: unknown scenario '" + o.scenario_name +
                           "' (phone-calls, slow-readers, resets, keep-alive)"};
      }
    } else if (arg == "--app") {
      o.app = next();
      if (o.app != "demo") throw bad_argument{"--app: unknown app '" + o.app + "' (demo)"};
    } else if (arg == "--app-bug") {
      o.app_bug = next();
      keep(o.app_bug);
    } else if (arg == "--seed") {
      o.seed = parse_number<std::uint64_t>(arg, next());
    } else if (arg == "--runs") {
      o.runs = parse_number<std::uint64_t>(arg, next());
      if (o.runs == 0) throw bad_argument{"--runs: must be at least 1"};
    } else if (arg == "--requests") {
      const std::string v = next();
      o.requests = parse_number<std::uint32_t>(arg, v);
      keep(v);
    } else if (arg == "--connections") {
      const std::string v = next();
      o.connections = parse_number<std::uint32_t>(arg, v);
      if (*o.connections == 0) throw bad_argument{"--connections: must be at least 1"};
      keep(v);
    } else if (arg == "--tasks") {
      const std::string v = next();
      o.tasks = parse_number<std::uint32_t>(arg, v);
      keep(v);
    } else if (arg == "--strategy") {
      const std::string v = next();
      const auto k = parse_strategy(v);
      if (!k)
        throw bad_argument{"--strategy: unknown strategy '" + v + "' (fifo, random, pct, replay)"};
      o.strategy.kind = *k;
      if (*k != strategy_kind::replay) keep(v);
    } else if (arg == "--pct-depth") {
      const std::string v = next();
      o.strategy.pct_depth = parse_number<std::uint32_t>(arg, v);
      if (o.strategy.pct_depth == 0) throw bad_argument{"--pct-depth: must be at least 1"};
      keep(v);
    } else if (arg == "--schedule") {
      o.schedule_file = next();
    } else if (arg == "--save-schedule") {
      o.save_schedule_file = next();
    } else if (arg == "--reset-rate") {
      const std::string v = next();
      o.reset_rate = parse_rate(arg, v);
      keep(v);
    } else if (arg == "--stall-rate") {
      const std::string v = next();
      o.stall_rate = parse_rate(arg, v);
      keep(v);
    } else if (arg == "--half-close-rate") {
      const std::string v = next();
      o.half_close_rate = parse_rate(arg, v);
      keep(v);
    } else if (arg == "--fault-rate") {
      const std::string v = next();
      o.fault_rate = parse_rate(arg, v);
      keep(v);
    } else if (arg == "--fault-hit-rate") {
      const std::string v = next();
      o.fault_hit_rate = parse_rate(arg, v);
      keep(v);
    } else if (arg == "--determinism-every") {
      o.determinism_every = parse_number<std::uint64_t>(arg, next());
    } else if (arg == "--trace") {
      o.trace_file = next();
    } else if (arg == "--text-trace") {
      o.text_trace_file = next();
    } else if (arg == "--mutation") {
      const std::string v = next();
      const auto m = parse_mutation(v);
      if (!m) {
        throw bad_argument{"--mutation: unknown mutation '" + v +
                           "' (sent-at-headers, status-200, cross-release, drop-job)"};
      }
      o.planted = *m;
      keep(v);
    } else {
      throw bad_argument{"unknown argument '" + std::string(argv[i]) + "' (see --help)"};
    }
  }
  if (!o.app_bug.empty() && o.app.empty()) throw bad_argument{"--app-bug: needs --app demo"};
  if (o.strategy.kind == strategy_kind::replay) {
    if (o.schedule_file.empty()) throw bad_argument{"--strategy replay: needs --schedule FILE"};
    std::ifstream in(o.schedule_file);
    if (!in) throw bad_argument{"--schedule: cannot read '" + o.schedule_file + "'"};
    std::uint32_t d = 0;
    while (in >> d) o.strategy.schedule.push_back(d);
  }
  return o;
}

bool write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  return static_cast<bool>(out);
}

// The progress line: rewritten in place on a terminal, one line per report otherwise.
void print_progress(bool tty, std::uint64_t done, std::uint64_t runs) {
  std::fprintf(stderr, tty ? "\r  run %llu/%llu" : "  run %llu/%llu\n",
               static_cast<unsigned long long>(done), static_cast<unsigned long long>(runs));
  std::fflush(stderr);
}

// Writes `events`, the run of `seed`, to the --trace and --text-trace files asked for; false,
// the reason on stderr, when one cannot be written.
bool write_traces(const options& opt, std::uint64_t seed, const std::vector<event>& events) {
  if (!opt.trace_file.empty()) {
    if (!write_file(opt.trace_file, chrome_trace_json(events))) {
      std::cerr << "crosstown-sim: --trace: cannot write '" << opt.trace_file << "'\n";
      return false;
    }
    std::cout << "  trace (seed " << seed << ") written to " << opt.trace_file << "\n";
  }
  if (!opt.text_trace_file.empty() && !write_file(opt.text_trace_file, text_trace(events))) {
    std::cerr << "crosstown-sim: --text-trace: cannot write '" << opt.text_trace_file << "'\n";
    return false;
  }
  return true;
}

// --app demo: run_app over the demo's server, client script and checks, with a summary.
int run_demo_app(const options& opt) {
#ifndef CROSSTOWN_SIM_WITH_DEMO
  (void)opt;
  std::cerr << "crosstown-sim: --app demo: this crosstown-sim was built without the examples\n";
  return 2;
#else
  crosstown_demo::demo_sim_options demo_options;
  if (!opt.app_bug.empty()) {
    const std::optional<crosstown_demo::demo_bug> bug = crosstown_demo::parse_demo_bug(opt.app_bug);
    if (!bug || *bug == crosstown_demo::demo_bug::none) {
      std::cerr << "crosstown-sim: --app-bug: unknown bug '" << opt.app_bug
                << "' (stale-scope, sent-before-write, ignore-write-error, blocking-task, "
                   "control)\n";
      return 2;
    }
    demo_options.bug = *bug;
  }
  const crosstown_demo::demo_sim_parts parts = crosstown_demo::make_demo_sim(demo_options);
  app_config cfg = crosstown_demo::demo_sim_config();
  cfg.strategy = opt.strategy;
  if (opt.connections) cfg.connections = *opt.connections;
  if (opt.reset_rate) cfg.reset_rate = *opt.reset_rate;
  if (opt.stall_rate) cfg.stall_rate = *opt.stall_rate;
  cfg.no_drag = opt.no_drag;
  cfg.replay_prefix = "crosstown-sim --app demo --runs 1";
  for (const std::string& a : opt.replay_args) cfg.replay_prefix += " " + a;
  cfg.replay_prefix += " --seed ";
  const bool tty = isatty(STDERR_FILENO) != 0;
  const bool progress = !opt.quiet && (tty || opt.runs > 1000);
  const std::uint64_t step = std::max<std::uint64_t>(1, opt.runs / (tty ? 100 : 10));
  std::cout << "crosstown-sim: app demo, strategy " << to_string(cfg.strategy.kind) << ", seeds "
            << opt.seed << ".." << opt.seed + opt.runs - 1 << "\n";
  std::uint64_t runs_done = 0, responses = 0, tasks = 0, steps = 0, determinism_checks = 0;
  std::optional<app_result> failed;
  std::optional<app_result> first;  // kept for --trace / --text-trace when nothing fails
  const bool tracing = !opt.trace_file.empty() || !opt.text_trace_file.empty();
  const auto started = std::chrono::steady_clock::now();
  for (std::uint64_t i = 0; i < opt.runs; ++i) {
    cfg.seed = opt.seed + i;
    cfg.determinism = opt.determinism_every != 0 && i % opt.determinism_every == 0;
    determinism_checks += cfg.determinism ? 1 : 0;
    app_result r = run_app(cfg, parts.server, parts.client, parts.check);
    ++runs_done;
    responses += r.responses;
    tasks += r.tasks_ran;
    steps += r.steps;
    if (progress && (i + 1) % step == 0) print_progress(tty, i + 1, opt.runs);
    if (!r.ok()) {
      failed = std::move(r);
      break;
    }
    if (i == 0 && tracing) first = std::move(r);
  }
  if (progress && tty) std::fprintf(stderr, "\n");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  auto row = [](const char* name, auto value) {
    std::cout << "  " << name << std::string(24 - std::string_view(name).size(), ' ') << value
              << "\n";
  };
  row("runs", runs_done);
  row("simulated requests", responses);
  row("tasks run", tasks);
  row("scheduler steps", steps);
  row("determinism checks", determinism_checks);
  row("violations", failed ? 1 : 0);
  char rate[64];
  std::snprintf(rate, sizeof rate, "%.0f",
                seconds > 0 ? static_cast<double>(responses) / seconds : 0.0);
  char wall[64];
  std::snprintf(wall, sizeof wall, "%.2f s", seconds);
  row("wall time", wall);
  row("simulated requests/s", rate);
  // The failing run (else the first) as a trace: the app's requests, the bytes its writes put
  // on the wire, its tasks.
  const app_result* to_trace = failed ? &*failed : first ? &*first : nullptr;
  if (to_trace != nullptr && !write_traces(opt, to_trace->seed, to_trace->trace)) return 2;
  if (failed) {
    std::cout << "\nVIOLATION " << failed->first->invariant << " (seed " << failed->seed
              << ", app demo)\n  " << failed->first->message << "\n";
    if (!failed->story.empty()) std::cout << "events leading there:\n" << failed->story;
    std::cout << "replay:\n  " << failed->replay << "\n";
    return 1;
  }
  return 0;
#endif
}

}  // namespace

int main(int argc, char** argv) {
  options opt;
  try {
    opt = parse(argc, argv);
  } catch (const bad_argument& e) {
    std::cerr << "crosstown-sim: " << e.message << "\n";
    return 2;
  }
  if (opt.help) {
    std::cout << usage;
    return 0;
  }
  if (!opt.app.empty()) return run_demo_app(opt);

  run_config cfg;
  cfg.world = *scenario_by_name(opt.scenario_name);
  scenario& w = cfg.world;
  if (opt.requests) w.requests = *opt.requests;
  if (opt.connections) w.connections = *opt.connections;
  if (opt.tasks) w.min_tasks = w.max_tasks = *opt.tasks;
  if (opt.reset_rate) w.reset_rate = *opt.reset_rate;
  if (opt.stall_rate) w.stall_rate = *opt.stall_rate;
  if (opt.half_close_rate) w.half_close_rate = *opt.half_close_rate;
  if (opt.fault_rate) w.fault_run_rate = *opt.fault_rate;
  if (opt.fault_hit_rate) w.fault_hit_rate = *opt.fault_hit_rate;
  cfg.strategy = opt.strategy;
  cfg.strategy.pct_steps = std::uint64_t{w.requests} * (w.max_tasks * 3 + 40);
  cfg.planted = opt.planted;

  const bool tty = isatty(STDERR_FILENO) != 0;
  const bool progress = !opt.quiet && (tty || opt.runs > 1000);
  const std::uint64_t step = std::max<std::uint64_t>(1, opt.runs / (tty ? 100 : 10));

  std::cout << "crosstown-sim: scenario " << w.name << ", strategy " << to_string(cfg.strategy.kind)
            << ", seeds " << opt.seed << ".." << opt.seed + opt.runs - 1 << "\n";

  crosstown::metrics_snapshot total{};
  std::uint64_t requests = 0, determinism_checks = 0;
  std::map<std::string, fault_counts> faults;
  std::optional<run_result> failed;
  std::optional<run_result> traced;
  std::vector<std::uint32_t> last_schedule;
  std::uint64_t runs_done = 0;
  const auto started = std::chrono::steady_clock::now();
  // CPU time as well as wall time: a run starts no thread, so this process's CPU time is the
  // simulation's, which a loaded machine disturbs much less than wall time (the benchmark,
  // suite 5, reports per CPU second too).
  const std::clock_t cpu_started = std::clock();
  for (std::uint64_t i = 0; i < opt.runs; ++i) {
    cfg.seed = opt.seed + i;
    check_options checks;
    checks.no_drag = opt.no_drag;
    checks.determinism = opt.determinism_every != 0 && i % opt.determinism_every == 0;
    determinism_checks += checks.determinism ? 1 : 0;
    run_result r;
    try {
      r = run_checked(cfg, checks);
    } catch (const replay_divergence& e) {
      std::cerr << "crosstown-sim: " << e.what() << "\n";
      return 2;
    }
    ++runs_done;
    requests += r.requests;
    const auto& m = r.metrics;
    total += m;
    for (const auto& [site, c] : r.faults) {
      faults[site].hits += c.hits;
      faults[site].fired += c.fired;
    }
    last_schedule = r.schedule;
    if (progress && (i + 1) % step == 0) print_progress(tty, i + 1, opt.runs);
    if (!r.ok()) {
      failed = std::move(r);
      break;
    }
    if (i == 0 && (!opt.trace_file.empty() || !opt.text_trace_file.empty())) traced = std::move(r);
  }
  if (progress && tty) std::fprintf(stderr, "\n");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const double cpu_seconds =
      static_cast<double>(std::clock() - cpu_started) / static_cast<double>(CLOCKS_PER_SEC);

  auto row = [](const char* name, auto value) {
    std::cout << "  " << name << std::string(24 - std::string_view(name).size(), ' ') << value
              << "\n";
  };
  row("runs", runs_done);
  row("simulated requests", requests);
  row("tasks registered", total.registered);
  for (crosstown::task_state state : crosstown::terminal_states) {
    // Jobs refused in a simulation were refused by an injected fault.
    const std::string name = state == crosstown::task_state::rejected_by_executor
                                 ? std::string("  rejected (faults)")
                                 : "  " + std::string(to_string(state));
    row(name.c_str(), total.count(state));
  }
  for (const auto& [site, c] : faults) {
    row("fault site",
        site + ": fired " + std::to_string(c.fired) + " of " + std::to_string(c.hits) + " hits");
  }
  row("determinism checks", determinism_checks);
  row("violations", failed ? 1 : 0);
  char rate[64];
  std::snprintf(rate, sizeof rate, "%.0f",
                seconds > 0 ? static_cast<double>(requests) / seconds : 0.0);
  char wall[64];
  std::snprintf(wall, sizeof wall, "%.2f s", seconds);
  char cpu[64];
  std::snprintf(cpu, sizeof cpu, "%.2f s", cpu_seconds);
  char cpu_rate[64];
  std::snprintf(cpu_rate, sizeof cpu_rate, "%.0f",
                cpu_seconds > 0 ? static_cast<double>(requests) / cpu_seconds : 0.0);
  row("wall time", wall);
  row("simulated requests/s", rate);
  row("CPU time", cpu);
  row("requests per CPU s", cpu_rate);

  const run_result* to_trace = failed ? &*failed : traced ? &*traced : nullptr;
  if (to_trace != nullptr && !write_traces(opt, to_trace->seed, to_trace->trace)) return 2;
  if (!opt.save_schedule_file.empty()) {
    std::string text;
    for (std::uint32_t d : (failed ? failed->schedule : last_schedule))
      text += std::to_string(d) + "\n";
    if (!write_file(opt.save_schedule_file, text)) {
      std::cerr << "crosstown-sim: --save-schedule: cannot write '" << opt.save_schedule_file
                << "'\n";
      return 2;
    }
  }

  if (failed) {
    std::cout << "\nVIOLATION " << failed->first->invariant << " (seed " << failed->seed
              << ", strategy " << to_string(cfg.strategy.kind) << ", scenario " << w.name << ")\n  "
              << failed->first->message << "\n";
    if (!failed->story.empty()) std::cout << "events leading there:\n" << failed->story;
    std::cout << "replay:\n  crosstown-sim --scenario " << w.name;
    for (const std::string& a : opt.replay_args) std::cout << ' ' << a;
    std::cout << " --seed " << failed->seed << " --runs 1";
    if (cfg.strategy.kind == strategy_kind::replay)
      std::cout << " --strategy replay --schedule " << opt.schedule_file;
    std::cout << "\n";
    return 1;
  }
  return 0;
}
