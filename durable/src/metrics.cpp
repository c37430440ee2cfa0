#include <crosstown/redis/metrics.hpp>

#include <sstream>
#include <utility>

namespace crosstown::redis {

std::ostream& operator<<(std::ostream& out, const publisher_metrics& m) {
  return out << "published=" << m.published << " backlog=" << m.backlog
             << " unacknowledged=" << m.unacknowledged << " resent=" << m.resent
             << " publish_failures=" << m.publish_failures << " (overflowed=" << m.overflowed
             << " expired=" << m.expired << " refused=" << m.refused
             << " not_durable=" << m.not_durable << ") ran_locally=" << m.ran_locally
             << " connects=" << m.connects << " disconnects=" << m.disconnects
             << " connected=" << m.connected;
}

std::ostream& operator<<(std::ostream& out, const worker_metrics& m) {
  return out << "consumed=" << m.consumed << " acked=" << m.acked << " retried=" << m.retried
             << " reclaimed=" << m.reclaimed << " dead_lettered=" << m.dead_lettered
             << " duplicates=" << m.duplicates << " in_flight=" << m.in_flight
             << " delayed=" << m.delayed << " connection_errors=" << m.connection_errors
             << " poisoned=" << m.poisoned << " timed_out=" << m.timed_out
             << " overruns=" << m.overruns << " lane_waits=" << m.lane_waits;
}

namespace {

class exposition {
 public:
  explicit exposition(std::string_view prefix) : prefix_(prefix) {}
  void add(std::string_view name, std::string_view type, std::string_view help,
           std::uint64_t value) {
    out_ << "# HELP " << prefix_ << '_' << name << ' ' << help << "\n# TYPE " << prefix_ << '_'
         << name << ' ' << type << '\n'
         << prefix_ << '_' << name << ' ' << value << '\n';
  }
  std::string str() && { return std::move(out_).str(); }

 private:
  std::string_view prefix_;
  std::ostringstream out_;
};

}  // namespace

std::string to_prometheus(const publisher_metrics& m, std::string_view prefix) {
  exposition e(prefix);
  e.add("redis_published_total", "counter", "Durable tasks whose append Redis acknowledged.",
        m.published);
  e.add("redis_backlog", "gauge", "Durable tasks waiting to be sent to Redis.", m.backlog);
  e.add("redis_unacknowledged", "gauge", "Appends sent to Redis, reply outstanding.",
        m.unacknowledged);
  e.add("redis_resent_total", "counter", "Appends sent again after a broken connection.", m.resent);
  e.add("redis_publish_failures_total", "counter", "Durable tasks not handed to Redis.",
        m.publish_failures);
  e.add("redis_publish_overflowed_total", "counter", "Durable tasks rejected: backlog full.",
        m.overflowed);
  e.add("redis_publish_expired_total", "counter", "Durable tasks failed: backlog deadline passed.",
        m.expired);
  e.add("redis_publish_refused_total", "counter", "Durable tasks failed: Redis error reply.",
        m.refused);
  e.add("redis_ran_locally_total", "counter",
        "Durable tasks run by the local fallback executor instead of being lost.", m.ran_locally);
  e.add("redis_connects_total", "counter", "Connections to Redis established.", m.connects);
  e.add("redis_disconnects_total", "counter", "Connections to Redis lost or dropped.",
        m.disconnects);
  e.add("redis_connected", "gauge", "1 while a connection to Redis is up.", m.connected ? 1 : 0);
  return std::move(e).str();
}

std::string to_prometheus(const worker_metrics& m, std::string_view prefix) {
  exposition e(prefix);
  e.add("worker_consumed_total", "counter", "Stream entries read.", m.consumed);
  e.add("worker_acked_total", "counter", "Entries acknowledged after success.", m.acked);
  e.add("worker_retried_total", "counter", "Failures appended again for a later attempt.",
        m.retried);
  e.add("worker_reclaimed_total", "counter", "Entries taken over from another consumer.",
        m.reclaimed);
  e.add("worker_dead_lettered_total", "counter", "Entries moved to a dead-letter stream.",
        m.dead_lettered);
  e.add("worker_duplicates_total", "counter", "Entries skipped: key already done.", m.duplicates);
  e.add("worker_in_flight", "gauge", "Handlers running now.", m.in_flight);
  e.add("worker_delayed", "gauge", "Retries held until their backoff ends.", m.delayed);
  e.add("worker_connection_errors_total", "counter", "Redis connections lost and re-made.",
        m.connection_errors);
  e.add("worker_poisoned_total", "counter",
        "Entries dead-lettered after more than max_deliveries deliveries.", m.poisoned);
  e.add("worker_timed_out_total", "counter", "Awaitable attempts cancelled at their timeout.",
        m.timed_out);
  e.add("worker_overruns_total", "counter", "Blocking handlers that ran past their timeout.",
        m.overruns);
  e.add("worker_lane_waits_total", "counter", "Entries that waited for a slot in their lane.",
        m.lane_waits);
  return std::move(e).str();
}

}  // namespace crosstown::redis
