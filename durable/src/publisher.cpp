#include <crosstown/redis/publisher.hpp>

#include "asio_hiredis.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <exception>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace crosstown::redis {

std::string_view to_string(publish_failure f) noexcept {
  switch (f) {
    case publish_failure::overflow: return "overflow";
    case publish_failure::deadline: return "deadline";
    case publish_failure::redis_error: return "redis_error";
    case publish_failure::not_durable: return "not_durable";
  }
  return "unknown";
}

namespace {

using clock = std::chrono::steady_clock;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A task the publisher holds: its job (which owns the record) and where it stands.
struct held_task {
  job work;
  detail::durable_record* record;  // owned by work's closure
  clock::time_point since;         // when execute() took it
  std::int64_t released_ms;
  std::string stream;        // resolved on the I/O thread
  bool sent_before = false;  // an earlier connection may have stored it
};

}  // namespace

class publisher::impl : public std::enable_shared_from_this<publisher::impl> {
 public:
  impl(boost::asio::io_context& io, publisher_options options)
      : options_(std::move(options)),
        io_(io),
        retry_timer_(io),
        connect_timer_(io),
        watchdog_(io),
        next_delay_(options_.reconnect_initial),
        jitter_(std::random_device{}()) {}

  void start() {
    boost::asio::post(io_, [self = shared_from_this()] {
      if (!self->closing_) self->connect();
    });
  }

  // Any thread.
  void execute(job_batch batch) {
    std::vector<held_task> kept;
    kept.reserve(batch.size());
    const auto since = clock::now();
    const std::int64_t released = now_ms();
    for (job& j : batch) {
      auto* call = j.work().target<detail::durable_call>();
      if (call == nullptr || !call->record) {
        static const durable_task none{};
        lose(j.info(), none, publish_failure::not_durable,
             "not a durable task (defer it with crosstown::redis::defer_durable)");
        j.reject();
        continue;
      }
      detail::durable_record* record = call->record.get();
      if (held_.fetch_add(1, std::memory_order_relaxed) >= options_.backlog_limit) {
        held_.fetch_sub(1, std::memory_order_relaxed);
        record->handled = true;
        if (has_fallback()) {
          run_locally(std::move(j), *record);
          continue;
        }
        lose(j.info(), record->task, publish_failure::overflow,
             "the Redis backlog is full (" + std::to_string(options_.backlog_limit) + " tasks)");
        j.reject();
        continue;
      }
      kept.push_back(held_task{std::move(j), record, since, released, {}, false});
    }
    if (kept.empty()) return;
    boost::asio::post(io_, [self = shared_from_this(), kept = std::move(kept)]() mutable {
      self->accept(std::move(kept));
    });
  }

  // With the io_context not running, or on its thread.
  void shutdown() noexcept {
    closing_ = true;
    boost::system::error_code ignored;
    retry_timer_.cancel(ignored);
    connect_timer_.cancel(ignored);
    watchdog_.cancel(ignored);
    drop_connection();
    held_.store(0, std::memory_order_relaxed);
    unacknowledged_.store(0, std::memory_order_relaxed);
    connected_.store(false, std::memory_order_relaxed);
    // Destroying the jobs counts them dropped_at_shutdown.
    std::deque<held_task> backlog = std::move(backlog_);
    std::deque<held_task> sent = std::move(sent_);
  }

  publisher_metrics metrics() const noexcept {
    publisher_metrics m;
    m.published = published_.load(std::memory_order_relaxed);
    m.backlog = held_.load(std::memory_order_relaxed);
    m.unacknowledged = unacknowledged_.load(std::memory_order_relaxed);
    m.resent = resent_.load(std::memory_order_relaxed);
    m.overflowed = overflowed_.load(std::memory_order_relaxed);
    m.expired = expired_.load(std::memory_order_relaxed);
    m.refused = refused_.load(std::memory_order_relaxed);
    m.not_durable = not_durable_.load(std::memory_order_relaxed);
    m.ran_locally = ran_locally_.load(std::memory_order_relaxed);
    m.publish_failures = m.overflowed + m.expired + m.refused + m.not_durable;
    m.connects = connects_.load(std::memory_order_relaxed);
    m.disconnects = disconnects_.load(std::memory_order_relaxed);
    m.connected = connected_.load(std::memory_order_relaxed);
    return m;
  }

  const publisher_options options_;

 private:
  bool has_fallback() const noexcept {
    return options_.fallback && static_cast<bool>(options_.run_locally);
  }

