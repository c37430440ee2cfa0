// crosstown/detail/released_task.hpp - not API. A job judged allowed and the executor it goes to.
#pragma once

#include <crosstown/executor.hpp>
#include <crosstown/job.hpp>

#include <vector>

namespace crosstown {
class runtime;
}

namespace crosstown::detail {

struct released_task {
  job work;
  executor* target;  // never null: defaults are resolved at release
};

// Hands `tasks` (in registration order) to their executors: one batch per executor, in order
// of first appearance, the same-thread batch last. Counts them as queued first. Never throws;
// a batch whose executor throws is dropped and counted.
void hand_off(runtime& rt, std::vector<released_task>&& tasks) noexcept;

}  // namespace crosstown::detail
