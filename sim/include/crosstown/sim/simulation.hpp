// crosstown/sim/simulation.hpp - seeded runs of the built-in scenarios, checked by the oracle.
//
// `run_once(config)` plays one world drawn from `config.seed` on the one simulated server
// there is: a small Beast application (an accept loop, keep-alive sessions reading with the
// real `http::async_read`, an idle timeout on `sim_timer`) writing every response with the
// real `crosstown::beast::async_write_response`, over `sim_stream` - exactly as an
// application runs under `run_app` (app_test.hpp), which runs it. The scenario is that
// application's handler and client:
//
//   the client sends its connection's share of requests (gaps drawn, or pipelined) ->
//   the handler defers tasks in two steps (random options: pool or same_thread, no-go sets,
//   always, names that replace/cancel, phases, require_delivery, tasks that throw), thinks
//   on the I/O thread, may cancel a name, reports a status (perhaps first another one) ->
//   the adapter writes the response and reports headers_sent / response_sent when the
//   transport accepted the last byte, or delivery_failed -> the next request on the
//   keep-alive connection ... -> idle timeout, half-close or reset -> connection closed.
//
// The oracle judges from the wire (the bytes the stream accepted and what the adapter told
// the core), not from what the scenario meant to do. A run has a faulty phase (resets at any
// byte, stalls, injected core faults drawn from the seed), then a liveness phase: the network
// heals, faults stop, and every allowed task must run within `liveness_budget` of virtual
// time. `run_checked` adds I7 (the same seed without deferred work completes every response
// at the same virtual time) and, when asked, I8 (the same seed twice gives the same journal).
//
// Mutations are planted bugs in the scenario's server (its session and its simulated
// workers), for proving the oracle catches them. Everything runs on the calling thread and
// starts no thread; runs are independent, so different threads may run different seeds.
#pragma once

#include <crosstown/sim/oracle.hpp>
#include <crosstown/sim/scheduler.hpp>
#include <crosstown/sim/transport.hpp>

#include <crosstown/metrics.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace crosstown::sim {

/// Planted bugs in the scenario's server and its simulated workers (test-only).
enum class mutation : std::uint8_t {
  none,
  sent_at_headers,  ///< the session reports response_sent once the header is written (I1)
  status_200,       ///< the session tells the scope 200 whatever the handler chose (I2)
  cross_release,    ///< completing A's write also reports response_sent on B (I5)
  drop_job,         ///< the simulated workers drop every 13th job (I3)
};

std::string_view to_string(mutation m) noexcept;
std::optional<mutation> parse_mutation(std::string_view text) noexcept;

/// What a run simulates. Rates are probabilities in [0, 1].
struct scenario {
  std::string name = "phone-calls";
  std::uint32_t connections = 4;
  std::uint32_t requests = 16;  ///< per run, spread round-robin over the connections
  std::uint32_t min_tasks = 0;  ///< per request
  std::uint32_t max_tasks = 8;
  bool pipelined = false;  ///< all requests of a connection sent at once
  std::vector<int> statuses{200, 200, 200, 201, 204, 302, 400, 404, 500, 503};
  double same_thread_rate = 0.25;
  double always_rate = 0.1;
  double require_delivery_rate = 0.2;
  double named_rate = 0.2;
  std::uint32_t distinct_names = 4;  ///< names drawn from call-0..call-(n-1): collisions replace
  double cancel_rate = 0.1;
  double headers_phase_rate = 0.1;
  double connection_phase_rate = 0.1;
  double throw_rate = 0.02;
  double status_change_rate = 0.1;  ///< the handler reports a status, then another
  std::uint64_t min_header_bytes = 80, max_header_bytes = 400;
  std::uint64_t min_body_bytes = 1, max_body_bytes = 4000;
  duration max_think{std::chrono::microseconds(300)};  ///< handler step delay
  duration max_request_gap{std::chrono::microseconds(2000)};
  duration keep_alive_timeout{std::chrono::milliseconds(5)};
  link_options link{};
  duration max_extra_latency{std::chrono::microseconds(500)};
  double reset_rate = 0.05;         ///< per connection
  double stall_rate = 0.05;         ///< per connection
  double stall_forever_rate = 0.3;  ///< of stalls: until the network heals
  duration max_stall{std::chrono::milliseconds(5)};
  double half_close_rate = 0.3;  ///< per connection: client half-closes after its last request
  double fault_run_rate = 0.2;   ///< level 1: a run arms the core's fault sites
  double fault_hit_rate = 0.05;  ///< level 2: an armed site fires on a hit
  std::uint32_t workers = 4;
};

/// The built-in scenarios: phone-calls, slow-readers, resets, keep-alive.
std::optional<scenario> scenario_by_name(std::string_view name);
std::vector<std::string> scenario_names();

struct run_config {
  std::uint64_t seed = 1;
  scenario world{};
  strategy_options strategy{};
  mutation planted = mutation::none;
  std::uint64_t step_cap = 20'000'000;
  /// The faulty phase lasts until this virtual time; then the network heals.
  duration fault_horizon{std::chrono::seconds(1)};
  /// After healing, every allowed task must have run within this much virtual time.
  duration liveness_budget{std::chrono::seconds(10)};
  bool defer_tasks = true;    ///< false: the handler draws the same choices but defers nothing
  bool keep_journal = false;  ///< keep journal records (for naming a divergence)
  bool keep_trace = true;
};

struct run_result {
  std::uint64_t seed = 0;
  std::optional<violation> first;  ///< the first invariant broken, if any
  std::string story;               ///< the events leading to it
  std::uint64_t requests = 0;
  std::uint64_t steps = 0;
  std::int64_t end_ns = 0;  ///< virtual time at the end of the run
  metrics_snapshot metrics{};
  std::map<std::string, fault_counts> faults;
  std::uint64_t digest = 0;  ///< of the journal (I8)
  journal log{};
  std::vector<std::uint32_t> schedule;  ///< every scheduling decision (for replay)
  std::vector<event> trace;
  std::map<std::pair<std::uint32_t, std::uint32_t>, std::int64_t> completions;

  bool ok() const noexcept { return !first.has_value(); }
};

/// One run, oracle checks I1-I6.
run_result run_once(const run_config& config);

struct check_options {
  bool no_drag = true;       ///< I7: rerun without deferred work and compare completion times
  bool determinism = false;  ///< I8: rerun identically and compare journals
};

/// `run_once` plus the cross-run checks.
run_result run_checked(const run_config& config, check_options checks = {});

}  // namespace crosstown::sim
