// crosstown/sim/journal.hpp - what a run decided, for the determinism check (invariant I8).
//
// Every scheduling decision, random draw, transport event and oracle event of a run is added
// to its journal as a small fixed record. The journal always keeps a running 64-bit digest;
// when created with `keep_entries`, it also keeps the records so two runs of the same seed
// can be compared and the first divergence named. Digests are comparable within one process
// (labels are hashed by address). Not thread-safe (one run, one thread).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace crosstown::sim {

enum class journal_kind : std::uint8_t { decision, draw, transport, event };

struct journal_entry {
  journal_kind kind;
  const char* what;  ///< a string literal naming the record
  std::uint64_t a;
  std::uint64_t b;
  std::int64_t time_ns;

  std::string describe() const;
};

class journal {
 public:
  explicit journal(bool keep_entries = false) : keep_(keep_entries) {}

  void add(journal_kind kind, const char* what, std::uint64_t a, std::uint64_t b,
           std::int64_t time_ns);

  std::uint64_t digest() const noexcept { return digest_; }
  std::uint64_t size() const noexcept { return count_; }
  const std::vector<journal_entry>& entries() const noexcept { return entries_; }
  bool keeps_entries() const noexcept { return keep_; }

 private:
  bool keep_;
  std::uint64_t digest_ = 0xcbf29ce484222325ULL;
  std::uint64_t count_ = 0;
  std::vector<journal_entry> entries_;
};

/// Describes the first record where two kept journals differ, or nothing if they are equal.
std::optional<std::string> first_divergence(const journal& first, const journal& second);

/// Seeded generator (splitmix64) whose every draw is journaled under its stream number.
/// Separate streams keep unrelated choices independent: removing the deferred tasks of a run
/// (the I7 check) must not shift the transport's draws.
class rng {
 public:
  rng(std::uint64_t seed, std::uint64_t stream, journal* log = nullptr) noexcept;

  std::uint64_t next() noexcept;
  /// Uniform in [0, n); n must be positive.
  std::uint64_t below(std::uint64_t n) noexcept;
  /// Uniform in [lo, hi].
  std::int64_t between(std::int64_t lo, std::int64_t hi) noexcept;
  /// True with probability p.
  bool chance(double p) noexcept;
  /// The time source used for journal records (optional).
  void set_clock(const std::int64_t* now_ns) noexcept { now_ns_ = now_ns; }

 private:
  std::uint64_t state_;
  std::uint64_t stream_;
  journal* log_;
  const std::int64_t* now_ns_ = nullptr;
};

/// splitmix64 finaliser: mixes a seed and a stream number into a state.
std::uint64_t mix_seed(std::uint64_t seed, std::uint64_t stream) noexcept;

}  // namespace crosstown::sim
