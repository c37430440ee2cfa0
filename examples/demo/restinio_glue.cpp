// The app on RESTinio 0.6 (servers.hpp): an express router whose one handler, the
// non-matched one, goes through crosstown::restinio::adapter::wrap, so every request - and
// the server's own 500/501 error paths - is seen by its scope. RESTinio runs on its own
// io_context with `settings.threads` threads.
#include "servers_common.hpp"

#include <crosstown/restinio/adapter.hpp>

#include <atomic>
#include <memory>
#include <string>
#include <utility>

namespace crosstown_demo::glue {

namespace {

namespace rs = ::restinio;
using crosstown::restinio::exchange;

struct traits : rs::default_traits_t {
  using request_handler_t = rs::router::express_router_t<>;
  using connection_state_listener_t = crosstown::restinio::adapter;
};

rs::http_status_line_t status_line(int status) {
  return rs::http_status_line_t{rs::http_status_code_t{static_cast<std::uint16_t>(status)},
                                std::string(reason(status))};
}

app_request to_app_request(const rs::request_handle_t& req) {
  app_request out;
  out.method = req->header().method().c_str();
  out.target = std::string(req->header().request_target());
  req->header().for_each_field(
      [&out](const rs::http_header_field_t& f) { out.headers.emplace_back(f.name(), f.value()); });
  return out;
}

template <class Builder>
void add_headers(Builder& builder, const app_response& res) {
  for (const auto& [name, value] : res.headers) builder.append_header(name, value);
}

class restinio_server final : public running_server {
 public:
  restinio_server(crosstown::runtime& rt, calls_app& app, const serve_settings& settings)
      : app_(app), adapter_(std::make_shared<crosstown::restinio::adapter>(rt)) {
    auto router = std::make_unique<rs::router::express_router_t<>>();
    router->non_matched_request_handler(
        adapter_->wrap([this](const rs::request_handle_t& req,
                              const std::shared_ptr<exchange>& ex) { return respond(req, *ex); }));
    server_ = rs::run_async<traits>(
        rs::own_io_context(),
        rs::server_settings_t<traits>{}
            .address(settings.address)
            .port(settings.port)
            .max_pipelined_requests(4)
            .request_handler(std::move(router))
            .connection_state_listener(adapter_)
            .acceptor_post_bind_hook(
                [this](rs::asio_ns::ip::tcp::acceptor& a) { port_ = a.local_endpoint().port(); }),
        settings.threads == 0 ? 1 : settings.threads);
  }
  ~restinio_server() override { stop(); }

  server_kind kind() const noexcept override { return server_kind::restinio; }
  unsigned short port() const noexcept override { return port_; }
  void stop() override {
    if (!server_) return;
    server_->stop();
    server_->wait();
    server_.reset();
  }
  void abort() override { stop(); }
  server_status status() const override {
    const crosstown::restinio::adapter_counters c = adapter_->counters();
    return {.connections = 0,
            .requests = requests_.load(),
            .bad_requests = 0,
            .active_connections = server_ ? c.open_connections : 0};
  }

 private:
  rs::request_handling_status_t respond(const rs::request_handle_t& req, exchange& ex) {
    requests_.fetch_add(1, std::memory_order_relaxed);
    const bool head = req->header().method() == rs::http_method_head();
    app_response out = app_.handle(to_app_request(req), ex.scope());
    if (out.chunked && !head) {
      auto res = req->create_response<rs::chunked_output_t>(status_line(out.status));
      add_headers(res, out);
      ex.flush(res);  // the headers, on their own
      constexpr std::size_t chunk = 16 * 1024;
      for (std::size_t at = 0; at < out.body.size(); at += chunk) {
        res.append_chunk(out.body.substr(at, chunk));
        ex.flush(res);
      }
      return ex.done(res);
    }
    if (head) {
      auto res = req->create_response<rs::user_controlled_output_t>(status_line(out.status));
      add_headers(res, out);
      res.set_content_length(out.body.size());
      return ex.done(res);
    }
    auto res = req->create_response(status_line(out.status));
    add_headers(res, out);
    res.set_body(std::move(out.body));
    return ex.done(res);
  }

  calls_app& app_;
  std::shared_ptr<crosstown::restinio::adapter> adapter_;
  std::atomic<unsigned short> port_{0};
  std::atomic<std::uint64_t> requests_{0};
  rs::running_server_handle_t<traits> server_;
};

}  // namespace

std::unique_ptr<running_server> start_restinio(crosstown::runtime& rt, calls_app& app,
                                               const serve_settings& settings) {
  return std::make_unique<restinio_server>(rt, app, settings);
}

}  // namespace crosstown_demo::glue
