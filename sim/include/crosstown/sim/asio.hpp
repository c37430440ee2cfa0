// crosstown/sim/asio.hpp - Asio on the simulator: io_contexts stepped by the seeded scheduler,
// a simulated byte stream with its acceptor, and timers on virtual time.
//
// `io_actor` owns one `boost::asio::io_context` and runs it one `poll_one()` at a time, each
// a work item of the simulation's `scheduler` under the actor's id: whenever the context may
// have ready work (a completion was posted to it), a "poll" item is posted, so the scheduler's
// strategy (FIFO, random, PCT, replay) chooses how connections interleave. The context is
// never `run()`: nothing waits in real time. `spend(d)` says the code running now takes `d`
// of virtual time (a blocking call, CPU work): the actor's next poll waits until then - which
// is how a task that blocks an I/O thread delays that connection's later responses.
//
// `sim_network` makes connections. `connect()` returns the client end of a new duplex link;
// the server end is delivered, after the link's latency, by `sim_acceptor::async_accept` on
// an io_actor of its own (one io_context per connection). Both ends are `sim_stream`s:
// AsyncReadStream and AsyncWriteStream, so Beast's `http::async_read` / `http::async_write`
// and `crosstown::beast::async_write_response` run over them unchanged. Each direction of a
// link carries the actual bytes, shaped by `link_options` (transport.hpp):
//   - a write accepts 1..max_chunk bytes (drawn from the writing end's generator), at most the
//     free window (bytes accepted and not yet read by the peer) - a full window blocks the
//     write until the peer reads: backpressure; accepting takes bytes * ns_per_byte;
//   - accepted bytes arrive after the latency; a read returns 1..max_chunk of the arrived
//     bytes (partial reads) after read_delay;
//   - faults drawn from the seed (`link_faults`, server to client): a stall makes the client
//     stop reading at a byte offset (for stall_for, or until `heal()`), so the server's writes
//     block; a reset at byte k lets exactly k bytes be accepted, then fails every operation of
//     both ends with `connection_reset`;
//   - `shutdown(send)` is a half-close: the peer reads the bytes in flight, then `eof`;
//     `close()` (or destroying the end) aborts the end's operations and makes the peer's
//     later writes fail with `connection_reset` and its reads end with `eof`.
// A `link_observer` sees every byte the server end had accepted, every completion of the
// server's operations, resets and closes - what the oracle of app_test.hpp checks against.
//
// `sim_timer` has the interface of `asio::steady_timer` that applications use (expires_after,
// expires_at, expiry, async_wait with any completion token, cancel) on `virtual_clock`: a
// wait is a timer of the run's `virtual_time`, so when nothing is runnable the scheduler
// auto-advances to it. Its completion goes to the io_actor of the executor it was made with.
//
// Completions are posted to the end's io_context and never run inside the initiating call.
// A handler's associated executor is not used: one thread runs everything, so a strand has
// nothing to serialize, but a handler bound to one (`bind_executor(strand, h)`) runs outside
// it - `strand.running_in_this_thread()` is false there. Per-operation cancellation slots are
// not supported; `cancel()` and `close()` abort pending operations with `operation_aborted`.
// Nothing here reads the real clock or starts a thread. Not thread-safe: one run, one thread.
#pragma once

#include <crosstown/sim/journal.hpp>
#include <crosstown/sim/scheduler.hpp>
#include <crosstown/sim/transport.hpp>
#include <crosstown/sim/virtual_clock.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/append.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/socket_base.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace crosstown::sim {

namespace net = boost::asio;
using error_code = boost::system::error_code;

/// An io_context stepped one `poll_one()` at a time by the scheduler, under one actor.
class io_actor {
 public:
  /// `on_step` (optional) runs after every step; `on_exception` receives what a completion
  /// handler threw (the step catches it: nothing escapes into the scheduler).
  io_actor(scheduler& sched, actor_id actor, std::string label);
  io_actor(const io_actor&) = delete;
  io_actor& operator=(const io_actor&) = delete;
  ~io_actor();

