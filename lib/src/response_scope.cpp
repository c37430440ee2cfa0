#include <crosstown/response_scope.hpp>

#include <crosstown/detail/ledger.hpp>
#include <crosstown/detail/task_plan.hpp>
#include <crosstown/fault.hpp>
#include <crosstown/runtime.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

namespace crosstown {

namespace {

constexpr std::string_view ended_early = "the scope ended before the response was sent";
constexpr std::string_view failed_without_reason = "delivery failed";
constexpr std::string_view reason_not_kept =
    "delivery failed (the adapter's reason could not be kept: out of memory)";

std::size_t hash_name(std::string_view name) noexcept {
  return std::hash<std::string_view>{}(name);
}

// Removes the jobs bound for `target` from `from`, in order, passing each to `sink`; the
// others stay in `from`, in order. Allocates nothing (`sink` may not either).
template <class Sink>
void extract_jobs(detail::released_tasks& from, executor* target, Sink sink) noexcept {
  std::size_t keep = 0;
  for (std::size_t i = 0; i < from.size(); ++i) {
    if (from.targets[i] == target) {
      sink(std::move(from.jobs[i]), target);
    } else {
      if (keep != i) {
        from.jobs[keep] = std::move(from.jobs[i]);
        from.targets[keep] = from.targets[i];
      }
      ++keep;
    }
  }
  // Only shrinks; the jobs beyond `keep` were moved from. resize(n) with n <= size() does not
  // allocate, but needs a default constructor: pop instead.
  while (from.jobs.size() > keep) from.jobs.pop_back();
  while (from.targets.size() > keep) from.targets.pop_back();
}

}  // namespace

namespace detail {

void hand_off(runtime& rt, released_tasks&& tasks) noexcept {
  if (tasks.empty()) return;
  ledger& accounts = rt.ledger({});
  accounts.handed_off(tasks.size());
  for (job& j : tasks.jobs) j.mark_handed_off({});

  auto execute = [&accounts](executor* target, job_batch& batch) noexcept {
    // The jobs an exception out of `execute` destroys were refused by the executor: they count
    // as `rejected_by_executor`, not as a shutdown. Jobs it drops deliberately (a pool that
    // has shut down) still count as dropped.
    drop_reason refused(accounts, task_state::rejected_by_executor, true);
    try {
      if (fault::hit("hand_off.execute_throws")) {
        // Injected: the executor refuses the batch, exactly as if `execute` had thrown.
        [](job_batch) { throw std::runtime_error("injected fault"); }(std::move(batch));
      }
      target->execute(std::move(batch));
    } catch (...) {
      // Counted and reported as the batch was destroyed; carry on with the other executors.
    }
  };

  executor* const first = tasks.targets.front();
  if (std::all_of(tasks.targets.begin(), tasks.targets.end(),
                  [first](executor* t) { return t == first; })) {
    execute(first, tasks.jobs);
    return;
  }
  // One batch per executor in order of first appearance; a response rarely uses more than two.
  // Every allocation comes before the first job moves, so running out of memory drops the
  // jobs as what happened to them.
  std::vector<std::pair<executor*, job_batch>> batches;
  try {
    std::vector<std::size_t> sizes;
    for (executor* target : tasks.targets) {
      auto it = std::find_if(batches.begin(), batches.end(),
                             [&](const auto& b) { return b.first == target; });
      if (it == batches.end()) {
        batches.emplace_back(target, job_batch{});
        sizes.push_back(1);
      } else {
        ++sizes[static_cast<std::size_t>(it - batches.begin())];
      }
    }
    for (std::size_t i = 0; i < batches.size(); ++i) batches[i].second.reserve(sizes[i]);
  } catch (...) {
    drop_reason no_memory(accounts, task_state::dropped_out_of_memory, false);
    batches.clear();
    tasks.jobs.clear();
    return;
  }
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    auto it = std::find_if(batches.begin(), batches.end(),
                           [&](const auto& b) { return b.first == tasks.targets[i]; });
    it->second.push_back(std::move(tasks.jobs[i]));  // reserved: does not allocate
  }
  // Same-thread tasks run on this thread; hand the others over first so they start meanwhile.
  executor* const same_thread = &same_thread_executor::instance();
  std::stable_partition(batches.begin(), batches.end(),
                        [&](const auto& b) { return b.first != same_thread; });
  for (auto& [target, batch] : batches) execute(target, batch);
}

}  // namespace detail

