// demo_sim.hpp - the demo app under crosstown::sim: its real server (the sessions of
// demo_server_impl.hpp on the simulated stream and timer), its real handler and the real
// crosstown::beast writes, driven by a seeded client script, with the app's own checks.
//
// `make_demo_sim(options)` returns the three parts `crosstown::sim::run_app` takes:
//   server  builds the phone-calls app with its production placer, `awaitable_call_placer`:
//           each call an awaitable task in the "telephony" lane with a timeout per attempt and
//           retries, waiting on the run's task clock (virtual time). Its times are scaled down
//           tenfold (timeout 200 ms, backoff 10 ms doubling to 200 ms, jitter 0.5, 3
//           attempts) and its lane is 8 wide, so that calls wait in it and the slowest settle
//           within the liveness budget; the fake API fails an attempt with probability 0.15
//           (seeded by the run). Then `basic_server` on the simulated transport, session style
//           drawn from the seed unless `options.style` fixes it, short timeouts (idle 2 s,
//           header/body 1 s, write 1 s) so that stalls and slow clients end in timeouts on
//           virtual time;
//   client  per connection: 1-4 keep-alive requests, pipelined 40% of the time, each with an
//           `X-Request-Id`: POST /calls?n=0..4&us=L (55%; the API's latency L: 0-2 ms 70% of
//           the time, 2-150 ms 20%, 150-400 ms 10% - mostly past the timeout, so attempts time
//           out and are retried), GET /missing, POST /audit, GET /moved,
//           GET /stream (64 KiB chunked, 4%) and a request without Host (400); then a
//           half-close or a close. Not /metrics: its body counts the tasks that ran, so its
//           length - and the time to write it - differs in the no-drag rerun (I7);
//   check   the app's promises, for every response the client read whole: a 202 for n calls
//           led to exactly n calls placed ("app: 202 places n calls"); a 404 placed none
//           ("app: no call for a 404"). A call is *placed* when its first attempt starts, and
//           counts once however it ends - succeeded, failed after its retries or timed out:
//           the app's promise is to try each call, not that the API completes it (the oracle
//           sees every call settle, I3/I6). And over the run, every attempt belongs to a placed
//           call and no call made more than its 3 attempts ("app: attempts per call").
// `options.bug` plants one known bug (see planted/planted_app.hpp and `planted_bug`); the
// planted copies also defer the "receipt" and "log" tasks.
// `demo_sim_config()` is the app_config these runs use (sim defaults, 3 connections).
// One run, one thread, as crosstown::sim requires.
#pragma once

#include <crosstown/sim/app_test.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace crosstown_demo {

enum class session_style : std::uint8_t;

enum class demo_bug : std::uint8_t {
  none,
  stale_scope,         ///< (a) session: request N+1's write gets request N's scope (I5)
  sent_before_write,   ///< (b) handler: response_sent() before writing (I1)
  ignore_write_error,  ///< (c) session: a failed write reported as sent (I3 delivery)
  blocking_task,       ///< (d) a same_thread task blocks the I/O thread (I7)
  control,             ///< the planted copy with no bug (its extra tasks only)
};

/// "none", "stale-scope", "sent-before-write", "ignore-write-error", "blocking-task",
/// "control".
std::string_view to_string(demo_bug bug) noexcept;
/// The bug of that name; nullopt if there is none.
std::optional<demo_bug> parse_demo_bug(std::string_view name) noexcept;

struct demo_sim_options {
  demo_bug bug = demo_bug::none;
  /// Fixed session style; nullopt: drawn from the seed (callback or coroutine).
  std::optional<session_style> style;
};

struct demo_sim_parts {
  crosstown::sim::server_factory server;
  crosstown::sim::client_script client;
  crosstown::sim::app_check check;
};

demo_sim_parts make_demo_sim(demo_sim_options options = {});

crosstown::sim::app_config demo_sim_config();

}  // namespace crosstown_demo
