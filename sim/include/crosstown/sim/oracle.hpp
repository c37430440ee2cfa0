// crosstown/sim/oracle.hpp - records what happened in a run and checks invariants I1-I6.
//
// The simulated server, the simulated pool, the tasks themselves and the runtime's hooks
// report events to the oracle as they happen. The oracle keeps its own ground truth - the
// status the handler chose, when the transport accepted the headers and the last byte, when
// delivery failed, when the connection closed - independent of what the adapter told the
// core, and checks every release and every start against it on the spot:
//
//   I1 after     a task is released/started only after its phase happened on the transport;
//   I2 status    a task skipped by the status rule is never released;
//   I3 once      no task runs twice, after being cancelled, or against the delivery rule, and
//                (at the end) every allowed task ran - unless an injected fault dropped it;
//   I4 order     one response's tasks reach an executor, and same-thread tasks start, in
//                registration order;
//   I5 isolation a task is released only by a lifecycle event of its own response (or the
//                close of its own connection);
//   I6 accounting (at the end) the runtime's counters match what the oracle saw.
//
// I7 (no drag) and I8 (determinism) compare two runs; see simulation.hpp. The first violation
// is kept with the index of the event where it was found; later ones are only counted.
// Not thread-safe.
#pragma once

#include <crosstown/sim/journal.hpp>
#include <crosstown/sim/virtual_clock.hpp>

#include <crosstown/defer_options.hpp>
#include <crosstown/job.hpp>
#include <crosstown/metrics.hpp>
#include <crosstown/status_set.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace crosstown::sim {

enum class event_kind : std::uint8_t {
  connection_opened,
  connection_closed,
  request_started,
  task_registered,
  task_cancelled,
  status_chosen,
  headers_accepted,
  last_byte_accepted,
  delivery_failed,
  scope_ended,
  bytes_accepted,
  reset,
  stall,
  unstall,
  task_released,
  task_started,
  task_finished,
  task_failed,
  task_lost,
  fault_fired,
  healed,
};

std::string_view to_string(event_kind k) noexcept;

/// One line of a run's trace.
struct event {
  std::int64_t time_ns;
  event_kind kind;
  std::uint32_t conn = 0;
  std::uint64_t request = 0;  ///< core request id (response_scope::id)
  std::uint32_t task = 0;     ///< registration index
  std::int64_t value = 0;     ///< status, bytes, worker...
  std::int64_t value2 = 0;    ///< a duration in ns, a byte offset...
};

/// "t=1.234567ms conn 2 request 5 task 3: task started (worker 1)".
std::string describe(const event& e);

struct violation {
  std::string invariant;  ///< "I1 after", ..., "I8 determinism"
  std::string message;
  std::size_t event_index = 0;  ///< index into the trace where it was found
};

/// Counters of one fault site of the core (`crosstown::fault::hit`) in a run.
struct fault_counts {
  std::uint64_t hits = 0;
  std::uint64_t fired = 0;
};

/// Which lifecycle call (or connection close) is being reported to the core right now.
struct core_context {
  enum class kind : std::uint8_t { none, response, connection } what = kind::none;
  std::uint64_t request = 0;
  std::uint32_t conn = 0;
};

/// What the handler asked for when it deferred a task.
struct task_spec {
  task_phase phase = task_phase::response_sent;
  status_set no_go = status_set::default_no_go();
  bool always = false;
  bool require_delivery = false;
  bool same_thread = false;
  bool throws = false;
  std::string name;
};

class oracle {
 public:
  explicit oracle(journal* log = nullptr, bool keep_trace = true)
      : log_(log), keep_trace_(keep_trace) {}

  void set_time(const virtual_time* t) noexcept { time_ = t; }

  // --- the simulated server (ground truth) ---
  void connection_opened(std::uint32_t conn);
  void connection_closed(std::uint32_t conn);
  /// `planned_tasks`: how many tasks the handler may register (a capacity hint only).
  void request_started(std::uint64_t request, std::uint32_t conn, std::uint32_t seq_on_conn,
                       std::uint32_t planned_tasks = 0);
  void task_registered(std::uint64_t request, std::uint32_t index, task_spec spec);
  /// The handler cancelled by name; `core_result` is what `response_scope::cancel` returned.
  void task_cancelled(std::uint64_t request, std::string_view name, bool core_result);
  void status_chosen(std::uint64_t request, int status);
  void headers_accepted(std::uint64_t request);
  void last_byte_accepted(std::uint64_t request);
  void delivery_failed(std::uint64_t request);
  void scope_ended(std::uint64_t request);
  void transport_event(event_kind kind, std::uint32_t conn, std::int64_t value,
                       std::int64_t value2 = 0);
  void healed();

