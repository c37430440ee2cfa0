// crosstown/sim/transport.hpp - a simulated byte stream from the server to one client.
//
// The server writes a message with `async_write(n, handler)`; the transport accepts it in
// short writes: each accepts `1..max_chunk` bytes (drawn from the connection's seeded
// generator), limited by the free window (bytes accepted but not yet read by the client) and
// takes `bytes * ns_per_byte` of virtual time. Accepted bytes reach the client after
// `latency`; the client reads what has arrived after `read_delay`. A stalled client stops
// reading, so the window fills and the server's write blocks until the stall ends (after
// `stall_for`, or at `heal()` if that is zero). A reset at byte offset k (counted over the
// connection) lets exactly k bytes be accepted, then fails the write in progress and every
// later one. A half-close is the client's end of sending: it does not affect the server's
// writes.
//
// The handler is called with `true` when the last byte of the message was accepted - the
// moment a real socket write completes, and so the moment "response sent" may be reported -
// or with `false` when the connection was reset first. Handlers and all transport events are
// work items on the scheduler under the connection's actor. Not thread-safe.
#pragma once

#include <crosstown/sim/journal.hpp>
#include <crosstown/sim/scheduler.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace crosstown::sim {

struct link_options {
  duration latency = std::chrono::microseconds(200);
  std::uint64_t ns_per_byte = 10;  ///< 100 MB/s
  std::size_t max_chunk = 1460;    ///< largest single short write
  std::size_t window = 16384;      ///< bytes accepted but unread before writes block
  duration read_delay = std::chrono::microseconds(20);
};

/// Faults of one connection, drawn from the run's seed.
struct link_faults {
  std::optional<std::uint64_t> reset_at_byte{};  ///< reset once this many bytes were accepted
  std::optional<std::uint64_t> stall_at_byte{};  ///< client stops reading after this many bytes
  duration stall_for{0};                         ///< zero: stalled until healed
};

/// Receives what the transport does, for traces and the oracle.
struct transport_observer {
  virtual ~transport_observer() = default;
  virtual void on_accepted(std::uint32_t conn, std::uint64_t first_byte, std::uint64_t bytes) = 0;
  virtual void on_reset(std::uint32_t conn, std::uint64_t at_byte) = 0;
  virtual void on_stall(std::uint32_t conn, bool stalled) = 0;

 protected:
  transport_observer() = default;
  transport_observer(const transport_observer&) = default;
  transport_observer& operator=(const transport_observer&) = default;
};

class connection {
 public:
  using write_handler = std::function<void(bool delivered)>;

  connection(std::uint32_t id, scheduler& sched, rng& draws, link_options link, link_faults faults,
             journal* log = nullptr, transport_observer* observer = nullptr);
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  /// Writes `bytes` bytes; `done(true)` once the last is accepted, `done(false)` on reset.
  /// One write at a time.
  void async_write(std::uint64_t bytes, write_handler done);
  /// Resets the connection now (the write in progress, if any, fails).
  void reset();
  /// Ends stalls and cancels the planned reset (the liveness phase).
  void heal();

  std::uint32_t id() const noexcept { return id_; }
  bool is_reset() const noexcept { return reset_; }
  bool stalled() const noexcept { return stalled_; }
  std::uint64_t accepted() const noexcept { return accepted_; }
  std::uint64_t read_by_client() const noexcept { return read_; }
  bool writing() const noexcept { return static_cast<bool>(done_); }

 private:
  void do_write();
  void on_chunk(std::uint64_t bytes, bool then_reset);
  void on_arrive(std::uint64_t bytes);
  void maybe_read();
  void on_read();
  void set_stalled(bool stalled);
  void note(const char* what, std::uint64_t a, std::uint64_t b);
  void fail_write();

  std::uint32_t id_;
  scheduler& sched_;
  rng& draws_;
  link_options link_;
  link_faults faults_;
  journal* log_;
  transport_observer* observer_;

  std::uint64_t remaining_ = 0;  // of the write in progress
  write_handler done_;
  bool chunk_in_flight_ = false;
  bool blocked_ = false;  // waiting for window space
  bool reset_ = false;
  bool stalled_ = false;
  bool stall_used_ = false;
  bool read_scheduled_ = false;
  std::uint64_t accepted_ = 0;     // bytes accepted by the transport
  std::uint64_t unread_ = 0;       // accepted, not yet read by the client
  std::uint64_t arrived_ = 0;      // at the client, not yet read
  std::uint64_t read_ = 0;         // read by the client
  std::uint64_t stall_epoch_ = 0;  // invalidates a pending "stall over" timer after heal
};

}  // namespace crosstown::sim
