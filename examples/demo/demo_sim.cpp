// demo_sim.cpp - the demo server instantiated on crosstown::sim's transport, the demo's client
// script and end-of-run checks (demo_sim.hpp).
#include "demo_sim.hpp"

#include "demo_server_impl.hpp"
#include "phone_calls_app.hpp"
#include "planted/planted_app.hpp"

#include <crosstown/sim/asio.hpp>
#include <crosstown/sim/discard_body.hpp>

#include <boost/asio/bind_executor.hpp>

#include <ctime>
#include <deque>
#include <map>
#include <memory>
#include <vector>

namespace crosstown_demo {

namespace sim = crosstown::sim;

// A Beast-`basic_stream`-like timed stream over `Next` whose timeouts run on `Timer`: the
// sessions' expires_after / expires_at / expires_never, with basic_stream's rules - an
// operation pending when the expiry passes, or started after it, completes with
// `beast::error::timeout` and the connection is closed. Each completed write is recorded in
// the write_recorder, on the timer's clock. The state is shared with the completions, so the
// stream may be moved (the coroutine session takes it by value) while operations are pending.
template <class Next, class Timer>
class timed_stream {
 public:
  using executor_type = typename Next::executor_type;
  using next_layer_type = Next;
  using time_point = typename Timer::time_point;
  using duration = typename Timer::duration;

  timed_stream(write_recorder policy, Next&& next)
      : s_(std::make_shared<state>(std::move(policy), std::move(next))) {}

  executor_type get_executor() const noexcept { return s_->next.get_executor(); }
  Next& socket() noexcept { return s_->next; }
  Next& next_layer() noexcept { return s_->next; }
  write_recorder& rate_policy() noexcept { return s_->policy; }

  void close() {
    s_->disarm();
    s_->next.close();
  }

  void expires_after(duration d) { s_->arm(Timer::clock_type::now() + d); }
  template <class Rep, class Period>
  void expires_after(std::chrono::duration<Rep, Period> d) {
    expires_after(std::chrono::duration_cast<duration>(d));
  }
  void expires_at(time_point at) { s_->arm(at); }
  void expires_never() { s_->disarm(); }

  template <class MutableBufferSequence, class ReadToken>
  auto async_read_some(const MutableBufferSequence& buffers, ReadToken&& token) {
    return net::async_initiate<ReadToken, void(error_code, std::size_t)>(
        [s = s_](auto done, const MutableBufferSequence& b) {
          start<false>(s, b, std::move(done));
        },
        token, buffers);
  }

  template <class ConstBufferSequence, class WriteToken>
  auto async_write_some(const ConstBufferSequence& buffers, WriteToken&& token) {
    return net::async_initiate<WriteToken, void(error_code, std::size_t)>(
        [s = s_](auto done, const ConstBufferSequence& b) { start<true>(s, b, std::move(done)); },
        token, buffers);
  }

 private:
  struct state : std::enable_shared_from_this<state> {
    state(write_recorder p, Next&& n)
        : next(std::move(n)), timer(next.get_executor()), policy(std::move(p)) {}

    void arm(time_point at) {
      ++generation;
      expired = false;
      timer.expires_at(at);
      timer.async_wait([weak = this->weak_from_this(), g = generation](error_code ec) {
        auto self = weak.lock();
        if (!self || ec || g != self->generation) return;
        self->expired = true;
        if (self->pending > 0) self->next.close();  // the pending operations time out
      });
    }
    void disarm() {
      ++generation;
      expired = false;
      timer.cancel();
    }

    Next next;
    Timer timer;
    write_recorder policy;
    std::uint64_t generation = 0;  // of the expiry set last
    bool expired = false;          // that expiry has passed
    int pending = 0;               // operations in progress
  };

  template <bool Write, class Buffers, class Handler>
  static void start(const std::shared_ptr<state>& s, const Buffers& buffers, Handler h) {
    auto ex = net::get_associated_executor(h, s->next.get_executor());
    if (s->expired) {
      s->next.close();
      net::post(ex, [h = std::move(h)]() mutable {
        std::move(h)(error_code(beast::error::timeout), std::size_t{0});
      });
      return;
    }
    ++s->pending;
    auto done = net::bind_executor(
        ex, [s, g = s->generation, h = std::move(h)](error_code ec, std::size_t n) mutable {
          --s->pending;
          if (Write && n > 0) {
            s->policy.record_write(n, Timer::clock_type::now().time_since_epoch().count());
          }
          if (ec && s->expired && g == s->generation) ec = beast::error::timeout;
          std::move(h)(ec, n);
        });
    if constexpr (Write) {
      s->next.async_write_some(buffers, std::move(done));
    } else {
      s->next.async_read_some(buffers, std::move(done));
    }
  }

