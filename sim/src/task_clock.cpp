#include <crosstown/sim/task_clock.hpp>

#include <crosstown/sim/asio.hpp>

#include <boost/asio/append.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace crosstown::sim {

namespace {

// `timer.async_wait` as an operation that honours its handler's cancellation slot, the way
// Asio's own operations do: while the wait is pending, the slot cancels the timer. And its
// associated executor: sim_timer completes on the io_context itself, outside the strand an
// awaitable task with a timeout runs on (redirect_awaitables: an external executor gets one);
// resumed there, the task's next co_spawn would be dispatched through the strand, i.e. posted,
// and a racer cancelled before it started makes Asio 1.26's co_spawn entry point throw out of
// the io_context ("co_await: Operation canceled"). Resuming on the strand keeps it inline.
template <class Token>
auto cancellable_wait(sim_timer& timer, Token&& token) {
  return net::async_initiate<Token, void(error_code)>(
      [&timer](auto handler) {
        auto slot = net::get_associated_cancellation_slot(handler);
        if (slot.is_connected()) {
          slot.assign([&timer](net::cancellation_type) { timer.cancel(); });
        }
        timer.async_wait(
            [h = std::move(handler), fallback = timer.get_executor()](error_code ec) mutable {
              auto done = net::get_associated_cancellation_slot(h);
              if (done.is_connected()) done.clear();
              auto ex = net::get_associated_executor(h, fallback);
              net::dispatch(ex, net::append(std::move(h), ec));
            });
      },
      token);
}

}  // namespace

std::chrono::nanoseconds sim_task_clock::now() const noexcept {
  return std::chrono::nanoseconds(time_.now_ns());
}

net::awaitable<void> sim_task_clock::wait(std::chrono::nanoseconds d) {
  if (d <= std::chrono::nanoseconds::zero()) co_return;
  sim_timer timer(co_await net::this_coro::executor);
  timer.expires_after(d);
  co_await cancellable_wait(timer, net::use_awaitable);
}

}  // namespace crosstown::sim
