#include <crosstown/redis/worker.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>

#include <hiredis/hiredis.h>

#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <future>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace crosstown::redis {

namespace {

using clock = std::chrono::steady_clock;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string default_consumer() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  return std::string(host[0] != '\0' ? host : "worker") + "-" + std::to_string(::getpid());
}

// One stream entry as read.
struct entry {
  std::string stream;
  std::string id;
  std::vector<std::pair<std::string, std::string>> fields;
  bool reclaimed = false;
  std::int64_t not_before = 0;  // set when held for a retry

  const std::string* field(std::string_view name) const {
    for (const auto& [k, v] : fields) {
      if (k == name) return &v;
    }
    return nullptr;
  }
};

std::optional<std::int64_t> to_number(const std::string* text) {
  if (text == nullptr) return std::nullopt;
  std::int64_t v = 0;
  const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), v);
  if (ec != std::errc{} || end != text->data() + text->size()) return std::nullopt;
  return v;
}

std::string str(const redisReply* r) {
  return r != nullptr && r->str != nullptr ? std::string(r->str, r->len) : std::string();
}

// [id, [field, value, ...]] -> entry; false for an entry XAUTOCLAIM reports deleted (nil).
bool read_entry(const redisReply* r, std::string_view stream, entry& out) {
  if (r == nullptr || r->type != REDIS_REPLY_ARRAY || r->elements < 2) return false;
  out.stream = std::string(stream);
  out.id = str(r->element[0]);
  out.fields.clear();
  const redisReply* f = r->element[1];
  if (f == nullptr || f->type != REDIS_REPLY_ARRAY) return false;
  for (std::size_t i = 0; i + 1 < f->elements; i += 2) {
    out.fields.emplace_back(str(f->element[i]), str(f->element[i + 1]));
  }
  return true;
}

void check(const reply_ptr& r, std::string_view what) {
  if (r && is_error(*r)) {
    throw redis_error(std::string(what) + " failed: " + std::string(reply_text(*r)));
  }
}

}  // namespace

struct worker::state {
  worker_options options;
  std::map<std::string, registration, std::less<>> handlers;
  std::string handled_names;  // for the unknown-name reason

  // Lanes: slots in use per lane; waiters sleep on lane_freed (stop() wakes them too).
  struct lane_slots {
    std::size_t limit = 1;
    std::size_t in_use = 0;
  };
  std::mutex lane_mutex;
  std::condition_variable lane_freed;
  std::map<std::string, lane_slots, std::less<>> lanes;  // guarded by lane_mutex

  // Awaitable handlers run here; created by start() when one is registered.
  std::unique_ptr<boost::asio::io_context> io;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> io_guard;
  std::vector<std::thread> io_threads;

  // True with a slot taken; false when the worker stops first.
  bool acquire_lane(std::string_view name) {
    std::unique_lock lock(lane_mutex);
    lane_slots& lane = lanes.find(name)->second;
    // Counted as the wait begins, so the figure shows a runner waiting now.
    if (lane.in_use >= lane.limit) lane_waits.fetch_add(1, std::memory_order_relaxed);
    lane_freed.wait(lock, [&] { return stopping.load() || lane.in_use < lane.limit; });
    if (lane.in_use >= lane.limit) return false;
    ++lane.in_use;
    return true;
  }
  void release_lane(std::string_view name) {
    {
      std::lock_guard lock(lane_mutex);
      --lanes.find(name)->second.in_use;
    }
    lane_freed.notify_all();
  }

  std::atomic<bool> stopping{false};
  std::mutex mutex;  // guards threads, started; and the stop wake-up
  std::condition_variable wake;
  std::vector<std::thread> threads;
  bool started = false;

  std::atomic<std::uint64_t> consumed{0}, acked{0}, retried{0}, reclaimed{0}, dead_lettered{0},
      duplicates{0}, in_flight{0}, delayed{0}, connection_errors{0}, poisoned{0}, timed_out{0},
      overruns{0}, lane_waits{0};

  void run(std::size_t index);
};

