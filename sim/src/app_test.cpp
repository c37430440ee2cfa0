#include <crosstown/sim/app_test.hpp>
#include <crosstown/sim/discard_body.hpp>

#include "driver.hpp"

#include <crosstown/awaitable_task.hpp>
#include <crosstown/detail/task_plan.hpp>
#include <crosstown/executor.hpp>
#include <crosstown/job.hpp>

#include <boost/beast/http/parser.hpp>

#include <algorithm>
#include <array>
#include <deque>
#include <map>
#include <unordered_map>
#include <utility>

namespace crosstown::sim {

namespace http = boost::beast::http;

namespace {

struct wire_response {
  int status = 0;
  std::int64_t header_ns = -1;
  std::int64_t done_ns = -1;
  std::int64_t failed_ns = -1;
};

struct conn_rec {
  std::uint32_t id = 0;
  actor_id actor = 0;
  std::vector<std::uint64_t> scopes;  // ids of the scopes created on it, in order
  std::vector<wire_response> responses;
  // The server's bytes are parsed for their framing only (discard_body.hpp).
  std::optional<http::response_parser<discard_body>> parser;
  std::string unparsed;
  bool closed = false;  // the server closed its end
  bool failed = false;  // reset, or a server operation failed
  // The server completion being handled now: a write of response `marker_response`, or not.
  bool marker_write = false;
  std::size_t marker_response = 0;
  bool protocol_error = false;
};

struct task_key_hash {
  std::size_t operator()(const std::pair<std::uint64_t, std::uint32_t>& k) const noexcept {
    return std::hash<std::uint64_t>()(k.first * 0x9e3779b97f4a7c15ULL + k.second);
  }
};

struct task_rec {
  std::optional<pending_task> spec;
  std::uint32_t released = 0;
  std::uint32_t started = 0;
  std::optional<task_state> settled;
  std::int64_t awaitable_started_ns = -1;  // handed to the tasks' io_context at; -1: not
};

// The track of awaitable tasks in traces (task_finished's value; workers are 0..n-1).
constexpr std::int64_t awaitable_track = 1000;

struct scope_rec {
  std::uint32_t conn = 0;  // 0: not created on a connection's I/O actor
  std::uint32_t seq = 0;   // request order on the connection
};

}  // namespace

class app_world final : public link_observer, public executor {
 public:
  app_world(const app_config& cfg, bool bare)
      : cfg_(cfg),
        bare_(bare),
        log_(cfg.keep_journal && !bare),
        rt_({.threads = 1,
             .on_error = [](const task_failure&) {},
             .on_lost = [this](const task_info& i, task_state s) { on_lost(i, s); },
             .on_settled = [this](const task_info& i, task_state s) { on_settled(i, s); }}),
        sched_(time_, cfg.strategy, cfg.seed, &log_),
        net_(sched_, cfg.seed, &log_, this),
        listener_(sched_, 1U << 15U, "listener"),
        app_rng_(cfg.seed, 7, &log_),
        pool_rng_(cfg.seed, 2, &log_),
        dice_(
            cfg.seed, cfg.fault_run_rate, cfg.fault_hit_rate,
            [this](std::string_view) {
              fault_in_step_ = true;
              record({now(), event_kind::fault_fired});
            },
            &log_),
        env_(*this),
        task_clock_(time_),
        tasks_io_(std::in_place, sched_, tasks_actor, "tasks io"),
        tasks_ex_(tasks_io_->get_executor()) {
    rt_.redirect_all_to(*this);
    // Awaitable tasks: coroutines on the simulated io_context, timers on virtual time. The
    // runtime then never makes its own io_context, nor the thread that would run it.
    redirect_awaitables(rt_, &tasks_ex_, &task_clock_);
    tasks_io_->on_step = [this] { probe(0); };
    tasks_io_->on_exception = [this](const std::string& what) { app_threw("tasks io", what); };
    listener_.on_step = [this] { probe(0); };
    listener_.on_exception = [this](const std::string& what) { app_threw("listener", what); };
    net_.on_new_actor = [this](io_actor& a) {
      const std::uint32_t conn = a.actor() - (1U << 16U);
      a.on_step = [this, conn] { probe(conn); };
      a.on_exception = [this, conn](const std::string& what) {
        app_threw("connection " + std::to_string(conn), what);
      };
      conn_rec& c = conn_of(conn);
      c.actor = a.actor();
      record({now(), event_kind::connection_opened, conn});
    };
    busy_.assign(std::max<std::uint32_t>(cfg.workers, 1), false);
  }

