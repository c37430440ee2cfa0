// crosstown/sim/journal.hpp - what a run decided, for the determinism check (invariant I8).
//
// Every scheduling decision, random draw, transport event and oracle event of a run is added
// to its journal as a small fixed record. The journal always keeps a running 64-bit digest;
// when created with `keep_entries`, it also keeps the records so two runs of the same seed
// can be compared and the first divergence named. Digests are comparable within one process
// (labels are hashed by address). Not thread-safe (one run, one thread).
#pragma once

#include <bit>
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

  // Inline: a run adds a few thousand records, several per simulated request.
  void add(journal_kind kind, const char* what, std::uint64_t a, std::uint64_t b,
           std::int64_t time_ns) {
    // The label is a string literal: its address identifies it within one process, which is
    // where digests are compared (run twice, same binary).
    std::uint64_t h = fold(digest_, reinterpret_cast<std::uintptr_t>(what) ^
                                        (static_cast<std::uint64_t>(kind) << 56U));
    h = fold(h, a);
    h = fold(h, b);
    digest_ = fold(h, static_cast<std::uint64_t>(time_ns));
    ++count_;
    if (keep_) entries_.push_back({kind, what, a, b, time_ns});
  }

  std::uint64_t digest() const noexcept { return digest_; }
  std::uint64_t size() const noexcept { return count_; }
  const std::vector<journal_entry>& entries() const noexcept { return entries_; }
  bool keeps_entries() const noexcept { return keep_; }

 private:
  // One rotate-xor-multiply round per word: cheap, and injective in `v` for a given `h` (the
  // xor and the multiplication by an odd constant are both bijections), so a record that
  // differs in any bit of any word changes that round's result.
  static std::uint64_t fold(std::uint64_t h, std::uint64_t v) noexcept {
    return (std::rotl(h, 23) ^ v) * 0x9e3779b97f4a7c15ULL;
  }

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

  std::uint64_t next() noexcept {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30U)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27U)) * 0x94d049bb133111ebULL;
    z ^= z >> 31U;
    if (log_ != nullptr) {
      log_->add(journal_kind::draw, "rng", stream_, z, now_ns_ != nullptr ? *now_ns_ : 0);
    }
    return z;
  }
  /// Uniform in [0, n); n must be positive.
  std::uint64_t below(std::uint64_t n) noexcept {
    if (n <= 1) {
      next();
      return 0;
    }
    return next() % n;
  }
  /// Uniform in [lo, hi].
  std::int64_t between(std::int64_t lo, std::int64_t hi) noexcept {
    if (hi <= lo) return lo;
    return lo + static_cast<std::int64_t>(below(static_cast<std::uint64_t>(hi - lo) + 1));
  }
  /// True with probability p.
  bool chance(double p) noexcept {
    const double u = static_cast<double>(next() >> 11U) * 0x1.0p-53;
    return u < p;
  }
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