namespace {

// One runner: a connection, a consumer name and the entries it holds.
class runner {
 public:
  runner(worker::state& s, std::string consumer)
      : s_(s), o_(s.options), consumer_(std::move(consumer)) {}

  void loop() {
    auto backoff = std::chrono::milliseconds(50);
    auto next_claim = clock::now();
    while (!s_.stopping.load(std::memory_order_relaxed)) {
      try {
        if (!c_ || !c_->ok()) {
          c_.emplace(o_.redis, o_.connect_timeout, o_.command_timeout);
          create_groups();
          backoff = std::chrono::milliseconds(50);
        }
        if (clock::now() >= next_claim) {
          claim();
          next_claim = clock::now() + o_.claim_interval;
        }
        run_due();
        if (s_.stopping.load(std::memory_order_relaxed)) break;
        read(std::min(block_for(), std::chrono::duration_cast<std::chrono::milliseconds>(
                                       next_claim - clock::now())));
      } catch (const std::exception&) {
        // Redis went away (or answered nonsense): make a new connection after a pause.
        s_.connection_errors.fetch_add(1, std::memory_order_relaxed);
        c_.reset();
        std::unique_lock lock(s_.mutex);
        s_.wake.wait_for(lock, backoff, [&] { return s_.stopping.load(); });
        backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
      }
    }
    release_held();
  }

 private:
  void create_groups() {
    for (const std::string& stream : o_.streams) {
      reply_ptr r = c_->command({"XGROUP", "CREATE", stream, o_.group, "0", "MKSTREAM"});
      if (is_error(*r) && !reply_text(*r).starts_with("BUSYGROUP")) check(r, "XGROUP CREATE");
    }
  }

  std::chrono::milliseconds block_for() const {
    auto block = o_.block;
    for (const entry& e : held_) {
      const auto wait =
          std::chrono::milliseconds(std::max<std::int64_t>(0, e.not_before - now_ms()));
      block = std::min(block, wait);
    }
    return block;
  }

  void claim() {
    const std::string idle = std::to_string(o_.visibility_timeout.count());
    const std::string count = std::to_string(o_.batch);
    for (const std::string& stream : o_.streams) {
      std::string cursor = "0-0";
      // Bounded: at most a few pages per claim round.
      for (int page = 0; page < 4 && !s_.stopping.load(std::memory_order_relaxed); ++page) {
        reply_ptr r =
            c_->command({"XAUTOCLAIM", stream, o_.group, consumer_, idle, cursor, "COUNT", count});
        check(r, "XAUTOCLAIM");
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 2) break;
        cursor = str(r->element[0]);
        const redisReply* entries = r->element[1];
        std::vector<entry> got;
        for (std::size_t i = 0; entries != nullptr && i < entries->elements; ++i) {
          entry e;
          if (!read_entry(entries->element[i], stream, e)) continue;
          if (holding(e.stream, e.id)) continue;  // our own retry, waiting for its time
          e.reclaimed = true;
          got.push_back(std::move(e));
        }
        s_.reclaimed.fetch_add(got.size(), std::memory_order_relaxed);
        dead_letter_poison(got);
        process_all(got);
        if (cursor == "0-0") break;
      }
    }
  }