  // The job goes to the fallback executor, where it runs `run_locally` (durable_call).
  void run_locally(job work, detail::durable_record& record) {
    record.run_locally = options_.run_locally;
    ran_locally_.fetch_add(1, std::memory_order_relaxed);
    job_batch batch;
    batch.push_back(std::move(work));
    options_.fallback.get()->execute(std::move(batch));
  }

  enum class link : std::uint8_t { down, connecting, up };

  void lose(const task_info& info, const durable_task& t, publish_failure why,
            const std::string& message) noexcept {
    switch (why) {
      case publish_failure::overflow: overflowed_.fetch_add(1, std::memory_order_relaxed); break;
      case publish_failure::deadline: expired_.fetch_add(1, std::memory_order_relaxed); break;
      case publish_failure::redis_error: refused_.fetch_add(1, std::memory_order_relaxed); break;
      case publish_failure::not_durable:
        not_durable_.fetch_add(1, std::memory_order_relaxed);
        break;
    }
    if (options_.on_lost) {
      try {
        options_.on_lost(info, t, why, message);
      } catch (...) {  // a hook must not take the I/O thread down
      }
    }
  }

  void accept(std::vector<held_task> kept) {
    if (closing_) {
      held_.fetch_sub(kept.size(), std::memory_order_relaxed);
      return;  // the jobs count dropped_at_shutdown
    }
    for (held_task& t : kept) {
      t.stream = t.record->task.stream;
      if (t.stream.empty() && options_.route) {
        try {
          t.stream = options_.route(t.record->task);
        } catch (const std::exception& e) {
          fail(std::move(t), publish_failure::redis_error,
               std::string("the route function threw: ") + e.what());
          held_.fetch_sub(1, std::memory_order_relaxed);
          continue;
        }
      }
      if (t.stream.empty()) t.stream = options_.stream;
      backlog_.push_back(std::move(t));
    }
    pump();
    arm_watchdog();
  }

  // Ends a task that was not handed off: its job runs and throws the reason (`failed`).
  void fail(held_task t, publish_failure why, std::string message) {
    message = "durable task \"" + t.record->task.name + "\" (key " + t.record->task.key +
              ") was not handed to Redis: " + message;
    lose(t.work.info(), t.record->task, why, message);
    t.record->handled = true;
    t.record->failure = std::move(message);
    t.work.run();
  }

  void connect() {
    link_ = link::connecting;
    const endpoint& where = options_.redis;
    redisAsyncContext* c = where.unix_path.empty()
                               ? redisAsyncConnect(where.host.c_str(), where.port)
                               : redisAsyncConnectUnix(where.unix_path.c_str());
    if (c == nullptr || c->err != 0) {
      last_error_ = c == nullptr ? std::string("out of memory") : std::string(c->errstr);
      if (c != nullptr) redisAsyncFree(c);
      link_ = link::down;
      schedule_reconnect();
      return;
    }
    if (detail::asio_hiredis::attach(c, io_) != REDIS_OK) {
      last_error_ = "cannot attach to the io_context";
      redisAsyncFree(c);
      link_ = link::down;
      schedule_reconnect();
      return;
    }
    c->data = this;
    ac_ = c;
    const std::uint64_t generation = ++generation_;
    redisAsyncSetDisconnectCallback(c, &impl::on_disconnect);
    redisAsyncSetConnectCallback(c, &impl::on_connect);  // arms the first write readiness
    connect_timer_.expires_after(options_.connect_timeout);
    connect_timer_.async_wait(
        [self = shared_from_this(), generation](const boost::system::error_code& ec) {
          if (ec || self->closing_ || self->generation_ != generation) return;
          if (self->link_ == link::connecting) {
            self->last_error_ = "connect timed out after " +
                                std::to_string(self->options_.connect_timeout.count()) + " ms";
            self->drop_connection();
            self->lost();
          }
        });
  }

  static void on_connect(const redisAsyncContext* c, int status) {
    auto* self = static_cast<impl*>(c->data);
    if (self == nullptr) return;
    boost::system::error_code ignored;
    self->connect_timer_.cancel(ignored);
    if (status != REDIS_OK) {
      // hiredis frees the context when this returns.
      self->last_error_ = c->errstr;
      self->ac_ = nullptr;
      self->link_ = link::down;
      self->schedule_reconnect();
      return;
    }
    self->link_ = link::up;
    self->connected_.store(true, std::memory_order_relaxed);
    self->connects_.fetch_add(1, std::memory_order_relaxed);
    // The backoff resets with the first reply, not here: a Redis that accepts connections
    // while it loads its data answers every append with LOADING.
    self->pump();
    self->arm_watchdog();
  }

