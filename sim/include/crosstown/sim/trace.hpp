// crosstown/sim/trace.hpp - a run's trace as text or as Chrome Trace Event JSON.
//
// The JSON is the Trace Event Format's object form, `{"traceEvents": [...],
// "displayTimeUnit": "ns"}`, loadable by chrome://tracing and Perfetto: process 1 is the
// server (one thread per connection: each request as a complete "X" event from request start
// to scope end - or, for an application's run (app_test.hpp), which sees the wire and not the
// scope, to its last byte or failure - response bytes as "X" events, headers and last bytes
// accepted, resets and stalls as instants), process 2 the simulated pool (one thread per
// worker: each task as an "X" event). Timestamps are virtual microseconds.
#pragma once

#include <crosstown/sim/oracle.hpp>

#include <string>
#include <vector>

namespace crosstown::sim {

/// One line per event.
std::string text_trace(const std::vector<event>& events);

/// Chrome Trace Event JSON.
std::string chrome_trace_json(const std::vector<event>& events);

}  // namespace crosstown::sim
