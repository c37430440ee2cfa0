// crosstown/redis/metrics.hpp - counters of the publisher and of a worker.
//
// Snapshots of relaxed atomic counters: each figure is exact on its own; taken while tasks
// move, figures may be a few tasks apart. `to_prometheus` renders them in the text
// exposition format beside the runtime's own (`crosstown::to_prometheus`).
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>

namespace crosstown::redis {

struct publisher_metrics {
  std::uint64_t published = 0;         ///< appends Redis acknowledged (the tasks counted `ran`)
  std::uint64_t backlog = 0;           ///< tasks waiting to be sent (gauge)
  std::uint64_t unacknowledged = 0;    ///< appends sent, reply outstanding (gauge)
  std::uint64_t resent = 0;            ///< appends sent again after a broken connection
  std::uint64_t publish_failures = 0;  ///< tasks not handed off, all reasons
  std::uint64_t overflowed = 0;        ///< of which: backlog full
  std::uint64_t expired = 0;           ///< of which: backlog deadline
  std::uint64_t refused = 0;           ///< of which: Redis answered with an error
  std::uint64_t not_durable = 0;       ///< of which: not a durable task
  std::uint64_t ran_locally = 0;  ///< overflowed or expired tasks given to the fallback executor
  std::uint64_t connects = 0;     ///< connections established
  std::uint64_t disconnects = 0;  ///< connections lost or dropped (timeout)
  bool connected = false;         ///< a connection is up now
};

struct worker_metrics {
  std::uint64_t consumed = 0;           ///< entries read (new and reclaimed)
  std::uint64_t acked = 0;              ///< entries acknowledged after their handler succeeded
  std::uint64_t retried = 0;            ///< failures appended again for a later attempt
  std::uint64_t reclaimed = 0;          ///< entries taken over from another consumer (XAUTOCLAIM)
  std::uint64_t dead_lettered = 0;      ///< entries moved to the dead-letter stream
  std::uint64_t duplicates = 0;         ///< entries skipped: their key was already done
  std::uint64_t in_flight = 0;          ///< handlers running now (gauge)
  std::uint64_t delayed = 0;            ///< retries held until their backoff ends (gauge)
  std::uint64_t connection_errors = 0;  ///< Redis connections lost and re-made
  std::uint64_t poisoned = 0;    ///< of dead_lettered: delivered more than max_deliveries times
  std::uint64_t timed_out = 0;   ///< awaitable attempts cancelled at their timeout
  std::uint64_t overruns = 0;    ///< blocking handlers that ran past their timeout
  std::uint64_t lane_waits = 0;  ///< entries that waited for a slot in their lane
};

std::ostream& operator<<(std::ostream& out, const publisher_metrics& m);
std::ostream& operator<<(std::ostream& out, const worker_metrics& m);

/// `<prefix>_redis_published_total`, `<prefix>_redis_backlog`, ... with HELP and TYPE lines.
std::string to_prometheus(const publisher_metrics& m, std::string_view prefix = "crosstown");
/// `<prefix>_worker_consumed_total`, ..., `<prefix>_worker_in_flight`.
std::string to_prometheus(const worker_metrics& m, std::string_view prefix = "crosstown");

}  // namespace crosstown::redis
