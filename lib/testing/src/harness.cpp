#include <crosstown/testing/harness.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <stdexcept>

namespace crosstown::testkit {

void PrintTo(const task_record& r, std::ostream* out) {
  *out << "{" << task_info{r.request_id, r.index, r.name}.describe() << ": " << r.state
       << ", status " << r.status;
  if (!r.released) {
    *out << ", never released";
  } else {
    *out << (r.after_response ? ", released after the response" : ", released BEFORE the response");
  }
  *out << "}";
}

harness::escape_watch::escape_watch(harness& owner) noexcept
    : owner_(owner),
      previous_(detail::observe_unbound_deferrals(this)),
      handler_thread_(std::this_thread::get_id()) {}

harness::escape_watch::~escape_watch() { detail::observe_unbound_deferrals(previous_); }

bool harness::escape_watch::escaped(task& fn, const defer_options* options) noexcept {
  try {
    escaped_deferral record{options != nullptr ? options->name : std::string(),
                            owner_.scope_ ? owner_.scope_->id() : 0,
                            std::this_thread::get_id() == handler_thread_};
    {
      std::lock_guard lock(owner_.escaped_mutex_);
      owner_.escaped_.push_back(record);
      owner_.escaped_tasks_.push_back(std::move(fn));
    }
    ADD_FAILURE() << "crosstown::defer"
                  << (record.name.empty() ? std::string() : " of \"" + record.name + "\"")
                  << " was called with no response scope bound, "
                  << (record.on_handler_thread ? "on the handler's thread"
                                               : "on another thread than the handler's")
                  << ", while the harness handled request " << record.request_id
                  << ": the deferral escaped the harness (in production it would run at once, "
                     "during the handler). Bind the scope on that thread or pass the "
                     "response_scope& to it. The task was not run; see harness::escaped().";
    return true;
  } catch (...) {
    return false;  // no memory to record it: let the policy apply as without a harness
  }
}

harness::harness()
    : rt_(std::make_unique<runtime>(runtime_options{
          .threads = 1,
          .on_error = [](const task_failure&) {},  // recorded as `failed` in history()
          .on_lost = [](const task_info&, task_state) {},
          .on_settled = [this](const task_info& info,
                               task_state state) { on_settled(info, state); },
      })),
      connection_(std::make_unique<connection_scope>(*rt_)) {
  rt_->redirect_all_to(recorder_);
}

harness::~harness() {
  scope_.reset();
  connection_.reset();
  manual_.drop_all();
  rt_.reset();
}

response_scope& harness::begin_request() {
  if (scope_) end_request();
  scope_ = std::make_unique<response_scope>(*connection_);
  return *scope_;
}

response_scope& harness::scope() {
  if (!scope_) throw std::logic_error("crosstown::testkit::harness: no request; call() first");
  return *scope_;
}

std::vector<pending_task> harness::deferred() const {
  return scope_ ? scope_->pending_tasks() : std::vector<pending_task>{};
}

void harness::respond(int status) {
  response_scope& s = scope();
  s.status_known(status);
  s.headers_sent();
  s.response_sent();
  fill_status();
}

void harness::fail_delivery(int status, std::string_view reason) {
  response_scope& s = scope();
  s.status_known(status);
  s.delivery_failed(reason);
  fill_status();
}

void harness::end_request() {
  if (!scope_) return;
  scope_->end();
  fill_status();
}

void harness::close_connection() {
  end_request();
  connection_->closed();
}

void harness::fill_status() {
  const std::uint64_t id = scope_->id();
  const int status = scope_->status().value_or(0);
  auto known = std::find_if(responded_.begin(), responded_.end(),
                            [&](const auto& r) { return r.first == id; });
  if (known == responded_.end()) {
    responded_.emplace_back(id, status);
  } else {
    known->second = status;
  }
  for (task_record& r : history_) {
    if (r.request_id == id && r.status == 0) r.status = status;
  }
}

int harness::status_of(std::uint64_t request_id) const {
  for (const auto& [id, status] : responded_) {
    if (id == request_id) return status;
  }
  return 0;
}

bool harness::completed(std::uint64_t request_id) const {
  // Called during a hand-off, when the scope's lock is not held. Every request before the
  // current one has ended; the current one (or none, while it is being destroyed) is asked.
  return scope_ == nullptr || scope_->id() != request_id ||
         scope_->delivery_state() != delivery::pending;
}

void harness::release_recorder::execute(job_batch batch) {
  for (const job& j : batch) {
    const task_info info = j.info();
    owner_.released_[{info.request_id, info.index}] = owner_.completed(info.request_id);
  }
  owner_.manual_.execute(std::move(batch));
}

void harness::on_settled(const task_info& info, task_state state) {
  // Called with no crosstown lock held, so the current scope can be asked for its status.
  int status = status_of(info.request_id);
  if (status == 0 && scope_ && scope_->id() == info.request_id) {
    status = scope_->status().value_or(0);
  }
  const auto released = released_.find({info.request_id, info.index});
  const bool was_released = released != released_.end();
  history_.push_back({info.request_id, info.index, std::string(info.name), state, status,
                      was_released && released->second, was_released});
}

const std::vector<task_record>& harness::history() const {
  // A test that drives h.scope() itself reports the status after some tasks settled
  // (cancelled ones, say): they learn it now.
  if (scope_) {
    const std::uint64_t id = scope_->id();
    const int status = scope_->status().value_or(0);
    if (status != 0) {
      for (task_record& r : history_) {
        if (r.request_id == id && r.status == 0) r.status = status;
      }
    }
  }
  return history_;
}

std::vector<escaped_deferral> harness::escaped() const {
  std::lock_guard lock(escaped_mutex_);
  return escaped_;
}

bool harness::next_task() { return manual_.run_one(); }

std::size_t harness::run_all() { return manual_.run_all(); }

const task_record* harness::find(std::string_view name) const {
  const std::vector<task_record>& records = history();
  auto it = std::find_if(records.rbegin(), records.rend(),
                         [&](const task_record& r) { return r.name == name; });
  return it == records.rend() ? nullptr : &*it;
}

std::size_t harness::ran() const {
  return static_cast<std::size_t>(
      std::count_if(history_.begin(), history_.end(),
                    [](const task_record& r) { return r.state == task_state::ran; }));
}

}  // namespace crosstown::testkit