response_scope::response_scope(runtime& rt)
    : rt_(rt), connection_(nullptr), id_(rt.next_request_id({})) {}

response_scope::response_scope(connection_scope& connection)
    : rt_(connection.owner()), connection_(&connection), id_(rt_.next_request_id({})) {}

response_scope::~response_scope() { end(); }

namespace {

// `set == status_set::default_no_go()`, inline: the defaulted comparison calls memcmp, which
// cost ~55 instructions of every `defer` with options (callgrind, benchmarks/registration.cpp
// --crosstown_callgrind), nearly all of them tasks that keep the default set. OR-ing the XORs
// of the 16 words has no branch and no call.
bool is_default_no_go(const status_set& set) noexcept {
  using words = std::array<std::uint64_t, sizeof(status_set) / sizeof(std::uint64_t)>;
  static_assert(sizeof(words) == sizeof(status_set) && std::is_trivially_copyable_v<status_set>);
  static constexpr words default_words = std::bit_cast<words>(status_set::default_no_go());
  const auto w = std::bit_cast<words>(set);
  std::uint64_t diff = 0;
  for (std::size_t i = 0; i < w.size(); ++i) diff |= w[i] ^ default_words[i];
  return diff == 0;
}

}  // namespace

void response_scope::defer(task fn, defer_options options) {
  if (options.same_thread && options.executor) {
    throw std::invalid_argument(
        "crosstown::defer_options: both same_thread and executor are set; choose one");
  }
  executor* target =
      options.same_thread ? &same_thread_executor::instance() : options.executor.get();
  // A lane or a timeout: the task carries a plan (detail/task_plan.hpp); awaitable_task.cpp.
  if (detail::needs_plan(options)) fn = detail::plan_blocking(rt_, std::move(fn), options, target);
  add(std::move(fn), {.name = options.name,
                      .target = target,
                      .no_go = &options.no_go,
                      .phase = options.phase,
                      .always = options.always,
                      .require_delivery = options.require_delivery});
}

void response_scope::defer(task fn) { add(std::move(fn), registration{}); }

void response_scope::add(task&& fn, const registration& r) {
  const std::string_view name = r.name;
  if (!fn) throw std::invalid_argument("crosstown::response_scope::defer: the task is empty");
  if (name.size() > std::numeric_limits<std::uint32_t>::max()) {
    throw std::length_error(
        "crosstown::response_scope::defer: the task name is longer than 4294967295 characters");
  }
  detail::task_name owned_name(name);  // may allocate: before anything changes
  std::optional<settled_entry> replaced;
  bool due = false;
  {
    std::unique_lock lock(mutex_);
    // Everything that may throw comes before a same-named task is replaced, so a failed defer
    // leaves the scope as it was.
    if (next_index_ == std::numeric_limits<std::uint32_t>::max()) {
      throw std::length_error(
          "crosstown::response_scope::defer: a response cannot register more than 4294967295 "
          "tasks");
    }
    // The default set is checked here, inline, not in intern_locked's frame (see
    // is_default_no_go).
    const std::uint32_t set =
        r.no_go == nullptr || is_default_no_go(*r.no_go) ? 0 : intern_locked(*r.no_go);
    // The first task makes room for a few: most handlers defer more than one, and growing from
    // one entry at a time would allocate at 1, 2 and 4.
    if (entries_.capacity() == 0) entries_.reserve(initial_capacity);
    if (entries_.size() == entries_.capacity()) entries_.reserve(2 * entries_.capacity());
    due = due_locked(r.phase);
    const bool indexed = !owned_name.empty() && !due;
    if (indexed) names_.reserve_one();
    // Nothing below throws.
    if (!owned_name.empty()) {
      if (entry* same = find_named_locked(name)) {
        replaced.emplace(bury_locked(*same, task_state::cancelled));
      }
    }
    entries_.emplace_back(std::move(fn), std::move(owned_name), r.target, next_index_++, set,
                          r.phase, r.always, r.require_delivery, verdict::pending);
    if (indexed) {
      names_.insert(hash_name(name), static_cast<std::uint32_t>(entries_.size() - 1));
    }
    rt_.ledger({}).registered();
    if (replaced) compact_if_sparse_locked();
  }
  // The replaced closure is destroyed, and reported, with the lock released: its destructor
  // and the hooks may call into this scope.
  if (replaced) settle(std::move(*replaced));
  if (due) {
    std::unique_lock lock(mutex_);
    flush(lock);
  }
}

