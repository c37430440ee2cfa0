// The conformance kit (crosstown/testing/conformance.hpp) run on the RESTinio adapter: a
// RESTinio 0.6 server on Boost.Asio, two I/O threads, an express router whose routes and
// non-matched handler go through crosstown::restinio::adapter::wrap.
#include <crosstown/restinio/adapter.hpp>
#include <crosstown/testing/conformance.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

namespace {

namespace testkit = crosstown::testkit;
namespace rs = ::restinio;
using crosstown::restinio::exchange;

struct traits : rs::default_traits_t {
  using request_handler_t = rs::router::express_router_t<>;
  using connection_state_listener_t = crosstown::restinio::adapter;
};

rs::http_status_line_t status_line(int status) {
  return rs::http_status_line_t{rs::http_status_code_t{static_cast<std::uint16_t>(status)}, "Kit"};
}

class restinio_server final : public testkit::server_under_test {
 public:
  ~restinio_server() override { stop(); }

  unsigned short start(crosstown::runtime& rt, testkit::kit_handler handler,
                       testkit::outcome_hook on_outcome) override {
    handler_ = std::move(handler);
    adapter_ = std::make_shared<crosstown::restinio::adapter>(
        rt,
        crosstown::restinio::adapter_options{
            .on_outcome = [hook = std::move(on_outcome)](const rs::request_t& req,
                                                         const crosstown::response_scope& s) {
              hook({std::string(req.header().method().c_str()),
                    std::string(req.header().request_target()), s.status(), s.delivery_state()});
            }});
    auto router = std::make_unique<rs::router::express_router_t<>>();
    auto kit =
        adapter_->wrap([this](const rs::request_handle_t& req, const std::shared_ptr<exchange>& ex,
                              auto&&...) { return respond(req, *ex); });
    router->http_get("/kit", kit);
    router->http_head("/kit", kit);
    router->non_matched_request_handler(
        adapter_->wrap([](const rs::request_handle_t& req, const std::shared_ptr<exchange>& ex) {
          return ex->done(req->create_response(rs::status_not_found()).set_body("not found\n"));
        }));
    unsigned short port = 0;
    server_ = rs::run_async<traits>(
        rs::own_io_context(),
        rs::server_settings_t<traits>{}
            .address("127.0.0.1")
            .port(0)
            .write_http_response_timelimit(testkit::conformance_deadline)
            .max_pipelined_requests(4)
            .request_handler(std::move(router))
            .connection_state_listener(adapter_)
            .acceptor_post_bind_hook(
                [&port](rs::asio_ns::ip::tcp::acceptor& a) { port = a.local_endpoint().port(); }),
        2);
    return port;
  }

  // RESTinio stops its I/O threads; destroying the io_context destroys the connections and
  // their pending write groups (each callback told write_group_destroyed_passively); the
  // adapter then closes the connection scopes RESTinio did not report closed.
  void stop() override {
    if (!server_) return;
    server_->stop();
    server_->wait();
    server_.reset();
    adapter_.reset();
  }

 private:
  rs::request_handling_status_t respond(const rs::request_handle_t& req, exchange& ex) {
    const bool head = req->header().method() == rs::http_method_head();
    testkit::kit_response out = handler_(
        {std::string(req->header().method().c_str()), std::string(req->header().request_target())},
        ex.scope());
    if (!out.chunks.empty()) {
      auto res = req->create_response<rs::chunked_output_t>(status_line(out.status));
      ex.flush(res);  // the headers, on their own
      for (std::string& chunk : out.chunks) {
        res.append_chunk(std::move(chunk));
        ex.flush(res);
      }
      return ex.done(res);
    }
    if (head) {
      auto res = req->create_response<rs::user_controlled_output_t>(status_line(out.status));
      res.set_content_length(out.body.size());
      return ex.done(res);
    }
    auto res = req->create_response(status_line(out.status));
    res.set_body(std::move(out.body));
    return ex.done(res);
  }

  testkit::kit_handler handler_;
  std::shared_ptr<crosstown::restinio::adapter> adapter_;
  rs::running_server_handle_t<traits> server_;
};

}  // namespace

CROSSTOWN_CONFORMANCE_SUITE(Restinio,
                            testkit::conformance_target{
                                "restinio", [] { return std::make_unique<restinio_server>(); }});