  std::shared_ptr<state> s_;
};

/// The simulator's transport; `Bug` plants a session bug (planted_bug::none: the real one).
template <planted_bug Bug>
struct sim_transport {
  using context_type = sim::app_env;
};

template <planted_bug Bug>
struct transport_traits<sim_transport<Bug>> {
  using socket_type = sim::sim_stream;
  using stream_type = timed_stream<sim::sim_stream, sim::sim_timer>;
  using timer_type = sim::sim_timer;
  using acceptor_type = sim::sim_acceptor;
  using time_point = sim::sim_timer::time_point;
  static constexpr planted_bug planted = Bug;

  static net::any_io_executor executor(sim::app_env& env) { return env.server_executor(); }
  static void open(std::optional<acceptor_type>& acceptor, sim::app_env& env,
                   const server_options&) {
    acceptor.emplace(env.network(), env.server_executor());
  }
  static unsigned short port(const acceptor_type&) { return 0; }
  template <class Handler>
  static void accept(acceptor_type& acceptor, Handler&& on_accept) {
    acceptor.async_accept(std::forward<Handler>(on_accept));
  }
  static void close(acceptor_type& acceptor) { acceptor.close(); }
  // Over the cap the connection is closed without the 503 (the simulated stream has no
  // synchronous write); the demo's runs stay far below the cap.
  static void reject(socket_type&& socket) { socket.close(); }
  static void configure(socket_type&, const server_options&) {}
  static void posted(const net::any_io_executor& ex) {
    if (sim::io_actor* actor = sim::io_actor::of(ex)) actor->kick();
  }
  static time_point now() { return sim::virtual_clock::now(); }
  // The Date on virtual time: 2026-01-01T00:00:00Z plus the run's seconds.
  static std::string date() {
    const auto since = std::chrono::duration_cast<std::chrono::seconds>(now().time_since_epoch());
    const std::time_t at = 1767225600 + static_cast<std::time_t>(since.count());
    std::tm tm{};
    gmtime_r(&at, &tm);
    char buf[40];
    const std::size_t n = std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    return std::string(buf, n);
  }
  static void watch(sim::app_env& env, const crosstown::response_scope& scope) { env.watch(scope); }
};

std::string_view to_string(demo_bug bug) noexcept {
  switch (bug) {
    case demo_bug::none: return "none";
    case demo_bug::stale_scope: return "stale-scope";
    case demo_bug::sent_before_write: return "sent-before-write";
    case demo_bug::ignore_write_error: return "ignore-write-error";
    case demo_bug::blocking_task: return "blocking-task";
    case demo_bug::control: return "control";
  }
  return "?";
}

std::optional<demo_bug> parse_demo_bug(std::string_view name) noexcept {
  for (const demo_bug b :
       {demo_bug::none, demo_bug::stale_scope, demo_bug::sent_before_write,
        demo_bug::ignore_write_error, demo_bug::blocking_task, demo_bug::control}) {
    if (to_string(b) == name) return b;
  }
  return std::nullopt;
}

namespace {

// What the client sent on one request, and what it read back.
struct sent_request {
  std::string id;
  enum class kind : std::uint8_t { calls, missing, other, malformed } what = kind::other;
  int calls = 0;   // n of POST /calls?n=
  int status = 0;  // of the response read whole; 0: none
};

// One run's shared state: the app, its placer and the client's records.
struct demo_run {
  std::vector<std::shared_ptr<std::deque<sent_request>>> connections;
  std::shared_ptr<awaitable_call_placer> placer;  // outlives the app, which refers to it
  std::shared_ptr<phone_calls_app> app;
};

// The production placer (awaitable calls in the "telephony" lane, a timeout per attempt,
// retries with a jittered backoff) with its times scaled down tenfold, so that a run's slowest
// calls - three timed-out attempts and their backoffs, queued in the lane - settle within the
// liveness budget; and a lane of 8 (not 100), so that a run's calls (at most 48) do wait in
// it. The fake telephony API: each attempt waits the request's latency on the run's task
// clock (virtual time) and fails with probability 0.15, the draws seeded by the run.
awaitable_call_settings sim_call_settings(sim::app_env& env) {
  awaitable_call_settings s;
  s.lane_options.max_in_flight = 8;
  s.timeout = std::chrono::milliseconds(200);
  s.retry.base = std::chrono::milliseconds(10);
  s.retry.cap = std::chrono::milliseconds(200);
  s.failure_rate = 0.15;
  s.seed = env.draws().next();
  return s;
}

// The app and its server on one transport; destroyed at the end of the run.
template <planted_bug Bug>
struct demo_instance {
  demo_instance(sim::app_env& env, demo_run& run, const demo_sim_options& o)
      : placer(std::make_shared<awaitable_call_placer>(env.runtime(), env.task_clock(),
                                                       sim_call_settings(env))),
        app(std::make_shared<phone_calls_app>(env.runtime(), *placer)),
        server(env, env.runtime(), make_handler(app, o), options(env, o)) {
    run.placer = placer;
    run.app = app;
    server.start();  // posts the first accept to the listener's io_context
    if (sim::io_actor* listener = sim::io_actor::of(env.server_executor())) listener->kick();
  }

