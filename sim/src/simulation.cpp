#include <crosstown/sim/simulation.hpp>

#include <crosstown/sim/sim_executor.hpp>

#include "driver.hpp"
#include "scenario_draws.hpp"
#include "scenario_server.hpp"

#include <crosstown/fault.hpp>
#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>

#include <algorithm>
#include <array>
#include <deque>
#include <memory>
#include <stdexcept>
#include <unordered_map>
#include <utility>

namespace crosstown::sim {

namespace {

using detail::planned_response;
using detail::planned_task;

struct conn_state {
  std::uint32_t id = 0;
  std::optional<rng> handler_rng;
  std::optional<rng> link_rng;
  link_options link{};
  std::optional<connection> wire;
  std::optional<connection_scope> scope;
  std::deque<std::uint32_t> arrived;
  std::uint32_t total = 0;
  std::uint32_t served = 0;
  bool busy = false;
  bool half_closed = false;
  bool closed = false;
  bool dead = false;
};

struct response_state {
  std::uint64_t id = 0;
  conn_state* conn = nullptr;
  std::uint32_t seq = 0;
  std::optional<response_scope> scope;
  int status = 200;
  bool status_reported = false;
  std::uint64_t header_bytes = 0;
  std::uint64_t body_bytes = 0;
  std::uint32_t next_index = 0;
  std::vector<planned_task> planned;
};

class world final : public transport_observer {
 public:
  // `journaled`: false only for a run whose digest nobody reads (run_checked's I7 rerun):
  // journaling records what happened, it never changes what happens.
  explicit world(const run_config& cfg, bool journaled = true)
      : cfg_(cfg),
        s_(cfg.world),
        log_(cfg.keep_journal),
        jl_(journaled ? &log_ : nullptr),
        oracle_(jl_, cfg.keep_trace),
        rt_({.threads = 1,
             .on_error = [this](const task_failure& f) { oracle_.task_failed(f.task); },
             .on_lost = [this](const task_info& i, task_state st) { oracle_.task_lost(i, st); }}),
        sched_(time_, cfg.strategy, cfg.seed, jl_),
        pool_rng_(cfg.seed, 2, jl_),
        dice_(
            cfg.seed, s_.fault_run_rate, s_.fault_hit_rate,
            [this](std::string_view site) { oracle_.fault_fired(site); }, jl_),
        pool_(sched_, pool_rng_,
              {.workers = s_.workers, .drop_every = cfg.planted == mutation::drop_job ? 13U : 0U},
              &oracle_) {
    oracle_.set_time(&time_);
  }

  world(const world&) = delete;
  world& operator=(const world&) = delete;

  ~world() override {
    // Scopes before connections before the executor before the runtime (member order).
    responses_.clear();
    for (auto& c : conns_) c->scope.reset();
  }

  run_result run() {
    fault::scoped_injector faults(dice_);
    clock_binding clock(time_);
    open_connections();
    run_result out;
    out.seed = cfg_.seed;
    out.steps = detail::run_phases(
        sched_, time_,
        {.step_cap = cfg_.step_cap,
         .fault_horizon = cfg_.fault_horizon,
         .liveness_budget = cfg_.liveness_budget},
        [this] {
          dice_.heal();
          oracle_.healed();
          for (auto& c : conns_) c->wire->heal();
        },
        [this](const run_outcome& o) {
          oracle_.report("liveness", detail::cap_message(cfg_.step_cap, o, "never finished"));
        });
    oracle_.check_final(rt_.metrics());
    out.first = oracle_.first_violation();
    out.story = oracle_.story();
    out.requests = requests_started_;
    out.end_ns = time_.now_ns();
    out.metrics = rt_.metrics();
    out.faults = dice_.counts();
    out.completions = oracle_.completions();
    out.schedule = sched_.decisions();
    out.digest = log_.digest();
    return out;
  }

  journal& log() noexcept { return log_; }
  std::vector<event> take_trace() { return oracle_.take_trace(); }

  // transport_observer
  void on_accepted(std::uint32_t conn, std::uint64_t first_byte, std::uint64_t bytes) override {
    const auto per_byte = conns_[conn - 1]->link.ns_per_byte;
    oracle_.transport_event(event_kind::bytes_accepted, conn, static_cast<std::int64_t>(bytes),
                            static_cast<std::int64_t>(bytes * per_byte));
    (void)first_byte;
  }
  void on_reset(std::uint32_t conn, std::uint64_t at_byte) override {
    oracle_.transport_event(event_kind::reset, conn, static_cast<std::int64_t>(at_byte));
  }
  void on_stall(std::uint32_t conn, bool stalled) override {
    oracle_.transport_event(stalled ? event_kind::stall : event_kind::unstall, conn, 0);
  }

