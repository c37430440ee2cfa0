// The Beast adapter: a response written to an in-memory Beast stream releases its task.
#include <crosstown/beast/write.hpp>
#include <crosstown/crosstown.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/beast/_experimental/test/stream.hpp>
#include <boost/beast/http.hpp>

#include <cstdio>

int main() {
  namespace http = boost::beast::http;
  boost::asio::io_context io;
  boost::beast::test::stream client(io), server(io);
  client.connect(server);
  crosstown::manual_executor manual;
  crosstown::runtime rt({.threads = 1});
  int ran = 0;
  bool written = false;
  http::response<http::string_body> res{http::status::accepted, 11};
  res.body() = "queued";
  res.prepare_payload();
  {
    crosstown::response_scope scope(rt);
    scope.defer([&] { ++ran; }, {.executor = manual});
    crosstown::beast::async_write_response(
        server, res, scope, [&](boost::system::error_code ec, std::size_t) { written = !ec; });
    io.run();
  }
  manual.run_all();
  const bool good = written && ran == 1;
  std::printf("beast consumer: written=%d ran=%d %s\n", written, ran, good ? "ok" : "WRONG");
  return good ? 0 : 1;
}
