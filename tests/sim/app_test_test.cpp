// An application's own Beast server under the simulator: a tiny keep-alive server whose
// session is templated on its stream and timer, reading with the real http::async_read and
// answering with crosstown::beast::async_write_response, 1,000 seeds; and planted bugs in
// copies of it, each caught by the invariant it breaks.
#include <crosstown/sim/app_test.hpp>
#include <crosstown/sim/gtest.hpp>
#include <crosstown/sim/trace.hpp>

#include <crosstown/beast/write.hpp>
#include <crosstown/response_scope.hpp>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <gtest/gtest.h>

#include <cstdlib>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#ifndef CROSSTOWN_SIM_APP_RUNS
#define CROSSTOWN_SIM_APP_RUNS 1000
#endif

namespace {

using namespace std::chrono_literals;
namespace sim = crosstown::sim;
namespace http = boost::beast::http;
using error_code = boost::system::error_code;

enum class bug {
  none,
  stale_scope,         // (a) a keep-alive write is handed another request's scope
  sent_before_write,   // (b) the handler reports response_sent() before writing
  ignore_write_error,  // (c) the write's error is ignored and success reported
  blocking_task,       // (d) a same_thread task blocks the I/O thread
};

// What the application records about its own work, for its own end-of-run checks.
struct ledger {
  std::map<std::uint64_t, int> status_of;  // scope id -> status answered
  std::map<std::uint64_t, int> calls_of;   // scope id -> calls placed
};

// The tiny server: GET /calls/N answers 202 and defers N calls (pool), a receipt that requires
// delivery, and a same_thread log line; anything else answers 404 (its calls must not run).
// It pipelines: it reads up to four requests ahead while their handlers think, and writes the
// responses in request order, each with its own request's scope.
template <class Stream, class Timer, bug Bug>
class session : public std::enable_shared_from_this<session<Stream, Timer, Bug>> {
 public:
  struct hooks {
    std::function<void(const crosstown::response_scope&)> watch;  // production: nothing
    std::function<void(std::chrono::nanoseconds)> block;          // a blocking call
    ledger* book = nullptr;
  };

  session(Stream stream, crosstown::runtime& rt, hooks h)
      : stream_(std::move(stream)), conn_(rt), hooks_(std::move(h)) {}

  void start() { read(); }

 private:
  struct exchange {
    explicit exchange(crosstown::connection_scope& c, const typename Stream::executor_type& ex)
        : scope(c), timer(ex) {}
    crosstown::response_scope scope;
    Timer timer;
    http::response<http::string_body> res;
    bool ready = false;
  };

