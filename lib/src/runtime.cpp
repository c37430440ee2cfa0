#include <crosstown/runtime.hpp>

#include <crosstown/detail/io_runtime.hpp>
#include <crosstown/detail/ledger.hpp>

#include <algorithm>
#include <atomic>
#include <iostream>
#include <thread>
#include <utility>

namespace crosstown {

// Lets the hooks run until the runtime's destructor closes it, and makes the destructor wait
// for hook calls in progress: a task abandoned at the shutdown deadline that ends later must
// not call the user's hooks (or what they capture) after the runtime is gone.
namespace detail {
struct hook_gate {
  std::atomic<bool> closed{false};
  std::atomic<int> inside{0};

  bool enter() noexcept {
    inside.fetch_add(1, std::memory_order_seq_cst);
    if (!closed.load(std::memory_order_seq_cst)) return true;
    inside.fetch_sub(1, std::memory_order_seq_cst);
    return false;
  }
  void leave() noexcept { inside.fetch_sub(1, std::memory_order_seq_cst); }
  void close() noexcept {
    closed.store(true, std::memory_order_seq_cst);
    while (inside.load(std::memory_order_seq_cst) != 0) std::this_thread::yield();
  }
  struct pass {
    hook_gate* gate;
    ~pass() { gate->leave(); }
  };
};
}  // namespace detail

namespace {

using gate_ptr = std::shared_ptr<detail::hook_gate>;

// The ledger prints a line for an empty hook; gated hooks are never empty, so they print it.
detail::ledger::error_hook gated(gate_ptr gate, detail::ledger::error_hook fn) {
  return [gate = std::move(gate), fn = std::move(fn)](const task_failure& f) {
    if (!gate->enter()) return;
    const detail::hook_gate::pass pass{gate.get()};
    if (fn) {
      fn(f);
    } else {
      std::cerr << "crosstown: " << f.task.describe() << " threw: " << f.message << '\n';
    }
  };
}

detail::ledger::lost_hook gated_lost(gate_ptr gate, detail::ledger::lost_hook fn) {
  return [gate = std::move(gate), fn = std::move(fn)](const task_info& t, task_state state) {
    if (!gate->enter()) return;
    const detail::hook_gate::pass pass{gate.get()};
    if (fn) {
      fn(t, state);
    } else if (state == task_state::running) {
      std::cerr << "crosstown: " << t.describe()
                << " still running at the shutdown deadline: its worker was abandoned\n";
    } else {
      std::cerr << "crosstown: " << t.describe() << ' ' << to_string(state) << '\n';
    }
  };
}

detail::ledger::settled_hook gated_settled(gate_ptr gate, detail::ledger::settled_hook fn) {
  if (!fn) return {};  // nothing to call: no cost per task
  return [gate = std::move(gate), fn = std::move(fn)](const task_info& t, task_state state) {
    if (!gate->enter()) return;
    const detail::hook_gate::pass pass{gate.get()};
    fn(t, state);
  };
}

}  // namespace

runtime::runtime(runtime_options options)
    : shutdown_timeout_(options.shutdown_timeout),
      hooks_(std::make_shared<detail::hook_gate>()),
      ledger_(
          std::make_shared<detail::ledger>(gated(hooks_, std::move(options.on_error)),
                                           gated_lost(hooks_, std::move(options.on_lost)),
                                           gated_settled(hooks_, std::move(options.on_settled)))),
      pool_(std::make_unique<thread_pool>(
          thread_pool_options{.threads = options.threads,
                              .capacity = options.queue_capacity,
                              .overflow = options.overflow,
                              .nice = options.worker_nice,
                              .lowest_priority = options.worker_lowest_priority})),
      io_(std::make_unique<detail::io_runtime>(*this, options.io_threads, options.io_executor,
                                               options.clock)) {
  pool_->keep_alive(ledger_);
  pool_->on_abandoned([ledger = ledger_.get()](const task_info& t) {
    ledger->report_lost(t, task_state::running);
  });
}

runtime::~runtime() {
  shutdown(shutdown_timeout_ ? clock::now() + *shutdown_timeout_ : clock::time_point::max());
  hooks_->close();  // an abandoned task that ends later is counted, not reported
  pool_.reset();    // joined, or abandoned workers keep the ledger alive (keep_alive)
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
  if (pool.capacity() == unbounded) return 0.0;
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