  app_world(const app_world&) = delete;
  app_world& operator=(const app_world&) = delete;

  ~app_world() override {
    tearing_down_ = true;
    net_.shut_down();
    clients_.clear();
    // The application's coroutines go before its server (their captures may refer to it). As
    // testkit's awaitable_driver: a coroutine destroyed with the context may free a lane slot
    // and start the next task - refused (counted), not started on a dying context.
    refuse_awaitables(rt_, true);
    tasks_io_.reset();
    redirect_awaitables(rt_, nullptr, nullptr);
    refuse_awaitables(rt_, false);
    server_.reset();
    queue_.clear();
    rt_.redirect_all_to({});
  }

  app_result run(const server_factory& server, const client_script& client,
                 const app_check& check) {
    clock_binding clock(time_);
    fault::scoped_injector faults(dice_);
    app_result out;
    out.seed = cfg_.seed;
    try {
      server_ = server(env_);
    } catch (const std::exception& e) {
      report("app", std::string("the server factory threw: ") + e.what());
    }
    probe(0);
    open_clients(client);
    out.steps = detail::run_phases(
        sched_, time_,
        {.step_cap = cfg_.step_cap,
         .fault_horizon = cfg_.fault_horizon,
         .liveness_budget = cfg_.liveness_budget},
        [this] {
          net_.heal();
          dice_.heal();
          record({now(), event_kind::healed});
        },
        [this](const run_outcome& o) {
          report("liveness", detail::cap_message(cfg_.step_cap, o, "still running"));
        });
    check_final();
    if (check) {
      try {
        check(env_);
      } catch (const std::exception& e) {
        report("app", std::string("the application's check threw: ") + e.what());
      }
    }
    out.first = first_;
    out.story = story();
    out.end_ns = time_.now_ns();
    out.digest = log_.digest();
    out.tasks_ran = started_;
    out.trace = std::move(trace_);
    out.metrics = rt_.metrics();
    out.schedule = sched_.decisions();
    out.faults = dice_.counts();
    for (const auto& [id, c] : conns_) {
      for (std::size_t k = 0; k < c.responses.size(); ++k) {
        const wire_response& r = c.responses[k];
        if (r.done_ns >= 0) {
          ++out.responses;
          out.completions[{id, static_cast<std::uint32_t>(k)}] = r.done_ns;
        } else if (r.failed_ns >= 0) {
          out.completions[{id, static_cast<std::uint32_t>(k)}] = -r.failed_ns - 1;
        }
      }
    }
    out.log = std::move(log_);
    return out;
  }

  // --- app_env ---
  crosstown::runtime& runtime() noexcept { return rt_; }
  sim_network& network() noexcept { return net_; }
  net::any_io_executor server_executor() noexcept { return listener_.get_executor(); }
  rng& draws() noexcept { return app_rng_; }
  std::int64_t now() const noexcept { return time_.now_ns(); }
  crosstown::task_clock& task_clock() noexcept { return task_clock_; }

  void watch(const response_scope& scope) {
    for (pending_task& p : scope.pending_tasks()) {
      task_rec& t = tasks_[{scope.id(), p.index}];
      const scope_rec* s = find_scope(scope.id());
      record({now(), event_kind::task_registered, s != nullptr ? s->conn : 0, scope.id(), p.index,
              static_cast<std::int64_t>(p.phase)});
      t.spec = std::move(p);
    }
  }