std::uint32_t response_scope::intern_locked(const status_set& set) {
  if (is_default_no_go(set)) return 0;  // add() checks first; kept for any other caller
  const std::size_t hash = std::hash<status_set>{}(set);
  if (auto known =
          no_go_index_.find(hash, [&](std::uint32_t at) { return no_go_sets_[at] == set; })) {
    return *known + 1;
  }
  if (no_go_sets_.size() == no_go_sets_.capacity()) {
    no_go_sets_.reserve(std::max<std::size_t>(4, 2 * no_go_sets_.size()));
  }
  no_go_index_.reserve_one();
  // Nothing below throws. At most one set per task, so the count fits the task index.
  no_go_sets_.push_back(set);
  const auto at = static_cast<std::uint32_t>(no_go_sets_.size() - 1);
  no_go_index_.insert(hash, at);
  return at + 1;
}

const status_set& response_scope::no_go_of(const entry& e) const noexcept {
  static constexpr status_set default_set = status_set::default_no_go();
  return e.no_go == 0 ? default_set : no_go_sets_[e.no_go - 1];
}

response_scope::entry* response_scope::find_named_locked(std::string_view name) noexcept {
  const auto at = names_.find(hash_name(name), [&](std::uint32_t p) {
    const entry& e = entries_[p];
    return e.fn && e.name.view() == name && !due_locked(e.phase);
  });
  return at ? &entries_[*at] : nullptr;
}

response_scope::settled_entry response_scope::bury_locked(entry& e, task_state state) noexcept {
  names_.erase(hash_name(e.name.view()), static_cast<std::uint32_t>(&e - entries_.data()));
  ++dead_;
  return {std::move(e.fn), std::move(e.name), e.index, state};
}

void response_scope::compact_if_sparse_locked() noexcept {
  // Amortised: at least half the list is tombstones, so each removal pays for two moves.
  if (dead_ < 16 || dead_ * 2 < entries_.size()) return;
  std::erase_if(entries_, [](const entry& e) { return !e.fn; });
  dead_ = 0;
  rebuild_name_index_locked();
}

void response_scope::rebuild_name_index_locked() noexcept {
  // No more names than before: the table has room, so this does not allocate.
  names_.clear();
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    const entry& e = entries_[i];
    if (e.fn && !e.name.empty() && !due_locked(e.phase)) {
      names_.insert(hash_name(e.name.view()), static_cast<std::uint32_t>(i));
    }
  }
}

void response_scope::settle(settled_entry&& s) noexcept {
  // The closure's captures go first, as for a job: whoever sees the state sees them gone.
  s.fn.reset();
  rt_.ledger({}).settled_pending(s.state, {id_, s.index, s.name.view()});
}

bool response_scope::cancel(std::string_view name) {
  std::optional<settled_entry> doomed;
  {
    std::lock_guard lock(mutex_);
    entry* e = find_named_locked(name);
    if (e == nullptr) return false;
    doomed.emplace(bury_locked(*e, task_state::cancelled));
    compact_if_sparse_locked();
  }
  settle(std::move(*doomed));
  return true;
}

void response_scope::status_known(int status) {
  if (status < status_set::min_code || status > status_set::max_code) {
    throw std::invalid_argument("crosstown::response_scope::status_known: status " +
                                std::to_string(status) + " is outside 100-999");
  }
  std::lock_guard lock(mutex_);
  check_open_locked("status_known");
  if (status_ != status && (headers_sent_ || delivery_ != delivery::pending)) {
    throw std::logic_error("crosstown::response_scope::status_known(" + std::to_string(status) +
                           ") after the status " + std::to_string(status_) +
                           " went out: the status can no longer change");
  }
  status_ = status;
}

