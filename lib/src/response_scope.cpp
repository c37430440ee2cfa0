#include <crosstown/response_scope.hpp>

#include <crosstown/detail/ledger.hpp>
#include <crosstown/detail/task_plan.hpp>
#include <crosstown/fault.hpp>
#include <crosstown/runtime.hpp>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

namespace crosstown {

namespace detail {

void hand_off(runtime& rt, released_tasks&& tasks) noexcept {
  if (tasks.empty()) return;
  rt.ledger({}).handed_off(tasks.size());
  for (job& j : tasks.jobs) j.mark_handed_off({});

  auto execute = [](executor* target, job_batch&& batch) noexcept {
    try {
      // Injected: the executor refuses the batch, exactly as if `execute` had thrown.
      if (fault::hit("hand_off.execute_throws")) throw std::runtime_error("injected fault");
      target->execute(std::move(batch));
    } catch (...) {
      // The batch was moved into the call: its jobs were destroyed, so counted as dropped and
      // reported. Carry on with the other executors.
    }
  };

  executor* const first = tasks.targets.front();
  if (std::all_of(tasks.targets.begin(), tasks.targets.end(),
                  [first](executor* t) { return t == first; })) {
    execute(first, std::move(tasks.jobs));
    return;
  }
  executor* const same_thread = &same_thread_executor::instance();
  // One batch per executor in order of first appearance; a response rarely uses more than two.
  std::vector<std::pair<executor*, job_batch>> batches;
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    executor* const target = tasks.targets[i];
    auto it = std::find_if(batches.begin(), batches.end(),
                           [&](const auto& b) { return b.first == target; });
    if (it == batches.end()) it = batches.insert(batches.end(), {target, job_batch{}});
    it->second.push_back(std::move(tasks.jobs[i]));
  }
  // Same-thread tasks run on this thread; hand the others over first so they start meanwhile.
  std::stable_partition(batches.begin(), batches.end(),
                        [&](const auto& b) { return b.first != same_thread; });
  for (auto& [target, batch] : batches) execute(target, std::move(batch));
}

}  // namespace detail

response_scope::response_scope(runtime& rt)
    : rt_(rt), connection_(nullptr), id_(rt.next_request_id({})) {}

response_scope::response_scope(connection_scope& connection)
    : rt_(connection.owner()), connection_(&connection), id_(rt_.next_request_id({})) {}

response_scope::~response_scope() { end(); }

void response_scope::defer(task fn, defer_options options) {
  if (options.same_thread && options.executor) {
    throw std::invalid_argument(
        "crosstown::defer_options: both same_thread and executor are set; choose one");
  }
  executor* target =
      options.same_thread ? &same_thread_executor::instance() : options.executor.get();
  // A lane or a timeout: the task carries a plan (detail/task_plan.hpp); awaitable_task.cpp.
  if (detail::needs_plan(options)) fn = detail::plan_blocking(rt_, std::move(fn), options, target);
  add(std::move(fn), options.name, target, &options.no_go, options.phase, options.always,
      options.require_delivery);
}

void response_scope::defer(task fn) {
  add(std::move(fn), {}, nullptr, nullptr, task_phase::response_sent, false, false);
}

// `no_go` null: the default set.
void response_scope::add(task&& fn, std::string_view name, executor* target,
                         const status_set* no_go, task_phase phase, bool always,
                         bool require_delivery) {
  if (!fn) throw std::invalid_argument("crosstown::response_scope::defer: the task is empty");
  detail::task_name owned_name(name);  // may allocate: before anything changes
  std::unique_lock lock(mutex_);
  // Everything that may throw comes before a same-named task is replaced, so a failed defer
  // leaves the scope as it was.
  const std::uint16_t set = no_go == nullptr ? 0 : intern_locked(*no_go);
  // The first task makes room for a few: most handlers defer more than one, and growing from
  // one entry at a time would allocate at 1, 2 and 4.
  if (entries_.capacity() == 0) entries_.reserve(initial_capacity);
  if (entries_.size() == entries_.capacity()) entries_.reserve(2 * entries_.capacity());
  if (!owned_name.empty()) {
    auto same = std::find_if(entries_.begin(), entries_.end(),
                             [&](const entry& p) { return p.name.view() == name; });
    if (same != entries_.end()) {
      rt_.ledger({}).settled_pending(task_state::cancelled, info_of(*same));
      entries_.erase(same);
    }
  }
  entry& e = entries_.emplace_back(std::move(fn), std::move(owned_name), target, next_index_++, set,
                                   phase, always, require_delivery);
  rt_.ledger({}).registered();
  if (due_locked(e.phase)) {
    entry late = std::move(e);
    entries_.pop_back();
    settle_or_release_locked(std::move(late));
    flush(lock);
  }
}

std::uint16_t response_scope::intern_locked(const status_set& set) {
  static constexpr status_set default_set = status_set::default_no_go();
  if (set == default_set) return 0;
  // Newest first: a handler deferring many tasks usually repeats the set it used last.
  for (std::size_t i = no_go_sets_.size(); i > 0; --i) {
    if (no_go_sets_[i - 1] == set) return static_cast<std::uint16_t>(i);
  }
  if (no_go_sets_.size() >= max_no_go_sets) {
    throw std::length_error("crosstown::response_scope::defer: more than " +
                            std::to_string(max_no_go_sets) +
                            " distinct no-go sets in one response");
  }
  no_go_sets_.push_back(set);
  return static_cast<std::uint16_t>(no_go_sets_.size());
}

