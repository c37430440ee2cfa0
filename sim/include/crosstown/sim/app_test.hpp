// crosstown/sim/app_test.hpp - run an application's own server under the simulator.
//
// `run_app(config, server, client, check)` builds one simulated world from `config.seed` and
// runs the application's real code in it:
//
//   - `server(env)` starts the application's server: it makes a `sim_acceptor` on
//     `env.network()` with `env.server_executor()` and runs its accept loop and sessions as in
//     production, its sessions templated on the stream (`sim_stream`) and the timer
//     (`sim_timer`), using the real `http::async_read` and `crosstown::beast` writes, and
//     creating its scopes from `env.runtime()`;
//   - `client(conn)` is called for each of `config.connections` client connections (each on
//     its own io_actor, over a link whose latency, stall and reset are drawn from the seed) and
//     starts whatever it sends and reads on `conn.stream`;
//   - `check(env)` (optional) runs at the end: the application's own invariants over its own
//     state, reported with `env.fail(invariant, message)`.
//
// Every task the application defers is routed (`runtime::redirect_all_to`) to simulated
// workers - or, if `env.watch(scope)` showed it as `same_thread`, run at once on the I/O actor
// that reported the phase - and its terminal state is observed (`runtime_options::on_settled`).
// An awaitable task (a callable returning `boost::asio::awaitable<void>`) is handed over as in
// production, at once, and starts as a coroutine on the run's "tasks io" io_actor
// (`redirect_awaitables`), stepped by the seeded scheduler like the connections; its
// timeouts, retry backoffs and lane waits are on the run's `sim_task_clock` (task_clock.hpp),
// which `env.task_clock()` also gives the application for its own waits. Lanes limit in-flight
// tasks as in production. The runtime starts no I/O thread.
// Which request a task belongs to is known without help from the application: after every step
// the world reads the runtime's last scope id (`runtime::last_request_id`), so the ids of the
// scopes created during a step - and so the connection and the request order - are known. The wire
// shows the rest: the server end's accepted bytes are parsed as HTTP responses (status, header
// accepted, last byte accepted) and resets, closes and write errors mark responses as failed. The
// oracle checks, for the application's tasks:
//
//   I1 after     a task is released only after its response's header went out (its phase, if
//                watched: header / last byte accepted / connection closed), or the delivery
//                failed or the connection closed;
//   I2 status    (watched tasks) no task whose no-go set holds the status on the wire runs;
//   I3 once      no task is released twice or after it settled; every released task runs;
//                nothing is rejected or dropped; and the delivery rule (watched tasks): a task
//                that requires delivery is released only if the wire shows it delivered;
//   I4 order     one hand-off releases a response's tasks in registration order;
//   I5 isolation a task is released only on its own connection, and not by the completion of
//                a write of another response on it;
//   I6 accounting the runtime's terminal counters match the states observed;
//   I7 no drag   the same seed with every deferred task dropped completes every response at
//                the same virtual time (a task that `spend`s time on the I/O actor breaks it);
//   I8 determinism (with `determinism`) the same seed twice gives the same journal.
//
// `env.watch(scope)` (optional, once the handler has deferred, e.g. right before writing)
// shows the oracle the scope's pending tasks with their options; without it the checks that
// need a task's options are skipped and `same_thread` tasks run on simulated workers. A no-op
// outside the simulator is what production passes in its place.
//
// `run_app_seeds` runs many seeds and stops at the first failure; its result carries the seed,
// the invariant, the story (the events leading to the violation) and the replay command.
// Everything runs on the calling thread, on virtual time: no real clock, no thread.
#pragma once

#include <crosstown/sim/asio.hpp>
#include <crosstown/sim/oracle.hpp>
#include <crosstown/sim/scheduler.hpp>
#include <crosstown/sim/task_clock.hpp>

#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace crosstown::sim {