  net::io_context& context() noexcept { return ioc_; }
  net::io_context::executor_type get_executor() noexcept { return ioc_.get_executor(); }
  actor_id actor() const noexcept { return actor_; }
  const std::string& label() const noexcept { return label_; }
  scheduler& sched() noexcept { return sched_; }

  /// Makes sure a poll item is posted: call after posting work to the context from outside
  /// one of its own steps.
  void kick();
  /// The code running now on this actor takes `d` of virtual time: the next poll waits.
  void spend(duration d);
  std::uint64_t steps() const noexcept { return steps_; }
  /// True while the context is being destroyed: completions are dropped, not posted.
  bool closing() const noexcept { return closing_; }

  std::function<void()> on_step;
  std::function<void(const std::string&)> on_exception;

  /// The io_actor owning the context of `ex`, or null if it is not a simulated context.
  static io_actor* of(const net::any_io_executor& ex) noexcept;
  static io_actor* of(net::execution_context& ctx) noexcept;
  /// The io_actor whose step is running on this thread, or null.
  static io_actor* running() noexcept;

 private:
  void step();

  scheduler& sched_;
  actor_id actor_;
  std::string label_;
  net::io_context ioc_{1};
  bool posted_ = false;
  time_point busy_until_{};
  std::uint64_t steps_ = 0;
  bool closing_ = false;
};

/// Says the code running now takes `d` of virtual time - on a simulated I/O thread (its next
/// poll waits) or on a simulated worker whose runner installed a hook. A no-op outside both.
void spend(duration d);

namespace detail {
/// Installed by simulated workers (app_test.hpp) so that `spend` reaches them.
using spend_hook = void (*)(void* self, duration d);
void set_worker_spend(spend_hook hook, void* self) noexcept;
}  // namespace detail

class sim_link;
class sim_network;

/// What a link reports about its server end (for the app oracle and traces).
struct link_observer {
  virtual ~link_observer() = default;
  /// The server end's bytes [offset, offset + n) were accepted by the transport.
  virtual void on_server_bytes(std::uint32_t conn, std::uint64_t offset, const char* data,
                               std::size_t n) = 0;
  /// A server write (`write` true) or read completes with (ec, n); runs just before the
  /// application's completion handler, inside the connection's step.
  virtual void on_server_completion(std::uint32_t conn, bool write, const error_code& ec,
                                    std::size_t n) = 0;
  virtual void on_reset(std::uint32_t conn, std::uint64_t at_byte) = 0;
  /// `server` true: the server end was closed (or destroyed); false: the client end.
  virtual void on_closed(std::uint32_t conn, bool server) = 0;
  virtual void on_stall(std::uint32_t conn, bool stalled) = 0;

 protected:
  link_observer() = default;
  link_observer(const link_observer&) = default;
  link_observer& operator=(const link_observer&) = default;
};

/// One end of a simulated duplex link. Movable; destroying or closing it closes the end.
class sim_stream {
 public:
  using executor_type = net::any_io_executor;
  using lowest_layer_type = sim_stream;

  sim_stream() = default;
  sim_stream(sim_link* link, int side, io_actor* home) noexcept
      : link_(link), side_(side), home_(home) {}
  sim_stream(sim_stream&& o) noexcept
      : link_(std::exchange(o.link_, nullptr)), side_(o.side_), home_(o.home_) {}
  sim_stream& operator=(sim_stream&& o) noexcept {
    if (this != &o) {
      close();
      link_ = std::exchange(o.link_, nullptr);
      side_ = o.side_;
      home_ = o.home_;
    }
    return *this;
  }
  sim_stream(const sim_stream&) = delete;
  sim_stream& operator=(const sim_stream&) = delete;
  ~sim_stream() { close(); }

