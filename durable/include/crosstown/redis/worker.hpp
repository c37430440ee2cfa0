// crosstown/redis/worker.hpp - runs durable tasks from Redis Streams.
//
// A `worker` consumes one or more streams as a member of a consumer group
// (`XGROUP CREATE <stream> <group> 0 MKSTREAM`, so a new group also sees entries appended
// before it existed). Each of its `threads` runners owns a blocking connection and a consumer
// name, and loops:
//
//   1. every `claim_interval`, `XAUTOCLAIM` entries idle longer than `visibility_timeout`
//      (their consumer died or hangs) and runs them (counted `reclaimed`);
//   2. `XREADGROUP ... BLOCK <block> STREAMS ... >` and runs each entry in order:
//        - a malformed entry (missing field, unknown task name, a handler throwing
//          `malformed_task`) goes to the dead-letter stream at once with the reason;
//        - with `dedup_ttl` non-zero, an entry whose key is already marked done is
//          acknowledged without running (counted `duplicates`);
//        - the handler runs on the runner's thread; success marks the key done
//          (`SET <dedup_prefix><key> 1 EX <ttl>`) and `XACK`s;
//        - a failure appends a copy with `attempt + 1` and a `not_before` time (exponential
//          backoff) and acknowledges the original in one MULTI/EXEC; the runner that reads the
//          copy holds it until then (counted `delayed`);
//        - after `max_attempts`, the entry goes to `<stream><dead_letter_suffix>` with fields
//          `error`, `reason`, `source_id` and `attempt`, and the original is acknowledged.
//
// Execution is at-least-once: a handler may see a task again if its worker died after the
// handler succeeded and before the acknowledgement. The key is the same each time.
//
// Handlers are blocking (`handle`, run on the runner's thread) or awaitable (`handle_awaitable`,
// a coroutine returning `boost::asio::awaitable<void>`, run on the worker's own io_context,
// started with the first awaitable registration and run by `io_threads` threads; the runner
// waits for it, so a worker has at most `threads` handlers in flight). Per task type,
// `handler_options` give what crosstown's I/O work has (lane.hpp, retry.hpp):
//   - `lane`: one of `worker_options::lanes`; at most its `max_in_flight` handlers of all the
//     types in that lane run at once in this worker. A runner whose entry finds the lane full
//     waits for a slot (counted `lane_waits`); the entry stays pending in Redis meanwhile, and
//     on stop it is given back like any entry not started;
//   - `timeout`: an awaitable handler still running then is cancelled (Asio's per-operation
//     cancellation, terminal), the runner waits for it to unwind, and the attempt fails with
//     "timed out after N ms" (counted `timed_out`) - retried or dead-lettered as any failure.
//     A blocking handler cannot be stopped: past its timeout it runs on, is counted
//     `overruns`, and its outcome stands;
//   - `retry`: a `crosstown::retry_policy` (max_attempts, base, cap, jitter, retry_if) instead
//     of the worker's `max_attempts`/`retry_initial`/`retry_max`. Retries go through the
//     stream as above (so they survive this process); a failure `retry_if` declines is
//     dead-lettered at once with the reason "not retried".
//
// Poison entries: an entry taken over by XAUTOCLAIM that Redis has already delivered more
// than `max_deliveries` times (its consumers died or hung each time; the count is XPENDING's)
// is not run again: it goes to the dead-letter stream with the reason and its delivery count
// (counted `poisoned` and `dead_lettered`).
//
// `stop()` is graceful: runners finish the handler in hand, give back entries read but not
// started (`XCLAIM ... IDLE <visibility_timeout>`, so another consumer can take them at once)
// and return within about `block`. Handlers are registered before `start()`; `start`, `stop`
// and `metrics` are thread-safe. The destructor stops and joins. Lost connections are
// re-made with backoff; a runner never dies of an entry.
#pragma once

#include <crosstown/redis/connection.hpp>
#include <crosstown/redis/durable_task.hpp>
#include <crosstown/redis/metrics.hpp>

#include <crosstown/retry.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/json/value.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace crosstown::redis {

