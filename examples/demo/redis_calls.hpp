// redis_calls.hpp - the demo's durable call placer: `crosstown-demo serve --redis ADDRESS`.
//
// `redis_call_placer` places each call as a durable task (crosstown::redis): a "phone-call"
// with the JSON payload {"to": "+1555...", "call": i, "us": latency} and a fresh idempotency
// key, appended to the stream `crosstown:tasks` at the response's phase by a publisher on an
// io_context the placer owns (one thread). A call counts `ran` in the runtime once Redis
// acknowledged its append; `crosstown-worker --redis ADDRESS` then runs it, on any machine,
// and records its key in the set `crosstown:demo:placed` (once per key).
//
// Admission: a request is admitted while the runtime accepts work and the publisher's
// backlog has room for all its calls (`backlog_limit`), so a Redis outage answers 503 instead
// of losing calls; calls that still find the backlog full or wait past its deadline are
// counted and reported by the runtime (`rejected_by_overflow` / `failed`).
// `call_params::on_start` is not called: the call starts in a worker process.
//
// Lifetime: declare it after the runtime (it is destroyed first): the destructor stops its
// I/O thread and destroys the publisher, whose unacknowledged tasks then count
// `dropped_at_shutdown` against the still-living runtime. Drain the runtime first to avoid
// that. Thread-safe as call_placer requires.
#pragma once

#include "app.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace crosstown_demo {

class redis_call_placer final : public call_placer {
 public:
  /// `redis`: `unix:/path` or `host:port` (std::invalid_argument naming a bad address).
  /// `latency`: what each call tells the worker to spend, when the request gives none.
  redis_call_placer(crosstown::runtime& rt, std::string_view redis,
                    std::chrono::microseconds latency = std::chrono::milliseconds(2),
                    std::size_t backlog_limit = 50'000);
  ~redis_call_placer() override;
  redis_call_placer(const redis_call_placer&) = delete;
  redis_call_placer& operator=(const redis_call_placer&) = delete;

  bool admits(std::uint64_t n) const override;
  void place(crosstown::response_scope& scope, std::uint64_t n, const call_params& params) override;
  /// The publisher's counters (`crosstown_redis_*`).
  std::string prometheus() const override;

  /// The Redis address, as text.
  std::string where() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace crosstown_demo