  void report(std::string invariant, std::string message) {
    ++violations_;
    if (first_) return;
    first_ =
        violation{std::move(invariant), std::move(message), trace_.empty() ? 0 : trace_.size() - 1};
  }

  // --- executor: every released task of the application comes here ---
  void execute(job_batch batch) override {
    std::unordered_map<std::uint64_t, std::int64_t> last_index;
    bool spawned = false;
    for (job& j : batch) {
      const task_info info = j.info();
      const crosstown::detail::task_plan* plan = j.work().plan();
      if (plan != nullptr && plan->holds_slot) {
        // A blocking task its lane admitted after a wait, handed back to its executor: it was
        // judged when it was released.
        queue_.push_back(std::move(j));
        continue;
      }
      judge_release(info, last_index);
      if (bare_ || tearing_down_) continue;  // dropped: deferred work does not run
      task_rec& t = tasks_[{info.request_id, info.index}];
      if (plan != nullptr && plan->body) {
        // As the runtime's own entry executor does: run the job at once - through its lane,
        // then co_spawn onto the tasks' io_context. It counts as started here and finished
        // when it settles (on_settled), on the tasks' track.
        const scope_rec* s = find_scope(info.request_id);
        record({now(), event_kind::task_started, s != nullptr ? s->conn : 0, info.request_id,
                info.index, awaitable_track});
        ++t.started;
        ++started_;
        t.awaitable_started_ns = now();
        j.run();
        spawned = true;
        continue;
      }
      if (t.spec && t.spec->same_thread && io_actor::running() != nullptr) {
        const scope_rec* s = find_scope(info.request_id);
        const std::uint32_t conn = s != nullptr ? s->conn : 0;
        record({now(), event_kind::task_started, conn, info.request_id, info.index, -1});
        ++t.started;
        ++started_;
        j.run();
        record({now(), event_kind::task_finished, conn, info.request_id, info.index, -1});
        continue;
      }
      queue_.push_back(std::move(j));
    }
    if (spawned) tasks_io_->kick();
    dispatch();
  }

  // --- link_observer: the server end's wire ---
  void on_server_bytes(std::uint32_t id, std::uint64_t, const char* data, std::size_t n) override {
    conn_rec& c = conn_of(id);
    // The application's writes, as the transport took them (a "bytes" span in the trace).
    record({now(), event_kind::bytes_accepted, id, 0, 0, static_cast<std::int64_t>(n)});
    if (c.protocol_error) return;
    c.unparsed.append(data, n);
    while (!c.unparsed.empty()) {
      if (!c.parser) {
        c.parser.emplace();
        c.parser->eager(true);
        c.parser->body_limit(boost::none);
        c.responses.emplace_back();
      }
      boost::beast::error_code ec;
      const std::size_t used = c.parser->put(net::buffer(c.unparsed), ec);
      if (ec == http::error::need_more) ec = {};
      if (ec) {
        c.protocol_error = true;
        report("protocol",
               "connection " + std::to_string(id) +
                   ": the server wrote bytes that are not an HTTP response: " + ec.message());
        return;
      }
      c.unparsed.erase(0, used);
      wire_response& r = c.responses.back();
      const auto k = static_cast<std::uint32_t>(c.responses.size() - 1);
      if (c.parser->is_header_done() && r.header_ns < 0) {
        r.header_ns = now();
        r.status = static_cast<int>(c.parser->get().result_int());
        record({now(), event_kind::status_chosen, id, scope_at(c, k), 0, r.status});
        record({now(), event_kind::headers_accepted, id, scope_at(c, k)});
      }
      if (c.parser->is_done()) {
        r.done_ns = now();
        record({now(), event_kind::last_byte_accepted, id, scope_at(c, k)});
        c.parser.reset();
      }
      if (used == 0) break;
    }
  }