  // Reclaimed entries Redis delivered more than max_deliveries times (XAUTOCLAIM counts this
  // delivery too) go to the dead-letter stream instead of running again; removed from `got`.
  void dead_letter_poison(std::vector<entry>& got) {
    if (got.empty()) return;
    std::vector<std::vector<std::string_view>> cmds;
    cmds.reserve(got.size());
    for (const entry& e : got) cmds.push_back({"XPENDING", e.stream, o_.group, e.id, e.id, "1"});
    const auto replies = c_->pipeline(cmds);
    std::vector<entry> keep;
    for (std::size_t i = 0; i < got.size(); ++i) {
      const redisReply* r = replies[i].get();
      check(replies[i], "XPENDING");
      long long deliveries = 0;
      if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->elements >= 4 &&
          r->element[0]->element[3]->type == REDIS_REPLY_INTEGER) {
        deliveries = r->element[0]->element[3]->integer;
      }
      if (deliveries > static_cast<long long>(o_.max_deliveries)) {
        s_.consumed.fetch_add(1, std::memory_order_relaxed);
        s_.poisoned.fetch_add(1, std::memory_order_relaxed);
        dead_letter(got[i],
                    "poison: delivered " + std::to_string(deliveries) +
                        " times without being acknowledged (max_deliveries " +
                        std::to_string(o_.max_deliveries) + ")",
                    "");
      } else {
        keep.push_back(std::move(got[i]));
      }
    }
    got = std::move(keep);
  }

  bool holding(std::string_view stream, std::string_view id) const {
    return std::any_of(held_.begin(), held_.end(),
                       [&](const entry& e) { return e.stream == stream && e.id == id; });
  }

  void read(std::chrono::milliseconds block) {
    block = std::max(block, std::chrono::milliseconds(1));
    std::vector<std::string_view> args{"XREADGROUP", "GROUP", o_.group, consumer_, "COUNT"};
    const std::string count = std::to_string(o_.batch);
    const std::string block_ms = std::to_string(block.count());
    args.insert(args.end(), {count, "BLOCK", block_ms, "STREAMS"});
    for (const std::string& s : o_.streams) args.push_back(s);
    for (std::size_t i = 0; i < o_.streams.size(); ++i) args.push_back(">");
    c_->set_timeout(block + o_.command_timeout);
    reply_ptr r = c_->command(args);
    c_->set_timeout(o_.command_timeout);
    check(r, "XREADGROUP");
    if (r->type != REDIS_REPLY_ARRAY) return;  // nil: nothing within the block time
    std::vector<entry> got;
    for (std::size_t i = 0; i < r->elements; ++i) {
      const redisReply* s = r->element[i];
      if (s == nullptr || s->type != REDIS_REPLY_ARRAY || s->elements < 2) continue;
      const std::string stream = str(s->element[0]);
      const redisReply* entries = s->element[1];
      for (std::size_t j = 0; entries != nullptr && j < entries->elements; ++j) {
        entry e;
        if (read_entry(entries->element[j], stream, e)) got.push_back(std::move(e));
      }
    }
    process_all(got);
  }

  // Runs entries in order; on stop, what was not started is given back.
  void process_all(std::vector<entry>& got) {
    std::size_t i = 0;
    for (; i < got.size() && !s_.stopping.load(std::memory_order_relaxed); ++i) {
      process(std::move(got[i]));
    }
    for (; i < got.size(); ++i) release(got[i]);
  }

  void run_due() {
    const std::int64_t now = now_ms();
    for (std::size_t i = 0; i < held_.size() && !s_.stopping.load(std::memory_order_relaxed);) {
      if (held_[i].not_before <= now) {
        entry e = std::move(held_[i]);
        held_.erase(held_.begin() + static_cast<std::ptrdiff_t>(i));
        s_.delayed.fetch_sub(1, std::memory_order_relaxed);
        run(e);
      } else {
        ++i;
      }
    }
  }

  void process(entry e) {
    s_.consumed.fetch_add(1, std::memory_order_relaxed);
    for (const char* required : {"name", "payload", "key"}) {
      if (e.field(required) == nullptr) {
        dead_letter(e, std::string("malformed entry: no \"") + required + "\" field", "");
        return;
      }
    }
    if (const std::string* a = e.field("attempt"); a != nullptr && !to_number(a)) {
      dead_letter(e, "malformed entry: attempt \"" + *a + "\" is not a number", "");
      return;
    }
    const std::string& name = *e.field("name");
    if (s_.handlers.find(name) == s_.handlers.end()) {
      dead_letter(
          e, "unknown task name \"" + name + "\" (this worker handles: " + s_.handled_names + ")",
          "");
      return;
    }
    if (const auto not_before = to_number(e.field("not_before"));
        not_before && *not_before > now_ms()) {
      e.not_before = *not_before;
      held_.push_back(std::move(e));
      s_.delayed.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    run(e);
  }

  task_context context_of(const entry& e) {
    task_context ctx;
    ctx.stream = e.stream;
    ctx.id = e.id;
    if (const auto* v = e.field("name")) ctx.name = *v;
    if (const auto* v = e.field("payload")) ctx.payload = *v;
    if (const auto* v = e.field("key")) ctx.key = *v;
    ctx.attempt = static_cast<std::uint32_t>(
        std::max<std::int64_t>(1, to_number(e.field("attempt")).value_or(1)));
    ctx.released_ms = to_number(e.field("released")).value_or(0);
    ctx.reclaimed = e.reclaimed;
    ctx.redis = c_ ? &*c_ : nullptr;
    return ctx;
  }

  void run(const entry& e) {
    const task_context ctx = context_of(e);
    const std::string done_key = o_.dedup_prefix + std::string(ctx.key);
    const bool dedup = o_.dedup_ttl.count() > 0;
    if (dedup) {
      reply_ptr r = c_->command({"EXISTS", done_key});
      check(r, "EXISTS");
      if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
        check(c_->command({"XACK", e.stream, o_.group, e.id}), "XACK");
        s_.duplicates.fetch_add(1, std::memory_order_relaxed);
        return;
      }
    }
    const worker::registration& reg = s_.handlers.find(ctx.name)->second;
    const std::string& lane = reg.options.lane;
    if (!lane.empty()) {
      if (!s_.acquire_lane(lane)) {
        release(e);  // stopping while it waited for a slot: not started, given back
        return;
      }
    }
    s_.in_flight.fetch_add(1, std::memory_order_relaxed);
    std::exception_ptr failure = reg.awaitable ? run_awaitable(reg, ctx) : run_blocking(reg, ctx);
    s_.in_flight.fetch_sub(1, std::memory_order_relaxed);
    if (!lane.empty()) s_.release_lane(lane);
    std::string error;
    bool malformed = false;
    if (failure) {
      try {
        std::rethrow_exception(failure);
      } catch (const malformed_task& m) {
        malformed = true;
        error = m.what();
      } catch (const std::exception& x) {
        error = x.what();
        if (error.empty()) error = "exception without a message";
      } catch (...) {
        error = "unknown exception";
      }
    }
    if (!c_ || !c_->ok()) throw redis_error("the connection broke while the handler ran");
    if (error.empty() && !malformed) {
      const std::string ttl = std::to_string(o_.dedup_ttl.count());
      std::vector<std::vector<std::string_view>> cmds;
      if (dedup) cmds.push_back({"SET", done_key, "1", "EX", ttl});
      cmds.push_back({"XACK", e.stream, o_.group, e.id});
      for (const auto& r : c_->pipeline(cmds)) check(r, "XACK");
      s_.acked.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (malformed) {
      dead_letter(e, "malformed: " + error, error);
      return;
    }
    const retry_policy* policy = reg.options.retry ? &*reg.options.retry : nullptr;
    const std::uint32_t max_attempts = policy != nullptr ? policy->max_attempts : o_.max_attempts;
    if (ctx.attempt >= max_attempts) {
      dead_letter(e, "failed after " + std::to_string(ctx.attempt) + " attempts", error);
      return;
    }
    if (policy != nullptr && policy->retry_if) {
      bool again = false;
      try {
        again = policy->retry_if(failure);
      } catch (...) {  // counts as "do not retry", as in retry.hpp
      }
      if (!again) {
        dead_letter(e,
                    "not retried: the retry policy declined this failure (attempt " +
                        std::to_string(ctx.attempt) + ")",
                    error);
        return;
      }
    }
    retry(e, ctx, error, backoff(policy, ctx.attempt));
  }

  std::chrono::milliseconds backoff(const retry_policy* policy, std::uint32_t failed) {
    if (policy != nullptr) {
      const double unit = std::uniform_real_distribution<double>(0, 1)(jitter_);
      return std::chrono::ceil<std::chrono::milliseconds>(retry_backoff(*policy, failed, unit));
    }
    auto delay = o_.retry_initial;
    for (std::uint32_t i = 1; i < failed && delay < o_.retry_max; ++i) delay *= 2;
    return std::min(delay, o_.retry_max);
  }

  std::exception_ptr run_blocking(const worker::registration& reg, const task_context& ctx) {
    const auto started = clock::now();
    std::exception_ptr failure;
    try {
      reg.blocking(ctx);
    } catch (...) {
      failure = std::current_exception();
    }
    if (reg.options.timeout.count() > 0 && clock::now() - started > reg.options.timeout) {
      s_.overruns.fetch_add(1, std::memory_order_relaxed);  // cannot be stopped; it stands
    }
    return failure;
  }

  // Runs the coroutine on the worker's io_context and waits for it; past the timeout it is
  // cancelled (terminal) and waited for again, and the attempt counts as timed out.
  std::exception_ptr run_awaitable(const worker::registration& reg, const task_context& ctx) {
    std::promise<std::exception_ptr> done;
    std::future<std::exception_ptr> result = done.get_future();
    // The coroutine and the emit of its cancellation run on one strand (io_threads may be
    // more than one). The signal is shared with the posted emit, which may run after the
    // coroutine ended and this frame is gone; the promise belongs to the completion handler.
    const auto strand = boost::asio::make_strand(*s_.io);
    const auto cancel = std::make_shared<boost::asio::cancellation_signal>();
    try {
      boost::asio::co_spawn(
          strand, reg.awaitable(ctx),
          boost::asio::bind_cancellation_slot(
              cancel->slot(), [done = std::move(done)](std::exception_ptr ep) mutable {
                done.set_value(std::move(ep));
              }));
    } catch (...) {  // the handler threw before it became a coroutine
      return std::current_exception();
    }
    const auto timeout = reg.options.timeout;
    if (timeout.count() <= 0 || result.wait_for(timeout) == std::future_status::ready) {
      return result.get();
    }
    // A coroutine that has just completed has cleared its slot: the emit is then a no-op.
    boost::asio::post(strand, [cancel] { cancel->emit(boost::asio::cancellation_type::terminal); });
    result.wait();  // cancellation is cooperative: wait for it to unwind
    (void)result.get();
    s_.timed_out.fetch_add(1, std::memory_order_relaxed);
    return std::make_exception_ptr(
        std::runtime_error("timed out after " + std::to_string(timeout.count()) + " ms"));
  }

  void retry(const entry& e, const task_context& ctx, const std::string& error,
             std::chrono::milliseconds delay) {
    const std::string attempt = std::to_string(ctx.attempt + 1);
    const std::string not_before = std::to_string(now_ms() + delay.count());
    const std::string released = std::to_string(ctx.released_ms);
    std::vector<std::vector<std::string_view>> cmds;
    cmds.push_back({"MULTI"});
    std::vector<std::string_view> add{"XADD", e.stream, "*"};
    for (const auto& [k, v] : e.fields) {
      if (k == "attempt" || k == "not_before" || k == "last_error") continue;
      add.insert(add.end(), {k, v});
    }
    add.insert(add.end(), {"attempt", attempt, "not_before", not_before, "last_error", error});
    cmds.push_back(std::move(add));
    cmds.push_back({"XACK", e.stream, o_.group, e.id});
    cmds.push_back({"EXEC"});
    const auto replies = c_->pipeline(cmds);
    for (const auto& r : replies) check(r, "retry (MULTI/XADD/XACK/EXEC)");
    s_.retried.fetch_add(1, std::memory_order_relaxed);
  }

  void dead_letter(const entry& e, const std::string& reason, const std::string& error) {
    const std::string dead = e.stream + o_.dead_letter_suffix;
    const task_context ctx = context_of(e);
    const std::string attempt = std::to_string(ctx.attempt);
    const std::string failed = std::to_string(now_ms());
    std::vector<std::vector<std::string_view>> cmds;
    cmds.push_back({"MULTI"});
    std::vector<std::string_view> add{"XADD", dead, "*"};
    for (const auto& [k, v] : e.fields) {
      if (k == "error" || k == "reason" || k == "source_id" || k == "attempt") continue;
      add.insert(add.end(), {k, v});
    }
    add.insert(add.end(), {"attempt", attempt, "reason", reason, "error", error, "source_id", e.id,
                           "failed", failed});
    cmds.push_back(std::move(add));
    cmds.push_back({"XACK", e.stream, o_.group, e.id});
    cmds.push_back({"EXEC"});
    for (const auto& r : c_->pipeline(cmds)) check(r, "dead-letter (MULTI/XADD/XACK/EXEC)");
    s_.dead_lettered.fetch_add(1, std::memory_order_relaxed);
    if (o_.on_dead_letter) {
      try {
        o_.on_dead_letter(ctx, reason + (error.empty() ? "" : ": " + error));
      } catch (...) {  // a hook must not kill the runner
      }
    }
  }

  // Gives an entry back: idle as if its visibility timeout had passed, so any consumer's next
  // XAUTOCLAIM takes it (JUSTID: its delivery count is not raised).
  void release(const entry& e) noexcept {
    try {
      if (!c_ || !c_->ok()) return;  // it stays pending; reclaimed after the timeout
      const std::string idle = std::to_string(o_.visibility_timeout.count());
      c_->command({"XCLAIM", e.stream, o_.group, consumer_, "0", e.id, "IDLE", idle, "JUSTID"});
    } catch (...) {
    }
  }

  void release_held() noexcept {
    for (const entry& e : held_) release(e);
    s_.delayed.fetch_sub(held_.size(), std::memory_order_relaxed);
    held_.clear();
  }

  worker::state& s_;
  const worker_options& o_;
  std::string consumer_;
  std::optional<connection> c_;
  std::vector<entry> held_;  // retries waiting for their not_before time
  std::minstd_rand jitter_{std::random_device{}()};
};

}  // namespace

