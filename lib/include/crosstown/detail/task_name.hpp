// crosstown/detail/task_name.hpp - not API. The optional name of a pending task or a job.
//
// A task's name travels with it from registration to the worker (scope entry -> job -> batch
// -> worker), moved at every hop, and nearly every task has none. A std::string's move costs
// a library call even when empty; this type moves by copying its few bytes. Names of up to
// `inline_capacity` characters are stored inline (no allocation), longer ones on the heap.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace crosstown::detail {

class task_name {
 public:
  static constexpr std::size_t inline_capacity = 23;

  task_name() noexcept = default;
  explicit task_name(std::string_view text) : size_(static_cast<std::uint32_t>(text.size())) {
    if (text.size() > inline_capacity) {
      char* heap = new char[text.size()];
      std::memcpy(heap, text.data(), text.size());
      std::memcpy(bytes_, &heap, sizeof heap);
    } else if (!text.empty()) {
      std::memcpy(bytes_, text.data(), text.size());
    }
  }
  task_name(task_name&& other) noexcept : size_(other.size_) {
    std::memcpy(bytes_, other.bytes_, sizeof bytes_);
    other.size_ = 0;
  }
  task_name& operator=(task_name&& other) noexcept {
    if (this != &other) {
      release();
      size_ = other.size_;
      std::memcpy(bytes_, other.bytes_, sizeof bytes_);
      other.size_ = 0;
    }
    return *this;
  }
  task_name(const task_name&) = delete;
  task_name& operator=(const task_name&) = delete;
  ~task_name() { release(); }

  bool empty() const noexcept { return size_ == 0; }
  std::string_view view() const noexcept { return {data(), size_}; }

 private:
  const char* data() const noexcept {
    if (size_ <= inline_capacity) return bytes_;
    const char* heap = nullptr;
    std::memcpy(&heap, bytes_, sizeof heap);
    return heap;
  }
  void release() noexcept {
    if (size_ > inline_capacity) delete[] data();
    size_ = 0;
  }

  char bytes_[inline_capacity + 1] = {};  // the characters, or a pointer to them on the heap
  std::uint32_t size_ = 0;
};

}  // namespace crosstown::detail