  void on_server_completion(std::uint32_t id, bool write, const error_code& ec,
                            std::size_t) override {
    conn_rec& c = conn_of(id);
    c.marker_write = write;
    if (write) c.marker_response = c.responses.empty() ? 0 : c.responses.size() - 1;
    if (ec && write) fail_connection(c);
  }

  void on_reset(std::uint32_t id, std::uint64_t at_byte) override {
    conn_rec& c = conn_of(id);
    record({now(), event_kind::reset, id, 0, 0, static_cast<std::int64_t>(at_byte)});
    fail_connection(c);
  }

  void on_closed(std::uint32_t id, bool server) override {
    if (!server || tearing_down_) return;
    conn_rec& c = conn_of(id);
    c.closed = true;
    fail_in_progress(c);
    record({now(), event_kind::connection_closed, id});
  }

  void on_stall(std::uint32_t id, bool stalled) override {
    record({now(), stalled ? event_kind::stall : event_kind::unstall, id});
  }

 private:
  conn_rec& conn_of(std::uint32_t id) {
    conn_rec& c = conns_[id];
    c.id = id;
    return c;
  }

  std::uint64_t scope_at(const conn_rec& c, std::uint32_t k) const {
    return k < c.scopes.size() ? c.scopes[k] : 0;
  }

  const scope_rec* find_scope(std::uint64_t id) const {
    auto it = scopes_.find(id);
    return it == scopes_.end() ? nullptr : &it->second;
  }

  void fail_in_progress(conn_rec& c) {
    if (!c.responses.empty()) {
      wire_response& r = c.responses.back();
      if (r.done_ns < 0 && r.failed_ns < 0) {
        r.failed_ns = now();
        record({now(), event_kind::delivery_failed, c.id,
                scope_at(c, static_cast<std::uint32_t>(c.responses.size() - 1))});
      }
    }
  }

  void fail_connection(conn_rec& c) {
    if (c.failed) return;
    c.failed = true;
    fail_in_progress(c);
  }

  // After every step: which scopes were created during it, and so on which connection.
  void probe(std::uint32_t conn) {
    fault_in_step_ = false;  // a fault excuses the losses of the step it fired in only
    if (tearing_down_) return;
    // The completion being handled is over with the step.
    if (conn != 0) conn_of(conn).marker_write = false;
    // Reading the runtime's counter: a probe scope per step cost 4% of a demo run.
    const std::uint64_t id = rt_.last_request_id() + 1;
    register_scopes(conn, id);
  }

  // The scopes created since the last probe, up to `end` (excluded), were created on `conn`'s
  // actor (0: not on a connection's), in this order.
  void register_scopes(std::uint32_t conn, std::uint64_t end) {
    for (std::uint64_t s = last_probe_ + 1; s < end; ++s) {
      scope_rec& r = scopes_[s];
      if (conn != 0) {
        conn_rec& c = conn_of(conn);
        r.conn = conn;
        r.seq = static_cast<std::uint32_t>(c.scopes.size());
        c.scopes.push_back(s);
      }
      record({now(), event_kind::request_started, r.conn, s, 0, r.seq});
    }
    if (end > last_probe_ + 1) last_probe_ = end - 1;
  }

  // The connection whose io_actor runs the step now, or 0.
  std::uint32_t running_conn() const noexcept {
    const io_actor* a = io_actor::running();
    if (a == nullptr) return 0;
    const actor_id id = a->actor();
    return id > (1U << 16U) && id < (1U << 18U) ? id - (1U << 16U) : 0;
  }

  std::string who(const task_info& info) const { return info.describe(); }

