// Stateful model test (rc::state) of one runtime, its response scopes and one connection.
//
// The real system: a runtime whose released tasks are all redirected to a manual_executor, so
// nothing runs unless a command says so; up to 3 live response scopes, some created from a
// connection_scope. The model is written from the rules in response_scope.hpp and
// defer_options.hpp only - it does not call into the library (status_set::contains, a plain
// value operation property-tested in status_set_properties.cpp, is the one exception) - and
// predicts after every command: the exact log of tasks that ran (so order too), what is queued
// on the manual executor and held by the connection, each scope's observers, and the runtime's
// counters.
#include <crosstown/defer_options.hpp>
#include <crosstown/manual_executor.hpp>
#include <crosstown/metrics.hpp>
#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>
#include <crosstown/status_set.hpp>
#include <crosstown/testing/generators.hpp>

#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>
#include <rapidcheck/state.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <ostream>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

using crosstown::status_set;
using crosstown::task_phase;

// --- model ----------------------------------------------------------------------------------

enum class delivery_model { pending, delivered, failed };

struct task_model {
  int id;
  std::string name;
  task_phase ph;
  status_set no_go;
  bool always;
  bool require_delivery;
  bool throws;
};

struct scope_model {
  bool via_connection = false;
  bool ended = false;
  bool destroyed = false;  // the object is gone: no more commands address it
  int status = 0;          // 0: none yet
  bool headers = false;
  delivery_model delivery = delivery_model::pending;
  std::vector<task_model> pending;  // registration order
};

struct counters {
  std::uint64_t registered = 0;
  std::uint64_t ran = 0;
  std::uint64_t failed = 0;
  std::uint64_t skipped_by_status = 0;
  std::uint64_t skipped_by_delivery = 0;
  std::uint64_t cancelled = 0;
};

struct model {
  std::vector<scope_model> scopes;  // by creation order
  std::deque<int> queue;            // task ids queued on the manual executor, FIFO
  std::vector<int> held;            // task ids held by the connection until it closes
  bool connection_closed = false;
  std::vector<int> ran_log;  // ids in the order they ran (throwing ones included)
  std::set<int> used_ids;
  std::set<int> throwing;
  int next_id = 1;
  counters m;

  std::size_t live() const {
    std::size_t n = 0;
    for (const scope_model& s : scopes) n += (!s.ended && !s.destroyed) ? 1 : 0;
    return n;
  }
  std::vector<std::size_t> addressable() const {
    std::vector<std::size_t> out;
    for (std::size_t k = 0; k < scopes.size(); ++k) {
      if (!scopes[k].destroyed) out.push_back(k);
    }
    return out;
  }
};

// Has the event a task of phase `p` waits for happened?
bool due(const scope_model& s, task_phase p) {
  switch (p) {
    case task_phase::headers_sent:
      return s.headers || s.delivery != delivery_model::pending || s.ended;
    case task_phase::response_sent: return s.delivery != delivery_model::pending || s.ended;
    case task_phase::connection_closed: return s.ended;
  }
  return false;
}

// Tasks released by one event, in registration order: those for the executor now, and the
// connection-phase tasks of a connection's scope, which go to the connection.
struct released {
  std::vector<int> now;
  std::vector<int> to_connection;
};

void judge(model& m, const scope_model& s, const task_model& t, released& out) {
  if (!t.always && t.no_go.contains(s.status)) {
    ++m.m.skipped_by_status;
    return;
  }
  const bool delivered =
      t.ph == task_phase::headers_sent ? s.headers : s.delivery == delivery_model::delivered;
  if (t.require_delivery && !delivered) {
    ++m.m.skipped_by_delivery;
    return;
  }
  if (t.ph == task_phase::connection_closed && s.via_connection) {
    out.to_connection.push_back(t.id);
  } else {
    out.now.push_back(t.id);
  }
}

void hand_over(model& m, const released& r) {
  m.queue.insert(m.queue.end(), r.now.begin(), r.now.end());
  if (m.connection_closed) {
    m.queue.insert(m.queue.end(), r.to_connection.begin(), r.to_connection.end());
  } else {
    m.held.insert(m.held.end(), r.to_connection.begin(), r.to_connection.end());
  }
}

