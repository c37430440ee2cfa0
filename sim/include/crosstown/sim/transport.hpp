// crosstown/sim/transport.hpp - the parameters and faults of a simulated link.
//
// A link is what `sim_network::connect` (asio.hpp) makes: a duplex byte stream between a
// client and the server, each direction carrying the actual bytes. `link_options` shapes it -
// a write accepts 1..max_chunk bytes at a time, at most the free window (bytes accepted and
// not yet read by the peer), taking bytes * ns_per_byte of virtual time; accepted bytes
// arrive after `latency` and are read after `read_delay`. `link_faults` are one connection's
// faults, drawn from the run's seed: a reset once k bytes from the server were accepted, and
// a client that stops reading after k bytes, for `stall_for` or (zero) until the network
// heals. The moment the last byte of a response is accepted is the moment a real socket write
// completes, and so the moment "response sent" may be reported.
#pragma once

#include <crosstown/sim/scheduler.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>

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

}  // namespace crosstown::sim