  void judge_release(const task_info& info,
                     std::unordered_map<std::uint64_t, std::int64_t>& last_index) {
    // A scope created during the step running now is not known until the step's probe: the
    // scopes created since the last probe are this step's, on this actor - resolve them now,
    // or a release in the step that created its scope would go unjudged.
    if (info.request_id > last_probe_) register_scopes(running_conn(), info.request_id + 1);
    const scope_rec* s = find_scope(info.request_id);
    const std::uint32_t conn = s != nullptr ? s->conn : 0;
    record({now(), event_kind::task_released, conn, info.request_id, info.index});
    task_rec& t = tasks_[{info.request_id, info.index}];
    if (++t.released > 1) report("I3 once", who(info) + " was released twice");
    if (t.settled) {
      report("I3 once",
             who(info) + " was released after it settled as " + std::string(to_string(*t.settled)));
    }
    auto [it, fresh] = last_index.try_emplace(info.request_id, info.index);
    if (!fresh) {
      if (static_cast<std::int64_t>(info.index) <= it->second) {
        report("I4 order", who(info) + " was handed over after task " + std::to_string(it->second) +
                               " of the same response");
      }
      it->second = info.index;
    }
    if (conn == 0) return;  // not created on a connection: nothing to compare with the wire
    conn_rec& c = conn_of(conn);
    const io_actor* running = io_actor::running();
    if (running != nullptr && running->actor() != c.actor && running != &listener_) {
      report("I5 isolation", who(info) + " (connection " + std::to_string(conn) +
                                 ") was released by the I/O of " + running->label());
      return;
    }
    const std::uint32_t k = s->seq;
    const wire_response* r = k < c.responses.size() ? &c.responses[k] : nullptr;
    const bool failed = (r != nullptr && r->failed_ns >= 0) || c.failed || c.closed;
    if (running != nullptr && c.marker_write && c.marker_response != k && !failed) {
      report("I5 isolation", who(info) + " (response " + std::to_string(k) + " of connection " +
                                 std::to_string(conn) + ") was released by the write of response " +
                                 std::to_string(c.marker_response));
      return;
    }
    const bool header = r != nullptr && r->header_ns >= 0;
    const bool done = r != nullptr && r->done_ns >= 0;
    const std::optional<pending_task>& spec = t.spec;
    bool reached = header || failed;
    std::string phase = "its response's header";
    if (spec) {
      switch (spec->phase) {
        case task_phase::headers_sent: break;
        case task_phase::response_sent:
          reached = done || failed;
          phase = "its response's last byte";
          break;
        case task_phase::connection_closed:
          reached = c.closed || c.failed;
          phase = "the close of its connection";
          break;
      }
    }
    if (!reached) {
      report("I1 after", who(info) + " (response " + std::to_string(k) + " of connection " +
                             std::to_string(conn) + ") was released before " + phase +
                             " went out: the wire shows " +
                             (r == nullptr ? std::string("no byte of it")
                              : header     ? std::string("only its header")
                                           : std::string("part of its header")));
      return;
    }
    if (!spec) return;
    if (header && !spec->always && spec->no_go.contains(r->status)) {
      report("I2 status", who(info) + " ran although the status on the wire, " +
                              std::to_string(r->status) + ", is in its no-go set " +
                              spec->no_go.to_string());
    }
    if (spec->require_delivery) {
      const bool delivered = spec->phase == task_phase::headers_sent ? header : done;
      if (!delivered) {
        report("I3 delivery", who(info) +
                                  " requires delivery but was released although the wire "
                                  "shows response " +
                                  std::to_string(k) + " of connection " + std::to_string(conn) +
                                  " " + (r == nullptr ? "never started" : "failed before its end"));
      }
    }
  }

  void on_settled(const task_info& info, task_state state) {
    ++settled_[static_cast<std::size_t>(metrics_snapshot::terminal_slot(state))];
    auto it = tasks_.find({info.request_id, info.index});
    if (it == tasks_.end())
      it = tasks_.emplace(std::pair{info.request_id, info.index}, task_rec{}).first;
    it->second.settled = state;
    task_rec& t = it->second;
    if (t.awaitable_started_ns >= 0) {
      const scope_rec* s = find_scope(info.request_id);
      record({now(), event_kind::task_finished, s != nullptr ? s->conn : 0, info.request_id,
              info.index, awaitable_track, now() - t.awaitable_started_ns});
    }
  }

