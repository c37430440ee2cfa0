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
// `stop()` is graceful: runners finish the handler in hand, give back entries read but not
// started (`XCLAIM ... IDLE <visibility_timeout>`, so another consumer can take them at once)
// and return within about `block`. Handlers are registered before `start()`; `start`, `stop`
// and `metrics` are thread-safe. The destructor stops and joins. Lost connections are
// re-made with backoff; a runner never dies of an entry.
#pragma once

#include <crosstown/redis/connection.hpp>
#include <crosstown/redis/durable_task.hpp>
#include <crosstown/redis/metrics.hpp>

#include <boost/json/value.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
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

struct worker_options {
  endpoint redis = endpoint::parse("127.0.0.1:6379");
  std::vector<std::string> streams{"crosstown:tasks"};
  std::string group = "crosstown";
  /// Consumer name; runner i > 0 adds "-<i>". Empty: "<hostname>-<pid>".
  std::string consumer{};
  std::size_t threads = 1;
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
  void handle(std::string name, task_handler fn);
  void handle_json(std::string name, json_handler fn);

  /// Starts the runner threads. Throws std::logic_error if started twice.
  void start();
  /// Asks the runners to stop (see above); does not wait.
  void stop() noexcept;
  /// Waits for the runners to return.
  void join() noexcept;

  worker_metrics metrics() const noexcept;
  const worker_options& options() const noexcept { return options_; }

  struct state;

 private:
  worker_options options_;
  std::map<std::string, task_handler, std::less<>> handlers_;
  std::shared_ptr<state> state_;
};

}  // namespace crosstown::redis
