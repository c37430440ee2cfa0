// The demo's blocking client (demo_client.hpp), on Beast.
#include "demo_client.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <cctype>
#include <stdexcept>

namespace crosstown_demo {

namespace {
namespace net = boost::asio;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;

bool iequal(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}
}  // namespace

std::string client_reply::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (iequal(key, name)) return value;
  }
  return {};
}

struct http_client::impl {
  net::io_context ioc;
  tcp::socket socket{ioc};
  boost::beast::flat_buffer buffer;

  client_reply read() {
    http::response<http::string_body> res;
    boost::beast::error_code ec;
    http::read(socket, buffer, res, ec);
    if (ec) throw std::runtime_error("demo client: reading the response failed: " + ec.message());
    client_reply out;
    out.status = res.result_int();
    out.chunked = res.chunked();
    for (const auto& f : res) {
      out.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    }
    out.body = std::move(res.body());
    return out;
  }
};

http_client::http_client(unsigned short port, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<impl>()) {
  boost::beast::error_code ec;
  impl_->socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port), ec);
  if (ec) {
    throw std::runtime_error("demo client: connecting to 127.0.0.1:" + std::to_string(port) +
                             " failed: " + ec.message());
  }
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(impl_->socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(impl_->socket.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

http_client::~http_client() = default;

client_reply http_client::send(std::string_view method, std::string_view target,
                               std::string_view id) {
  const http::verb verb = http::string_to_verb(method);
  if (verb == http::verb::unknown) {
    throw std::invalid_argument("demo client: unknown method \"" + std::string(method) + "\"");
  }
  http::request<http::string_body> req{verb, target, 11};
  req.set(http::field::host, "127.0.0.1");
  if (!id.empty()) req.set("X-Request-Id", id);
  req.prepare_payload();
  boost::beast::error_code ec;
  http::write(impl_->socket, req, ec);
  if (ec) throw std::runtime_error("demo client: writing the request failed: " + ec.message());
  return impl_->read();
}

client_reply http_client::send_raw(std::string_view bytes) {
  boost::beast::error_code ec;
  net::write(impl_->socket, net::buffer(bytes.data(), bytes.size()), ec);
  if (ec) throw std::runtime_error("demo client: writing the request failed: " + ec.message());
  return impl_->read();
}

}  // namespace crosstown_demo