struct app_config {
  std::uint64_t seed = 1;
  std::uint32_t connections = 3;
  strategy_options strategy{};
  link_options link{};
  duration max_extra_latency{std::chrono::microseconds(500)};
  double reset_rate = 0.15;  ///< per connection: reset at a byte drawn below max_reset_byte
  std::uint64_t max_reset_byte = 3000;
  double stall_rate = 0.15;  ///< per connection: the client stops reading at a byte
  double stall_forever_rate = 0.2;
  duration max_stall{std::chrono::milliseconds(5)};
  std::uint32_t workers = 2;
  duration min_cost{std::chrono::microseconds(1)};
  duration max_cost{std::chrono::microseconds(300)};
  /// Faults until this virtual time; then the network heals.
  duration fault_horizon{std::chrono::seconds(1)};
  /// After healing, everything must settle within this much virtual time.
  duration liveness_budget{std::chrono::seconds(10)};
  std::uint64_t step_cap = 5'000'000;
  bool no_drag = true;       ///< I7: rerun with deferred work dropped
  bool determinism = false;  ///< I8: rerun identically, compare journals
  bool keep_trace = true;
  /// Keep the journal's records in `app_result::log` (for naming a divergence).
  bool keep_journal = false;
  /// Test-only: the simulated workers drop every n-th job they are handed (0: none), a
  /// planted executor bug the oracle must catch (I3).
  std::uint32_t drop_every = 0;
  /// The core's fault sites (`crosstown::fault::hit`): a run arms them with `fault_run_rate`;
  /// an armed site fires on a hit with `fault_hit_rate`, until the network heals. Tasks an
  /// injected fault loses (the executor refused their batch) are not violations.
  double fault_run_rate = 0.0;
  double fault_hit_rate = 0.0;
  /// What `replay` starts with; the seed is appended.
  std::string replay_prefix = "CROSSTOWN_SIM_SEED=";
};

class app_env;

/// A client connection, for the client script.
struct client_conn {
  sim_stream stream;
  std::uint32_t index = 0;  ///< from 1, the connection's number
  rng* draws = nullptr;     ///< the connection's seeded generator, for the script's choices
  io_actor* actor = nullptr;
  app_env* env = nullptr;
};

class app_world;

/// What the application's server and checks see of the simulated world.
class app_env {
 public:
  explicit app_env(app_world& w) noexcept : world_(w) {}
  crosstown::runtime& runtime() noexcept;
  sim_network& network() noexcept;
  /// The executor of the listener's io_actor (for the acceptor and the accept loop).
  net::any_io_executor server_executor() noexcept;
  /// A generator for the application's own seeded choices.
  rng& draws() noexcept;
  std::int64_t now_ns() const noexcept;
  /// The run's task clock (virtual time): what awaitable tasks and the application wait on.
  crosstown::task_clock& task_clock() noexcept;
  /// Shows the oracle the scope's pending tasks and their options (see the file comment).
  void watch(const response_scope& scope);
  /// Reports a violation of one of the application's own invariants.
  void fail(std::string invariant, std::string message);

 private:
  app_world& world_;
};

using server_factory = std::function<std::shared_ptr<void>(app_env&)>;
using client_script = std::function<void(client_conn&)>;
using app_check = std::function<void(app_env&)>;

struct app_result {
  std::uint64_t seed = 0;
  std::optional<violation> first;
  std::string story;
  std::string replay;  ///< the one-line replay command
  std::uint64_t steps = 0;
  std::int64_t end_ns = 0;
  std::uint64_t responses = 0;  ///< responses whose last byte was accepted
  std::uint64_t tasks_ran = 0;
  std::uint64_t digest = 0;
  /// Per (connection, response): last byte accepted at (ns), or -(failed at) - 1.
  std::map<std::pair<std::uint32_t, std::uint32_t>, std::int64_t> completions;
  /// The run's events (with `keep_trace`): connections, requests (the scopes the application
  /// created), the bytes its writes put on the wire, headers and last bytes accepted, resets,
  /// and its tasks released, started and finished. For `chrome_trace_json` / `text_trace`
  /// (trace.hpp); empty for the I7 rerun.
  std::vector<event> trace;
  /// The runtime's counters at the end of the run.
  metrics_snapshot metrics{};
  /// Every scheduling decision (for `strategy_kind::replay`).
  std::vector<std::uint32_t> schedule;
  /// The run's journal (its records only with `keep_journal`).
  journal log{};
  /// The core's fault sites hit in the run, by name.
  std::map<std::string, fault_counts> faults;

  bool ok() const noexcept { return !first.has_value(); }
};

/// One seed.
app_result run_app(const app_config& config, const server_factory& server,
                   const client_script& client, const app_check& check = {});

struct app_seeds_result {
  std::uint64_t runs = 0;
  std::uint64_t responses = 0;
  std::uint64_t tasks_ran = 0;
  std::optional<app_result> failure;  ///< the first failing seed, if any
  bool ok() const noexcept { return !failure.has_value(); }
};

/// Seeds `first_seed .. first_seed + runs - 1`, stopping at the first failure.
app_seeds_result run_app_seeds(app_config config, std::uint64_t first_seed, std::uint64_t runs,
                               const server_factory& server, const client_script& client,
                               const app_check& check = {});

/// "seed 12: I5 isolation: <message>\n<story>replay: <command>".
std::string describe(const app_result& r);

}  // namespace crosstown::sim
