// posix_client.hpp - a minimal blocking HTTP/1.1 client on raw POSIX sockets, for tests that
// must not create descriptors beyond one socket per request (descriptor exhaustion) or that
// talk to a child process. Every read gives up after `timeout_s` seconds.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <string>
#include <string_view>

namespace crosstown_test {

/// A connected socket to 127.0.0.1:port, or -1.
inline int connect_local(unsigned short port, int timeout_s = 5) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  timeval tv{timeout_s, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

inline bool send_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

/// Reads until the header and a Content-Length body are in (or the server closes or the read
/// times out); returns the status code, or 0.
inline int read_status(int fd, std::string* text = nullptr) {
  std::string got;
  char buf[4096];
  for (;;) {
    const auto end = got.find("\r\n\r\n");
    if (end != std::string::npos) {
      const auto cl = got.find("Content-Length: ");
      std::size_t length = 0;
      if (cl != std::string::npos && cl < end) length = std::stoul(got.substr(cl + 16));
      if (got.size() >= end + 4 + length) break;
    }
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  if (text != nullptr) *text = got;
  if (got.rfind("HTTP/1.", 0) != 0 || got.size() < 12) return 0;
  return std::stoi(got.substr(9, 3));
}

/// One request on its own connection; the response's status, or 0.
inline int request(unsigned short port, std::string_view text, std::string* response = nullptr) {
  const int fd = connect_local(port);
  if (fd < 0) return 0;
  const int status = send_all(fd, text) ? read_status(fd, response) : 0;
  ::close(fd);
  return status;
}

inline std::string post(std::string_view target) {
  return "POST " + std::string(target) +
         " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
}

}  // namespace crosstown_test
