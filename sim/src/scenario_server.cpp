#include "scenario_server.hpp"

#include "scenario_draws.hpp"

#include <crosstown/beast/write.hpp>
#include <crosstown/response_scope.hpp>
#include <crosstown/status_set.hpp>

#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/message_generator.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <algorithm>
#include <array>
#include <deque>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace crosstown::sim::detail {

namespace {

namespace http = boost::beast::http;

struct server_state;

// One request and its response, from the read to the end of its write.
struct exchange {
  exchange(connection_scope& c, std::vector<exchange*>& known) : scope(c), known_(known) {}
  exchange(const exchange&) = delete;
  exchange& operator=(const exchange&) = delete;
  ~exchange() { std::erase(known_, this); }

  response_scope scope;
  std::vector<planned_task> planned;
  std::uint32_t next_index = 0;
  int status = 200;
  std::uint64_t header_bytes = 0;
  std::uint64_t body_bytes = 0;
  http::response<http::string_body> res;
  std::optional<http::response_serializer<http::string_body>> sr;  // sent_at_headers only
  bool ready = false;

 private:
  std::vector<exchange*>& known_;
};

struct server_state {
  run_config cfg;
  app_env* env = nullptr;
  std::shared_ptr<scenario_counts> counts;
  // Exchanges whose status the scope knows and whose write has not completed (cross_release).
  std::vector<exchange*> known;
};

class session final : public std::enable_shared_from_this<session> {
 public:
  session(sim_stream stream, server_state& st)
      : stream_(std::move(stream)),
        st_(st),
        s_(st.cfg.world),
        conn_(st.env->runtime()),
        idle_(stream_.get_executor()),
        draws_(st.cfg.seed, 100 + 2 * std::uint64_t{stream_.id()}) {}

  void start() { read(); }

 private:
  void read() {
    // Without pipelining the next request is read once the response went out.
    const std::size_t ahead = s_.pipelined ? 4 : 1;
    if (reading_ || closed_ || read_done_ || queue_.size() >= ahead) return;
    reading_ = true;
    req_ = {};
    http::async_read(stream_, buf_, req_, [self = shared_from_this()](error_code ec, std::size_t) {
      self->on_read(ec);
    });
    arm_idle();
  }

  // An idle keep-alive connection (a read pending, nothing to answer) closes after the
  // scenario's timeout.
  void arm_idle() {
    if (!reading_ || !queue_.empty() || writing_ || closed_) return;
    idle_.expires_after(s_.keep_alive_timeout);
    idle_.async_wait([self = shared_from_this()](error_code ec) {
      if (!ec) self->close();
    });
  }

  void on_read(error_code ec) {
    reading_ = false;
    idle_.cancel();
    if (closed_) return;
    if (ec) {
      read_done_ = true;  // end of stream (a half-close), a reset, or the idle close
      if (queue_.empty() && !writing_) close();
      return;
    }
    ++st_.counts->requests;
    auto x = std::make_shared<exchange>(conn_, st_.known);
    plan(*x);
    queue_.push_back(x);
    // Step 1 defers half of the tasks, then the handler thinks: the I/O thread is busy.
    defer_planned(*x, static_cast<std::uint32_t>(x->planned.size() / 2));
    spend(duration(draws_.between(0, s_.max_think.count())));
    net::post(stream_.get_executor(), [self = shared_from_this(), x] { self->step2(*x); });
    read();
  }

  void plan(exchange& x) {
    planned_response p = draw_response(draws_, s_);
    x.planned = std::move(p.tasks);
    x.status = p.status;
    x.header_bytes = p.header_bytes;
    x.body_bytes = p.body_bytes;
  }

  void defer_planned(exchange& x, std::uint32_t upto) {
    for (; x.next_index < upto; ++x.next_index) {
      if (!st_.cfg.defer_tasks) continue;
      const planned_task& p = x.planned[x.next_index];
      defer_options o;
      o.same_thread = p.same_thread;  // otherwise the runtime's pool: the simulated workers
      o.no_go = p.no_go_set();
      o.always = p.always;
      o.require_delivery = p.require_delivery;
      if (p.name >= 0) o.name = "call-" + std::to_string(p.name);
      o.phase = p.phase;
      const bool throws = p.throws;
      x.scope.defer(
          [throws] {
            if (throws) throw std::runtime_error("the phone call failed (planned)");
          },
          std::move(o));
    }
  }