void worker::state::run(std::size_t index) {
  std::string consumer = options.consumer.empty() ? default_consumer() : options.consumer;
  if (index > 0) consumer += "-" + std::to_string(index);
  runner r(*this, std::move(consumer));
  r.loop();
}

worker::worker(worker_options options)
    : options_(std::move(options)), state_(std::make_shared<state>()) {
  if (options_.streams.empty()) throw std::invalid_argument("worker_options: no streams");
  if (options_.group.empty()) throw std::invalid_argument("worker_options: empty group name");
  if (options_.threads == 0) throw std::invalid_argument("worker_options: threads is 0");
  if (options_.batch == 0) throw std::invalid_argument("worker_options: batch is 0");
  if (options_.max_attempts == 0) throw std::invalid_argument("worker_options: max_attempts is 0");
  if (options_.io_threads == 0) throw std::invalid_argument("worker_options: io_threads is 0");
  if (options_.max_deliveries == 0) {
    throw std::invalid_argument("worker_options: max_deliveries is 0");
  }
  for (const auto& [name, limit] : options_.lanes) {
    if (name.empty()) throw std::invalid_argument("worker_options: a lane with an empty name");
    if (limit == 0) {
      throw std::invalid_argument("worker_options: lane \"" + name + "\" has max in flight 0");
    }
  }
}

