// crosstown/detail/position_index.hpp - not API. A hash index of positions in a vector.
//
// A response scope looks up pending tasks by name and interns distinct no-go sets; a linear
// search made both quadratic in one scope (10k names: 161 ms, 40k: 2.2 s). This index maps a
// hash to the positions of the elements that carry it, stored in an open-addressing table of
// 8-byte slots (linear probing, at most half full counting removed slots; the first 16 slots
// inside the object, so a few names allocate nothing), so a lookup,
// insertion or removal is amortised O(1) and the keys themselves stay where they are: the
// caller says, by position, whether an element matches. No allocation but the table's growth;
// `reserve_one` makes room first so that the insertion after it cannot throw. Positions must
// be below 2^32 - 1. Not thread-safe (a scope guards it with its mutex).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

namespace crosstown::detail {

class position_index {
 public:
  position_index() = default;
  position_index(const position_index&) = delete;
  position_index& operator=(const position_index&) = delete;

  /// Makes room for one more insertion, so that `insert` will not allocate. May throw
  /// std::bad_alloc; the index is unchanged then.
  void reserve_one() {
    // The first 8 live in the object itself (most scopes name a few tasks, if any); beyond,
    // the table grows 8-fold, so n insertions allocate about log8(n) times.
    if ((used_ + 1) * 2 > capacity()) rehash(std::max<std::size_t>(inline_slots, (live_ + 1) * 8));
  }

  /// The position among those filed under `hash` for which `matches(position)` holds.
  template <class Matches>
  std::optional<std::uint32_t> find(std::size_t hash, Matches&& matches) const {
    const slot* slots = data();
    const std::uint32_t bits = hash_bits(hash);
    for (std::size_t i = bits & mask();; i = (i + 1) & mask()) {
      ++probes_;
      const slot& s = slots[i];
      if (s.stored == empty) {
        if (s.bits == free_bits) return std::nullopt;
        continue;  // removed: keep probing
      }
      if (s.bits == bits && matches(s.stored - 1)) return s.stored - 1;
    }
  }

  /// Files `position` under `hash`. Call `reserve_one` first.
  void insert(std::size_t hash, std::uint32_t position) noexcept {
    slot* slots = data();
    const std::uint32_t bits = hash_bits(hash);
    for (std::size_t i = bits & mask();; i = (i + 1) & mask()) {
      ++probes_;
      slot& s = slots[i];
      if (s.stored == empty) {
        if (s.bits == free_bits) ++used_;  // a removed slot is already counted
        s = {position + 1, bits};
        ++live_;
        return;
      }
    }
  }

  /// Removes `position` filed under `hash`. False if it was not there.
  bool erase(std::size_t hash, std::uint32_t position) noexcept {
    slot* slots = data();
    const std::uint32_t bits = hash_bits(hash);
    for (std::size_t i = bits & mask();; i = (i + 1) & mask()) {
      ++probes_;
      slot& s = slots[i];
      if (s.stored == empty) {
        if (s.bits == free_bits) return false;
        continue;
      }
      if (s.stored == position + 1) {
        s = {empty, removed_bits};
        --live_;
        return true;
      }
    }
  }

  /// Forgets every position, keeping the table's memory.
  void clear() noexcept {
    if (used_ == 0) return;  // the common case: a scope that named no task
    slot* slots = data();
    for (std::size_t i = 0; i < capacity(); ++i) slots[i] = {};
    used_ = 0;
    live_ = 0;
  }

  std::size_t size() const noexcept { return live_; }
  /// Slots visited so far by every operation (for tests of the cost).
  std::size_t probes() const noexcept { return probes_; }

 private:
  struct slot {
    std::uint32_t stored = 0;  // position + 1; 0: empty or removed
    std::uint32_t bits = 0;
  };
  static constexpr std::uint32_t empty = 0;
  static constexpr std::uint32_t free_bits = 0;     // with stored == empty: never used
  static constexpr std::uint32_t removed_bits = 1;  // with stored == empty: a removed slot
  static constexpr std::size_t inline_slots = 16;

  static std::uint32_t hash_bits(std::size_t hash) noexcept {
    // Mix the high bits in: std::hash of an integer is the identity on libstdc++.
    const std::uint64_t h = static_cast<std::uint64_t>(hash) * 0x9e3779b97f4a7c15ULL;
    return static_cast<std::uint32_t>(h >> 32U);
  }
  slot* data() noexcept { return heap_.empty() ? inline_.data() : heap_.data(); }
  const slot* data() const noexcept { return heap_.empty() ? inline_.data() : heap_.data(); }
  std::size_t capacity() const noexcept { return heap_.empty() ? inline_slots : heap_.size(); }
  std::size_t mask() const noexcept { return capacity() - 1; }

  void rehash(std::size_t at_least) {
    std::size_t size = inline_slots;
    while (size < at_least) size *= 2;
    std::vector<slot> bigger(size);  // may throw: nothing changed yet
    const slot* old = data();
    const std::size_t old_capacity = capacity();
    const std::size_t old_mask = size - 1;
    std::size_t placed = 0;
    for (std::size_t k = 0; k < old_capacity; ++k) {
      const slot& s = old[k];
      if (s.stored == empty) continue;
      for (std::size_t i = s.bits & old_mask;; i = (i + 1) & old_mask) {
        if (bigger[i].stored == empty) {
          bigger[i] = s;
          ++placed;
          break;
        }
      }
    }
    heap_ = std::move(bigger);
    if (heap_.size() == inline_slots) {
      // Shrinking back to the inline size: keep it inline.
      std::copy(heap_.begin(), heap_.end(), inline_.begin());
      heap_ = {};
    }
    used_ = placed;
    live_ = placed;
  }

  std::array<slot, inline_slots> inline_{};
  std::vector<slot> heap_;  // empty: the table is inline_; else a power of two > inline_slots
  std::size_t used_ = 0;    // slots live or removed
  std::size_t live_ = 0;
  mutable std::size_t probes_ = 0;
};

}  // namespace crosstown::detail