const status_set& response_scope::no_go_of(const entry& e) const noexcept {
  static constexpr status_set default_set = status_set::default_no_go();
  return e.no_go == 0 ? default_set : no_go_sets_[e.no_go - 1];
}

bool response_scope::cancel(std::string_view name) {
  std::lock_guard lock(mutex_);
  auto it = std::find_if(entries_.begin(), entries_.end(),
                         [&](const entry& e) { return !e.name.empty() && e.name.view() == name; });
  if (it == entries_.end()) return false;
  rt_.ledger({}).settled_pending(task_state::cancelled, info_of(*it));
  entries_.erase(it);
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
  release_due_locked();
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
  release_due_locked();
  flush(lock);
}

void response_scope::delivery_failed(std::string_view reason) {
  std::unique_lock lock(mutex_);
  check_open_locked("delivery_failed");
  if (delivery_ == delivery::delivered) {
    throw std::logic_error("crosstown::response_scope::delivery_failed() after response_sent()");
  }
  if (delivery_ == delivery::failed) return;
  finish_locked(reason.empty() ? std::string_view("delivery failed") : reason);
  release_due_locked();
  flush(lock);
}

void response_scope::end() noexcept {
  std::unique_lock lock(mutex_);
  if (!ended_) {
    if (delivery_ == delivery::pending) {
      if (!headers_sent_) status_ = 500;  // the response never started going out
      finish_locked("the scope ended before the response was sent");
    }
    ended_ = true;
    release_due_locked();
    flush(lock);
  }
  // Another thread may still be handing over (a late registration); the scope must outlive it.
  // A same-thread task of this scope ending it from inside the hand-off must not wait on itself.
  if (dispatching_ && dispatcher_ == std::this_thread::get_id()) return;
  handoff_done_.wait(lock, [this] { return !dispatching_; });
}

void response_scope::finish_locked(std::string_view reason) {
  if (status_ == 0) status_ = 500;
  delivery_ = delivery::failed;
  failure_reason_.assign(reason);
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

void response_scope::settle_or_release_locked(entry&& e) {
  if (!e.always && no_go_of(e).contains(status_)) {
    rt_.ledger({}).settled_pending(task_state::skipped_by_status, info_of(e));
    return;
  }
  const bool delivered =
      e.phase == task_phase::headers_sent ? headers_sent_ : delivery_ == delivery::delivered;
  if (e.require_delivery && !delivered) {
    rt_.ledger({}).settled_pending(task_state::skipped_by_delivery, info_of(e));
    return;
  }
  executor* target = e.target != nullptr ? e.target : &rt_.pool();
  if (executor* redirect = rt_.redirected_to()) target = redirect;
  job work(std::move(e.fn), id_, e.index, std::move(e.name), &rt_.ledger({}), {});
  if (e.phase == task_phase::connection_closed && connection_ != nullptr) {
    to_connection_.push_back(std::move(work), target);
  } else {
    outbox_.push_back(std::move(work), target);
  }
}

void response_scope::release_due_locked() {
  outbox_.reserve(outbox_.size() + entries_.size());
  auto keep = entries_.begin();
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (due_locked(it->phase)) {
      settle_or_release_locked(std::move(*it));
    } else {
      if (keep != it) *keep = std::move(*it);
      ++keep;
    }
  }
  entries_.erase(keep, entries_.end());
}

void response_scope::flush(std::unique_lock<std::mutex>& lock) {
  // Hand-offs of one scope are serialized: whoever finds none in progress hands over until the
  // outbox stays empty; others (including a same-thread task deferring more) just queue.
  if (dispatching_) return;
  dispatching_ = true;
  dispatcher_ = std::this_thread::get_id();
  while (!outbox_.empty() || (!to_connection_.empty() && ended_)) {
    detail::released_tasks now;
    std::swap(now, outbox_);
    detail::released_tasks later;
    if (ended_) std::swap(later, to_connection_);
    lock.unlock();
    detail::hand_off(rt_, std::move(now));
    if (!later.empty()) connection_->adopt(std::move(later));
    lock.lock();
  }
  dispatching_ = false;
  handoff_done_.notify_all();
}

task_info response_scope::info_of(const entry& e) const noexcept {
  return {id_, e.index, e.name.view()};
}

std::vector<pending_task> response_scope::pending_tasks() const {
  std::lock_guard lock(mutex_);
  std::vector<pending_task> out;
  out.reserve(entries_.size());
  for (const entry& e : entries_) {
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
  return failure_reason_;
}

std::size_t response_scope::pending() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
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
  {
    std::lock_guard lock(mutex_);
    if (!closed_) {
      held_.append(std::move(tasks));
      return;
    }
  }
  detail::hand_off(rt_, std::move(tasks));
}

}  // namespace crosstown
