// crosstown/redis/publisher.hpp - the executor that hands durable tasks to Redis Streams.
//
// A `publisher` is a crosstown executor for tasks deferred with `defer_durable`. `execute`
// may be called from any thread; it only counts and posts the batch to the application's
// `io_context`, where everything else happens on that context's thread(s) (run the context
// from one thread, or give the publisher a strand-free single-threaded context):
//
//   - each task of a batch is appended with `XADD <stream> * name .. payload .. key ..`,
//     the batch pipelined on one connection, so a response's tasks enter a stream in
//     registration order;
//   - a task's job runs - and the task counts `ran` - only when Redis acknowledged its
//     append. Until then it is `queued` in the runtime, so `runtime::drain` waits for the
//     acknowledgements;
//   - while Redis is unreachable, tasks wait in a backlog of at most `backlog_limit` tasks and
//     the publisher reconnects with exponential backoff. A task that finds the backlog full is
//     rejected (`rejected_by_overflow`); one that waited longer than `backlog_deadline`, or
//     whose append Redis refused with an error, fails (`failed`, reported to the runtime's
//     error hook with the reason). Each such loss is also counted here by reason and passed
//     to `on_lost`;
//   - with a local fallback (`fallback` and `run_locally` both set), a task that would be
//     lost to a full backlog or to the backlog deadline is handed instead to the fallback
//     executor, where its job runs `run_locally(task)` - so it counts `ran` (or `failed`) by
//     what that function does, not `rejected_by_overflow`. Counted `ran_locally`, not in
//     `publish_failures`, and not passed to `on_lost`. It then runs in this process only: if
//     the process dies first, it is lost. A refused append (an error reply) is not retried
//     locally: it is the task's fault, not Redis's absence;
//   - appends sent but not acknowledged when the connection broke are re-sent after the
//     reconnect (counted `resent`): Redis may have stored them, so a worker can see a task
//     twice; its idempotency key is the same both times;
//   - connect and command timeouts run on Asio timers (hiredis 0.14 has none); a command
//     timeout drops the connection and re-sends.
//
// The I/O thread never blocks: hiredis runs non-blocking, driven by
// `posix::stream_descriptor::async_wait` on its socket. A job that is not a durable task is
// rejected and reported (`on_lost`, reason "not a durable task").
//
// Lifetime: the io_context must outlive the publisher; destroy the publisher when the
// io_context is not running (after `run()` returned) or from a handler on its thread. Tasks
// still held then count `dropped_at_shutdown`. `metrics()` is thread-safe.
#pragma once

#include <crosstown/executor.hpp>
#include <crosstown/redis/connection.hpp>
#include <crosstown/redis/durable_task.hpp>
#include <crosstown/redis/metrics.hpp>

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace crosstown::redis {

/// Why a durable task was not handed to Redis.
enum class publish_failure : std::uint8_t {
  overflow,     ///< the backlog was full (`rejected_by_overflow`)
  deadline,     ///< it waited in the backlog longer than `backlog_deadline` (`failed`)
  redis_error,  ///< Redis answered the XADD with an error (`failed`)
  not_durable,  ///< the job was not deferred with `defer_durable` (`rejected_by_overflow`)
};

std::string_view to_string(publish_failure f) noexcept;

struct publisher_options {
  /// Where Redis listens.
  endpoint redis = endpoint::parse("127.0.0.1:6379");
  /// The stream for tasks that name none and when `route` is empty.
  std::string stream = "crosstown:tasks";
  /// Optional sharding: the stream for a task (by name, key, ...). Called on the I/O thread.
  std::function<std::string(const durable_task&)> route{};
  /// Tasks waiting for Redis (not yet sent), at most.
  std::size_t backlog_limit = 10'000;
  /// A task waiting longer than this in the backlog fails.
  std::chrono::milliseconds backlog_deadline{30'000};
  /// Appends sent and not yet acknowledged, at most (the pipeline depth).
  std::size_t max_unacknowledged = 1'024;
  std::chrono::milliseconds connect_timeout{1'000};
  /// No reply for this long while appends are outstanding: drop the connection, re-send.
  std::chrono::milliseconds command_timeout{2'000};
  std::chrono::milliseconds reconnect_initial{20};
  std::chrono::milliseconds reconnect_max{2'000};
  /// Non-zero: `XADD <stream> MAXLEN ~ <n>`, bounding the stream's memory in Redis.
  std::size_t max_stream_length = 0;
  /// Called on the thread that lost the task (I/O thread, or `execute`'s caller for an
  /// overflow) with the task, the reason and a message. Must not throw.
  std::function<void(const task_info&, const durable_task&, publish_failure, std::string_view)>
      on_lost{};
  /// Optional local fallback (see above): where tasks run when Redis cannot take them in
  /// time, and what runs them. Both or neither; the executor must outlive the publisher's
  /// tasks. `run_locally` is called on the fallback executor's thread.
  executor_ref fallback{};
  std::function<void(const durable_task&)> run_locally{};
};

class publisher final : public executor {
 public:
  /// Starts connecting at once (on `io`). Throws std::invalid_argument when only one of
  /// `fallback` and `run_locally` is set.
  publisher(boost::asio::io_context& io, publisher_options options);
  ~publisher() override;
  publisher(const publisher&) = delete;
  publisher& operator=(const publisher&) = delete;

  void execute(job_batch batch) override;

  /// Counters and gauges; thread-safe.
  publisher_metrics metrics() const noexcept;
  const publisher_options& options() const noexcept;

  class impl;

 private:
  std::shared_ptr<impl> impl_;
};

}  // namespace crosstown::redis
