// demo_client.hpp - a blocking HTTP/1.1 client on one keep-alive connection to 127.0.0.1, for
// the demo's timeline and the app's server tests. Beast underneath, compiled once in
// crosstown_demo_core (demo_client.cpp); this header names no Beast type.
//
// Every read and write is bounded: the socket times out after `timeout` (SO_RCVTIMEO and
// SO_SNDTIMEO), and a failure throws std::runtime_error naming what failed. Not thread-safe:
// one client per thread.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace crosstown_demo {

struct client_reply {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool chunked = false;  ///< it came with Transfer-Encoding: chunked
  /// The first header named `name` (case-insensitive), empty if none.
  std::string header(std::string_view name) const;
};

class http_client {
 public:
  explicit http_client(unsigned short port,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10));
  ~http_client();
  http_client(const http_client&) = delete;
  http_client& operator=(const http_client&) = delete;

  /// Sends `method target` (with `X-Request-Id: id` unless empty) and reads the response.
  client_reply send(std::string_view method, std::string_view target, std::string_view id = {});
  /// Sends raw bytes and reads one response.
  client_reply send_raw(std::string_view bytes);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace crosstown_demo