 private:
  template <class F>
  void core_call(core_context ctx, F&& f) {
    oracle_.begin_core(ctx);
    try {
      f();
    } catch (const std::exception& e) {
      // A planted bug may make the adapter misuse the core; without one it is a simulator bug.
      if (cfg_.planted == mutation::none) oracle_.report("adapter", e.what());
    }
    oracle_.end_core();
  }

  core_context response_ctx(const response_state& r) const {
    return {core_context::kind::response, r.id, r.conn->id};
  }

  void open_connections() {
    const std::uint32_t n = std::max<std::uint32_t>(s_.connections, 1);
    for (std::uint32_t i = 0; i < n; ++i) {
      auto c = std::make_unique<conn_state>();
      c->id = i + 1;
      c->handler_rng.emplace(cfg_.seed, 100 + 2 * c->id, jl_);
      c->link_rng.emplace(cfg_.seed, 101 + 2 * c->id, jl_);
      c->total = s_.requests / n + (i < s_.requests % n ? 1 : 0);
      rng& lr = *c->link_rng;
      c->link = s_.link;
      c->link.latency += duration(lr.between(0, s_.max_extra_latency.count()));
      const std::uint64_t expected =
          c->total *
          ((s_.min_header_bytes + s_.max_header_bytes + s_.min_body_bytes + s_.max_body_bytes) / 2);
      link_faults faults;
      if (lr.chance(s_.reset_rate)) faults.reset_at_byte = lr.below(expected + 1);
      if (lr.chance(s_.stall_rate)) {
        faults.stall_at_byte = lr.below(expected + 1);
        if (!lr.chance(s_.stall_forever_rate)) {
          faults.stall_for = duration(lr.between(1000, s_.max_stall.count()));
        }
      }
      const bool half_close = lr.chance(s_.half_close_rate);
      c->wire.emplace(c->id, sched_, lr, c->link, faults, jl_, this);
      c->scope.emplace(rt_);
      oracle_.connection_opened(c->id);
      // The client sends its requests; each arrives after the link latency.
      time_point at = time_.now();
      for (std::uint32_t k = 0; k < c->total; ++k) {
        at += s_.pipelined ? duration(lr.between(0, 1000))
                           : duration(lr.between(0, s_.max_request_gap.count()));
        sched_.post_at(at + c->link.latency, item_name::lazy("conn {}: request arrives", c->id),
                       c->id, [this, conn = c.get(), k] { on_arrival(*conn, k); });
      }
      if (half_close) {
        sched_.post_at(at + c->link.latency + duration(1),
                       item_name::lazy("conn {}: client half-closes", c->id), c->id,
                       [this, conn = c.get()] {
                         conn->half_closed = true;
                         maybe_close(*conn);
                       });
      }
      if (c->total == 0) {
        sched_.post(item_name::lazy("conn {}: unused", c->id), c->id,
                    [this, conn = c.get()] { close(*conn); });
      }
      conns_.push_back(std::move(c));
    }
  }

  void on_arrival(conn_state& c, std::uint32_t seq) {
    if (c.dead || c.closed) return;
    c.arrived.push_back(seq);
    start_next(c);
  }

  void start_next(conn_state& c) {
    if (c.busy || c.dead || c.closed) return;
    if (c.arrived.empty()) {
      maybe_close(c);
      return;
    }
    c.busy = true;
    auto r = std::make_unique<response_state>();
    r->conn = &c;
    r->seq = c.arrived.front();
    c.arrived.pop_front();
    r->scope.emplace(*c.scope);
    r->id = r->scope->id();
    ++requests_started_;
    oracle_.request_started(r->id, c.id, r->seq, cfg_.defer_tasks ? s_.max_tasks : 0);
    plan(*r);
    response_state* raw = r.get();
    responses_.emplace(r->id, std::move(r));
    sched_.post(item_name::lazy("request {}: handler step 1", raw->id), c.id,
                [this, raw] { handler_step1(*raw); });
  }

  // The handler's choices, all drawn now (scenario_draws.hpp).
  void plan(response_state& r) {
    planned_response p = detail::draw_response(*r.conn->handler_rng, s_);
    r.planned = std::move(p.tasks);
    r.status = p.status;
    r.header_bytes = p.header_bytes;
    r.body_bytes = p.body_bytes;
  }