  // Step 2 defers the rest, may cancel a call by name, reports the status (perhaps first
  // another one) and answers.
  void step2(exchange& x) {
    if (closed_) return;
    rng& h = draws_;
    defer_planned(x, static_cast<std::uint32_t>(x.planned.size()));
    if (h.chance(s_.cancel_rate)) {
      const std::uint64_t which = h.below(s_.distinct_names);  // drawn with or without tasks
      if (st_.cfg.defer_tasks) x.scope.cancel("call-" + std::to_string(which));
    }
    const bool planted_200 = st_.cfg.planted == mutation::status_200;
    if (h.chance(s_.status_change_rate)) {
      const int first = s_.statuses.empty() ? 200 : s_.statuses[h.below(s_.statuses.size())];
      x.scope.status_known(planted_200 ? 200 : first);
    }
    x.scope.status_known(planted_200 ? 200 : x.status);
    st_.known.push_back(&x);
    build(x);
    x.ready = true;
    write_next();
  }

  static void build(exchange& x) {
    auto& res = x.res;
    res.version(11);
    res.result(static_cast<unsigned>(x.status));
    res.keep_alive(true);
    // The status line, Content-Length and the padding field's name take about 45 bytes.
    constexpr std::uint64_t fixed = 45;
    res.set("X-Pad", std::string(x.header_bytes > fixed ? x.header_bytes - fixed : 1, 'h'));
    const bool bodyless = x.status / 100 == 1 || x.status == 204 || x.status == 304;
    if (!bodyless) res.body().assign(x.body_bytes, 'b');
    res.prepare_payload();
  }

  void write_next() {
    if (writing_ || closed_ || queue_.empty() || !queue_.front()->ready) return;
    writing_ = true;
    idle_.cancel();
    std::shared_ptr<exchange> x = queue_.front();
    st_.env->watch(x->scope);
    auto self = shared_from_this();
    auto done = [self, x](error_code ec, std::size_t) { self->on_write(*x, ec); };
    switch (st_.cfg.planted) {
      case mutation::sent_at_headers:
        // Planted bug: the header went out, and the session calls the response sent.
        x->sr.emplace(x->res);
        crosstown::beast::async_write_header(stream_, *x->sr, x->scope,
                                             [self, x, done](error_code ec, std::size_t n) {
                                               if (ec) return done(ec, n);
                                               x->scope.response_sent();
                                               http::async_write(self->stream_, *x->sr, done);
                                             });
        return;
      case mutation::status_200:
        // Planted bug: the scope was told 200; the generator carries the real status and the
        // adapter takes the status of a generator write from the scope.
        crosstown::beast::async_write_response(stream_, http::message_generator(std::move(x->res)),
                                               x->scope, done);
        return;
      default: crosstown::beast::async_write_response(stream_, x->res, x->scope, done); return;
    }
  }

  void on_write(exchange& x, error_code ec) {
    writing_ = false;
    if (!ec && st_.cfg.planted == mutation::cross_release) {
      // Planted bug: completing this response also completes another one whose status is known.
      for (exchange* other : st_.known) {
        if (other == &x) continue;
        try {
          other->scope.response_sent();
        } catch (const std::logic_error&) {
          // Already reported: the bug found nothing to break this time.
        }
        break;
      }
    }
    std::erase(st_.known, &x);
    if (!queue_.empty() && queue_.front().get() == &x) queue_.pop_front();  // its scope ends
    if (ec || closed_) return close();
    if (read_done_ && queue_.empty()) return close();
    write_next();
    read();
    arm_idle();
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    idle_.cancel();
    error_code ignored;
    stream_.shutdown(net::socket_base::shutdown_send, ignored);
    stream_.close(ignored);
    queue_.clear();
    conn_.closed();
  }

  sim_stream stream_;
  server_state& st_;
  const scenario& s_;
  connection_scope conn_;
  sim_timer idle_;
  rng draws_;
  boost::beast::flat_buffer buf_;
  http::request<http::string_body> req_;
  std::deque<std::shared_ptr<exchange>> queue_;
  bool reading_ = false;
  bool writing_ = false;
  bool read_done_ = false;
  bool closed_ = false;
};

class server final {
 public:
  server(app_env& env, run_config cfg, std::shared_ptr<scenario_counts> counts)
      : st_{std::move(cfg), &env, std::move(counts), {}},
        acceptor_(env.network(), env.server_executor()) {
    accept();
  }

