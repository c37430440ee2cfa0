#include <crosstown/redis/worker.hpp>

#include <hiredis/hiredis.h>

#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <optional>
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
  std::map<std::string, task_handler, std::less<>> handlers;
  std::string handled_names;  // for the unknown-name reason

  std::atomic<bool> stopping{false};
  std::mutex mutex;  // guards threads, started; and the stop wake-up
  std::condition_variable wake;
  std::vector<std::thread> threads;
  bool started = false;

  std::atomic<std::uint64_t> consumed{0}, acked{0}, retried{0}, reclaimed{0}, dead_lettered{0},
      duplicates{0}, in_flight{0}, delayed{0}, connection_errors{0};

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
        process_all(got);
        if (cursor == "0-0") break;
      }
    }
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
    const auto& handler = s_.handlers.find(ctx.name)->second;
    std::string error;
    bool malformed = false;
    s_.in_flight.fetch_add(1, std::memory_order_relaxed);
    try {
      handler(ctx);
    } catch (const malformed_task& m) {
      malformed = true;
      error = m.what();
    } catch (const std::exception& x) {
      error = x.what();
      if (error.empty()) error = "exception without a message";
    } catch (...) {
      error = "unknown exception";
    }
    s_.in_flight.fetch_sub(1, std::memory_order_relaxed);
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
    if (ctx.attempt < o_.max_attempts) {
      retry(e, ctx, error);
    } else {
      dead_letter(e, "failed after " + std::to_string(ctx.attempt) + " attempts", error);
    }
  }

  void retry(const entry& e, const task_context& ctx, const std::string& error) {
    auto delay = o_.retry_initial;
    for (std::uint32_t i = 1; i < ctx.attempt && delay < o_.retry_max; ++i) delay *= 2;
    delay = std::min(delay, o_.retry_max);
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
}

worker::~worker() {
  stop();
  join();
}

void worker::handle(std::string name, task_handler fn) {
  detail::check_task_name(name);
  if (!fn) throw std::invalid_argument("worker::handle: empty handler for \"" + name + "\"");
  std::lock_guard lock(state_->mutex);
  if (state_->started) {
    throw std::invalid_argument("worker::handle(\"" + name + "\") after start()");
  }
  if (!handlers_.emplace(name, std::move(fn)).second) {
    throw std::invalid_argument("worker::handle: \"" + name + "\" is already registered");
  }
}

void worker::handle_json(std::string name, json_handler fn) {
  if (!fn) throw std::invalid_argument("worker::handle_json: empty handler for \"" + name + "\"");
  handle(std::move(name), [fn = std::move(fn)](const task_context& ctx) {
    fn(parse_json_payload(ctx.payload), ctx);
  });
}

void worker::start() {
  std::lock_guard lock(state_->mutex);
  if (state_->started) throw std::logic_error("worker::start: already started");
  state_->started = true;
  state_->options = options_;
  state_->handlers = handlers_;
  for (const auto& [name, fn] : handlers_) {
    if (!state_->handled_names.empty()) state_->handled_names += ", ";
    state_->handled_names += name;
  }
  for (std::size_t i = 0; i < options_.threads; ++i) {
    state_->threads.emplace_back([s = state_, i] { s->run(i); });
  }
}

void worker::stop() noexcept {
  state_->stopping.store(true);
  std::lock_guard lock(state_->mutex);
  state_->wake.notify_all();
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
  return m;
}

}  // namespace crosstown::redis