  void defer_planned(response_state& r, std::uint32_t upto) {
    for (; r.next_index < upto; ++r.next_index) {
      if (!cfg_.defer_tasks) continue;
      const planned_task& p = r.planned[r.next_index];
      task_spec t;
      t.same_thread = p.same_thread;
      t.no_go = p.no_go_set();
      t.always = p.always;
      t.require_delivery = p.require_delivery;
      if (p.name >= 0) t.name = "call-" + std::to_string(p.name);
      t.phase = p.phase;
      t.throws = p.throws;
      defer_options o;
      if (t.same_thread) {
        o.same_thread = true;
      } else {
        o.executor = pool_;
      }
      o.no_go = t.no_go;
      o.always = t.always;
      o.name = t.name;
      o.phase = t.phase;
      o.require_delivery = t.require_delivery;
      const std::uint64_t id = r.id;
      const std::uint32_t index = r.next_index;
      const bool same_thread = t.same_thread;
      const bool throws = t.throws;
      oracle_.task_registered(id, index, std::move(t));
      oracle* o_ptr = &oracle_;
      const virtual_time* clock = &time_;
      r.scope->defer(
          [o_ptr, clock, id, index, same_thread, throws] {
            const std::int64_t started = clock->now_ns();
            if (same_thread) o_ptr->task_started(id, index, 0);
            if (same_thread) o_ptr->task_finished(id, index, 0, started);
            if (throws) throw std::runtime_error("the phone call failed (planned)");
          },
          std::move(o));
    }
  }

  void handler_step1(response_state& r) {
    defer_planned(r, static_cast<std::uint32_t>(r.planned.size() / 2));
    const duration think(r.conn->handler_rng->between(0, s_.max_think.count()));
    sched_.post_after(think, item_name::lazy("request {}: handler step 2", r.id), r.conn->id,
                      [this, rp = &r] { handler_step2(*rp); });
  }

  void handler_step2(response_state& r) {
    rng& h = *r.conn->handler_rng;
    defer_planned(r, static_cast<std::uint32_t>(r.planned.size()));
    if (h.chance(s_.cancel_rate)) {
      const std::uint64_t which = h.below(s_.distinct_names);  // drawn with or without tasks
      if (cfg_.defer_tasks) {
        const std::string name = "call-" + std::to_string(which);
        const bool cancelled = r.scope->cancel(name);
        oracle_.task_cancelled(r.id, name, cancelled);
      }
    }
    oracle_.status_chosen(r.id, r.status);
    const int reported = cfg_.planted == mutation::status_200 ? 200 : r.status;
    if (h.chance(s_.status_change_rate)) {
      const int first = s_.statuses.empty() ? 200 : s_.statuses[h.below(s_.statuses.size())];
      core_call(response_ctx(r),
                [&] { r.scope->status_known(cfg_.planted == mutation::status_200 ? 200 : first); });
    }
    core_call(response_ctx(r), [&] { r.scope->status_known(reported); });
    r.status_reported = true;
    r.conn->wire->async_write(r.header_bytes, [this, rp = &r](bool ok) { on_headers(*rp, ok); });
  }

  void on_headers(response_state& r, bool ok) {
    if (!ok) {
      fail(r);
      return;
    }
    oracle_.headers_accepted(r.id);
    core_call(response_ctx(r), [&] {
      if (cfg_.planted == mutation::sent_at_headers) {
        r.scope->response_sent();
      } else {
        r.scope->headers_sent();
      }
    });
    r.conn->wire->async_write(r.body_bytes, [this, rp = &r](bool ok2) { on_body(*rp, ok2); });
  }

  void on_body(response_state& r, bool ok) {
    if (!ok) {
      fail(r);
      return;
    }
    oracle_.last_byte_accepted(r.id);
    core_call(response_ctx(r), [&] { r.scope->response_sent(); });
    if (cfg_.planted == mutation::cross_release) {
      // Planted bug: completing this response also completes another one in flight.
      for (auto& [id, other] : responses_) {
        if (id != r.id && other->status_reported && other->scope) {
          core_call(response_ctx(r), [&] { other->scope->response_sent(); });
          break;
        }
      }
    }
    finish(r);
  }