void release_due(model& m, std::size_t k) {
  scope_model& s = m.scopes[k];
  released r;
  std::vector<task_model> keep;
  for (const task_model& t : s.pending) {
    if (due(s, t.ph)) {
      judge(m, s, t, r);
    } else {
      keep.push_back(t);
    }
  }
  s.pending = std::move(keep);
  hand_over(m, r);
}

// --- system under test ------------------------------------------------------------------------

struct system_under_test {
  // Declaration order is destruction order reversed: scopes go first (handing their remaining
  // tasks to the manual executor), then the connection, then the executor, then the runtime.
  std::unique_ptr<crosstown::runtime> rt;
  std::unique_ptr<crosstown::manual_executor> manual;
  std::unique_ptr<crosstown::connection_scope> connection;
  std::vector<std::unique_ptr<crosstown::response_scope>> scopes;  // by creation order
  std::vector<int> ran_log;
  std::uint64_t errors_reported = 0;
  std::uint64_t lost_reported = 0;

  // PLANTED BUGS, for demonstrating that the model test bites (see the DISABLED_ tests at the
  // end). Never set in CI.
  //  - the adapter reports the two "sent" events the wrong way round;
  bool planted_swapped_sent_events = false;
  //  - `always` is lost on the way to the scope.
  bool planted_dropped_always = false;

  system_under_test() {
    crosstown::runtime_options options;
    options.threads = 1;
    options.on_error = [this](const crosstown::task_failure&) { ++errors_reported; };
    options.on_lost = [this](const crosstown::task_info&, crosstown::task_state) {
      ++lost_reported;
    };
    rt = std::make_unique<crosstown::runtime>(std::move(options));
    manual = std::make_unique<crosstown::manual_executor>();
    rt->redirect_all_to(*manual);
    connection = std::make_unique<crosstown::connection_scope>(*rt);
  }
  system_under_test(const system_under_test&) = delete;
  system_under_test& operator=(const system_under_test&) = delete;
  ~system_under_test() = default;

  // Tears down in order; afterwards every registered task must be in a terminal state.
  void tear_down() {
    scopes.clear();
    connection.reset();
    manual.reset();
  }
};

using command = rc::state::Command<model, system_under_test>;

// --- printing -------------------------------------------------------------------------------

void show_options(std::ostream& os, const task_model& t) {
  os << "{" << t.ph;
  if (t.always) {
    os << ", always";
  } else if (t.no_go != status_set::default_no_go()) {
    os << ", no_go=" << t.no_go;
  }
  if (t.require_delivery) os << ", require_delivery";
  if (!t.name.empty()) os << ", name=\"" << t.name << "\"";
  os << "}";
}

// --- checks after every command -----------------------------------------------------------------

std::string name_of(delivery_model d) {
  switch (d) {
    case delivery_model::pending: return "pending";
    case delivery_model::delivered: return "delivered";
    case delivery_model::failed: return "failed";
  }
  return "?";
}

std::string name_of(crosstown::delivery d) {
  switch (d) {
    case crosstown::delivery::pending: return "pending";
    case crosstown::delivery::delivered: return "delivered";
    case crosstown::delivery::failed: return "failed";
  }
  return "?";
}

