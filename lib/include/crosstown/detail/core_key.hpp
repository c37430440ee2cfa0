// crosstown/detail/core_key.hpp - not API. A passkey for the members crosstown's own types
// call on each other.
//
// A public member that takes a `core_key` can only be called by the classes below: nobody
// else can make one. It is an empty class passed by value, so it costs nothing at run time
// (the x86-64 and AArch64 ABIs pass no register for it, and inlined calls drop it).
#pragma once

namespace crosstown {
class response_scope;
class connection_scope;
class runtime;
}  // namespace crosstown

namespace crosstown::detail {

struct released_tasks;
class io_runtime;
void hand_off(runtime& rt, released_tasks&& tasks) noexcept;

class core_key {
  core_key() = default;
  friend class crosstown::response_scope;
  friend class crosstown::connection_scope;
  friend void hand_off(runtime& rt, released_tasks&& tasks) noexcept;
  friend class io_runtime;
};

}  // namespace crosstown::detail