void response_scope::headers_sent() {
  std::unique_lock lock(mutex_);
  check_open_locked("headers_sent");
  if (status_ == 0) {
    throw std::logic_error(
        "crosstown::response_scope::headers_sent() before status_known(): report the status "
        "first");
  }
  if (delivery_ == delivery::failed) {
    throw std::logic_error("crosstown::response_scope::headers_sent() after delivery_failed()");
  }
  if (headers_sent_) return;
  headers_sent_ = true;
  flush(lock);
}

void response_scope::response_sent() {
  std::unique_lock lock(mutex_);
  check_open_locked("response_sent");
  if (status_ == 0) {
    throw std::logic_error(
        "crosstown::response_scope::response_sent() before status_known(): report the status "
        "first");
  }
  if (delivery_ == delivery::failed) {
    throw std::logic_error("crosstown::response_scope::response_sent() after delivery_failed()");
  }
  if (delivery_ == delivery::delivered) return;
  headers_sent_ = true;
  delivery_ = delivery::delivered;
  flush(lock);
}

void response_scope::delivery_failed(std::string_view reason) {
  std::unique_lock lock(mutex_);
  check_open_locked("delivery_failed");
  if (delivery_ == delivery::delivered) {
    throw std::logic_error("crosstown::response_scope::delivery_failed() after response_sent()");
  }
  if (delivery_ == delivery::failed) return;
  if (reason.empty()) {
    finish_locked(failed_without_reason, true);
  } else {
    finish_locked(reason, false);
  }
  flush(lock);
}

void response_scope::end() noexcept {
  std::unique_lock lock(mutex_);
  if (!ended_) {
    if (delivery_ == delivery::pending) {
      if (!headers_sent_) status_ = 500;  // the response never started going out
      finish_locked(ended_early, true);
    }
    ended_ = true;
    flush(lock);
  }
  // Another thread may still be handing over or running same-thread tasks (a late
  // registration); the scope must outlive it. A task of this scope ending it from inside the
  // hand-off or the same-thread run must not wait on itself.
  const std::thread::id me = std::this_thread::get_id();
  handoff_done_.wait(lock, [&] {
    return (!handing_off_ || hand_off_thread_ == me) &&
           (!running_same_thread_ || same_thread_runner_ == me);
  });
}

void response_scope::finish_locked(std::string_view reason, bool static_reason) noexcept {
  if (status_ == 0) status_ = 500;
  delivery_ = delivery::failed;
  if (static_reason) {
    static_reason_ = reason;
    return;
  }
  try {
    failure_reason_.assign(reason);
    static_reason_ = {};
  } catch (...) {
    // An event must not throw for lack of memory; the outcome matters, the text less.
    static_reason_ = reason_not_kept;
  }
}

void response_scope::check_open_locked(const char* event) const {
  if (ended_) {
    throw std::logic_error(std::string("crosstown::response_scope::") + event +
                           "() after the scope ended");
  }
}

bool response_scope::due_locked(task_phase p) const noexcept {
  switch (p) {
    case task_phase::headers_sent: return headers_sent_ || delivery_ != delivery::pending || ended_;
    case task_phase::response_sent: return delivery_ != delivery::pending || ended_;
    case task_phase::connection_closed: return ended_;
  }
  return false;
}

response_scope::verdict response_scope::judge_locked(const entry& e) const noexcept {
  if (!e.always && no_go_of(e).contains(status_)) return verdict::skip_status;
  const bool delivered =
      e.phase == task_phase::headers_sent ? headers_sent_ : delivery_ == delivery::delivered;
  if (e.require_delivery && !delivered) return verdict::skip_delivery;
  if (e.phase == task_phase::connection_closed && connection_ != nullptr) {
    return verdict::to_connection;
  }
  return verdict::release;
}

