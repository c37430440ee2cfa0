#include <crosstown/response_scope.hpp>

#include <crosstown/detail/ledger.hpp>
#include <crosstown/fault.hpp>
#include <crosstown/runtime.hpp>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

namespace crosstown {

namespace detail {

void hand_off(runtime& rt, std::vector<released_task>&& tasks) noexcept {
  if (tasks.empty()) return;
  rt.ledger().handed_off(tasks.size());
  for (released_task& t : tasks) t.work.mark_handed_off();

  executor* const same_thread = &same_thread_executor::instance();
  // One batch per executor in order of first appearance; a response rarely uses more than two.
  std::vector<std::pair<executor*, job_batch>> batches;
  if (std::all_of(tasks.begin(), tasks.end(),
                  [&](const released_task& t) { return t.target == tasks.front().target; })) {
    batches.emplace_back(tasks.front().target, job_batch{}).second.reserve(tasks.size());
  }
  for (released_task& t : tasks) {
    auto it = std::find_if(batches.begin(), batches.end(),
                           [&](const auto& b) { return b.first == t.target; });
    if (it == batches.end()) it = batches.insert(batches.end(), {t.target, job_batch{}});
    it->second.push_back(std::move(t.work));
  }
  // Same-thread tasks run on this thread; hand the others over first so they start meanwhile.
  std::stable_partition(batches.begin(), batches.end(),
                        [&](const auto& b) { return b.first != same_thread; });
  for (auto& [target, batch] : batches) {
    try {
      // Injected: the executor refuses the batch, exactly as if `execute` had thrown.
      if (CROSSTOWN_FAULT("hand_off.execute_throws")) throw std::runtime_error("injected fault");
      target->execute(std::move(batch));
    } catch (...) {
      // The batch was moved into the call: its jobs were destroyed, so counted as dropped and
      // reported. Carry on with the other executors.
    }
  }
}

}  // namespace detail

namespace {

std::string status_text(int status) { return std::to_string(status); }

}  // namespace

response_scope::response_scope(runtime& rt)
    : rt_(rt), connection_(nullptr), id_(rt.next_request_id()) {}

response_scope::response_scope(connection_scope& connection)
    : rt_(connection.owner()), connection_(&connection), id_(rt_.next_request_id()) {}

response_scope::~response_scope() { end(); }

void response_scope::defer(task fn, defer_options options) {
  if (!fn) throw std::invalid_argument("crosstown::response_scope::defer: the task is empty");
  if (options.same_thread && options.executor) {
    throw std::invalid_argument(
        "crosstown::defer_options: both same_thread and executor are set; choose one");
  }
  executor* target =
      options.same_thread ? &same_thread_executor::instance() : options.executor.get();

  std::unique_lock lock(mutex_);
  entry e{std::move(fn),   std::move(options.name), options.no_go,  target,
          next_index_++,   options.phase,           options.always, options.require_delivery};
  if (!e.name.empty()) {
    auto same = std::find_if(entries_.begin(), entries_.end(),
                             [&](const entry& p) { return p.name == e.name; });
    if (same != entries_.end()) {
      rt_.ledger().settled_pending(task_state::cancelled, info_of(*same));
      entries_.erase(same);
    }
  }
  if (due_locked(e.phase)) {
    rt_.ledger().registered();
    settle_or_release_locked(std::move(e));
    flush(lock);
    return;
  }
  entries_.push_back(std::move(e));
  rt_.ledger().registered();
}

bool response_scope::cancel(std::string_view name) {
  std::lock_guard lock(mutex_);
  auto it = std::find_if(entries_.begin(), entries_.end(),
                         [&](const entry& e) { return !e.name.empty() && e.name == name; });
  if (it == entries_.end()) return false;
  rt_.ledger().settled_pending(task_state::cancelled, info_of(*it));
  entries_.erase(it);
  return true;
}

void response_scope::status_known(int status) {
  if (status < status_set::min_code || status > status_set::max_code) {
    throw std::invalid_argument("crosstown::response_scope::status_known: status " +
                                status_text(status) + " is outside 100-999");
  }
  std::lock_guard lock(mutex_);
  check_open_locked("status_known");
  if (status_ != status && (headers_sent_ || delivery_ != delivery::pending)) {
    throw std::logic_error("crosstown::response_scope::status_known(" + status_text(status) +
                           ") after the status " + status_text(status_) +
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

bool response_scope::due_locked(enum phase p) const noexcept {
  switch (p) {
    case phase::headers_sent: return headers_sent_ || delivery_ != delivery::pending || ended_;
    case phase::response_sent: return delivery_ != delivery::pending || ended_;
    case phase::connection_closed: return ended_;
  }
  return false;
}

void response_scope::settle_or_release_locked(entry&& e) {
  if (!e.always && e.no_go.contains(status_)) {
    rt_.ledger().settled_pending(task_state::skipped_by_status, info_of(e));
    return;
  }
  const bool delivered =
      e.phase == phase::headers_sent ? headers_sent_ : delivery_ == delivery::delivered;
  if (e.require_delivery && !delivered) {
    rt_.ledger().settled_pending(task_state::skipped_by_delivery, info_of(e));
    return;
  }
  executor* target = e.target != nullptr ? e.target : &rt_.pool();
  if (executor* redirect = rt_.redirected_to()) target = redirect;
  detail::released_task released{
      job(std::move(e.fn), id_, e.index, std::move(e.name), &rt_.ledger()), target};
  if (e.phase == phase::connection_closed && connection_ != nullptr) {
    to_connection_.push_back(std::move(released));
  } else {
    outbox_.push_back(std::move(released));
  }
}

void response_scope::release_due_locked() {
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
    std::vector<detail::released_task> now;
    now.swap(outbox_);
    std::vector<detail::released_task> later;
    if (ended_) later.swap(to_connection_);
    lock.unlock();
    detail::hand_off(rt_, std::move(now));
    if (!later.empty()) connection_->adopt(std::move(later));
    lock.lock();
  }
  dispatching_ = false;
  handoff_done_.notify_all();
}

task_info response_scope::info_of(const entry& e) const noexcept {
  return {id_, e.index, e.name};
}

std::vector<pending_task> response_scope::pending_tasks() const {
  std::lock_guard lock(mutex_);
  std::vector<pending_task> out;
  out.reserve(entries_.size());
  for (const entry& e : entries_) {
    out.push_back({e.index, e.name, e.phase, e.no_go, e.always, e.require_delivery,
                   e.target == &same_thread_executor::instance(), e.target});
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
  std::vector<detail::released_task> ready;
  {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    closed_ = true;
    ready.swap(held_);
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

void connection_scope::adopt(std::vector<detail::released_task>&& tasks) noexcept {
  {
    std::lock_guard lock(mutex_);
    if (!closed_) {
      std::move(tasks.begin(), tasks.end(), std::back_inserter(held_));
      return;
    }
  }
  detail::hand_off(rt_, std::move(tasks));
}

}  // namespace crosstown
