#include "redis_calls.hpp"

#include <crosstown/redis/durable_task.hpp>
#include <crosstown/redis/publisher.hpp>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json/object.hpp>

#include <optional>
#include <string>
#include <thread>
#include <utility>

namespace crosstown_demo {

namespace redis = crosstown::redis;

struct redis_call_placer::impl {
  impl(crosstown::runtime& r, std::string_view address, std::chrono::microseconds l,
       std::size_t backlog_limit)
      : rt(r), latency(l) {
    redis::publisher_options o;
    o.redis = redis::endpoint::parse(address);
    o.backlog_limit = backlog_limit;
    publisher.emplace(io, std::move(o));
    thread = std::thread([this] { io.run(); });
  }
  ~impl() {
    // The publisher's contract: destroyed when its io_context no longer runs.
    guard.reset();
    io.stop();
    thread.join();
    publisher.reset();
  }
  impl(const impl&) = delete;
  impl& operator=(const impl&) = delete;

  crosstown::runtime& rt;
  std::chrono::microseconds latency;
  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard{io.get_executor()};
  std::optional<redis::publisher> publisher;
  std::thread thread;
};

redis_call_placer::redis_call_placer(crosstown::runtime& rt, std::string_view redis,
                                     std::chrono::microseconds latency, std::size_t backlog_limit)
    : impl_(std::make_unique<impl>(rt, redis, latency, backlog_limit)) {}

redis_call_placer::~redis_call_placer() = default;

bool redis_call_placer::admits(std::uint64_t n) const {
  if (!impl_->rt.accepting()) return false;
  const auto held = impl_->publisher->metrics().backlog;
  const auto limit = impl_->publisher->options().backlog_limit;
  return held <= limit && n <= limit - held;
}

void redis_call_placer::place(crosstown::response_scope& scope, std::uint64_t n,
                              const call_params& params) {
  const auto latency = params.latency.count() < 0 ? impl_->latency : params.latency;
  for (std::uint64_t i = 0; i < n; ++i) {
    boost::json::object call;
    call["to"] = "+1555" + std::to_string(1'000'000 + i % 1'000'000);
    call["call"] = i;
    call["us"] = latency.count();
    redis::defer_durable(scope, *impl_->publisher, redis::json_task("phone-call", call));
  }
}

std::string redis_call_placer::prometheus() const {
  return redis::to_prometheus(impl_->publisher->metrics());
}

std::string redis_call_placer::where() const {
  return impl_->publisher->options().redis.to_string();
}

}  // namespace crosstown_demo
