// crosstown/retry.hpp - how an awaitable task is retried after a failed attempt.
//
//     scope.defer(place_call, {.lane = "telephony", .timeout = 2s,
//                              .retry = {.max_attempts = 3, .base = 100ms, .cap = 2s}});
//
// An attempt fails when the coroutine throws or runs past the task's `timeout`. If attempts
// are left and `retry_if` accepts the exception (empty: every failure is retried), the task
// waits a backoff, then starts a new attempt: the factory is called again. The backoff before
// attempt n+1 is `min(cap, base * 2^(n-1))`, shortened by a random fraction of at most
// `jitter` (0: exact; 1: "full jitter", anywhere in [0, delay]). The waits use the runtime's
// task clock (awaitable_task.hpp), so tests drive them on virtual time.
//
// A retried task still ends in exactly one terminal state: `ran` when an attempt succeeds,
// else that of the last attempt (`failed` or `timed_out`); only the last failure reaches the
// error hook. Retries are counted in `metrics_snapshot::retries`. Blocking tasks cannot be
// retried (the backoff would hold a pool thread): `defer` throws std::invalid_argument.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>

namespace crosstown {

struct retry_policy {
  /// Attempts in all, at least 1; 1 means no retry.
  std::uint32_t max_attempts = 1;
  /// Backoff before the second attempt; doubles for each later one.
  std::chrono::nanoseconds base = std::chrono::milliseconds(100);
  /// Longest backoff.
  std::chrono::nanoseconds cap = std::chrono::seconds(10);
  /// Fraction of each backoff drawn at random and taken off it, 0-1.
  double jitter = 0.5;
  /// Which failures are retried; empty: all. Called on an I/O thread; must not throw (an
  /// exception counts as "do not retry").
  std::function<bool(const std::exception_ptr&)> retry_if{};
};

/// The backoff before attempt `failed_attempts + 1`, `unit` in [0, 1) being the random draw.
constexpr std::chrono::nanoseconds retry_backoff(const retry_policy& p,
                                                 std::uint32_t failed_attempts,
                                                 double unit) noexcept {
  std::chrono::nanoseconds delay = p.base;
  for (std::uint32_t i = 1; i < failed_attempts && delay < p.cap; ++i) delay *= 2;
  if (delay > p.cap) delay = p.cap;
  if (delay < std::chrono::nanoseconds::zero()) delay = std::chrono::nanoseconds::zero();
  const double jitter = p.jitter < 0 ? 0 : (p.jitter > 1 ? 1 : p.jitter);
  const auto cut = static_cast<std::chrono::nanoseconds::rep>(static_cast<double>(delay.count()) *
                                                              jitter * unit);
  return delay - std::chrono::nanoseconds(cut);
}

}  // namespace crosstown
