// Replacements for the global operator new/delete that count; see alloc_counter.hpp.
#include "alloc_counter.hpp"

#include <malloc.h>

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

namespace crosstown_bench {
namespace {

// constinit: usable from operator new before any dynamic initialisation.
constinit thread_local alloc_stats this_thread{};
constinit std::atomic<bool> shared_on{false};
constinit std::atomic<std::uint64_t> shared_allocations{0};
constinit std::atomic<std::uint64_t> shared_deallocations{0};
constinit std::atomic<std::uint64_t> shared_requested{0};
constinit std::atomic<std::int64_t> shared_live{0};

void* allocate(std::size_t size, std::size_t alignment) noexcept {
  if (size == 0) size = 1;
  void* p = nullptr;
  if (alignment <= alignof(std::max_align_t)) {
    p = std::malloc(size);
  } else {
    p = std::aligned_alloc(alignment, (size + alignment - 1) / alignment * alignment);
  }
  if (p == nullptr) return nullptr;
  const auto usable = static_cast<std::int64_t>(malloc_usable_size(p));
  ++this_thread.allocations;
  this_thread.requested_bytes += size;
  this_thread.live_bytes += usable;
  if (shared_on.load(std::memory_order_relaxed)) {
    shared_allocations.fetch_add(1, std::memory_order_relaxed);
    shared_requested.fetch_add(size, std::memory_order_relaxed);
    shared_live.fetch_add(usable, std::memory_order_relaxed);
  }
  return p;
}

void* allocate_or_throw(std::size_t size, std::size_t alignment) {
  void* p = allocate(size, alignment);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

void deallocate(void* p) noexcept {
  if (p == nullptr) return;
  const auto usable = static_cast<std::int64_t>(malloc_usable_size(p));
  ++this_thread.deallocations;
  this_thread.live_bytes -= usable;
  if (shared_on.load(std::memory_order_relaxed)) {
    shared_deallocations.fetch_add(1, std::memory_order_relaxed);
    shared_live.fetch_sub(usable, std::memory_order_relaxed);
  }
  std::free(p);
}

}  // namespace

alloc_stats thread_allocs() noexcept { return this_thread; }

alloc_stats process_allocs() noexcept {
  return {shared_allocations.load(std::memory_order_relaxed),
          shared_deallocations.load(std::memory_order_relaxed),
          shared_requested.load(std::memory_order_relaxed),
          shared_live.load(std::memory_order_relaxed)};
}

void process_wide(bool on) noexcept { shared_on.store(on, std::memory_order_seq_cst); }

}  // namespace crosstown_bench

using crosstown_bench::allocate_or_throw;
using crosstown_bench::deallocate;
constexpr std::size_t default_alignment = __STDCPP_DEFAULT_NEW_ALIGNMENT__;

void* operator new(std::size_t n) { return allocate_or_throw(n, default_alignment); }
void* operator new[](std::size_t n) { return allocate_or_throw(n, default_alignment); }
void* operator new(std::size_t n, std::align_val_t a) {
  return allocate_or_throw(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return allocate_or_throw(n, static_cast<std::size_t>(a));
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  return crosstown_bench::allocate(n, default_alignment);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return crosstown_bench::allocate(n, default_alignment);
}
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return crosstown_bench::allocate(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return crosstown_bench::allocate(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { deallocate(p); }
void operator delete[](void* p) noexcept { deallocate(p); }
void operator delete(void* p, std::size_t) noexcept { deallocate(p); }
void operator delete[](void* p, std::size_t) noexcept { deallocate(p); }
void operator delete(void* p, std::align_val_t) noexcept { deallocate(p); }
void operator delete[](void* p, std::align_val_t) noexcept { deallocate(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { deallocate(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { deallocate(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { deallocate(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { deallocate(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { deallocate(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { deallocate(p); }