  void on_lost(const task_info& info, task_state state) {
    if (bare_ || tearing_down_) return;
    // An injected fault (the executor refused the batch) loses tasks by design.
    if (fault_in_step_) return;
    report("I3 once", who(info) + " was allowed but lost: " + std::string(to_string(state)));
  }

  void app_threw(const std::string& where, const std::string& what) {
    report("app", "a completion handler on " + where + " threw: " + what);
  }

  // --- simulated workers ---
  void dispatch() {
    for (std::uint32_t w = 0; w < busy_.size() && !queue_.empty(); ++w) {
      if (busy_[w]) continue;
      busy_[w] = true;
      sched_.post(item_name::lazy("worker {}: take a job", w), worker_actor(w),
                  [this, w] { take(w); });
    }
  }

  static actor_id worker_actor(std::uint32_t w) { return (1U << 20U) + w; }
  // The io_actor of awaitable tasks: after the clients (1 << 18) + n, before the workers.
  static constexpr actor_id tasks_actor = 1U << 19U;

  struct worker_ctx {
    app_world* world;
    duration spent{0};
  };

  void take(std::uint32_t w) {
    fault_in_step_ = false;
    if (queue_.empty()) {
      busy_[w] = false;
      return;
    }
    job j = std::move(queue_.front());
    queue_.pop_front();
    if (cfg_.drop_every != 0 && ++taken_ % cfg_.drop_every == 0) {
      j = job{};  // the planted bug: destroyed unrun (the core counts it dropped, reports it lost)
      busy_[w] = false;
      dispatch();
      return;
    }
    const task_info info = j.info();
    const std::uint64_t request = info.request_id;
    const std::uint32_t index = info.index;
    const scope_rec* s = find_scope(request);
    const std::uint32_t conn = s != nullptr ? s->conn : 0;
    task_rec& t = tasks_[{request, index}];
    ++t.started;
    ++started_;
    const std::int64_t started_ns = now();
    record({started_ns, event_kind::task_started, conn, request, index, w});
    worker_ctx ctx{this};
    detail::set_worker_spend(
        [](void* self, duration d) { static_cast<worker_ctx*>(self)->spent += d; }, &ctx);
    // A planned blocking task (lane, timeout) may co_spawn on the tasks' io_context: its
    // overrun watch, or the awaitable task its lane admits when it ends.
    const bool planned = j.work().plan() != nullptr;
    j.run();
    detail::set_worker_spend(nullptr, nullptr);
    if (planned) tasks_io_->kick();
    probe(0);
    const duration cost =
        duration(pool_rng_.between(cfg_.min_cost.count(), cfg_.max_cost.count())) + ctx.spent;
    sched_.post_after(
        cost, item_name::lazy("worker {}: finish task {} of request {}", w, index, request),
        worker_actor(w), [this, w, conn, request, index, started_ns] {
          record({now(), event_kind::task_finished, conn, request, index, w, now() - started_ns});
          busy_[w] = false;
          dispatch();
        });
  }

  void open_clients(const client_script& client) {
    for (std::uint32_t i = 1; i <= std::max<std::uint32_t>(cfg_.connections, 1); ++i) {
      auto cc = std::make_unique<client_side>(cfg_.seed, i, sched_, &log_);
      rng& lr = cc->link_rng;
      link_options link = cfg_.link;
      link.latency += duration(lr.between(0, cfg_.max_extra_latency.count()));
      link_faults faults;
      if (lr.chance(cfg_.reset_rate)) faults.reset_at_byte = lr.below(cfg_.max_reset_byte + 1);
      if (lr.chance(cfg_.stall_rate)) {
        faults.stall_at_byte = lr.below(cfg_.max_reset_byte + 1);
        if (!lr.chance(cfg_.stall_forever_rate))
          faults.stall_for = duration(lr.between(1000, cfg_.max_stall.count()));
      }
      cc->actor.on_exception = [this, i](const std::string& what) {
        app_threw("client " + std::to_string(i), what);
      };
      cc->actor.on_step = [this] { probe(0); };
      cc->conn.stream = net_.connect(cc->actor, link, faults);
      cc->conn.index = i;
      cc->conn.draws = &cc->script_rng;
      cc->conn.actor = &cc->actor;
      cc->conn.env = &env_;
      try {
        client(cc->conn);
      } catch (const std::exception& e) {
        report("app", std::string("the client script threw: ") + e.what());
      }
      cc->actor.kick();
      clients_.push_back(std::move(cc));
    }
  }