worker::~worker() {
  stop();
  join();
}

void worker::add(std::string name, registration r) {
  detail::check_task_name(name);
  const handler_options& o = r.options;
  if (!o.lane.empty() && options_.lanes.find(o.lane) == options_.lanes.end()) {
    throw std::invalid_argument("worker::handle(\"" + name + "\"): no lane \"" + o.lane +
                                "\" in worker_options::lanes");
  }
  if (o.timeout.count() < 0) {
    throw std::invalid_argument("worker::handle(\"" + name + "\"): negative timeout");
  }
  if (o.retry && o.retry->max_attempts == 0) {
    throw std::invalid_argument("worker::handle(\"" + name +
                                "\"): retry.max_attempts is 0 (at least 1)");
  }
  std::lock_guard lock(state_->mutex);
  if (state_->started) {
    throw std::invalid_argument("worker::handle(\"" + name + "\") after start()");
  }
  if (!handlers_.emplace(name, std::move(r)).second) {
    throw std::invalid_argument("worker::handle: \"" + name + "\" is already registered");
  }
}

void worker::handle(std::string name, task_handler fn, handler_options options) {
  if (!fn) throw std::invalid_argument("worker::handle: empty handler for \"" + name + "\"");
  add(std::move(name), registration{std::move(fn), {}, std::move(options)});
}

