#include <crosstown/job.hpp>

#include <crosstown/detail/ledger.hpp>

#include <exception>
#include <string>
#include <utility>

namespace crosstown {

std::string task_info::describe() const {
  std::string out;
  if (!name.empty()) {
    out.append("\"").append(name).append("\" (request ").append(std::to_string(request_id));
    out.append(", task ").append(std::to_string(index)).append(")");
  } else {
    out.append("task ").append(std::to_string(index)).append(" of request ");
    out.append(std::to_string(request_id));
  }
  return out;
}

std::ostream& operator<<(std::ostream& out, const task_info& info) {
  return out << info.describe();
}

job& job::operator=(job&& other) noexcept {
  if (this != &other) {
    if (ledger_ != nullptr) drop();
    fn_ = std::move(other.fn_);
    name_ = std::move(other.name_);
    request_id_ = other.request_id_;
    index_ = other.index_;
    ledger_ = std::exchange(other.ledger_, nullptr);
    handed_off_ = other.handed_off_;
  }
  return *this;
}

detail::ledger::origin job::origin() const noexcept {
  return handed_off_ ? detail::ledger::origin::queued : detail::ledger::origin::unreleased;
}

void job::run() noexcept {
  if (ledger_ == nullptr) return;
  detail::ledger* ledger = std::exchange(ledger_, nullptr);
  ledger->started(handed_off_);
  task_state outcome = task_state::ran;
  try {
    fn_();
  } catch (...) {
    outcome = task_state::failed;
    task_failure failure{info(), std::current_exception(), "unknown exception"};
    try {
      std::rethrow_exception(failure.error);
    } catch (const std::exception& e) {
      failure.message = e.what();
    } catch (...) {
    }
    ledger->report_failure(failure);
  }
  // The closure's captures are released before the job counts as finished, so a drain that
  // returns has seen every capture destroyed.
  fn_.reset();
  ledger->finished(outcome, detail::ledger::origin::running, info());
}

void job::reject() noexcept {
  if (ledger_ == nullptr) return;
  detail::ledger* ledger = std::exchange(ledger_, nullptr);
  fn_.reset();
  ledger->report_lost(info(), task_state::rejected_by_overflow);
  ledger->finished(task_state::rejected_by_overflow, origin(), info());
}

void job::drop() noexcept {
  if (ledger_ == nullptr) return;
  detail::ledger* ledger = std::exchange(ledger_, nullptr);
  fn_.reset();
  ledger->report_lost(info(), task_state::dropped_at_shutdown);
  ledger->finished(task_state::dropped_at_shutdown, origin(), info());
}

}  // namespace crosstown