 private:
  void accept() {
    acceptor_.async_accept([this](error_code ec, sim_stream s) {
      if (ec) return;
      std::make_shared<session>(std::move(s), st_)->start();
      accept();
    });
  }

  server_state st_;
  sim_acceptor acceptor_;
};

// The client of one connection: its share of the scenario's requests, each after a drawn
// gap (at most 1us when pipelined), reading whatever comes back; a half-close after the last
// one if drawn.
class client final : public std::enable_shared_from_this<client> {
 public:
  client(client_conn& c, const scenario& s)
      : c_(c), timer_(c.actor->get_executor()), pipelined_(s.pipelined) {
    const std::uint32_t n = std::max<std::uint32_t>(s.connections, 1);
    total_ = s.requests / n + (c.index - 1 < s.requests % n ? 1 : 0);
    half_close_ = c.draws->chance(s.half_close_rate);
    max_gap_ = s.max_request_gap;
  }

  void start() {
    next();
    drain();
  }

 private:
  void next() {
    if (sent_ == total_) {
      if (half_close_) c_.stream.shutdown(net::socket_base::shutdown_send);
      return;
    }
    const duration gap(pipelined_ ? c_.draws->between(0, 1000)
                                  : c_.draws->between(0, max_gap_.count()));
    timer_.expires_after(gap);
    timer_.async_wait([self = shared_from_this()](error_code ec) {
      if (!ec) self->send();
    });
  }

  void send() {
    ++sent_;
    request_ = "GET /r/" + std::to_string(sent_) + " HTTP/1.1\r\nHost: sim\r\n\r\n";
    net::async_write(c_.stream, net::buffer(request_),
                     [self = shared_from_this()](error_code ec, std::size_t) {
                       if (!ec) self->next();
                     });
  }

  void drain() {
    c_.stream.async_read_some(net::buffer(in_),
                              [self = shared_from_this()](error_code ec, std::size_t) {
                                if (!ec) self->drain();
                              });
  }

  client_conn& c_;
  sim_timer timer_;
  bool pipelined_;
  bool half_close_ = false;
  duration max_gap_{};
  std::uint32_t total_ = 0;
  std::uint32_t sent_ = 0;
  std::string request_;
  std::array<char, 8192> in_{};
};

}  // namespace

scenario_app make_scenario_app(const run_config& config) {
  const scenario& s = config.world;
  scenario_app app;
  app_config& a = app.config;
  a.seed = config.seed;
  a.connections = std::max<std::uint32_t>(s.connections, 1);
  a.strategy = config.strategy;
  a.link = s.link;
  a.max_extra_latency = s.max_extra_latency;
  a.reset_rate = s.reset_rate;
  // Resets and stalls at a byte of what a connection is expected to carry, as drawn.
  const std::uint32_t per_conn = s.requests / a.connections + 1;
  a.max_reset_byte =
      per_conn *
      ((s.min_header_bytes + s.max_header_bytes + s.min_body_bytes + s.max_body_bytes) / 2);
  a.stall_rate = s.stall_rate;
  a.stall_forever_rate = s.stall_forever_rate;
  a.max_stall = s.max_stall;
  a.workers = s.workers;
  a.min_cost = std::chrono::microseconds(1);
  a.max_cost = std::chrono::microseconds(500);
  a.fault_horizon = config.fault_horizon;
  a.liveness_budget = config.liveness_budget;
  a.step_cap = config.step_cap;
  a.no_drag = false;
  a.determinism = false;
  a.keep_trace = config.keep_trace;
  a.keep_journal = config.keep_journal;
  a.drop_every = config.planted == mutation::drop_job ? 13U : 0U;
  a.fault_run_rate = s.fault_run_rate;
  a.fault_hit_rate = s.fault_hit_rate;
  a.replay_prefix = "crosstown-sim --scenario " + s.name + " --seed ";
  app.counts = std::make_shared<scenario_counts>();
  app.server = [config, counts = app.counts](app_env& env) -> std::shared_ptr<void> {
    *counts = {};
    return std::make_shared<server>(env, config, counts);
  };
  app.client = [world = s](client_conn& c) { std::make_shared<client>(c, world)->start(); };
  return app;
}

}  // namespace crosstown::sim::detail