  static void on_disconnect(const redisAsyncContext* c, int /*status*/) {
    auto* self = static_cast<impl*>(c->data);
    if (self == nullptr) return;  // we dropped it ourselves
    self->last_error_ = c->err != 0 ? std::string(c->errstr) : std::string("connection closed");
    self->ac_ = nullptr;  // hiredis frees it when this returns
    self->lost();
  }

  // Frees the context without its callbacks reaching us; the caller decides what follows.
  void drop_connection() noexcept {
    if (ac_ == nullptr) return;
    redisAsyncContext* c = std::exchange(ac_, nullptr);
    c->data = nullptr;
    redisAsyncFree(c);  // outstanding replies come back null and are ignored
  }

  // The connection is gone: what was sent goes back to the front of the backlog, in order.
  void lost() {
    if (link_ == link::up) disconnects_.fetch_add(1, std::memory_order_relaxed);
    link_ = link::down;
    connected_.store(false, std::memory_order_relaxed);
    const std::size_t n = sent_.size();
    while (!sent_.empty()) {
      sent_.back().sent_before = true;
      backlog_.push_front(std::move(sent_.back()));
      sent_.pop_back();
    }
    held_.fetch_add(n, std::memory_order_relaxed);
    unacknowledged_.fetch_sub(n, std::memory_order_relaxed);
    if (!closing_) schedule_reconnect();
  }