  static handler make_handler(const std::shared_ptr<phone_calls_app>& app,
                              const demo_sim_options& o) {
    handler real = [app](request_context& c) { return (*app)(c); };
    if (o.bug == demo_bug::none) return real;
    const planted::handler_bug hb =
        o.bug == demo_bug::sent_before_write ? planted::handler_bug::sent_before_write
        : o.bug == demo_bug::blocking_task   ? planted::handler_bug::blocking_log
                                             : planted::handler_bug::none;
    return planted::planted_handler(
        std::move(real), hb, [](std::chrono::nanoseconds d) { sim::spend(d); },
        [](std::function<void()> fn) {
          // On the connection's own io_context (the handler runs in one of its steps).
          if (sim::io_actor* io = sim::io_actor::running()) net::post(io->get_executor(), fn);
        });
  }

  static server_options options(sim::app_env& env, const demo_sim_options& o) {
    server_options so;
    so.style = o.style
                   ? *o.style
                   : (env.draws().chance(0.5) ? session_style::coroutine : session_style::callback);
    so.idle_timeout = std::chrono::seconds(2);
    so.header_timeout = std::chrono::seconds(1);
    so.body_timeout = std::chrono::seconds(1);
    so.write_timeout = std::chrono::seconds(1);
    so.stop_grace = std::chrono::seconds(1);
    return so;
  }

  std::shared_ptr<awaitable_call_placer> placer;
  std::shared_ptr<phone_calls_app> app;
  basic_server<sim_transport<Bug>> server;
};

// The client of one connection (see demo_sim.hpp).
struct client_state : std::enable_shared_from_this<client_state> {
  sim::client_conn* c = nullptr;
  std::shared_ptr<std::deque<sent_request>> sent;
  int total = 0;
  int written = 0;
  int read = 0;
  bool pipelined = false;
  bool done = false;
  std::deque<request_type> requests;  // alive until written; stable addresses
  beast::flat_buffer buffer;
  std::optional<http::response_parser<crosstown::sim::discard_body>> parser;  // statuses only

  void send() {
    if (written == total || done) return;
    const int k = written++;
    sent_request r;
    r.id = "c" + std::to_string(c->index) + "-" + std::to_string(k);
    request_type& req = requests.emplace_back();
    req.version(11);
    req.set(http::field::host, "demo");
    req.set("X-Request-Id", r.id);
    const std::uint64_t pick = c->draws->below(100);
    if (pick < 55) {
      r.what = sent_request::kind::calls;
      r.calls = static_cast<int>(c->draws->below(5));
      // The API's latency for these calls: mostly fast, sometimes slow, now and then slower
      // than the 200 ms timeout of an attempt (so attempts time out and are retried).
      const std::uint64_t speed = c->draws->below(100);
      const std::uint64_t us = speed < 70   ? c->draws->below(2'001)
                               : speed < 90 ? 2'000 + c->draws->below(148'001)
                                            : 150'000 + c->draws->below(250'001);
      req.method(http::verb::post);
      req.target("/calls?n=" + std::to_string(r.calls) + "&us=" + std::to_string(us));
    } else if (pick < 70) {
      r.what = sent_request::kind::missing;
      req.method(http::verb::get);
      req.target("/missing");
    } else if (pick < 78) {
      req.method(http::verb::post);
      req.target("/audit");
    } else if (pick < 91) {
      req.method(http::verb::get);
      req.target("/moved");
    } else if (pick < 95) {
      req.method(http::verb::get);
      req.target("/stream");
    } else {
      r.what = sent_request::kind::malformed;
      req.method(http::verb::get);
      req.target("/calls");
      req.erase(http::field::host);  // HTTP/1.1 without Host: 400, the connection closes
      total = written;               // nothing after it
    }
    req.keep_alive(true);
    req.prepare_payload();
    sent->push_back(std::move(r));
    http::async_write(c->stream, req, [self = shared_from_this()](error_code ec, std::size_t) {
      self->requests.pop_front();
      if (ec) return;
      if (self->pipelined) self->send();
    });
  }

