#include <crosstown/sim/journal.hpp>

#include <cstring>

namespace crosstown::sim {

namespace {

// One multiply-xorshift round per word: cheap, and every bit of `v` affects the digest.
std::uint64_t fold(std::uint64_t h, std::uint64_t v) noexcept {
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6U) + (h >> 2U);
  h *= 0xbf58476d1ce4e5b9ULL;
  return h ^ (h >> 31U);
}

const char* kind_name(journal_kind k) noexcept {
  switch (k) {
    case journal_kind::decision: return "decision";
    case journal_kind::draw: return "draw";
    case journal_kind::transport: return "transport";
    case journal_kind::event: return "event";
  }
  return "?";
}

}  // namespace

std::string journal_entry::describe() const {
  return std::string(kind_name(kind)) + " '" + what + "' a=" + std::to_string(a) +
         " b=" + std::to_string(b) + " at " + std::to_string(time_ns) + "ns";
}

void journal::add(journal_kind kind, const char* what, std::uint64_t a, std::uint64_t b,
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

std::optional<std::string> first_divergence(const journal& first, const journal& second) {
  const auto& x = first.entries();
  const auto& y = second.entries();
  const std::size_t n = std::min(x.size(), y.size());
  for (std::size_t i = 0; i < n; ++i) {
    const bool same = x[i].kind == y[i].kind && std::strcmp(x[i].what, y[i].what) == 0 &&
                      x[i].a == y[i].a && x[i].b == y[i].b && x[i].time_ns == y[i].time_ns;
    if (!same) {
      return "record " + std::to_string(i) + ": first run " + x[i].describe() +
             ", second run " + y[i].describe();
    }
  }
  if (x.size() != y.size()) {
    return "record " + std::to_string(n) + ": one run has " + std::to_string(x.size()) +
           " records, the other " + std::to_string(y.size());
  }
  if (first.digest() != second.digest()) return std::string("digests differ");
  return std::nullopt;
}

std::uint64_t mix_seed(std::uint64_t seed, std::uint64_t stream) noexcept {
  std::uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (stream + 1);
  z = (z ^ (z >> 30U)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27U)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31U);
}

rng::rng(std::uint64_t seed, std::uint64_t stream, journal* log) noexcept
    : state_(mix_seed(seed, stream)), stream_(stream), log_(log) {}

std::uint64_t rng::next() noexcept {
  std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30U)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27U)) * 0x94d049bb133111ebULL;
  z ^= z >> 31U;
  if (log_ != nullptr) {
    log_->add(journal_kind::draw, "rng", stream_, z, now_ns_ != nullptr ? *now_ns_ : 0);
  }
  return z;
}

std::uint64_t rng::below(std::uint64_t n) noexcept { return n <= 1 ? (next(), 0) : next() % n; }

std::int64_t rng::between(std::int64_t lo, std::int64_t hi) noexcept {
  if (hi <= lo) return lo;
  return lo + static_cast<std::int64_t>(below(static_cast<std::uint64_t>(hi - lo) + 1));
}

bool rng::chance(double p) noexcept {
  const double u = static_cast<double>(next() >> 11U) * 0x1.0p-53;
  return u < p;
}

}  // namespace crosstown::sim