/// What a handler receives.
struct task_context {
  std::string_view stream;
  std::string_view id;  ///< the entry id
  std::string_view name;
  std::string_view payload;
  std::string_view key;
  std::uint32_t attempt = 1;     ///< 1 for the first delivery
  std::int64_t released_ms = 0;  ///< when the web process released it (0: unknown)
  bool reclaimed = false;        ///< taken over from a consumer that did not finish it
  /// The runner's connection, for handlers that record effects in Redis (`mark_once`).
  connection* redis = nullptr;
};

/// A blocking handler. Throwing retries the task (see above); `malformed_task` dead-letters it.
using task_handler = std::function<void(const task_context&)>;
/// A handler for JSON payloads: a payload that does not parse is dead-lettered.
using json_handler = std::function<void(const boost::json::value&, const task_context&)>;
/// An awaitable handler; `ctx` (and what it views) stays valid until the coroutine completes.
using awaitable_handler = std::function<boost::asio::awaitable<void>(const task_context& ctx)>;

/// How one task type runs (see above).
struct handler_options {
  /// Empty: no lane; else a name in `worker_options::lanes`.
  std::string lane{};
  /// Zero: none.
  std::chrono::milliseconds timeout{0};
  /// Empty: the worker's max_attempts, retry_initial and retry_max (no jitter).
  std::optional<retry_policy> retry{};
};

struct worker_options {
  endpoint redis = endpoint::parse("127.0.0.1:6379");
  std::vector<std::string> streams{"crosstown:tasks"};
  std::string group = "crosstown";
  /// Consumer name; runner i > 0 adds "-<i>". Empty: "<hostname>-<pid>".
  std::string consumer{};
  std::size_t threads = 1;
  /// Threads running awaitable handlers (started only if one is registered).
  std::size_t io_threads = 1;
  /// Lanes handlers may name: name -> most handlers of the lane running at once.
  std::map<std::string, std::size_t, std::less<>> lanes{};
  /// A reclaimed entry delivered more often than this is dead-lettered as poison.
  std::uint32_t max_deliveries = 5;
  std::size_t batch = 16;  ///< entries per read
  std::chrono::milliseconds block{200};
  std::chrono::milliseconds visibility_timeout{30'000};
  std::chrono::milliseconds claim_interval{1'000};
  std::uint32_t max_attempts = 3;
  std::chrono::milliseconds retry_initial{100};
  std::chrono::milliseconds retry_max{10'000};
  std::string dead_letter_suffix = ":dead";
  /// Zero: no de-duplication by key.
  std::chrono::seconds dedup_ttl{86'400};
  std::string dedup_prefix = "crosstown:done:";
  std::chrono::milliseconds connect_timeout{1'000};
  std::chrono::milliseconds command_timeout{5'000};
  /// Called (on a runner thread) for each dead-lettered entry with the reason; must not throw.
  std::function<void(const task_context&, std::string_view reason)> on_dead_letter{};
};

class worker {
 public:
  explicit worker(worker_options options);
  ~worker();
  worker(const worker&) = delete;
  worker& operator=(const worker&) = delete;

  /// Registers the handler of a task type. Throws std::invalid_argument for a bad or
  /// duplicate name, or after `start()`.
  /// Also throws for a lane not in `worker_options::lanes`, a negative timeout or a retry
  /// policy of 0 attempts.
  void handle(std::string name, task_handler fn, handler_options options = {});
  void handle_json(std::string name, json_handler fn, handler_options options = {});
  void handle_awaitable(std::string name, awaitable_handler fn, handler_options options = {});

  /// Starts the runner threads. Throws std::logic_error if started twice.
  void start();
  /// Asks the runners to stop (see above); does not wait.
  void stop() noexcept;
  /// Waits for the runners to return.
  void join() noexcept;

  worker_metrics metrics() const noexcept;
  const worker_options& options() const noexcept { return options_; }

  struct state;
  struct registration {
    task_handler blocking;
    awaitable_handler awaitable;
    handler_options options;
  };

 private:
  void add(std::string name, registration r);

  worker_options options_;
  std::map<std::string, registration, std::less<>> handlers_;
  std::shared_ptr<state> state_;
};

}  // namespace crosstown::redis
