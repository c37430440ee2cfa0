#include <crosstown/runtime.hpp>

#include <crosstown/detail/ledger.hpp>

#include <algorithm>
#include <utility>

namespace crosstown {

runtime::runtime(runtime_options options)
    : shutdown_timeout_(options.shutdown_timeout),
      ledger_(std::make_unique<detail::ledger>(
          std::move(options.on_error), std::move(options.on_lost), std::move(options.on_settled))),
      pool_(std::make_unique<thread_pool>(thread_pool_options{
          options.threads, options.queue_capacity, options.overflow, options.worker_nice})) {}

runtime::~runtime() {
  shutdown(shutdown_timeout_ ? clock::now() + *shutdown_timeout_ : clock::time_point::max());
  pool_.reset();  // joins; every job it held is settled before the ledger goes
}

metrics_snapshot runtime::metrics() const {
  metrics_snapshot m = ledger_->snapshot();
  m.pool_queue_depth = pool_->queue_depth();
  return m;
}

double runtime::pressure() const noexcept {
  const thread_pool& pool = *pool_;
  if (!pool.accepting()) return 1.0;  // full or shut down
  if (pool.capacity() == 0) return 0.0;
  const double held = static_cast<double>(pool.unfinished());
  return std::min(1.0, held / static_cast<double>(pool.capacity()));
}

drain_report runtime::drain(clock::time_point deadline) {
  const bool idle = ledger_->wait_idle(deadline);
  // The pool names what it holds; other executors' tasks are only counted.
  drain_report report = pool_->drain(clock::now());
  const metrics_snapshot m = ledger_->snapshot();
  report.complete = idle;
  report.queued = idle ? 0 : m.queued;
  report.running = idle ? 0 : m.in_flight;
  if (idle) report.unfinished.clear();
  return report;
}

drain_report runtime::shutdown(clock::time_point deadline) { return pool_->shutdown(deadline); }

}  // namespace crosstown