bool response_scope::take_due_locked(std::vector<entry>& out) noexcept {
  std::size_t due = 0;
  for (const entry& e : entries_) due += e.fn && due_locked(e.phase) ? 1 : 0;
  if (due == 0) return false;
  if (due + dead_ == entries_.size()) {
    // Everything left is due (always so at the end): the list itself is taken, without
    // allocating or moving an entry.
    for (entry& e : entries_) {
      if (e.fn) e.judged = judge_locked(e);
    }
    out.clear();
    std::swap(out, entries_);
    dead_ = 0;
    names_.clear();
    return true;
  }
  try {
    out.reserve(due);
  } catch (...) {
    // No memory to split them off: they stay, due, and go at the next event - at the latest
    // at the end, where everything is due and taken as a whole.
    return false;
  }
  for (entry& e : entries_) {
    if (e.fn && due_locked(e.phase)) {
      e.judged = judge_locked(e);
      out.push_back(std::move(e));  // reserved: does not allocate; leaves a tombstone
    }
  }
  std::erase_if(entries_, [](const entry& e) { return !e.fn; });
  dead_ = 0;
  rebuild_name_index_locked();
  return true;
}

detail::released_tasks response_scope::release(std::vector<entry>&& due) noexcept {
  std::vector<entry> taken = std::move(due);  // freed here, outside the lock
  detail::ledger& accounts = rt_.ledger({});
  std::size_t now_count = 0;
  std::size_t later_count = 0;
  for (const entry& e : taken) {
    if (!e.fn) continue;
    now_count += e.judged == verdict::release ? 1 : 0;
    later_count += e.judged == verdict::to_connection ? 1 : 0;
  }
  detail::released_tasks now;
  detail::released_tasks later;
  bool room = true;
  try {
    now.reserve(now_count);
    later.reserve(later_count);
  } catch (...) {
    room = false;  // every allowed task of this event ends as dropped_out_of_memory
  }
  executor* const redirect = rt_.redirected_to();
  for (entry& e : taken) {
    if (!e.fn) continue;
    switch (e.judged) {
      case verdict::skip_status:
      case verdict::skip_delivery:
        e.fn.reset();  // the captures go before the state is reported
        accounts.settled_pending(e.judged == verdict::skip_status ? task_state::skipped_by_status
                                                                  : task_state::skipped_by_delivery,
                                 info_of(e));
        break;
      case verdict::release:
      case verdict::to_connection: {
        if (!room) {
          e.fn.reset();
          accounts.settled_lost(task_state::dropped_out_of_memory, info_of(e));
          break;
        }
        executor* target = e.target != nullptr ? e.target : &rt_.pool();
        if (redirect != nullptr) target = redirect;
        job work(std::move(e.fn), id_, e.index, std::move(e.name), &accounts, {});
        (e.judged == verdict::release ? now : later).push_back(std::move(work), target);
        break;
      }
      case verdict::pending: break;  // not taken unless judged
    }
  }
  // Same-thread jobs are run by one thread at a time, after the others were handed over; the
  // others go now, so a late registration never waits behind a running same-thread task.
  executor* const same_thread = &same_thread_executor::instance();
  const auto same_count =
      static_cast<std::size_t>(std::count(now.targets.begin(), now.targets.end(), same_thread));
  detail::released_tasks mine;
  if (same_count == now.size()) {
    std::swap(mine, now);
  } else if (same_count > 0) {
    bool split = true;
    try {
      mine.reserve(same_count);
    } catch (...) {
      split = false;
    }
    if (split) {
      extract_jobs(now, same_thread,
                   [&](job&& j, executor* t) { mine.push_back(std::move(j), t); });
    } else {
      // Without room to set them apart, the same-thread jobs are dropped; the others go.
      detail::drop_reason no_memory(accounts, task_state::dropped_out_of_memory, false);
      extract_jobs(now, same_thread, [](job&& j, executor*) { job gone = std::move(j); });
    }
  }
  detail::hand_off(rt_, std::move(now));
  if (!later.empty()) connection_->adopt(std::move(later));
  return mine;
}

