// The RESTinio adapter from the package: a response served on 127.0.0.1 (RESTinio on
// Boost.Asio) releases its task once the write that carried it completed.
#include <crosstown/crosstown.hpp>
#include <crosstown/restinio/adapter.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <cstdio>
#include <memory>
#include <string>

namespace {
namespace rs = ::restinio;
struct traits : rs::default_traits_t {
  using connection_state_listener_t = crosstown::restinio::adapter;
};
}  // namespace

int main() {
  crosstown::runtime rt({.threads = 1});
  crosstown::manual_executor manual;
  int ran = 0;
  auto adapter = std::make_shared<crosstown::restinio::adapter>(rt);
  unsigned short port = 0;
  auto server = rs::run_async<traits>(
      rs::own_io_context(),
      rs::server_settings_t<traits>{}
          .address("127.0.0.1")
          .port(0)
          .request_handler(
              adapter->wrap([&](const rs::request_handle_t& req,
                                const std::shared_ptr<crosstown::restinio::exchange>& ex) {
                ex->scope().defer([&] { ++ran; }, {.executor = manual});
                return ex->done(req->create_response().set_body("ok"));
              }))
          .connection_state_listener(adapter)
          .acceptor_post_bind_hook(
              [&port](rs::asio_ns::ip::tcp::acceptor& a) { port = a.local_endpoint().port(); }),
      1);
  std::string reply;
  {
    boost::asio::io_context io;
    boost::asio::ip::tcp::socket socket(io);
    socket.connect({boost::asio::ip::make_address("127.0.0.1"), port});
    const std::string request = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    boost::asio::write(socket, boost::asio::buffer(request));
    boost::system::error_code ec;
    boost::asio::read(socket, boost::asio::dynamic_buffer(reply), ec);  // until the server closes
  }
  server->stop();
  server->wait();
  manual.run_all();
  const bool good = reply.starts_with("HTTP/1.1 200") && ran == 1;
  std::printf("restinio consumer: ran=%d %s\n", ran, good ? "ok" : "WRONG");
  return good ? 0 : 1;
}