void worker::handle_json(std::string name, json_handler fn, handler_options options) {
  if (!fn) throw std::invalid_argument("worker::handle_json: empty handler for \"" + name + "\"");
  handle(
      std::move(name),
      [fn = std::move(fn)](const task_context& ctx) { fn(parse_json_payload(ctx.payload), ctx); },
      std::move(options));
}

void worker::handle_awaitable(std::string name, awaitable_handler fn, handler_options options) {
  if (!fn) {
    throw std::invalid_argument("worker::handle_awaitable: empty handler for \"" + name + "\"");
  }
  add(std::move(name), registration{{}, std::move(fn), std::move(options)});
}

void worker::start() {
  std::lock_guard lock(state_->mutex);
  if (state_->started) throw std::logic_error("worker::start: already started");
  state_->started = true;
  state_->options = options_;
  state_->handlers = handlers_;
  bool awaitable = false;
  for (const auto& [name, r] : handlers_) {
    if (!state_->handled_names.empty()) state_->handled_names += ", ";
    state_->handled_names += name;
    awaitable = awaitable || static_cast<bool>(r.awaitable);
  }
  for (const auto& [name, limit] : options_.lanes) {
    state_->lanes.emplace(name, state::lane_slots{limit, 0});
  }
  if (awaitable) {
    state_->io = std::make_unique<boost::asio::io_context>();
    state_->io_guard.emplace(state_->io->get_executor());
    for (std::size_t i = 0; i < options_.io_threads; ++i) {
      state_->io_threads.emplace_back([io = state_->io.get()] { io->run(); });
    }
  }
  for (std::size_t i = 0; i < options_.threads; ++i) {
    state_->threads.emplace_back([s = state_, i] { s->run(i); });
  }
}