  void schedule_reconnect() {
    if (closing_) return;
    const auto base = next_delay_;
    next_delay_ = std::min(next_delay_ * 2, options_.reconnect_max);
    // +-25% so many web processes do not reconnect in step.
    std::uniform_int_distribution<std::int64_t> spread(
        base.count() * 3 / 4, std::max<std::int64_t>(1, base.count() * 5 / 4));
    retry_timer_.expires_after(std::chrono::milliseconds(spread(jitter_)));
    retry_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (ec || self->closing_ || self->link_ != link::down) return;
      self->connect();
    });
  }

  void pump() {
    while (link_ == link::up && ac_ != nullptr && !backlog_.empty() &&
           sent_.size() < options_.max_unacknowledged) {
      held_task& t = backlog_.front();
      const durable_task& d = t.record->task;
      const std::string request = std::to_string(t.work.info().request_id);
      const std::string released = std::to_string(t.released_ms);
      const std::string maxlen = std::to_string(options_.max_stream_length);
      std::vector<std::string_view> args{"XADD", t.stream};
      if (options_.max_stream_length != 0) args.insert(args.end(), {"MAXLEN", "~", maxlen});
      args.insert(args.end(), {"*", "name", d.name, "payload", d.payload, "key", d.key, "attempt",
                               "1", "request", request, "released", released});
      const char* argv[32];
      std::size_t lens[32];
      for (std::size_t i = 0; i < args.size(); ++i) {
        argv[i] = args[i].data();
        lens[i] = args[i].size();
      }
      if (redisAsyncCommandArgv(ac_, &impl::on_reply, this, static_cast<int>(args.size()), argv,
                                lens) != REDIS_OK) {
        break;  // the context is going away; on_disconnect follows
      }
      if (sent_.empty()) last_progress_ = clock::now();
      if (t.sent_before) resent_.fetch_add(1, std::memory_order_relaxed);
      sent_.push_back(std::move(t));
      backlog_.pop_front();
      held_.fetch_sub(1, std::memory_order_relaxed);
      unacknowledged_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  static void on_reply(redisAsyncContext* /*c*/, void* raw, void* privdata) {
    auto* self = static_cast<impl*>(privdata);
    if (raw == nullptr || self->closing_ || self->sent_.empty()) return;  // torn down: re-sent
    const auto* reply = static_cast<const redisReply*>(raw);
    held_task t = std::move(self->sent_.front());
    self->sent_.pop_front();
    self->unacknowledged_.fetch_sub(1, std::memory_order_relaxed);
    self->last_progress_ = clock::now();
    if (reply->type == REDIS_REPLY_ERROR && transient(std::string_view(reply->str, reply->len))) {
      // Redis is up but cannot take writes yet (loading its AOF after a restart, a busy
      // script, a replica promoting): not the task's fault. Send it again after a reconnect.
      self->last_error_ = std::string(reply->str, reply->len);
      self->sent_.push_front(std::move(t));
      self->unacknowledged_.fetch_add(1, std::memory_order_relaxed);
      self->drop_connection();  // inside a callback: hiredis frees the context afterwards
      self->lost();
      return;
    }
    self->next_delay_ = self->options_.reconnect_initial;
    if (reply->type == REDIS_REPLY_ERROR) {
      std::string why = "Redis refused the append to \"" + t.stream +
                        "\": " + std::string(reply->str, reply->len);
      self->fail(std::move(t), publish_failure::redis_error, std::move(why));
    } else {
      t.record->handled = true;
      self->published_.fetch_add(1, std::memory_order_relaxed);
      t.work.run();  // counts ran: Redis has it
    }
    self->pump();
  }

  static bool transient(std::string_view error) noexcept {
    for (std::string_view code : {"LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN"}) {
      if (error.starts_with(code)) return true;
    }
    return false;
  }

  // While anything is held: command timeout and backlog deadline.
  void arm_watchdog() {
    if (watchdog_armed_ || closing_ || (backlog_.empty() && sent_.empty())) return;
    watchdog_armed_ = true;
    const auto shortest = std::min(options_.command_timeout, options_.backlog_deadline);
    const auto tick =
        std::clamp(shortest / 4, std::chrono::milliseconds(5), std::chrono::milliseconds(250));
    watchdog_.expires_after(tick);
    watchdog_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      self->watchdog_armed_ = false;
      if (ec || self->closing_) return;
      self->check_deadlines();
      self->arm_watchdog();
    });
  }

  void check_deadlines() {
    const auto now = clock::now();
    if (link_ == link::up && !sent_.empty() && now - last_progress_ > options_.command_timeout) {
      last_error_ = "no reply for " + std::to_string(options_.command_timeout.count()) + " ms";
      drop_connection();
      lost();
    }
    const auto overdue = [&](const held_task& t) {
      return now - t.since > options_.backlog_deadline;
    };
    if (std::none_of(backlog_.begin(), backlog_.end(), overdue)) return;
    std::deque<held_task> keep;
    std::vector<held_task> expired;
    for (held_task& t : backlog_) {
      if (overdue(t)) {
        expired.push_back(std::move(t));
      } else {
        keep.push_back(std::move(t));
      }
    }
    backlog_ = std::move(keep);
    held_.fetch_sub(expired.size(), std::memory_order_relaxed);
    const std::string why = "it waited more than " +
                            std::to_string(options_.backlog_deadline.count()) +
                            " ms in the backlog (Redis at " + options_.redis.to_string() + ": " +
                            (last_error_.empty() ? "not connected" : last_error_) + ")";
    for (held_task& t : expired) {
      if (has_fallback()) {
        t.record->handled = true;
        run_locally(std::move(t.work), *t.record);
      } else {
        fail(std::move(t), publish_failure::deadline, why);
      }
    }
  }

  boost::asio::io_context& io_;
  // Counters, any thread.
  std::atomic<std::uint64_t> published_{0};
  std::atomic<std::uint64_t> resent_{0};
  std::atomic<std::uint64_t> overflowed_{0};
  std::atomic<std::uint64_t> expired_{0};
  std::atomic<std::uint64_t> refused_{0};
  std::atomic<std::uint64_t> not_durable_{0};
  std::atomic<std::uint64_t> ran_locally_{0};
  std::atomic<std::uint64_t> connects_{0};
  std::atomic<std::uint64_t> disconnects_{0};
  std::atomic<std::size_t> held_{0};  // posted or in the backlog: bounded by backlog_limit
  std::atomic<std::size_t> unacknowledged_{0};
  std::atomic<bool> connected_{false};
  // I/O thread only.
  std::deque<held_task> backlog_;
  std::deque<held_task> sent_;  // in the order Redis will answer
  redisAsyncContext* ac_ = nullptr;
  link link_ = link::down;
  bool closing_ = false;
  bool watchdog_armed_ = false;
  std::uint64_t generation_ = 0;
  boost::asio::steady_timer retry_timer_;
  boost::asio::steady_timer connect_timer_;
  boost::asio::steady_timer watchdog_;
  std::chrono::milliseconds next_delay_;
  clock::time_point last_progress_{};
  std::string last_error_;
  std::minstd_rand jitter_;
};

namespace {
publisher_options checked(publisher_options o) {
  if (static_cast<bool>(o.fallback) != static_cast<bool>(o.run_locally)) {
    throw std::invalid_argument(
        "publisher_options: fallback and run_locally go together (one is set, the other not)");
  }
  return o;
}
}  // namespace

publisher::publisher(boost::asio::io_context& io, publisher_options options)
    : impl_(std::make_shared<impl>(io, checked(std::move(options)))) {
  detail::ignore_sigpipe();
  impl_->start();
}

publisher::~publisher() { impl_->shutdown(); }

void publisher::execute(job_batch batch) { impl_->execute(std::move(batch)); }

publisher_metrics publisher::metrics() const noexcept { return impl_->metrics(); }

const publisher_options& publisher::options() const noexcept { return impl_->options_; }

}  // namespace crosstown::redis