  /// Brackets a call into the core (for I5).
  void begin_core(core_context ctx) noexcept {
    context_ = ctx;
    fault_in_context_ = false;
    ++core_epoch_;
  }
  void end_core() noexcept {
    context_ = {};
    fault_in_context_ = false;
  }

  // --- executors, tasks and runtime hooks ---
  void task_released(const task_info& info);
  void task_started(std::uint64_t request, std::uint32_t index, std::uint32_t worker);
  void task_finished(std::uint64_t request, std::uint32_t index, std::uint32_t worker,
                     std::int64_t started_ns);
  void task_failed(const task_info& info);
  void task_lost(const task_info& info, task_state state);
  void fault_fired(std::string_view site);

  // --- end of run ---
  /// Checks that every allowed task ran (I3) and the counters (I6). Call once drained.
  void check_final(const metrics_snapshot& m);
  /// Records a violation found outside the oracle (I7, I8, step cap).
  void report(std::string invariant, std::string message);

  const std::optional<violation>& first_violation() const noexcept { return first_; }
  std::uint64_t violations() const noexcept { return violations_; }
  const std::vector<event>& trace() const noexcept { return trace_; }
  /// Moves the trace out (at the end of a run).
  std::vector<event> take_trace() noexcept { return std::move(trace_); }
  std::uint64_t tasks_started() const noexcept { return started_; }
  /// When each response finished on the transport, by (connection, sequence on connection):
  /// the last byte's acceptance (positive) or the failure (negated time - 1).
  std::map<std::pair<std::uint32_t, std::uint32_t>, std::int64_t> completions() const;
  /// Allowed tasks that have not run (for the liveness report).
  std::vector<std::string> never_ran() const;
  /// The readable story of a violation: the events leading to it.
  std::string story(std::size_t max_events = 40) const;

 private:
  struct task_rec {
    task_spec spec;
    bool cancelled = false;
    std::uint32_t released = 0;
    std::uint32_t started = 0;
    bool lost = false;
    bool lost_to_fault = false;
  };
  struct response_rec {
    std::uint64_t id = 0;
    std::uint32_t conn = 0;
    std::uint32_t seq = 0;
    int status = 0;
    bool headers = false;
    bool delivered = false;
    bool failed = false;
    bool ended = false;
    std::int64_t done_ns = 0;
    // I4 is per hand-off: the indices seen in the current lifecycle call (`epoch`).
    std::uint64_t epoch = 0;
    std::int64_t last_released = -1;
    std::int64_t last_same_thread = -1;
    std::vector<task_rec> tasks;
  };

  std::size_t record(event e);
  std::int64_t now() const noexcept { return time_ != nullptr ? time_->now_ns() : 0; }
  void violate(const char* invariant, std::string message);
  response_rec* find(std::uint64_t request) noexcept;
  const response_rec* find(std::uint64_t request) const noexcept;
  bool phase_reached(const response_rec& r, task_phase p) const;
  bool delivered_for(const response_rec& r, task_phase p) const;
  bool skipped_by_status(const response_rec& r, const task_rec& t) const;
  std::string who(std::uint64_t request, std::uint32_t index) const;
  // Checks common to a release and a same-thread start.
  void check_release(std::uint64_t request, std::uint32_t index, const char* what);
  void enter_epoch(response_rec& r) noexcept;

  journal* log_;
  bool keep_trace_;
  const virtual_time* time_ = nullptr;
  core_context context_{};
  bool fault_in_context_ = false;
  std::uint64_t core_epoch_ = 0;
  std::vector<event> trace_;
  // Responses in the order they started. Request ids come from one runtime's counter, so
  // they are consecutive: the id is then the index (plus the first id) and no map is needed;
  // if they ever are not, `index_` takes over.
  std::vector<response_rec> responses_;
  std::uint64_t first_id_ = 0;
  bool consecutive_ = true;
  std::unordered_map<std::uint64_t, std::size_t> index_;
  std::unordered_map<std::uint32_t, bool> conn_closed_;
  std::optional<violation> first_;
  std::uint64_t violations_ = 0;
  std::uint64_t started_ = 0;
  std::uint64_t failed_ = 0;
  std::uint64_t lost_ = 0;
};

}  // namespace crosstown::sim
