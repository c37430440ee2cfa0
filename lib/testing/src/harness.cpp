#include <crosstown/testing/harness.hpp>

#include <algorithm>
#include <stdexcept>

namespace crosstown::testkit {

void PrintTo(const task_record& r, std::ostream* out) {
  *out << "{" << task_info{r.request_id, r.index, r.name}.describe() << ": " << r.state
       << ", status " << r.status
       << (r.after_response ? ", after the response" : ", BEFORE the response") << "}";
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
    if (owner_.completed(info.request_id)) {
      owner_.released_after_.emplace_back(info.request_id, info.index);
    }
  }
  owner_.manual_.execute(std::move(batch));
}

void harness::on_settled(const task_info& info, task_state state) {
  // Called inside the scope's lock: record only, never call back into the scope.
  const bool released_after =
      std::find(released_after_.begin(), released_after_.end(),
                std::pair{info.request_id, info.index}) != released_after_.end();
  history_.push_back({info.request_id, info.index, std::string(info.name), state,
                      status_of(info.request_id), released_after});
}

bool harness::next_task() { return manual_.run_one(); }

std::size_t harness::run_all() { return manual_.run_all(); }

const task_record* harness::find(std::string_view name) const {
  auto it = std::find_if(history_.rbegin(), history_.rend(),
                         [&](const task_record& r) { return r.name == name; });
  return it == history_.rend() ? nullptr : &*it;
}

std::size_t harness::ran() const {
  return static_cast<std::size_t>(
      std::count_if(history_.begin(), history_.end(),
                    [](const task_record& r) { return r.state == task_state::ran; }));
}

}  // namespace crosstown::testkit
