// crosstown/redis/durable_task.hpp - a task that is handed to Redis instead of run here.
//
// A durable task is a registered task type (`name`), a serialised payload (bytes; helpers for
// Boost.JSON values) and an idempotency key (generated when not given). A handler defers it
// with `defer_durable(scope, publisher, task, options)`: the same `defer_options` as any task
// (phase, no-go statuses, `always`, `require_delivery`, a crosstown `name` that replaces or
// cancels), only the executor is the publisher. At the task's phase the publisher appends it
// to a stream; the task counts as `ran` once Redis acknowledged the append (see publisher.hpp).
// Workers on any machine then run the handler registered for `name` (see worker.hpp).
//
// Stream entry fields (what a worker reads; a producer in another language may write them):
//   name      the task type               payload   the bytes
//   key       the idempotency key         attempt   1 for a first delivery
//   request   crosstown's request id      released  ms since the epoch when it was released
//   not_before (retries only)  ms since the epoch before which it must not start
#pragma once

#include <crosstown/defer_options.hpp>

#include <boost/json/value.hpp>

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

namespace crosstown {
class response_scope;
}

namespace crosstown::redis {

class publisher;

struct durable_task {
  /// The registered task type the workers dispatch on (1 to 200 bytes, no control characters).
  std::string name;
  /// The payload, opaque bytes.
  std::string payload;
  /// The idempotency key; empty: one is generated at `defer_durable`.
  std::string key;
  /// The stream to append to; empty: the publisher's routing decides (publisher_options).
  std::string stream;
};

/// A durable task whose payload is `value` serialised as JSON.
durable_task json_task(std::string name, const boost::json::value& value, std::string key = {});

/// A fresh idempotency key: 32 hex digits from a per-thread generator seeded by the system.
std::string make_idempotency_key();

/// The payload or entry a worker cannot use (bad JSON, missing field, unknown task name): it
/// is dead-lettered at once with this message as the reason, never retried.
class malformed_task : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Parses a JSON payload; throws `malformed_task` naming the parse error and its offset.
boost::json::value parse_json_payload(std::string_view payload);

/// Registers `task` on `scope` for `pub` and returns its idempotency key. Throws
/// std::invalid_argument for a bad task name, or when `options` names another executor or
/// asks for `same_thread` (a durable task's executor is its publisher).
std::string defer_durable(response_scope& scope, publisher& pub, durable_task task,
                          defer_options options = {});

namespace detail {

/// What the publisher decided about one durable task, read when its job runs.
struct durable_record {
  durable_task task;
  std::string failure;   // non-empty: the task was not handed off, and why
  bool handled = false;  // a publisher has seen it
  // Set when the publisher gave the task to its fallback executor: the job runs this instead.
  std::function<void(const durable_task&)> run_locally{};
};

/// The closure a durable task's job carries. Running it reports the publisher's verdict: it
/// returns (the task counts `ran`) when Redis acknowledged the append, and throws (`failed`,
/// reported with the reason) when the append failed or no publisher ever saw it; a task the
/// publisher gave to its fallback executor runs `run_locally` there instead.
struct durable_call {
  std::unique_ptr<durable_record> record;
  void operator()() const;
};

/// Checks a task name; throws std::invalid_argument naming what is wrong.
void check_task_name(std::string_view name);

}  // namespace detail

}  // namespace crosstown::redis