  executor_type get_executor() const noexcept;
  lowest_layer_type& lowest_layer() noexcept { return *this; }
  io_actor* home() const noexcept { return home_; }
  bool is_open() const noexcept;
  /// The connection number (from 1) of the link.
  std::uint32_t id() const noexcept;

  template <class MutableBufferSequence, class ReadToken>
  auto async_read_some(const MutableBufferSequence& buffers, ReadToken&& token) {
    return net::async_initiate<ReadToken, void(error_code, std::size_t)>(
        [this](auto handler, const MutableBufferSequence& b) {
          std::vector<net::mutable_buffer> bufs;
          for (auto it = net::buffer_sequence_begin(b); it != net::buffer_sequence_end(b); ++it)
            bufs.emplace_back(*it);
          start_read(std::move(bufs), net::any_completion_handler<void(error_code, std::size_t)>(
                                          std::move(handler)));
        },
        token, buffers);
  }

  template <class ConstBufferSequence, class WriteToken>
  auto async_write_some(const ConstBufferSequence& buffers, WriteToken&& token) {
    return net::async_initiate<WriteToken, void(error_code, std::size_t)>(
        [this](auto handler, const ConstBufferSequence& b) {
          std::vector<net::const_buffer> bufs;
          for (auto it = net::buffer_sequence_begin(b); it != net::buffer_sequence_end(b); ++it)
            bufs.emplace_back(*it);
          start_write(std::move(bufs), net::any_completion_handler<void(error_code, std::size_t)>(
                                           std::move(handler)));
        },
        token, buffers);
  }

  /// Half-close (`shutdown_send`), or the receive side (`shutdown_receive`), or both.
  void shutdown(net::socket_base::shutdown_type what);
  void shutdown(net::socket_base::shutdown_type what, error_code& ec) {
    shutdown(what);
    ec = {};
  }
  /// Aborts this end's pending operations; the peer sees the close.
  void close() noexcept;
  void close(error_code& ec) noexcept {
    close();
    ec = {};
  }
  /// Aborts this end's pending operations with `operation_aborted`.
  void cancel();
  /// Resets the whole link now (both ends' operations fail with `connection_reset`).
  void reset();

 private:
  void start_read(std::vector<net::mutable_buffer> bufs,
                  net::any_completion_handler<void(error_code, std::size_t)> h);
  void start_write(std::vector<net::const_buffer> bufs,
                   net::any_completion_handler<void(error_code, std::size_t)> h);

  sim_link* link_ = nullptr;
  int side_ = 0;  // 0: client end, 1: server end
  io_actor* home_ = nullptr;
};

/// Accepts the server ends of the network's connections, in the order they arrive.
class sim_acceptor {
 public:
  using executor_type = net::any_io_executor;

  /// Listens on `network`; completions go to `ex` (an io_actor's executor).
  sim_acceptor(sim_network& network, executor_type ex);
  sim_acceptor(const sim_acceptor&) = delete;
  sim_acceptor& operator=(const sim_acceptor&) = delete;
  ~sim_acceptor();

  executor_type get_executor() const noexcept { return ex_; }

  /// Completes with `(error_code, sim_stream)`: the server end of the next connection, on
  /// an io_actor of its own; `operation_aborted` once closed.
  template <class AcceptToken>
  auto async_accept(AcceptToken&& token) {
    return net::async_initiate<AcceptToken, void(error_code, sim_stream)>(
        [this](auto handler) {
          start_accept(
              net::any_completion_handler<void(error_code, sim_stream)>(std::move(handler)));
        },
        token);
  }
  void close();
  bool is_open() const noexcept { return open_; }

 private:
  friend class sim_network;
  void start_accept(net::any_completion_handler<void(error_code, sim_stream)> h);
  void offer();

  sim_network& network_;
  executor_type ex_;
  io_actor* home_;
  bool open_ = true;
  std::optional<net::any_completion_handler<void(error_code, sim_stream)>> pending_;
};

