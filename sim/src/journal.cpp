#include <crosstown/sim/journal.hpp>

#include <cstring>

namespace crosstown::sim {

namespace {

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

std::optional<std::string> first_divergence(const journal& first, const journal& second) {
  const auto& x = first.entries();
  const auto& y = second.entries();
  const std::size_t n = std::min(x.size(), y.size());
  for (std::size_t i = 0; i < n; ++i) {
    const bool same = x[i].kind == y[i].kind && std::strcmp(x[i].what, y[i].what) == 0 &&
                      x[i].a == y[i].a && x[i].b == y[i].b && x[i].time_ns == y[i].time_ns;
    if (!same) {
      return "record " + std::to_string(i) + ": first run " + x[i].describe() + ", second run " +
             y[i].describe();
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

}  // namespace crosstown::sim