  void receive() {
    parser.emplace();
    parser->body_limit(1024 * 1024);
    http::async_read(
        c->stream, buffer, *parser, [self = shared_from_this()](error_code ec, std::size_t) {
          if (ec) return;
          const auto& res = self->parser->get();
          (*self->sent)[static_cast<std::size_t>(self->read)].status = res.result_int();
          ++self->read;
          if (self->read == self->total || !res.keep_alive()) return self->finish();
          if (!self->pipelined) self->send();
          self->receive();
        });
  }

  void finish() {
    done = true;
    if (c->draws->chance(0.5)) {
      c->stream.shutdown(net::socket_base::shutdown_send);
    } else {
      c->stream.close();
    }
  }
};

void check_run(sim::app_env& env, const demo_run& run) {
  if (!run.app || !run.placer) return env.fail("app: server", "the demo server was not built");
  std::uint64_t placed = 0;  // calls whose first attempt started, over every request
  for (const auto& conn : run.connections) {
    for (const sent_request& r : *conn) {
      if (r.what != sent_request::kind::calls) continue;  // other tasks count as started too
      if (const auto rec = run.app->find(r.id)) placed += static_cast<std::uint64_t>(rec->started);
    }
  }
  // Every attempt belongs to a placed call, and a call makes at most max_attempts of them.
  const std::uint64_t attempts = run.placer->attempts();
  const std::uint64_t most = placed * run.placer->settings().retry.max_attempts;
  if (attempts < placed || attempts > most) {
    return env.fail("app: attempts per call", std::to_string(placed) + " calls placed made " +
                                                  std::to_string(attempts) + " attempts");
  }
  for (const auto& conn : run.connections) {
    for (const sent_request& r : *conn) {
      if (r.status == 0) continue;  // not read whole: not delivered as far as the client knows
      const auto rec = run.app->find(r.id);
      if (r.what == sent_request::kind::calls && r.status == 202) {
        if (!rec || rec->deferred.load() != r.calls || rec->started.load() != r.calls) {
          env.fail("app: 202 places n calls",
                   "request " + r.id + " answered 202 for " + std::to_string(r.calls) +
                       " calls, placed " + (rec ? std::to_string(rec->started.load()) : "?"));
          return;
        }
      }
      if (r.status == 404 && rec && rec->started.load() != 0) {
        env.fail("app: no call for a 404", "request " + r.id + " answered 404 and placed " +
                                               std::to_string(rec->started.load()) + " calls");
        return;
      }
    }
  }
}

template <planted_bug Bug>
sim::server_factory factory_for(const std::shared_ptr<demo_run>& run, demo_sim_options o) {
  return [run, o](sim::app_env& env) -> std::shared_ptr<void> {
    *run = {};
    return std::make_shared<demo_instance<Bug>>(env, *run, o);
  };
}

}  // namespace

demo_sim_parts make_demo_sim(demo_sim_options options) {
  auto run = std::make_shared<demo_run>();
  demo_sim_parts parts;
  switch (options.bug) {
    case demo_bug::stale_scope:
      parts.server = factory_for<planted_bug::stale_scope>(run, options);
      break;
    case demo_bug::ignore_write_error:
      parts.server = factory_for<planted_bug::ignore_write_error>(run, options);
      break;
    default: parts.server = factory_for<planted_bug::none>(run, options); break;
  }
  parts.client = [run](sim::client_conn& c) {
    auto s = std::make_shared<client_state>();
    s->c = &c;
    s->sent = std::make_shared<std::deque<sent_request>>();
    run->connections.push_back(s->sent);
    s->total = 1 + static_cast<int>(c.draws->below(4));
    s->pipelined = c.draws->chance(0.4);
    s->send();
    s->receive();
  };
  parts.check = [run](sim::app_env& env) { check_run(env, *run); };
  return parts;
}

sim::app_config demo_sim_config() {
  sim::app_config config;
  config.connections = 3;
  return config;
}

}  // namespace crosstown_demo
