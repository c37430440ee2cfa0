// An application outside the repository tests its own server under the installed simulator:
// a tiny keep-alive Beast server of the consumer's own (`POST /orders/N` answers 201 and
// defers N confirmation mails, anything else 404), its session templated on stream and timer
// as production code would be, run by `crosstown::sim::run_app_test` for some seeds with the
// application's own end-of-run check; and the same server with a planted bug, which the run
// must catch - so the test proves the installed checks have teeth.
#include <crosstown/sim/app_test.hpp>
#include <crosstown/sim/gtest.hpp>

#include <crosstown/beast/write.hpp>
#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace {

namespace sim = crosstown::sim;
namespace http = boost::beast::http;
using error_code = boost::system::error_code;

// What the shop records, for its own check: mails sent per order answer, and that answer.
struct shop_book {
  std::map<std::uint64_t, int> status_of;
  std::map<std::uint64_t, int> mails_of;
};

// One request at a time per connection; `Early` plants a bug: the session reports the
// response as sent before writing it.
template <class Stream, class Timer, bool Early>
class shop_session : public std::enable_shared_from_this<shop_session<Stream, Timer, Early>> {
 public:
  using watch_fn = std::function<void(const crosstown::response_scope&)>;

  shop_session(Stream s, crosstown::runtime& rt, shop_book& book, watch_fn watch)
      : stream_(std::move(s)),
        conn_(rt),
        timer_(stream_.get_executor()),
        book_(book),
        watch_(std::move(watch)) {}

  void start() { read(); }

 private:
  void read() {
    req_ = {};
    http::async_read(stream_, buf_, req_,
                     [self = this->shared_from_this()](error_code ec, std::size_t) {
                       if (ec) return self->close();
                       self->answer();
                     });
  }

  void answer() {
    scope_.emplace(conn_);
    const std::uint64_t id = scope_->id();
    const std::string target(req_.target());
    res_ = {};
    res_.version(11);
    res_.keep_alive(req_.keep_alive());
    shop_book* book = &book_;
    if (req_.method() == http::verb::post && target.rfind("/orders/", 0) == 0) {
      const int n = std::stoi(target.substr(8));
      res_.result(http::status::created);
      res_.body() = "order taken";
      for (int i = 0; i < n; ++i) scope_->defer([book, id] { ++book->mails_of[id]; });
    } else {
      res_.result(http::status::not_found);
      scope_->defer([book, id] { ++book->mails_of[id]; });  // must not run for a 404
    }
    book_.status_of[id] = res_.result_int();
    res_.prepare_payload();
    // The handler waits on a timer (a stock lookup) before writing: virtual time under the
    // simulator.
    timer_.expires_after(std::chrono::microseconds(80));
    timer_.async_wait([self = this->shared_from_this()](error_code ec) {
      if (!ec) self->write();
    });
  }

  void write() {
    watch_(*scope_);
    if constexpr (Early) {
      scope_->status_known(res_.result_int());
      scope_->response_sent();  // the bug: no byte went out yet
    }
    crosstown::beast::async_write_response(
        stream_, res_, *scope_, [self = this->shared_from_this()](error_code ec, std::size_t) {
          self->scope_.reset();
          if (ec || !self->res_.keep_alive()) return self->close();
          self->read();
        });
  }

  void close() {
    error_code ignored;
    stream_.shutdown(boost::asio::socket_base::shutdown_send, ignored);
    stream_.close(ignored);
  }

  Stream stream_;
  crosstown::connection_scope conn_;
  Timer timer_;
  shop_book& book_;
  watch_fn watch_;
  boost::beast::flat_buffer buf_;
  http::request<http::string_body> req_;
  http::response<http::string_body> res_;
  std::optional<crosstown::response_scope> scope_;
};

template <bool Early>
class shop_server {
 public:
  shop_server(sim::app_env& env, shop_book& book)
      : env_(env), book_(book), acceptor_(env.network(), env.server_executor()) {
    accept();
  }

 private:
  void accept() {
    acceptor_.async_accept([this](error_code ec, sim::sim_stream s) {
      if (ec) return;
      using session = shop_session<sim::sim_stream, sim::sim_timer, Early>;
      std::make_shared<session>(std::move(s), env_.runtime(), book_,
                                [this](const crosstown::response_scope& sc) { env_.watch(sc); })
          ->start();
      accept();
    });
  }

  sim::app_env& env_;
  shop_book& book_;
  sim::sim_acceptor acceptor_;
};

// Each client connection places 1-3 orders one after the other; a fifth of them go to a
// missing page. Then it closes.
void shopper(sim::client_conn& c) {
  struct state : std::enable_shared_from_this<state> {
    sim::client_conn* c = nullptr;
    int left = 0;
    boost::beast::flat_buffer buf;
    http::request<http::string_body> req;
    http::response<http::string_body> res;

    void next() {
      if (left-- == 0) return c->stream.close();
      const bool missing = c->draws->chance(0.2);
      req = {http::verb::post,
             missing ? "/nowhere" : "/orders/" + std::to_string(1 + c->draws->below(3)), 11};
      req.keep_alive(true);
      req.prepare_payload();
      http::async_write(c->stream, req, [self = shared_from_this()](error_code ec, std::size_t) {
        if (ec) return;
        self->res = {};
        http::async_read(self->c->stream, self->buf, self->res,
                         [self](error_code rec, std::size_t) {
                           if (!rec) self->next();
                         });
      });
    }
  };
  auto s = std::make_shared<state>();
  s->c = &c;
  s->left = 1 + static_cast<int>(c.draws->below(3));
  s->next();
}

template <bool Early>
sim::app_seeds_result run_shop(std::uint64_t seeds) {
  auto book = std::make_shared<shop_book>();
  sim::server_factory factory = [book](sim::app_env& env) -> std::shared_ptr<void> {
    *book = {};
    return std::make_shared<shop_server<Early>>(env, *book);
  };
  sim::app_check no_mail_for_a_404 = [book](sim::app_env& env) {
    for (const auto& [id, mails] : book->mails_of) {
      if (book->status_of[id] == 404 && mails > 0)
        env.fail("shop: no mail for a 404", "request " + std::to_string(id) + " sent mail");
    }
  };
  return sim::run_app_test({}, factory, shopper, no_mail_for_a_404, seeds);
}

TEST(ConsumerShop, OwnServerHoldsEveryInvariantUnderTheInstalledSimulator) {
  const sim::app_seeds_result r = run_shop<false>(sim::app_seed_count(200));
  EXPECT_TRUE(r.ok()) << (r.failure ? sim::describe(*r.failure) : "");
  EXPECT_GT(r.responses, r.runs);
  EXPECT_GT(r.tasks_ran, 0U);
}

TEST(ConsumerShop, ResponseReportedSentBeforeItsWriteIsCaughtAsI1) {
  const sim::app_seeds_result r = run_shop<true>(200);
  ASSERT_FALSE(r.ok()) << "the planted bug went unnoticed for " << r.runs << " seeds";
  EXPECT_EQ(r.failure->first->invariant, "I1 after") << sim::describe(*r.failure);
  EXPECT_NE(r.failure->replay.find("CROSSTOWN_SIM_SEED="), std::string::npos);
}

}  // namespace
