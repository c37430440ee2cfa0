// crosstown/redis/connection.hpp - where Redis is, and a blocking connection to it.
//
// `endpoint` names a Redis server: `unix:/path/redis.sock` (or just an absolute path) for a
// Unix socket, `host:port` or `tcp://host:port` for TCP. `endpoint::parse` rejects anything
// else with std::invalid_argument naming the text and what was wrong.
//
// `connection` is a blocking hiredis connection with connect and command timeouts, for the
// worker's threads, tools and tests (the web process's publisher is asynchronous, see
// publisher.hpp). One thread at a time may use a connection. Commands are given as argument
// vectors, so payload bytes are never interpreted. A command that fails at the transport
// (timeout, reset) throws `redis_error` and leaves the connection broken (`ok()` false);
// an error *reply* from Redis is returned as a reply of type REDIS_REPLY_ERROR.
//
// SIGPIPE: hiredis writes with write(2), so a write to a Redis that died raises SIGPIPE. The
// first connection or publisher sets SIGPIPE to SIG_IGN if it still has its default action
// (which would kill the process); a handler the application installed is kept.
#pragma once

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

struct redisContext;
struct redisReply;

namespace crosstown::redis {

/// Where a Redis server listens.
struct endpoint {
  std::string unix_path;  ///< non-empty: a Unix socket
  std::string host;       ///< else TCP host and port
  std::uint16_t port = 6379;

  /// `unix:/run/redis.sock`, `/run/redis.sock`, `127.0.0.1:6379`, `tcp://redis:6379`.
  static endpoint parse(std::string_view text);
  /// Back to text (`unix:/path` or `host:port`).
  std::string to_string() const;
};

/// A transport failure talking to Redis (connect, timeout, reset).
class redis_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Frees a hiredis reply.
struct reply_deleter {
  void operator()(redisReply* r) const noexcept;
};
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

/// The text of a string, status or error reply; empty for other types.
std::string_view reply_text(const redisReply& r) noexcept;
/// True for an error reply.
bool is_error(const redisReply& r) noexcept;

class connection {
 public:
  /// Connects; throws `redis_error` naming the endpoint on failure or after `connect_timeout`.
  connection(const endpoint& where, std::chrono::milliseconds connect_timeout,
             std::chrono::milliseconds command_timeout);
  connection(connection&&) noexcept;
  connection& operator=(connection&&) noexcept;
  ~connection();

  /// Sends one command and waits for its reply (at most the command timeout, or `timeout`
  /// when given - a blocking read such as XREADGROUP BLOCK passes its block time plus margin).
  reply_ptr command(const std::vector<std::string_view>& args);
  reply_ptr command(std::initializer_list<std::string_view> args) {
    return command(std::vector<std::string_view>(args));
  }
  /// Sends several commands in one write and returns their replies in order.
  std::vector<reply_ptr> pipeline(const std::vector<std::vector<std::string_view>>& commands);
  /// Changes the read timeout for the following commands.
  void set_timeout(std::chrono::milliseconds timeout);

  bool ok() const noexcept;
  const endpoint& where() const noexcept { return where_; }

 private:
  endpoint where_;
  redisContext* context_ = nullptr;
};

namespace detail {
/// Sets SIGPIPE to SIG_IGN once, if it has its default action.
void ignore_sigpipe() noexcept;
}  // namespace detail

/// The de-duplication helper: `SET <key> 1 NX EX <ttl>`. True the first time a key is marked
/// within its time to live, false afterwards - so a handler that must have an effect once
/// per idempotency key calls `mark_once(c, "myapp:sent:" + key, ttl)` and skips when false.
bool mark_once(connection& c, std::string_view key, std::chrono::seconds ttl);

}  // namespace crosstown::redis