void check_against(const model& expected, const system_under_test& sut) {
  RC_ASSERT(sut.ran_log == expected.ran_log);
  RC_ASSERT(sut.manual->pending() == expected.queue.size());
  RC_ASSERT(sut.connection->held() == expected.held.size());
  RC_ASSERT(sut.connection->is_closed() == expected.connection_closed);
  for (std::size_t k = 0; k < expected.scopes.size(); ++k) {
    const scope_model& s = expected.scopes[k];
    if (s.destroyed) continue;
    const crosstown::response_scope& real = *sut.scopes[k];
    RC_ASSERT(real.ended() == s.ended);
    RC_ASSERT(real.pending() == s.pending.size());
    RC_ASSERT(real.status().value_or(0) == s.status);  // 0: no status
    RC_ASSERT(name_of(real.delivery_state()) == name_of(s.delivery));
  }
  const crosstown::metrics_snapshot got = sut.rt->metrics();
  const counters& want = expected.m;
  RC_ASSERT(got.registered == want.registered);
  RC_ASSERT(got.count(crosstown::task_state::ran) == want.ran);
  RC_ASSERT(got.count(crosstown::task_state::failed) == want.failed);
  RC_ASSERT(got.count(crosstown::task_state::skipped_by_status) == want.skipped_by_status);
  RC_ASSERT(got.count(crosstown::task_state::skipped_by_delivery) == want.skipped_by_delivery);
  RC_ASSERT(got.count(crosstown::task_state::cancelled) == want.cancelled);
  RC_ASSERT(got.count(crosstown::task_state::rejected_by_overflow) == 0U);
  RC_ASSERT(got.count(crosstown::task_state::dropped_at_shutdown) == 0U);
  RC_ASSERT(got.queued == expected.queue.size());
  RC_ASSERT(got.in_flight == 0U);
  RC_ASSERT(sut.errors_reported == want.failed);
  std::uint64_t waiting = expected.queue.size() + expected.held.size();
  for (const scope_model& s : expected.scopes) waiting += s.pending.size();
  RC_ASSERT(got.unfinished() == waiting);
}

// Expects `call` to throw std::logic_error iff `illegal`.
template <typename Call>
void expect_logic_error(bool illegal, Call&& call) {
  bool threw = false;
  try {
    call();
  } catch (const std::logic_error&) {
    threw = true;
  }
  RC_ASSERT(threw == illegal);
}

// Picks an addressable scope (not destroyed), discarding the command if there is none.
std::size_t pick_scope(const model& s0) {
  const std::vector<std::size_t> candidates = s0.addressable();
  RC_PRE(!candidates.empty());
  return *rc::gen::elementOf(candidates);
}

void require_scope(const model& s0, std::size_t k) {
  RC_PRE(k < s0.scopes.size());
  RC_PRE(!s0.scopes[k].destroyed);
}

// A command that changes the model; `run` replays it on the SUT and compares.
struct step : command {
  void run(const model& s0, system_under_test& sut) const final {
    model s1 = s0;
    apply(s1);
    act(s0, sut);
    check_against(s1, sut);
  }
  virtual void act(const model& s0, system_under_test& sut) const = 0;
};

// --- commands -------------------------------------------------------------------------------

struct start_request : step {
  bool via_connection;
  explicit start_request(const model&) : via_connection(*rc::gen::arbitrary<bool>()) {}
  void checkPreconditions(const model& s0) const override { RC_PRE(s0.live() < 3U); }
  void apply(model& s0) const override {
    scope_model s;
    s.via_connection = via_connection;
    s0.scopes.push_back(std::move(s));
  }
  void act(const model&, system_under_test& sut) const override {
    if (via_connection) {
      sut.scopes.push_back(std::make_unique<crosstown::response_scope>(*sut.connection));
    } else {
      sut.scopes.push_back(std::make_unique<crosstown::response_scope>(*sut.rt));
    }
  }
  void show(std::ostream& os) const override {
    os << "StartRequest(" << (via_connection ? "on the connection" : "on the runtime") << ")";
  }
};