  void check_final() {
    if (!queue_.empty()) {
      report("I3 once", std::to_string(queue_.size()) +
                            " released task(s) never ran within the liveness budget");
    }
    for (const auto& [key, t] : tasks_) {
      if (t.released > 0 && t.started == 0 && !bare_ && queue_.empty()) {
        report("I3 once",
               task_info{key.first, key.second, {}}.describe() + " was released but never ran");
        break;
      }
      // An awaitable task still suspended (or waiting in its lane) when the run settled.
      if (t.started > 0 && !t.settled && !bare_) {
        report("I3 once", task_info{key.first, key.second, {}}.describe() +
                              " started but never finished within the liveness budget");
        break;
      }
      // A task still held by its scope once the network had healed and the budget ran out:
      // its response never finished (a write that never completed, a scope never ended).
      if (t.spec && t.released == 0 && !t.settled && !bare_) {
        report("I3 once", task_info{key.first, key.second, {}}.describe() +
                              " never ran within the liveness budget: still waiting for its "
                              "response to end");
        break;
      }
    }
    const metrics_snapshot m = rt_.metrics();
    for (task_state s : terminal_states) {
      const std::uint64_t seen = settled_[metrics_snapshot::terminal_slot(s)];
      if (m.count(s) != seen) {
        report("I6 accounting", std::string("metrics: ") + std::string(to_string(s)) + " = " +
                                    std::to_string(m.count(s)) + ", observed " +
                                    std::to_string(seen));
      }
    }
    const std::uint64_t ended =
        m.count(task_state::ran) + m.count(task_state::failed) + m.count(task_state::timed_out);
    if (!bare_ && ended != started_) {
      report("I6 accounting", "metrics: ran + failed + timed_out = " + std::to_string(ended) +
                                  ", tasks started " + std::to_string(started_));
    }
    if (m.terminal() > m.registered)
      report("I6 accounting", "metrics: more terminal states than registered tasks");
  }

  std::size_t record(event e) {
    log_.add(journal_kind::event, "app oracle",
             (static_cast<std::uint64_t>(e.kind) << 56U) ^ (e.request << 24U) ^ e.task ^
                 (static_cast<std::uint64_t>(e.conn) << 40U),
             static_cast<std::uint64_t>(e.value), e.time_ns);
    if (!cfg_.keep_trace || bare_) return 0;
    trace_.push_back(e);
    return trace_.size() - 1;
  }

  std::string story() const { return detail::story_of(trace_, first_); }

  struct client_side {
    client_side(std::uint64_t seed, std::uint32_t i, scheduler& sched, journal* log)
        : link_rng(seed, 500 + 2 * i, log),
          script_rng(seed, 501 + 2 * i, log),
          actor(sched, (1U << 18U) + i, "client " + std::to_string(i)) {}
    rng link_rng;
    rng script_rng;
    io_actor actor;
    client_conn conn;  // its stream is destroyed before the actor
  };