void response_scope::flush(std::unique_lock<std::mutex>& lock) noexcept {
  // Hand-offs of one scope are serialized, so they keep registration order: whoever finds
  // none in progress takes and hands over until nothing is due; others (including a task
  // deferring more from inside the hand-off) leave their entries to it. No user code runs
  // with the lock held: judging happens under it, settling and handing over after it.
  if (!handing_off_) {
    handing_off_ = true;
    hand_off_thread_ = std::this_thread::get_id();
    for (;;) {
      std::vector<entry> due;
      if (!take_due_locked(due)) break;
      lock.unlock();
      detail::released_tasks mine = release(std::move(due));
      lock.lock();
      if (mine.empty()) continue;
      if (same_thread_.empty()) {
        std::swap(same_thread_, mine);
        continue;
      }
      bool room = true;
      try {
        same_thread_.reserve(same_thread_.size() + mine.size());
      } catch (...) {
        room = false;
      }
      if (room) {
        same_thread_.append(std::move(mine));
      } else {
        lock.unlock();
        detail::drop_reason no_memory(rt_.ledger({}), task_state::dropped_out_of_memory, false);
        mine = {};  // the jobs are destroyed, counted and reported as out of memory
        lock.lock();
      }
    }
    handing_off_ = false;
    handoff_done_.notify_all();
  }
  run_same_thread(lock);
}

void response_scope::run_same_thread(std::unique_lock<std::mutex>& lock) noexcept {
  // One thread runs a scope's same-thread jobs, one after another in registration order; a
  // same-thread job deferring another same-thread job queues it behind itself.
  if (running_same_thread_ || same_thread_.empty()) return;
  running_same_thread_ = true;
  same_thread_runner_ = std::this_thread::get_id();
  while (!same_thread_.empty()) {
    detail::released_tasks batch;
    std::swap(batch, same_thread_);
    lock.unlock();
    detail::hand_off(rt_, std::move(batch));
    lock.lock();
  }
  running_same_thread_ = false;
  handoff_done_.notify_all();
}

task_info response_scope::info_of(const entry& e) const noexcept {
  return {id_, e.index, e.name.view()};
}

std::vector<pending_task> response_scope::pending_tasks() const {
  std::lock_guard lock(mutex_);
  std::vector<pending_task> out;
  out.reserve(entries_.size() - dead_);
  for (const entry& e : entries_) {
    if (!e.fn) continue;
    out.push_back({e.index, std::string(e.name.view()), e.phase, no_go_of(e), e.always,
                   e.require_delivery, e.target == &same_thread_executor::instance(), e.target});
  }
  return out;
}

std::optional<int> response_scope::status() const {
  std::lock_guard lock(mutex_);
  if (status_ == 0) return std::nullopt;
  return status_;
}

delivery response_scope::delivery_state() const {
  std::lock_guard lock(mutex_);
  return delivery_;
}

std::string response_scope::failure_reason() const {
  std::lock_guard lock(mutex_);
  return static_reason_.empty() ? failure_reason_ : std::string(static_reason_);
}

std::size_t response_scope::pending() const {
  std::lock_guard lock(mutex_);
  return entries_.size() - dead_;
}

bool response_scope::ended() const {
  std::lock_guard lock(mutex_);
  return ended_;
}

connection_scope::connection_scope(runtime& rt) : rt_(rt) {}

connection_scope::~connection_scope() { closed(); }

void connection_scope::closed() noexcept {
  detail::released_tasks ready;
  {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    closed_ = true;
    std::swap(ready, held_);
  }
  detail::hand_off(rt_, std::move(ready));
}

bool connection_scope::is_closed() const {
  std::lock_guard lock(mutex_);
  return closed_;
}

std::size_t connection_scope::held() const {
  std::lock_guard lock(mutex_);
  return held_.size();
}

void connection_scope::adopt(detail::released_tasks&& tasks) noexcept {
  bool no_room = false;
  {
    std::lock_guard lock(mutex_);
    if (!closed_) {
      if (held_.empty()) {
        std::swap(held_, tasks);
        return;
      }
      try {
        held_.reserve(held_.size() + tasks.size());
        held_.append(std::move(tasks));  // reserved: does not allocate
        return;
      } catch (...) {
        no_room = true;
      }
    }
  }
  if (no_room) {
    // Destroyed outside the lock: counted and reported as out of memory.
    detail::drop_reason no_memory(rt_.ledger({}), task_state::dropped_out_of_memory, false);
    tasks = {};
    return;
  }
  detail::hand_off(rt_, std::move(tasks));
}

}  // namespace crosstown
