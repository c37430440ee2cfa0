// crosstown/task.hpp - a move-only, type-erased `void()` callable with inline storage.
//
// `task` holds the work an application defers. A callable whose size is at most
// `task::inline_capacity` (48) bytes, whose alignment is at most that of `std::max_align_t`
// and which is nothrow-move-constructible is stored inside the task object itself, so
// deferring it allocates nothing; anything larger is stored on the heap.
//
// A task is move-only, like the closures it holds (they may own sockets, promises, ...).
// Invoking an empty task is a precondition violation. A task is not thread-safe: one thread
// at a time may use a given task object.
#pragma once

#include <concepts>
#include <cstddef>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

namespace crosstown {

namespace detail {
struct task_plan;
// Only crosstown's own carrier of a task plan (detail/task_plan.hpp) has this member.
template <class F>
concept carries_plan = requires(const F& f) {
  { f.crosstown_plan() }
  noexcept->std::same_as<task_plan*>;
};
// A callable whose result looks like boost::asio::awaitable (its value and executor types).
template <class F>
concept returns_coroutine = requires {
  typename std::invoke_result_t<F&>::value_type;
  typename std::invoke_result_t<F&>::executor_type;
};
}  // namespace detail

class task {
 public:
  /// Bytes of inline storage; closures up to this size do not allocate.
  static constexpr std::size_t inline_capacity = 48;

  /// True when a callable of type `F` is stored inline (no heap allocation).
  template <class F>
  static constexpr bool stored_inline =
      sizeof(F) <= inline_capacity &&
      alignof(F) <= alignof(std::max_align_t) && std::is_nothrow_move_constructible_v<F>;

  /// An empty task.
  task() noexcept = default;

  /// Wraps any callable invocable as `void()` on an lvalue of its decayed type.
  template <class F>
  requires(!std::is_same_v<std::remove_cvref_t<F>, task> && std::is_invocable_v<std::decay_t<F>&> &&
           std::is_constructible_v<std::decay_t<F>, F>)
      task(F&& fn) {  // NOLINT(google-explicit-constructor): a closure *is* a task
    using stored = std::decay_t<F>;
    static_assert(!detail::returns_coroutine<stored>,
                  "crosstown::task: this callable returns a coroutine (boost::asio::awaitable) "
                  "that a task would discard; defer it with response_scope::defer");
    if constexpr (stored_inline<stored>) {
      ::new (static_cast<void*>(storage_)) stored(std::forward<F>(fn));
      ops_ = &inline_ops<stored>;
    } else {
      ::new (static_cast<void*>(storage_)) stored*(new stored(std::forward<F>(fn)));
      ops_ = &heap_ops<stored>;
    }
  }

  task(task&& other) noexcept { take(other); }

  task& operator=(task&& other) noexcept {
    if (this != &other) {
      reset();
      take(other);
    }
    return *this;
  }

  task(const task&) = delete;
  task& operator=(const task&) = delete;

  ~task() { reset(); }

  /// True when the task holds a callable.
  explicit operator bool() const noexcept { return ops_ != nullptr; }

  /// Runs the callable. Exceptions propagate to the caller. Precondition: `*this` is not empty.
  void operator()() { ops_->invoke(storage_); }

  /// The held callable if it is of type `F` (exactly), else null - for an executor that reads
  /// what a task carries before running it (the Redis publisher reads a durable task's payload).
  template <class F>
  F* target() noexcept {
    if (ops_ == &inline_ops<F>) return std::launder(reinterpret_cast<F*>(storage_));
    if (ops_ == &heap_ops<F>) return *std::launder(reinterpret_cast<F**>(storage_));
    return nullptr;
  }

  /// Internal: the plan of a task deferred as an awaitable or with a lane or timeout
  /// (detail/task_plan.hpp); null for every other callable.
  detail::task_plan* plan() const noexcept {
    return ops_ != nullptr && ops_->plan != nullptr ? ops_->plan(storage_) : nullptr;
  }

  /// Destroys the held callable, leaving the task empty.
  void reset() noexcept {
    if (ops_ != nullptr) {
      if (ops_->destroy != nullptr) ops_->destroy(storage_);
      ops_ = nullptr;
    }
  }

 private:
  using plan_fn = detail::task_plan* (*)(const void* self) noexcept;
  struct operations {
    void (*invoke)(void* self);
    // Move-constructs into dst and destroys src. (A memcpy of the whole buffer for trivially
    // copyable closures measured no better: 408 vs 396 instructions per defer of an 8-byte
    // closure, 412 vs 409 for 48 bytes, under callgrind; so every type moves the same way.)
    void (*move)(void* dst, void* src) noexcept;
    void (*destroy)(void* self) noexcept;  // null: nothing to destroy
    plan_fn plan;                          // null: not a plan carrier
  };

  template <class F>
  static constexpr plan_fn plan_of() noexcept {
    if constexpr (detail::carries_plan<F>) {
      return
          [](const void* self) noexcept { return static_cast<const F*>(self)->crosstown_plan(); };
    } else {
      return nullptr;
    }
  }

  template <class F>
  static constexpr operations inline_ops{
      [](void* self) { (*static_cast<F*>(self))(); },
      +[](void* dst, void* src) noexcept {
        ::new (dst) F(std::move(*static_cast<F*>(src)));
        static_cast<F*>(src)->~F();
      },
      std::is_trivially_destructible_v<F>
          ? nullptr
          : +[](void* self) noexcept { static_cast<F*>(self)->~F(); },
      plan_of<F>(),
  };

  template <class F>
  static constexpr operations heap_ops{
      [](void* self) { (**static_cast<F**>(self))(); },
      +[](void* dst, void* src) noexcept { ::new (dst) F*(*static_cast<F**>(src)); },
      [](void* self) noexcept { delete *static_cast<F**>(self); },
      nullptr,
  };

  void take(task& other) noexcept {
    if (other.ops_ != nullptr) {
      other.ops_->move(storage_, other.storage_);
      ops_ = std::exchange(other.ops_, nullptr);
    }
  }

  alignas(std::max_align_t) std::byte storage_[inline_capacity];
  const operations* ops_ = nullptr;
};

}  // namespace crosstown
