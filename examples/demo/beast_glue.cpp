// The Beast side of the demo (phone_calls_app.hpp, servers.hpp): the app as the demo server's
// handler, and the demo server started for start_server(server_kind::beast, ...). The one
// translation unit of the demo that instantiates the Beast server.
#include "phone_calls_app.hpp"
#include "servers_common.hpp"

#include <functional>
#include <thread>
#include <utility>

namespace crosstown_demo {

app_request to_app_request(const request_type& request) {
  app_request out;
  out.method = std::string(request.method_string());
  out.target = std::string(request.target());
  for (const auto& field : request) {
    out.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
  }
  return out;
}

response_type to_beast_response(const request_type& request, app_response response) {
  response_type res{static_cast<http::status>(response.status), request.version()};
  for (auto& [name, value] : response.headers) res.set(name, std::move(value));
  res.body() = std::move(response.body);
  if (response.chunked) res.chunked(true);
  return res;
}

phone_calls_app::phone_calls_app(crosstown::runtime& rt, std::chrono::microseconds call_duration,
                                 app_limits limits)
    : owned_placer_(std::make_unique<blocking_call_placer>(rt, call_duration)),
      app_(rt, *owned_placer_, limits) {}

phone_calls_app::phone_calls_app(crosstown::runtime& rt, call_placer& placer, app_limits limits)
    : app_(rt, placer, limits) {}

response_type phone_calls_app::operator()(request_context& context) {
  return to_beast_response(context.request, app_.handle(to_app_request(context.request),
                                                        context.scope, context.written));
}

void phone_calls_app::observe(const server* s) {
  app_.observe([s] {
    const server_stats st = s->stats();
    return server_counters{st.requests, st.bad_requests};
  });
}

std::int64_t last_write_ns(const exchange& x) noexcept {
  return x.written ? x.written->last_write_ns.load() : 0;
}

std::uint64_t bytes_written(const exchange& x) noexcept {
  return x.written ? x.written->bytes.load() : 0;
}

namespace {

server_options beast_options(const serve_settings& s) {
  server_options o;
  o.address = s.address;
  o.port = s.port;
  o.style = s.coroutine ? session_style::coroutine : session_style::callback;
  if (s.idle_timeout) o.idle_timeout = *s.idle_timeout;
  if (s.header_timeout) o.header_timeout = *s.header_timeout;
  if (s.body_timeout) o.body_timeout = *s.body_timeout;
  if (s.write_timeout) o.write_timeout = *s.write_timeout;
  if (s.stop_grace) o.stop_grace = *s.stop_grace;
  if (s.max_connections) o.max_connections = *s.max_connections;
  return o;
}

// The demo server on an io_context of its own, run by one thread (as the server requires).
class beast_server final : public running_server {
 public:
  beast_server(crosstown::runtime& rt, calls_app& app, const serve_settings& settings)
      : server_(
            ioc_, rt,
            [&app](request_context& c) {
              return to_beast_response(c.request,
                                       app.handle(to_app_request(c.request), c.scope, c.written));
            },
            beast_options(settings)) {
    server_.start();
    thread_ = std::thread([this] { ioc_.run(); });
  }
  ~beast_server() override {
    server_.abort();
    thread_.join();  // the context runs out of work once every connection is gone
  }

  server_kind kind() const noexcept override { return server_kind::beast; }
  unsigned short port() const noexcept override { return server_.port(); }
  void stop() override { server_.stop(); }
  void abort() override { server_.abort(); }
  server_status status() const override {
    const server_stats s = server_.stats();
    return {s.connections, s.requests, s.bad_requests, s.active_connections};
  }

 private:
  net::io_context ioc_;
  server server_;
  std::thread thread_;
};

}  // namespace

std::unique_ptr<running_server> glue::start_beast(crosstown::runtime& rt, calls_app& app,
                                                  const serve_settings& settings) {
  return std::make_unique<beast_server>(rt, app, settings);
}

}  // namespace crosstown_demo
