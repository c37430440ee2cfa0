// servers.hpp - the phone-calls app (app.hpp) served by Boost.Beast, RESTinio or cpp-httplib.
//
//     crosstown_demo::calls_app app(rt, placer);
//     auto s = crosstown_demo::start_server(crosstown_demo::server_kind::restinio, rt, app, {});
//     ... s->port() ...
//     s->stop();   // graceful: stop accepting, finish the responses in flight
//
// The same app on each server, through crosstown's adapter for it: crosstown::beast with the
// demo server (demo_server.hpp; callback or coroutine sessions, its limits and timeouts),
// crosstown::restinio (RESTinio 0.6 on Boost.Asio, `threads` I/O threads, express router) and
// crosstown::httplib (cpp-httplib 0.11, its thread pool; HEAD, empty and compressible bodies
// are reported unverified, see the adapter). Each server runs on threads of its own, started
// here. A server this build lacks (its package was not installed) is refused with
// std::invalid_argument naming the package.
//
// Declarations only (compiled once in crosstown_demo_core), so a program that starts a server
// does not compile any server's templates. The runtime and the app must outlive the server.
#pragma once

#include "app.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace crosstown_demo {

enum class server_kind : std::uint8_t { beast, restinio, httplib };

std::string_view to_string(server_kind kind) noexcept;
/// "beast", "restinio" or "httplib"; nullopt otherwise.
std::optional<server_kind> parse_server_kind(std::string_view name) noexcept;
/// Whether this build has the server (its package was found at configure time).
bool server_available(server_kind kind) noexcept;

/// How to serve. Unset optionals keep the server's defaults (for Beast: server_options').
struct serve_settings {
  std::string address = "127.0.0.1";
  unsigned short port = 0;  ///< 0: any free port
  bool coroutine = false;   ///< Beast: coroutine sessions instead of callback ones
  std::optional<std::chrono::milliseconds> idle_timeout{};
  std::optional<std::chrono::milliseconds> header_timeout{};
  std::optional<std::chrono::milliseconds> body_timeout{};
  std::optional<std::chrono::milliseconds> write_timeout{};
  std::optional<std::chrono::milliseconds> stop_grace{};
  std::optional<std::size_t> max_connections{};  ///< Beast
  std::size_t threads = 2;                       ///< RESTinio I/O threads, cpp-httplib workers
};

struct server_status {
  std::uint64_t connections = 0;  ///< accepted (Beast, RESTinio)
  std::uint64_t requests = 0;
  std::uint64_t bad_requests = 0;  ///< answered 4xx/5xx by the server itself (Beast)
  std::uint64_t active_connections = 0;
};

/// A server serving the app, on threads of its own.
class running_server {
 public:
  virtual ~running_server() = default;
  virtual server_kind kind() const noexcept = 0;
  virtual unsigned short port() const noexcept = 0;
  /// Graceful stop, from any thread: stop accepting, let responses in flight finish (Beast:
  /// within `stop_grace`), close the connections. RESTinio and cpp-httplib return once their
  /// threads stopped; Beast returns at once (`status().active_connections` falls to 0).
  virtual void stop() = 0;
  /// Closes every connection now (RESTinio and cpp-httplib: as stop()).
  virtual void abort() = 0;
  virtual server_status status() const = 0;
};

std::unique_ptr<running_server> start_server(server_kind kind, crosstown::runtime& rt,
                                             calls_app& app, const serve_settings& settings);

/// The Beast transport's record of an exchange's response: when its last write completed
/// (steady_now_ns() clock; 0: no record or no write) and the bytes accepted.
std::int64_t last_write_ns(const exchange& x) noexcept;
std::uint64_t bytes_written(const exchange& x) noexcept;

}  // namespace crosstown_demo