struct defer : step {
  std::size_t k;
  task_model task;
  bool same_thread;
  explicit defer(const model& s0) : k(pick_scope(s0)) {
    const crosstown::defer_options o = *crosstown::testkit::gen::options();
    task = task_model{s0.next_id,
                      o.name,
                      o.phase,
                      o.no_go,
                      o.always,
                      o.require_delivery,
                      *rc::gen::weightedElement<bool>({{4, false}, {1, true}})};
    same_thread = o.same_thread;
  }
  void checkPreconditions(const model& s0) const override {
    require_scope(s0, k);
    RC_PRE(s0.used_ids.count(task.id) == 0U);
  }
  void apply(model& s0) const override {
    s0.used_ids.insert(task.id);
    s0.next_id = std::max(s0.next_id, task.id + 1);
    if (task.throws) s0.throwing.insert(task.id);
    scope_model& s = s0.scopes[k];
    if (!task.name.empty()) {  // a later task of the same name replaces a pending one
      for (auto it = s.pending.begin(); it != s.pending.end(); ++it) {
        if (it->name == task.name) {
          ++s0.m.cancelled;
          s.pending.erase(it);
          break;
        }
      }
    }
    ++s0.m.registered;
    if (due(s, task.ph)) {  // late registration: judged at once
      released r;
      judge(s0, s, task, r);
      hand_over(s0, r);
    } else {
      s.pending.push_back(task);
    }
  }
  void act(const model&, system_under_test& sut) const override {
    crosstown::defer_options o;
    o.same_thread = same_thread;
    o.no_go = task.no_go;
    o.always = task.always && !sut.planted_dropped_always;
    o.name = task.name;
    o.phase = task.ph;
    o.require_delivery = task.require_delivery;
    std::vector<int>* log = &sut.ran_log;
    const int id = task.id;
    const bool throws = task.throws;
    sut.scopes[k]->defer(
        [log, id, throws] {
          log->push_back(id);
          if (throws) throw std::runtime_error("task " + std::to_string(id) + " throws");
        },
        std::move(o));
  }
  void show(std::ostream& os) const override {
    os << "Defer(scope " << k << ", task " << task.id << " ";
    show_options(os, task);
    if (same_thread) os << " same_thread";
    if (task.throws) os << " THROWS";
    os << ")";
  }
};

struct set_status : step {
  std::size_t k;
  int code;
  explicit set_status(const model& s0)
      : k(pick_scope(s0)), code(*crosstown::testkit::gen::status_code()) {}
  void checkPreconditions(const model& s0) const override { require_scope(s0, k); }
  static bool illegal(const scope_model& s, int code) {
    return s.ended || (code != s.status && (s.headers || s.delivery != delivery_model::pending));
  }
  void apply(model& s0) const override {
    scope_model& s = s0.scopes[k];
    if (!illegal(s, code)) s.status = code;
  }
  void act(const model& s0, system_under_test& sut) const override {
    expect_logic_error(illegal(s0.scopes[k], code), [&] { sut.scopes[k]->status_known(code); });
  }
  void show(std::ostream& os) const override {
    os << "SetStatus(scope " << k << ", " << code << ")";
  }
};

struct send_headers : step {
  std::size_t k;
  explicit send_headers(const model& s0) : k(pick_scope(s0)) {}
  void checkPreconditions(const model& s0) const override { require_scope(s0, k); }
  static bool illegal(const scope_model& s) {
    return s.ended || s.status == 0 || s.delivery == delivery_model::failed;
  }
  void apply(model& s0) const override {
    scope_model& s = s0.scopes[k];
    if (illegal(s) || s.headers) return;
    s.headers = true;
    release_due(s0, k);
  }
  void act(const model& s0, system_under_test& sut) const override {
    expect_logic_error(illegal(s0.scopes[k]), [&] {
      if (sut.planted_swapped_sent_events) {
        sut.scopes[k]->response_sent();
      } else {
        sut.scopes[k]->headers_sent();
      }
    });
  }
  void show(std::ostream& os) const override { os << "SendHeaders(scope " << k << ")"; }
};

struct response_sent : step {
  std::size_t k;
  explicit response_sent(const model& s0) : k(pick_scope(s0)) {}
  void checkPreconditions(const model& s0) const override { require_scope(s0, k); }
  static bool illegal(const scope_model& s) {
    return s.ended || s.status == 0 || s.delivery == delivery_model::failed;
  }
  void apply(model& s0) const override {
    scope_model& s = s0.scopes[k];
    if (illegal(s) || s.delivery == delivery_model::delivered) return;
    s.headers = true;  // implied
    s.delivery = delivery_model::delivered;
    release_due(s0, k);
  }
  void act(const model& s0, system_under_test& sut) const override {
    expect_logic_error(illegal(s0.scopes[k]), [&] {
      if (sut.planted_swapped_sent_events) {
        sut.scopes[k]->headers_sent();
      } else {
        sut.scopes[k]->response_sent();
      }
    });
  }
  void show(std::ostream& os) const override { os << "ResponseSent(scope " << k << ")"; }
};