  void read() {
    if (reading_ || closed_ || queue_.size() >= 4) return;
    reading_ = true;
    req_ = {};
    http::async_read(
        stream_, buf_, req_,
        [self = this->shared_from_this()](error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(error_code ec) {
    reading_ = false;
    if (ec) {
      read_done_ = true;
      if (queue_.empty() && !writing_) close();
      return;
    }
    auto x = std::make_shared<exchange>(conn_, stream_.get_executor());
    handle(*x);
    // The handler thinks a little (a database call, say) before answering.
    x->timer.expires_after(std::chrono::microseconds(50 + 10 * (req_.target().size() % 7)));
    x->timer.async_wait([self = this->shared_from_this(), x](error_code wec) {
      if (wec) return;
      x->ready = true;
      self->write_next();
    });
    queue_.push_back(std::move(x));
    read();
  }

  void handle(exchange& x) {
    const std::string target(req_.target());
    crosstown::response_scope& scope = x.scope;
    const std::uint64_t id = scope.id();
    x.res.version(11);
    x.res.keep_alive(req_.keep_alive());
    ledger* book = hooks_.book;
    if (target.rfind("/calls/", 0) == 0) {
      const int n = std::stoi(target.substr(7));
      x.res.result(http::status::accepted);
      x.res.body() = "placing " + std::to_string(n) + " calls";
      for (int i = 0; i < n; ++i) {
        scope.defer([book, id] { ++book->calls_of[id]; }, {.name = "call-" + std::to_string(i)});
      }
      scope.defer([] {}, {.name = "receipt", .require_delivery = true});
      auto block = hooks_.block;
      scope.defer(
          [block] {
            if (Bug == bug::blocking_task) block(2ms);  // a synchronous call on the I/O thread
          },
          {.same_thread = true, .name = "log"});
    } else {
      x.res.result(http::status::not_found);
      x.res.body() = "no such thing";
      scope.defer([book, id] { ++book->calls_of[id]; }, {.name = "call-0"});
    }
    book->status_of[id] = x.res.result_int();
    x.res.prepare_payload();
  }

  void write_next() {
    if (writing_ || closed_ || queue_.empty() || !queue_.front()->ready) return;
    writing_ = true;
    exchange& x = *queue_.front();
    hooks_.watch(x.scope);
    auto self = this->shared_from_this();
    if constexpr (Bug == bug::sent_before_write) {
      x.scope.status_known(x.res.result_int());
      x.scope.response_sent();  // the bug: before a byte went out
    }
    if constexpr (Bug == bug::ignore_write_error) {
      x.scope.status_known(x.res.result_int());
      http::async_write(stream_, x.res, [self, &x](error_code, std::size_t) {
        x.scope.response_sent();  // the bug: whatever the write said
        self->on_write({});
      });
      return;
    }
    // The stale-scope bug: the write is handed the scope of the latest request read.
    crosstown::response_scope& target = Bug == bug::stale_scope ? queue_.back()->scope : x.scope;
    crosstown::beast::async_write_response(
        stream_, x.res, target, [self](error_code ec, std::size_t) { self->on_write(ec); });
  }

  void on_write(error_code ec) {
    writing_ = false;
    const bool keep_alive = queue_.front()->res.keep_alive();
    queue_.pop_front();  // the response is done: its scope ends
    if (ec || !keep_alive) return close();
    if (read_done_ && queue_.empty()) return close();
    write_next();
    read();
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    error_code ignored;
    stream_.shutdown(boost::asio::socket_base::shutdown_send, ignored);
    stream_.close(ignored);
    for (auto& x : queue_) x->timer.cancel();
    queue_.clear();
  }

  Stream stream_;
  crosstown::connection_scope conn_;
  hooks hooks_;
  boost::beast::flat_buffer buf_;
  http::request<http::string_body> req_;
  std::deque<std::shared_ptr<exchange>> queue_;
  bool reading_ = false;
  bool writing_ = false;
  bool read_done_ = false;
  bool closed_ = false;
};

template <bug Bug>
struct server {
  server(sim::app_env& env, ledger& book)
      : env_(env), book_(book), acceptor_(env.network(), env.server_executor()) {
    accept();
  }
  void accept() {
    acceptor_.async_accept([this](error_code ec, sim::sim_stream s) {
      if (ec) return;
      using S = session<sim::sim_stream, sim::sim_timer, Bug>;
      typename S::hooks h{[this](const crosstown::response_scope& sc) { env_.watch(sc); },
                          [](std::chrono::nanoseconds d) { sim::spend(d); }, &book_};
      std::make_shared<S>(std::move(s), env_.runtime(), std::move(h))->start();
      accept();
    });
  }
  sim::app_env& env_;
  ledger& book_;
  sim::sim_acceptor acceptor_;
};

// The client: 2-4 keep-alive requests, half the time pipelined (all sent at once), then a
// half-close or a close once every response was read.
void client(sim::client_conn& c) {
  struct state {
    sim::client_conn* c = nullptr;
    int total = 0;
    int sent = 0;
    int read = 0;
    bool pipelined = false;
    boost::beast::flat_buffer buf;
    http::request<http::string_body> req;
    http::response<http::string_body> res;

    void send(const std::shared_ptr<state>& self) {
      if (sent == total) return;
      ++sent;
      const bool missing = c->draws->chance(0.2);
      req = {http::verb::get, missing ? "/missing" : "/calls/" + std::to_string(c->draws->below(4)),
             11};
      req.keep_alive(true);
      req.prepare_payload();
      http::async_write(c->stream, req, [self](error_code ec, std::size_t) {
        if (ec) return;
        if (self->pipelined) self->send(self);
      });
    }
    void receive(const std::shared_ptr<state>& self) {
      res = {};
      http::async_read(c->stream, buf, res, [self](error_code ec, std::size_t) {
        if (ec) return;
        if (++self->read == self->total) return self->finish();
        if (!self->pipelined) self->send(self);
        self->receive(self);
      });
    }
    void finish() {
      if (c->draws->chance(0.5)) {
        c->stream.shutdown(boost::asio::socket_base::shutdown_send);
      } else {
        c->stream.close();
      }
    }
  };
  auto s = std::make_shared<state>();
  s->c = &c;
  s->total = 2 + static_cast<int>(c.draws->below(3));
  s->pipelined = c.draws->chance(0.5);
  s->send(s);
  s->receive(s);
}

template <bug Bug>
sim::app_seeds_result run_tiny(std::uint64_t runs) {
  auto book = std::make_shared<ledger>();
  sim::server_factory factory = [book](sim::app_env& env) -> std::shared_ptr<void> {
    *book = {};
    return std::make_shared<server<Bug>>(env, *book);
  };
  sim::app_check check = [book](sim::app_env& env) {
    for (const auto& [id, calls] : book->calls_of) {
      if (book->status_of[id] == 404 && calls > 0)
        env.fail("app: no call for a 404", "request " + std::to_string(id) + " placed calls");
    }
  };
  return sim::run_app_test({}, factory, client, check, runs);
}

TEST(SimAppTest, TinyBeastServerHoldsEveryInvariantForAThousandSeeds) {
  const sim::app_seeds_result r = run_tiny<bug::none>(sim::app_seed_count(CROSSTOWN_SIM_APP_RUNS));
  EXPECT_TRUE(r.ok()) << (r.failure ? sim::describe(*r.failure) : "");
  EXPECT_GT(r.responses, r.runs);  // responses went out
  EXPECT_GT(r.tasks_ran, r.runs);  // and deferred work ran
}

int threads_of_this_process() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  }
  return -1;
}

TEST(SimAppTest, ARunStartsNoThreadAndReadsNoRealClock) {
  const int before = threads_of_this_process();
  const auto start = std::chrono::steady_clock::now();
  const sim::app_seeds_result r = run_tiny<bug::none>(5);
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(threads_of_this_process(), before);
  // Seconds of virtual time (the liveness budget) passed in much less real time.
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST(SimAppTest, SameSeedTwiceGivesTheSameJournal) {
  auto book = std::make_shared<ledger>();
  sim::app_config cfg;
  cfg.determinism = true;
  const sim::app_seeds_result r = sim::run_app_seeds(
      cfg, 1, 30,
      [book](sim::app_env& env) -> std::shared_ptr<void> {
        *book = {};
        return std::make_shared<server<bug::none>>(env, *book);
      },
      client);
  EXPECT_TRUE(r.ok()) << (r.failure ? sim::describe(*r.failure) : "");
  EXPECT_EQ(r.runs, 30U);
}

void expect_caught(const sim::app_seeds_result& r, const std::string& invariant) {
  ASSERT_FALSE(r.ok()) << "not caught in " << r.runs << " seeds";
  EXPECT_EQ(r.failure->first->invariant, invariant) << sim::describe(*r.failure);
  if (std::getenv("SHOW_STORY") != nullptr) std::cout << sim::describe(*r.failure);
  EXPECT_NE(r.failure->replay.find("CROSSTOWN_SIM_SEED=" + std::to_string(r.failure->seed)),
            std::string::npos);
  EXPECT_FALSE(r.failure->story.empty());
}

TEST(SimAppTest, KeepAliveWriteHandedAnotherRequestsScopeIsCaughtAsI5) {
  expect_caught(run_tiny<bug::stale_scope>(1000), "I5 isolation");
}

TEST(SimAppTest, ResponseSentReportedBeforeWritingIsCaughtAsI1) {
  expect_caught(run_tiny<bug::sent_before_write>(1000), "I1 after");
}

TEST(SimAppTest, IgnoredWriteErrorReportedAsSuccessBreaksTheDeliveryRule) {
  expect_caught(run_tiny<bug::ignore_write_error>(1000), "I3 delivery");
}

TEST(SimAppTest, SameThreadTaskBlockingTheIoThreadIsCaughtAsI7) {
  expect_caught(run_tiny<bug::blocking_task>(1000), "I7 no drag");
}

// The trace of a failing run shows the application's own work: its requests (the scopes its
// handler created, on its connections), the bytes its writes put on the wire, and its
// deferred tasks on the simulated workers, with their virtual durations.
TEST(SimAppTest, ChromeTraceOfAFailingRunShowsTheApplicationsRequestsWritesAndTasks) {
  const sim::app_seeds_result r = run_tiny<bug::stale_scope>(1000);
  ASSERT_FALSE(r.ok());
  const std::vector<sim::event>& trace = r.failure->trace;
  ASSERT_FALSE(trace.empty());
  const boost::json::value doc = boost::json::parse(sim::chrome_trace_json(trace));
  std::map<std::string, int> by_category;
  bool task_with_duration = false;
  bool request_with_status = false;
  for (const boost::json::value& v : doc.as_object().at("traceEvents").as_array()) {
    const boost::json::object& e = v.as_object();
    if (!e.contains("cat")) continue;
    const std::string cat(e.at("cat").as_string());
    ++by_category[cat];
    if (cat == "task" && e.at("ph") == "X" && e.at("dur").to_number<double>() > 0)
      task_with_duration = true;
    if (cat == "request" &&
        std::string(e.at("name").as_string()).find(" -> 202") != std::string::npos)
      request_with_status = true;
  }
  EXPECT_GT(by_category["request"], 0);
  EXPECT_GT(by_category["bytes"], 0);
  EXPECT_GT(by_category["task"], 0);
  EXPECT_TRUE(task_with_duration) << "a worker's task spans its virtual cost";
  EXPECT_TRUE(request_with_status) << "a request span names the status on the wire (202)";
  const std::string text = sim::text_trace(trace);
  EXPECT_NE(text.find("last byte accepted"), std::string::npos);
  EXPECT_NE(text.find("task released"), std::string::npos);
}

}  // namespace