  void fail(response_state& r) {
    oracle_.delivery_failed(r.id);
    core_call(response_ctx(r), [&] { r.scope->delivery_failed("connection reset by peer"); });
    conn_state& c = *r.conn;
    c.dead = true;
    finish(r);
    close(c);
  }

  void finish(response_state& r) {
    conn_state& c = *r.conn;
    core_call(response_ctx(r), [&] { r.scope->end(); });
    oracle_.scope_ended(r.id);
    ++c.served;
    c.busy = false;
    responses_.erase(r.id);  // destroys r
    if (!c.dead) {
      sched_.post(item_name::lazy("conn {}: next request", c.id), c.id,
                  [this, cp = &c] { start_next(*cp); });
    }
  }

  void maybe_close(conn_state& c) {
    if (c.closed || c.busy || !c.arrived.empty() || c.served < c.total) return;
    if (c.half_closed) {
      close(c);
      return;
    }
    sched_.post_after(s_.keep_alive_timeout, item_name::lazy("conn {}: idle timeout", c.id), c.id,
                      [this, cp = &c] { close(*cp); });
  }

  void close(conn_state& c) {
    if (c.closed) return;
    c.closed = true;
    oracle_.connection_closed(c.id);
    core_call({core_context::kind::connection, 0, c.id}, [&] { c.scope->closed(); });
  }

  const run_config& cfg_;
  const scenario& s_;
  // Declaration order is destruction order reversed: the runtime outlives everything that
  // holds its jobs; the oracle outlives the executor (dropped jobs are reported to it).
  journal log_;
  journal* const jl_;  // &log_, or nullptr when not journaled
  virtual_time time_;
  oracle oracle_;
  runtime rt_;
  scheduler sched_;
  rng pool_rng_;
  detail::fault_dice dice_;
  sim_executor pool_;
  std::vector<std::unique_ptr<conn_state>> conns_;
  std::unordered_map<std::uint64_t, std::unique_ptr<response_state>> responses_;
  std::uint64_t requests_started_ = 0;
};

}  // namespace

namespace {

run_result run_world(const run_config& config, bool journaled) {
  world w(config, journaled);
  run_result out = w.run();
  out.trace = w.take_trace();
  out.log = std::move(w.log());
  return out;
}

// The scenario on the real adapter: run_app runs the cross-run checks itself.
run_result run_adapter(const run_config& config, bool no_drag, bool determinism) {
  detail::scenario_app app = detail::make_scenario_app(config);
  app.config.no_drag = no_drag && config.defer_tasks;
  app.config.determinism = determinism;
  app_result r = run_app(app.config, app.server, app.client);
  run_result out;
  out.seed = config.seed;
  out.first = std::move(r.first);
  out.story = std::move(r.story);
  out.requests = app.counts->requests;
  out.steps = r.steps;
  out.end_ns = r.end_ns;
  out.metrics = r.metrics;
  out.digest = r.digest;
  out.log = std::move(r.log);
  out.schedule = std::move(r.schedule);
  out.faults = std::move(r.faults);
  out.trace = std::move(r.trace);
  out.completions = std::move(r.completions);
  return out;
}

}  // namespace

run_result run_once(const run_config& config) {
  if (config.server == server_kind::adapter) return run_adapter(config, false, false);
  return run_world(config, true);
}

run_result run_checked(const run_config& config, check_options checks) {
  if (config.server == server_kind::adapter) {
    run_config first_cfg = config;
    if (checks.determinism) first_cfg.keep_journal = true;
    return run_adapter(first_cfg, checks.no_drag, checks.determinism);
  }
  run_config first_cfg = config;
  if (checks.determinism) first_cfg.keep_journal = true;
  run_result out = run_once(first_cfg);
  if (!out.ok()) return out;
  if (checks.no_drag && config.defer_tasks) {
    run_config bare = config;
    bare.defer_tasks = false;
    bare.keep_trace = false;
    bare.keep_journal = false;
    // Only its completion times are compared: its journal digest would be thrown away.
    const run_result without = run_world(bare, false);
    if (auto v =
            detail::no_drag_violation(out.completions, without.completions, "on", "deferred tasks",
                                      out.trace.empty() ? 0 : out.trace.size() - 1)) {
      out.first = std::move(v);
      return out;
    }
  }
  if (checks.determinism) {
    const run_result again = run_once(first_cfg);
    if (auto diff = first_divergence(out.log, again.log)) {
      out.first = violation{"I8 determinism", "same seed, different runs: " + *diff, 0};
    }
  }
  return out;
}

}  // namespace crosstown::sim