  const app_config& cfg_;
  bool bare_;
  bool tearing_down_ = false;
  // Declaration order is destruction order reversed: the observations outlive the runtime
  // (its hooks report to them); the runtime outlives everything that holds its scopes and jobs.
  journal log_;
  virtual_time time_;
  std::vector<event> trace_;
  std::optional<violation> first_;
  std::uint64_t violations_ = 0;
  std::map<std::uint32_t, conn_rec> conns_;
  std::unordered_map<std::uint64_t, scope_rec> scopes_;
  std::unordered_map<std::pair<std::uint64_t, std::uint32_t>, task_rec, task_key_hash> tasks_;
  std::array<std::uint64_t, terminal_state_count> settled_{};
  std::uint64_t started_ = 0;
  std::uint64_t taken_ = 0;  // jobs the workers took (for drop_every)
  std::uint64_t last_probe_ = 0;
  crosstown::runtime rt_;
  scheduler sched_;
  std::deque<job> queue_;
  std::vector<bool> busy_;
  sim_network net_;
  io_actor listener_;
  rng app_rng_;
  rng pool_rng_;
  detail::fault_dice dice_;
  bool fault_in_step_ = false;
  app_env env_;
  std::vector<std::unique_ptr<client_side>> clients_;
  std::shared_ptr<void> server_;
  // Awaitable tasks: the clock outlives the coroutines waiting on it; the context is
  // destroyed first, in the destructor, while the runtime and the observations exist.
  sim_task_clock task_clock_;
  std::optional<io_actor> tasks_io_;
  awaitable_executor tasks_ex_;
};

crosstown::runtime& app_env::runtime() noexcept { return world_.runtime(); }
sim_network& app_env::network() noexcept { return world_.network(); }
net::any_io_executor app_env::server_executor() noexcept { return world_.server_executor(); }
rng& app_env::draws() noexcept { return world_.draws(); }
std::int64_t app_env::now_ns() const noexcept { return world_.now(); }
crosstown::task_clock& app_env::task_clock() noexcept { return world_.task_clock(); }
void app_env::watch(const response_scope& scope) { world_.watch(scope); }
void app_env::fail(std::string invariant, std::string message) {
  world_.report(std::move(invariant), std::move(message));
}

app_result run_app(const app_config& config, const server_factory& server,
                   const client_script& client, const app_check& check) {
  app_result out;
  {
    app_world w(config, false);
    out = w.run(server, client, check);
  }
  out.replay = config.replay_prefix + std::to_string(config.seed);
  if (!out.ok()) return out;
  if (config.no_drag) {
    app_result bare;
    {
      app_world w(config, true);
      bare = w.run(server, client, {});
    }
    if (auto v = detail::no_drag_violation(out.completions, bare.completions, "of", "deferred work",
                                           0)) {
      out.first = std::move(v);
      out.story = "  >>> " + out.first->invariant + ": " + out.first->message + "\n";
      return out;
    }
  }
  if (config.determinism) {
    app_result again;
    {
      app_world w(config, false);
      again = w.run(server, client, check);
    }
    if (again.digest != out.digest) {
      out.first = violation{"I8 determinism", "the same seed gave two different journals", 0};
      out.story = "  >>> I8 determinism: the same seed gave two different journals\n";
    }
  }
  return out;
}

app_seeds_result run_app_seeds(app_config config, std::uint64_t first_seed, std::uint64_t runs,
                               const server_factory& server, const client_script& client,
                               const app_check& check) {
  app_seeds_result out;
  for (std::uint64_t i = 0; i < runs; ++i) {
    config.seed = first_seed + i;
    app_result r = run_app(config, server, client, check);
    ++out.runs;
    out.responses += r.responses;
    out.tasks_ran += r.tasks_ran;
    if (!r.ok()) {
      out.failure = std::move(r);
      break;
    }
  }
  return out;
}

std::string describe(const app_result& r) {
  std::string out = "seed " + std::to_string(r.seed);
  if (r.first) out += ": " + r.first->invariant + ": " + r.first->message;
  out += "\n" + r.story + "replay: " + r.replay + "\n";
  return out;
}

}  // namespace crosstown::sim
