// The conformance kit (crosstown/testing/conformance.hpp) run on the cpp-httplib adapter: a
// cpp-httplib server (its own thread pool, one thread per connection) with the adapter
// installed. HEAD, Range, empty bodies and pipelining are its documented limits: the kit checks
// that each is counted and still ordered, and marks those checks skipped.
#include <crosstown/httplib/adapter.hpp>
#include <crosstown/testing/conformance.hpp>

#include <cstddef>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace testkit = crosstown::testkit;
namespace hl = ::httplib;

class httplib_server final : public testkit::server_under_test {
 public:
  ~httplib_server() override { stop(); }

  unsigned short start(crosstown::runtime& rt, testkit::kit_handler handler,
                       testkit::outcome_hook on_outcome) override {
    handler_ = std::move(handler);
    adapter_ = std::make_unique<crosstown::httplib::adapter>(
        rt, crosstown::httplib::adapter_options{
                .on_outcome = [hook = std::move(on_outcome)](const hl::Request& req,
                                                             const crosstown::response_scope& s) {
                  hook({req.method, req.target, s.status(), s.delivery_state()});
                }});
    adapter_->install(server_);
    server_.set_write_timeout(testkit::conformance_deadline.count(), 0);
    server_.set_keep_alive_max_count(100);
    // An idle keep-alive connection holds its thread (and stop()) until this timeout.
    server_.set_keep_alive_timeout(1);
    // cpp-httplib answers HEAD with the GET route, without the body.
    server_.Get("/kit", [this](const hl::Request& req, hl::Response& res) { respond(req, res); });
    const int port = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    return static_cast<unsigned short>(port);
  }

  void stop() override {
    if (!thread_.joinable()) return;
    server_.stop();
    thread_.join();  // listen_after_bind returns once the task queue has joined its threads
  }

  testkit::adapter_limits limits() const override {
    return {.head_unverified = true,
            .empty_body_unverified = true,
            .range_unverified = true,
            .no_pipelining = true};
  }
  std::uint64_t unverified_responses() const override {
    return adapter_ ? adapter_->counters().unverified : 0;
  }

 private:
  void respond(const hl::Request& req, hl::Response& res) {
    testkit::kit_response out =
        handler_({req.method, req.target}, crosstown::httplib::adapter::scope(req));
    res.status = out.status;
    if (!out.chunks.empty()) {
      auto chunks = std::make_shared<std::vector<std::string>>(std::move(out.chunks));
      auto next = std::make_shared<std::size_t>(0);
      res.set_chunked_content_provider("application/octet-stream",
                                       [chunks, next](std::size_t, hl::DataSink& sink) {
                                         if (*next == chunks->size()) {
                                           sink.done();
                                           return true;
                                         }
                                         const std::string& c = (*chunks)[(*next)++];
                                         return sink.write(c.data(), c.size());
                                       });
      return;
    }
    res.set_content(out.body, "application/octet-stream");
  }

  testkit::kit_handler handler_;
  std::unique_ptr<crosstown::httplib::adapter> adapter_;
  hl::Server server_;
  std::thread thread_;
};

}  // namespace

CROSSTOWN_CONFORMANCE_SUITE(Httplib,
                            testkit::conformance_target{
                                "httplib", [] { return std::make_unique<httplib_server>(); }});