struct delivery_failed : step {
  std::size_t k;
  explicit delivery_failed(const model& s0) : k(pick_scope(s0)) {}
  void checkPreconditions(const model& s0) const override { require_scope(s0, k); }
  static bool illegal(const scope_model& s) {
    return s.ended || s.delivery == delivery_model::delivered;
  }
  void apply(model& s0) const override {
    scope_model& s = s0.scopes[k];
    if (illegal(s) || s.delivery == delivery_model::failed) return;
    // Failed with no status: counts as a 500. NOTE: a failure *before the headers* with a
    // status keeps that status, as the library does today; the header's rule "ends without its
    // headers ever being sent counts as a 500" reads as if it should be 500 too (reported).
    if (s.status == 0) s.status = 500;
    s.delivery = delivery_model::failed;
    release_due(s0, k);
  }
  void act(const model& s0, system_under_test& sut) const override {
    expect_logic_error(illegal(s0.scopes[k]), [&] { sut.scopes[k]->delivery_failed("reset"); });
  }
  void show(std::ostream& os) const override { os << "DeliveryFailed(scope " << k << ")"; }
};

struct end_scope : step {
  std::size_t k;
  bool destroy;
  explicit end_scope(const model& s0) : k(pick_scope(s0)), destroy(*rc::gen::arbitrary<bool>()) {}
  void checkPreconditions(const model& s0) const override { require_scope(s0, k); }
  void apply(model& s0) const override {
    scope_model& s = s0.scopes[k];
    if (!s.ended) {
      if (s.delivery == delivery_model::pending) {
        // Ended before the response was sent: a delivery failure; without headers, a 500.
        if (!s.headers || s.status == 0) s.status = 500;
        s.delivery = delivery_model::failed;
      }
      s.ended = true;
      release_due(s0, k);
    }
    if (destroy) s.destroyed = true;
  }
  void act(const model&, system_under_test& sut) const override {
    if (destroy) {
      sut.scopes[k].reset();
    } else {
      sut.scopes[k]->end();
    }
  }
  void show(std::ostream& os) const override {
    os << "EndScope(scope " << k << (destroy ? ", by destructor" : ", by end()") << ")";
  }
};

struct cancel : step {
  std::size_t k;
  std::string name;
  explicit cancel(const model& s0)
      : k(pick_scope(s0)), name(*rc::gen::element<std::string>("a", "b")) {}
  void checkPreconditions(const model& s0) const override { require_scope(s0, k); }
  static bool cancels(const scope_model& s, const std::string& name) {
    for (const task_model& t : s.pending) {
      if (t.name == name) return true;
    }
    return false;
  }
  void apply(model& s0) const override {
    scope_model& s = s0.scopes[k];
    for (auto it = s.pending.begin(); it != s.pending.end(); ++it) {
      if (it->name == name) {
        ++s0.m.cancelled;
        s.pending.erase(it);
        return;
      }
    }
  }
  void act(const model& s0, system_under_test& sut) const override {
    RC_ASSERT(sut.scopes[k]->cancel(name) == cancels(s0.scopes[k], name));
  }
  void show(std::ostream& os) const override {
    os << "Cancel(scope " << k << ", \"" << name << "\")";
  }
};

void run_front(model& s0) {
  const int id = s0.queue.front();
  s0.queue.pop_front();
  s0.ran_log.push_back(id);
  if (s0.throwing.count(id) != 0U) {
    ++s0.m.failed;
  } else {
    ++s0.m.ran;
  }
}

struct run_one : step {
  explicit run_one(const model&) {}
  void apply(model& s0) const override {
    if (!s0.queue.empty()) run_front(s0);
  }
  void act(const model& s0, system_under_test& sut) const override {
    RC_ASSERT(sut.manual->run_one() == !s0.queue.empty());
  }
  void show(std::ostream& os) const override { os << "RunOne"; }
};

struct run_all : step {
  explicit run_all(const model&) {}
  void apply(model& s0) const override {
    while (!s0.queue.empty()) run_front(s0);
  }
  void act(const model& s0, system_under_test& sut) const override {
    RC_ASSERT(sut.manual->run_all() == s0.queue.size());
  }
  void show(std::ostream& os) const override { os << "RunAll"; }
};

