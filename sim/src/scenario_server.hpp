// scenario_server.hpp (private to crosstown::sim) - the built-in scenarios as an application.
//
// `make_scenario_app(config)` returns the server factory and the client script that
// `run_app` (app_test.hpp) runs for a `run_config`: a small Beast server over `sim_stream` -
// an accept loop, one keep-alive session per connection reading with the real
// `http::async_read`, reading up to four requests ahead when the scenario pipelines, an idle
// timeout on `sim_timer` - writing with the real `crosstown::beast::async_write_response`.
// Its handler draws, from the connection's own generator, what the scenario asks for: tasks
// with random options (same_thread, no-go sets, always, names that replace or are cancelled,
// phases, require_delivery, tasks that throw), the status and status changes, header and body
// sizes, and think time (`spend` on the connection's I/O actor). The client sends the
// connection's share of the scenario's requests with drawn gaps (all at once when pipelined),
// reads whatever comes back, and half-closes after its last request when the draw says so.
// The core's fault sites are armed as the scenario says (`fault_run_rate`, `fault_hit_rate`).
//
// The planted bugs (`mutation`) live in this server, as an application's bugs would:
//   sent_at_headers  the session writes the header with the adapter, reports response_sent()
//                    itself, then writes the body with plain Beast (I1);
//   status_200       the session tells the scope 200 and writes the real status through a
//                    message_generator, whose status the adapter takes from the scope (I2);
//   cross_release    completing one response's write also reports response_sent() on another
//                    response whose status is known (I5);
//   drop_job         the simulated workers drop every 13th job (`app_config::drop_every`, I3).
#pragma once

#include <crosstown/sim/app_test.hpp>
#include <crosstown/sim/simulation.hpp>

#include <cstdint>
#include <memory>

namespace crosstown::sim::detail {

/// Counters the scenario's server keeps for its run's result.
struct scenario_counts {
  std::uint64_t requests = 0;  ///< requests read (each got a response scope)
};

struct scenario_app {
  app_config config;
  server_factory server;
  client_script client;
  std::shared_ptr<scenario_counts> counts;
};

/// The application and engine configuration that run `config`'s scenario on the adapter.
scenario_app make_scenario_app(const run_config& config);

}  // namespace crosstown::sim::detail
