#include <crosstown/job.hpp>

#include <crosstown/detail/ledger.hpp>
#include <crosstown/detail/task_plan.hpp>

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
  if (fn_.plan() != nullptr) {
    detail::run_planned(std::move(*this));
    return;
  }
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
  if (detail::task_plan* plan = fn_.plan()) plan->outcome = task_state::rejected_by_overflow;
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

running_job job::start_detached() noexcept {
  running_job out;
  detail::ledger* ledger = std::exchange(ledger_, nullptr);
  ledger->started(handed_off_);
  out.fn_ = std::move(fn_);
  out.name_ = std::move(name_);
  out.request_id_ = request_id_;
  out.index_ = index_;
  out.ledger_ = ledger;
  return out;
}

void running_job::finish(task_state outcome, std::exception_ptr error) noexcept {
  if (ledger_ == nullptr) return;
  detail::ledger* ledger = std::exchange(ledger_, nullptr);
  if (outcome == task_state::failed || outcome == task_state::timed_out) {
    task_failure failure{info(), std::move(error), "unknown exception"};
    if (failure.error) {
      try {
        std::rethrow_exception(failure.error);
      } catch (const std::exception& e) {
        failure.message = e.what();
      } catch (...) {
      }
    }
    ledger->report_failure(failure);
  } else if (outcome != task_state::ran) {
    ledger->report_lost(info(), outcome);
  }
  if (detail::task_plan* plan = fn_.plan()) plan->outcome = outcome;
  // As in job::run: captures are released before the job counts as finished.
  fn_.reset();
  ledger->finished(outcome, detail::ledger::origin::running, info());
}

}  // namespace crosstown
