#include <crosstown/redis/connection.hpp>

#include <hiredis/hiredis.h>

#include <sys/time.h>
#include <charconv>
#include <csignal>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

namespace crosstown::redis {

namespace {

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<decltype(tv.tv_sec)>(ms.count() / 1000);
  tv.tv_usec = static_cast<decltype(tv.tv_usec)>((ms.count() % 1000) * 1000);
  return tv;
}

[[noreturn]] void bad_endpoint(std::string_view text, std::string_view why) {
  throw std::invalid_argument("bad Redis address \"" + std::string(text) +
                              "\": " + std::string(why) +
                              " (expected unix:/path, /path, host:port or tcp://host:port)");
}

}  // namespace

namespace detail {

void ignore_sigpipe() noexcept {
  // hiredis writes with write(2), not send(MSG_NOSIGNAL): a write to a Redis that just died
  // would kill the process with SIGPIPE instead of failing with EPIPE. A handler the
  // application installed is left alone.
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current {};
    if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
      std::signal(SIGPIPE, SIG_IGN);
    }
  });
}

}  // namespace detail

endpoint endpoint::parse(std::string_view text) {
  endpoint out;
  std::string_view rest = text;
  if (rest.starts_with("unix:")) {
    rest.remove_prefix(5);
    if (rest.starts_with("//")) rest.remove_prefix(2);
    if (rest.empty()) bad_endpoint(text, "empty socket path");
    out.unix_path = std::string(rest);
    return out;
  }
  if (rest.starts_with("/")) {
    out.unix_path = std::string(rest);
    return out;
  }
  if (rest.starts_with("tcp://")) rest.remove_prefix(6);
  if (rest.starts_with("redis://")) rest.remove_prefix(8);
  const auto colon = rest.rfind(':');
  if (colon == std::string_view::npos) bad_endpoint(text, "no port");
  const std::string_view host = rest.substr(0, colon);
  const std::string_view port = rest.substr(colon + 1);
  if (host.empty()) bad_endpoint(text, "empty host");
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc{} || end != port.data() + port.size() || value == 0 || value > 65535) {
    bad_endpoint(text, "port \"" + std::string(port) + "\" is not a number from 1 to 65535");
  }
  out.host = std::string(host);
  out.port = static_cast<std::uint16_t>(value);
  return out;
}

std::string endpoint::to_string() const {
  if (!unix_path.empty()) return "unix:" + unix_path;
  return host + ":" + std::to_string(port);
}

void reply_deleter::operator()(redisReply* r) const noexcept { freeReplyObject(r); }

std::string_view reply_text(const redisReply& r) noexcept {
  if (r.type == REDIS_REPLY_STRING || r.type == REDIS_REPLY_STATUS || r.type == REDIS_REPLY_ERROR) {
    return {r.str, r.len};
  }
  return {};
}

bool is_error(const redisReply& r) noexcept { return r.type == REDIS_REPLY_ERROR; }

connection::connection(const endpoint& where, std::chrono::milliseconds connect_timeout,
                       std::chrono::milliseconds command_timeout)
    : where_(where) {
  detail::ignore_sigpipe();
  const timeval tv = to_timeval(connect_timeout);
  context_ = where.unix_path.empty() ? redisConnectWithTimeout(where.host.c_str(), where.port, tv)
                                     : redisConnectUnixWithTimeout(where.unix_path.c_str(), tv);
  if (context_ == nullptr) throw redis_error("cannot connect to Redis at " + where.to_string());
  if (context_->err != 0) {
    std::string message =
        "cannot connect to Redis at " + where.to_string() + ": " + context_->errstr;
    redisFree(context_);
    context_ = nullptr;
    throw redis_error(message);
  }
  set_timeout(command_timeout);
}

connection::connection(connection&& other) noexcept
    : where_(std::move(other.where_)), context_(std::exchange(other.context_, nullptr)) {}

connection& connection::operator=(connection&& other) noexcept {
  if (this != &other) {
    if (context_ != nullptr) redisFree(context_);
    where_ = std::move(other.where_);
    context_ = std::exchange(other.context_, nullptr);
  }
  return *this;
}

connection::~connection() {
  if (context_ != nullptr) redisFree(context_);
}

void connection::set_timeout(std::chrono::milliseconds timeout) {
  if (context_ != nullptr) redisSetTimeout(context_, to_timeval(timeout));
}

bool connection::ok() const noexcept { return context_ != nullptr && context_->err == 0; }

std::vector<reply_ptr> connection::pipeline(
    const std::vector<std::vector<std::string_view>>& commands) {
  if (!ok()) throw redis_error("the connection to Redis at " + where_.to_string() + " is broken");
  std::vector<const char*> argv;
  std::vector<std::size_t> lens;
  for (const auto& args : commands) {
    argv.clear();
    lens.clear();
    for (std::string_view a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    if (redisAppendCommandArgv(context_, static_cast<int>(argv.size()), argv.data(), lens.data()) !=
        REDIS_OK) {
      throw redis_error("cannot send to Redis at " + where_.to_string() + ": " + context_->errstr);
    }
  }
  std::vector<reply_ptr> replies;
  replies.reserve(commands.size());
  for (std::size_t i = 0; i < commands.size(); ++i) {
    void* raw = nullptr;
    if (redisGetReply(context_, &raw) != REDIS_OK || raw == nullptr) {
      throw redis_error("no reply from Redis at " + where_.to_string() + ": " +
                        (context_->errstr[0] != '\0' ? context_->errstr : "connection lost"));
    }
    replies.emplace_back(static_cast<redisReply*>(raw));
  }
  return replies;
}

reply_ptr connection::command(const std::vector<std::string_view>& args) {
  auto replies = pipeline({args});
  return std::move(replies.front());
}

bool mark_once(connection& c, std::string_view key, std::chrono::seconds ttl) {
  const std::string seconds = std::to_string(ttl.count() > 0 ? ttl.count() : 1);
  reply_ptr r = c.command({"SET", key, "1", "NX", "EX", seconds});
  if (is_error(*r)) throw redis_error("SET NX failed: " + std::string(reply_text(*r)));
  return r->type == REDIS_REPLY_STATUS;  // OK; a nil reply means the key was there
}

}  // namespace crosstown::redis
