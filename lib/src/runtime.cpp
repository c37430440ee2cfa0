#include <crosstown/runtime.hpp>

#include <crosstown/detail/io_runtime.hpp>
#include <crosstown/detail/ledger.hpp>

#include <algorithm>
#include <utility>

namespace crosstown {

runtime::runtime(runtime_options options)
    : shutdown_timeout_(options.shutdown_timeout),
      ledger_(std::make_unique<detail::ledger>(
          std::move(options.on_error), std::move(options.on_lost), std::move(options.on_settled))),
      pool_(std::make_unique<thread_pool>(thread_pool_options{
          options.threads, options.queue_capacity, options.overflow, options.worker_nice})),
      io_(std::make_unique<detail::io_runtime>(*this, options.io_threads, options.io_executor,
                                               options.clock)) {}

runtime::~runtime() {
  shutdown(shutdown_timeout_ ? clock::now() + *shutdown_timeout_ : clock::time_point::max());
  pool_.reset();  // joins; every job it held is settled before the ledger goes
}

metrics_snapshot runtime::metrics() const {
  metrics_snapshot m = ledger_->snapshot();
  m.pool_queue_depth = pool_->queue_depth();
  m.retries = io_->retries();
  m.overruns = io_->overruns();
  return m;
}

crosstown::lane runtime::lane(std::string_view name, lane_options options) {
  return crosstown::lane(io_->make_lane(name, options));
}

std::vector<lane_snapshot> runtime::lane_metrics() const { return io_->lane_snapshots(); }

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

drain_report runtime::shutdown(clock::time_point deadline) {
  // Awaitable tasks and lanes first: a lane's waiting blocking tasks still need the pool.
  io_->wait_quiet(deadline);
  drain_report report = pool_->shutdown(deadline);
  io_->shutdown();
  return report;
}

}  // namespace crosstown