/// The links of one run and the io_actors of their server ends. Outlives every stream.
class sim_network {
 public:
  /// Connection `n`'s generators are streams 200 + 4n (server end) and 201 + 4n (client end)
  /// of `seed`; its io_actor has actor id `first_actor + n`.
  sim_network(scheduler& sched, std::uint64_t seed, journal* log = nullptr,
              link_observer* observer = nullptr, actor_id first_actor = 1U << 16U);
  sim_network(const sim_network&) = delete;
  sim_network& operator=(const sim_network&) = delete;
  ~sim_network();

  /// A new connection: returns its client end, homed on `client`. The server end reaches the
  /// acceptor after the link's latency.
  sim_stream connect(io_actor& client, link_options link = {}, link_faults faults = {});
  /// Ends stalls and cancels planned resets on every link (a liveness phase).
  void heal();
  /// Destroys the server ends' io_contexts (and what their handlers own) - before the
  /// runtime the application's scopes belong to. Idempotent.
  void shut_down();

  scheduler& sched() noexcept { return sched_; }
  std::size_t connections() const noexcept { return links_.size(); }
  /// The io_actor of connection `n`'s server end (from 1), once accepted.
  io_actor* server_actor(std::uint32_t n) const noexcept;
  /// Called with each new server-end io_actor (to install step hooks).
  std::function<void(io_actor&)> on_new_actor;

 private:
  friend class sim_acceptor;
  friend class sim_link;
  friend class sim_stream;

  scheduler& sched_;
  std::uint64_t seed_;
  journal* log_;
  link_observer* observer_;
  actor_id first_actor_;
  bool down_ = false;
  std::vector<std::unique_ptr<sim_link>> links_;
  std::vector<std::unique_ptr<io_actor>> actors_;  // server ends, by connection
  std::deque<sim_link*> arrived_;                  // waiting for an accept
  sim_acceptor* acceptor_ = nullptr;
};

/// A timer on virtual time with the interface of `asio::steady_timer` that servers use.
class sim_timer {
 public:
  using clock_type = virtual_clock;
  using duration = virtual_clock::duration;
  using time_point = virtual_clock::time_point;
  using executor_type = net::any_io_executor;

  /// `ex` must be an io_actor's executor (throws std::invalid_argument otherwise).
  explicit sim_timer(const executor_type& ex);
  sim_timer(const executor_type& ex, duration d) : sim_timer(ex) { expires_after(d); }
  template <class ExecutionContext>
  requires std::is_convertible_v<ExecutionContext&, net::execution_context&>
  explicit sim_timer(ExecutionContext& ctx) : sim_timer(executor_type(ctx.get_executor())) {}
  sim_timer(const sim_timer&) = delete;
  sim_timer& operator=(const sim_timer&) = delete;
  /// Pending waits complete with `operation_aborted`.
  ~sim_timer();

  executor_type get_executor() const noexcept { return ex_; }
  time_point expiry() const noexcept { return expiry_; }
  /// Sets the expiry, cancelling pending waits; returns how many were cancelled.
  std::size_t expires_at(time_point at);
  std::size_t expires_after(duration d);
  /// Completes pending waits with `operation_aborted`; returns how many.
  std::size_t cancel();

  template <class WaitToken>
  auto async_wait(WaitToken&& token) {
    return net::async_initiate<WaitToken, void(error_code)>(
        [this](auto handler) {
          start_wait(net::any_completion_handler<void(error_code)>(std::move(handler)));
        },
        token);
  }

 private:
  void start_wait(net::any_completion_handler<void(error_code)> h);
  void fire();
  void arm();
  void disarm();

  executor_type ex_;
  io_actor* actor_;
  time_point expiry_{};
  std::vector<net::any_completion_handler<void(error_code)>> waits_;
  std::optional<timer_id> armed_;
};

}  // namespace crosstown::sim
