// planted_app.hpp - a copy of the demo app's handler with known bugs planted, for the demo's
// simulator tests (sim_test.cpp): each must be caught, by the invariant it breaks.
//
// The copy answers exactly as the demo app does and, for every 202 (POST /calls), defers two
// more tasks of the kind a real app has: a "receipt" text message that only makes sense if the
// client got the 202 (`require_delivery`) and a "log" line written on the I/O thread
// (`same_thread`). With `handler_bug::none` it is a correct app (the tests' control). Planted:
//   sent_before_write  (b) the handler reports the status and, on the I/O loop's next turn,
//                          `response_sent()` itself - before the session's write of the
//                          response went out (I1 after);
//   blocking_log       (d) the same_thread log line makes a blocking call of 2 ms on the I/O
//                          thread, delaying that connection's later responses (I7 no drag).
// The session bugs (a) and (c) are planted in the sessions instead (`planted_bug`,
// demo_server_impl.hpp), because that is where they live in a real server.
#pragma once

#include "demo_server.hpp"

#include <chrono>
#include <functional>
#include <utility>

namespace crosstown_demo::planted {

enum class handler_bug : std::uint8_t { none, sent_before_write, blocking_log };

/// `app`'s answers, with the copy's extra tasks and its planted bug; `block(d)` is the
/// blocking call (the simulator's `spend`), `report_soon(fn)` runs `fn` on the I/O thread's
/// next turn (a post to the connection's executor).
inline handler planted_handler(handler app, handler_bug bug,
                               std::function<void(std::chrono::nanoseconds)> block,
                               std::function<void(std::function<void()>)> report_soon) {
  return [app = std::move(app), bug, block = std::move(block),
          report_soon = std::move(report_soon)](request_context& context) {
    response_type res = app(context);
    if (res.result() == http::status::accepted) {
      context.scope.defer([] {}, {.name = "receipt", .require_delivery = true});
      context.scope.defer(
          [bug, block] {
            if (bug == handler_bug::blocking_log) block(std::chrono::milliseconds(2));
          },
          {.same_thread = true, .name = "log"});
    }
    if (bug == handler_bug::sent_before_write) {
      // As soon as the response is handed over - on the I/O loop's next turn, before the
      // session's write went out - the handler says it was sent.
      context.scope.status_known(res.result_int());
      report_soon([scope = &context.scope] { scope->response_sent(); });
    }
    return res;
  };
}

}  // namespace crosstown_demo::planted