// drain with a deadline that has already passed: it must not wait, and must report exactly
// what the model says is released and not yet run (nothing runs by itself on the manual
// executor). Held connection-phase tasks and pending ones are not the drain's business.
struct drain : step {
  explicit drain(const model&) {}
  void apply(model&) const override {}
  void act(const model& s0, system_under_test& sut) const override {
    const crosstown::drain_report report = sut.rt->drain(crosstown::runtime::clock::now());
    RC_ASSERT(report.complete == s0.queue.empty());
    RC_ASSERT(report.queued == (report.complete ? 0U : s0.queue.size()));
    RC_ASSERT(report.running == 0U);
  }
  void show(std::ostream& os) const override { os << "Drain"; }
};

struct close_connection : step {
  explicit close_connection(const model&) {}
  void apply(model& s0) const override {
    if (s0.connection_closed) return;
    s0.connection_closed = true;
    s0.queue.insert(s0.queue.end(), s0.held.begin(), s0.held.end());
    s0.held.clear();
  }
  void act(const model&, system_under_test& sut) const override { sut.connection->closed(); }
  void show(std::ostream& os) const override { os << "CloseConnection"; }
};

void check_model_against(system_under_test& sut) {
  rc::state::check(
      model{}, sut,
      rc::state::gen::execOneOfWithArgs<start_request, start_request, defer, defer, defer,
                                        set_status, set_status, send_headers, response_sent,
                                        response_sent, delivery_failed, end_scope, cancel, run_one,
                                        run_all, close_connection, drain>());
}

}  // namespace

RC_GTEST_PROP(ScopeModelProp, RuntimeAgreesWithModel, ()) {
  system_under_test sut;
  check_model_against(sut);
  // I6 once everything is torn down: every registered task is in exactly one terminal state,
  // and what the manual executor dropped was reported.
  {
    const crosstown::metrics_snapshot m = sut.rt->metrics();
    RC_CLASSIFY(m.count(crosstown::task_state::ran) + m.count(crosstown::task_state::failed) > 0,
                "some task ran");
    RC_CLASSIFY(m.count(crosstown::task_state::failed) > 0, "a task threw");
    RC_CLASSIFY(m.count(crosstown::task_state::skipped_by_status) > 0, "skipped by status");
    RC_CLASSIFY(m.count(crosstown::task_state::skipped_by_delivery) > 0, "skipped by delivery");
    RC_CLASSIFY(m.count(crosstown::task_state::cancelled) > 0, "cancelled");
    RC_CLASSIFY(
        sut.connection->is_closed() &&
            m.count(crosstown::task_state::ran) + m.count(crosstown::task_state::failed) > 0,
        "connection closed");
  }
  sut.tear_down();
  const crosstown::metrics_snapshot m = sut.rt->metrics();
  RC_ASSERT(m.unfinished() == 0U);
  RC_ASSERT(m.queued == 0U);
  RC_ASSERT(sut.lost_reported == m.count(crosstown::task_state::dropped_at_shutdown));
  RC_ASSERT(sut.errors_reported == m.count(crosstown::task_state::failed));
}

// PLANTED BUG - demonstration only, never run in CI (DISABLED_). The SUT's adapter reports
// headers_sent() when the response is sent and response_sent() when the headers are: the model
// test must fail with a short shrunk command sequence. Run it with
//   build/dev/property_tests/scope_model_test --gtest_also_run_disabled_tests
//     --gtest_filter='*PlantedBug*'   (one command line)
RC_GTEST_PROP(ScopeModelProp, DISABLED_PlantedBugSwappedSentEventsMustFail, ()) {
  system_under_test sut;
  sut.planted_swapped_sent_events = true;
  check_model_against(sut);
}

// PLANTED BUG - demonstration only, never run in CI (DISABLED_): `always` never reaches the
// scope, so an `always` task of a 4xx/5xx response is skipped instead of run.
RC_GTEST_PROP(ScopeModelProp, DISABLED_PlantedBugDroppedAlwaysMustFail, ()) {
  system_under_test sut;
  sut.planted_dropped_always = true;
  check_model_against(sut);
}
