// The cpp-httplib adapter from the package: a response served on 127.0.0.1 releases its task
// once written (and the pkg-config defines reach the consumer: a layout mismatch would crash).
#include <crosstown/crosstown.hpp>
#include <crosstown/httplib/adapter.hpp>

#include <httplib.h>

#include <cstdio>
#include <thread>

int main() {
  crosstown::runtime rt({.threads = 1});
  crosstown::manual_executor manual;
  int ran = 0;
  httplib::Server server;
  crosstown::httplib::adapter adapter(rt);
  adapter.install(server);
  server.Get("/", [&](const httplib::Request& req, httplib::Response& res) {
    crosstown::httplib::adapter::scope(req).defer([&] { ++ran; }, {.executor = manual});
    res.set_content("ok", "text/plain");
  });
  const int port = server.bind_to_any_port("127.0.0.1");
  std::thread listener([&] { server.listen_after_bind(); });
  int status = 0;
  {
    httplib::Client client("127.0.0.1", port);
    if (auto res = client.Get("/")) status = res->status;
  }
  server.stop();
  listener.join();
  manual.run_all();
  const bool good = status == 200 && ran == 1 && adapter.counters().responses_sent == 1;
  std::printf("httplib consumer: status=%d ran=%d %s\n", status, ran, good ? "ok" : "WRONG");
  return good ? 0 : 1;
}
