// The app on cpp-httplib 0.11 (servers.hpp): crosstown::httplib::adapter installed on the
// server, one route per method matching every path, answered by the app with the scope of
// the request being handled on this thread. cpp-httplib serves each connection on a thread of
// its pool (`settings.threads`); its limits (HEAD, empty and compressible bodies reported
// unverified) are the adapter's.
#include "servers_common.hpp"

#include <crosstown/httplib/adapter.hpp>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>

namespace crosstown_demo::glue {

namespace {

namespace hl = ::httplib;

class httplib_server final : public running_server {
 public:
  httplib_server(crosstown::runtime& rt, calls_app& app, const serve_settings& settings)
      : app_(app), adapter_(rt) {
    const std::size_t threads = settings.threads == 0 ? 1 : settings.threads;
    server_.new_task_queue = [threads] { return new hl::ThreadPool(threads); };
    adapter_.install(server_);  // after new_task_queue: the adapter wraps it
    server_.set_keep_alive_max_count(100);
    // An idle keep-alive connection holds its thread (and stop()) until this timeout.
    server_.set_keep_alive_timeout(1);
    const auto h = [this](const hl::Request& req, hl::Response& res) { respond(req, res); };
    server_.Get(".*", h);
    server_.Post(".*", h);
    server_.Put(".*", h);
    server_.Delete(".*", h);
    server_.Patch(".*", h);
    server_.Options(".*", h);
    const int port =
        settings.port == 0
            ? server_.bind_to_any_port(settings.address)
            : (server_.bind_to_port(settings.address, settings.port) ? settings.port : -1);
    if (port <= 0) {
      throw std::runtime_error("cpp-httplib could not listen on " + settings.address + ":" +
                               std::to_string(settings.port));
    }
    port_ = static_cast<unsigned short>(port);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~httplib_server() override { stop(); }

  server_kind kind() const noexcept override { return server_kind::httplib; }
  unsigned short port() const noexcept override { return port_; }
  void stop() override {
    if (!thread_.joinable()) return;
    server_.stop();
    thread_.join();  // listen_after_bind returns once the task queue has joined its threads
  }
  void abort() override { stop(); }
  server_status status() const override {
    return {
        .connections = 0, .requests = requests_.load(), .bad_requests = 0, .active_connections = 0};
  }

 private:
  void respond(const hl::Request& req, hl::Response& res) {
    requests_.fetch_add(1, std::memory_order_relaxed);
    app_request in;
    in.method = req.method;
    in.target = req.target;
    for (const auto& [name, value] : req.headers) in.headers.emplace_back(name, value);
    app_response out = app_.handle(in, crosstown::httplib::adapter::scope(req));
    res.status = out.status;
    std::string content_type = "text/plain";
    for (auto& [name, value] : out.headers) {
      if (name == "Content-Type") {
        content_type = value;
      } else {
        res.set_header(name.c_str(), value);
      }
    }
    if (out.chunked) {
      auto body = std::make_shared<std::string>(std::move(out.body));
      auto at = std::make_shared<std::size_t>(0);
      res.set_chunked_content_provider(content_type, [body, at](std::size_t, hl::DataSink& sink) {
        if (*at >= body->size()) {
          sink.done();
          return true;
        }
        const std::size_t n = std::min<std::size_t>(16 * 1024, body->size() - *at);
        const bool ok = sink.write(body->data() + *at, n);
        *at += n;
        return ok;
      });
      return;
    }
    res.set_content(out.body, content_type.c_str());
  }

  calls_app& app_;
  crosstown::httplib::adapter adapter_;
  hl::Server server_;
  unsigned short port_ = 0;
  std::atomic<std::uint64_t> requests_{0};
  std::thread thread_;
};

}  // namespace

std::unique_ptr<running_server> start_httplib(crosstown::runtime& rt, calls_app& app,
                                              const serve_settings& settings) {
  return std::make_unique<httplib_server>(rt, app, settings);
}

}  // namespace crosstown_demo::glue