void worker::stop() noexcept {
  state_->stopping.store(true);
  {
    std::lock_guard lock(state_->mutex);
    state_->wake.notify_all();
  }
  std::lock_guard lock(state_->lane_mutex);
  state_->lane_freed.notify_all();
}

void worker::join() noexcept {
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(state_->mutex);
    threads = std::move(state_->threads);
  }
  for (std::thread& t : threads) {
    if (t.joinable()) t.join();
  }
  // The runners waited for their coroutines, so the io_context has nothing left to run.
  std::vector<std::thread> io_threads;
  {
    std::lock_guard lock(state_->mutex);
    state_->io_guard.reset();
    io_threads = std::move(state_->io_threads);
  }
  for (std::thread& t : io_threads) {
    if (t.joinable()) t.join();
  }
}

worker_metrics worker::metrics() const noexcept {
  const state& s = *state_;
  worker_metrics m;
  m.consumed = s.consumed.load(std::memory_order_relaxed);
  m.acked = s.acked.load(std::memory_order_relaxed);
  m.retried = s.retried.load(std::memory_order_relaxed);
  m.reclaimed = s.reclaimed.load(std::memory_order_relaxed);
  m.dead_lettered = s.dead_lettered.load(std::memory_order_relaxed);
  m.duplicates = s.duplicates.load(std::memory_order_relaxed);
  m.in_flight = s.in_flight.load(std::memory_order_relaxed);
  m.delayed = s.delayed.load(std::memory_order_relaxed);
  m.connection_errors = s.connection_errors.load(std::memory_order_relaxed);
  m.poisoned = s.poisoned.load(std::memory_order_relaxed);
  m.timed_out = s.timed_out.load(std::memory_order_relaxed);
  m.overruns = s.overruns.load(std::memory_order_relaxed);
  m.lane_waits = s.lane_waits.load(std::memory_order_relaxed);
  return m;
}

}  // namespace crosstown::redis
