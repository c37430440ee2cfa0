// crosstown/sim/scheduler.hpp - the seeded scheduler: which runnable work item goes next.
//
// Everything that happens in a simulation is a work item: a handler step, a transport event,
// a simulated pool worker picking up a job. An item is runnable now (`post`) or at a virtual
// time (`post_at`, a timer on the injected `virtual_time`). `run` repeatedly asks the strategy
// to pick one runnable item and runs it; running takes no virtual time. When nothing is
// runnable it auto-advances the clock to the next timer (unless auto-advance is off) and stops
// when nothing is left, at a virtual-time limit, or at the step cap - which it reports with
// the names of the items still live, so a task that never finishes is named.
//
// Items of one actor (a connection, a worker) run in posting order, as completions on a
// strand do; strategies choose which actor goes next. That keeps each connection's timeline a
// function of its own events, which is what makes the I7 comparison meaningful.
// Strategies: `fifo` (oldest first), `random` (a uniformly chosen actor), `pct` (probabilistic
// concurrency testing: every actor - a connection, a worker - gets a random priority, the
// highest-priority actor runs; at `depth - 1` random steps the running actor's priority drops
// below all others) and `replay` (the decisions of a recorded schedule, in order). Every
// decision is journaled and recorded, so any run's schedule can be replayed exactly.
//
// Not thread-safe.
#pragma once

#include <crosstown/sim/journal.hpp>
#include <crosstown/sim/virtual_clock.hpp>

#include <crosstown/task.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace crosstown::sim {

enum class strategy_kind : std::uint8_t { fifo, random, pct, replay };

std::string_view to_string(strategy_kind k) noexcept;
/// Parses "fifo", "random", "pct" or "replay".
std::optional<strategy_kind> parse_strategy(std::string_view text) noexcept;

struct strategy_options {
  strategy_kind kind = strategy_kind::random;
  /// PCT depth d: d - 1 priority change points.
  std::uint32_t pct_depth = 3;
  /// PCT: the number of steps over which change points are spread.
  std::uint64_t pct_steps = 2000;
  /// Replay: the decisions to repeat (indices into the runnable list).
  std::vector<std::uint32_t> schedule{};
};

/// Thrown by the replay strategy when the recorded schedule does not fit the run.
class replay_divergence : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Identifies who a work item belongs to (for PCT): a connection, a worker, a test thread.
using actor_id = std::uint32_t;

/// The name of a work item, for step-cap reports and `current()`. Either owned text, or -
/// cheaper, since names are only read when something goes wrong - a string literal with up
/// to three "{}" placeholders and the numbers for them, rendered on demand.
class item_name {
 public:
  item_name() = default;
  item_name(std::string text)  // NOLINT: implicit by design
      : text_(std::make_unique<std::string>(std::move(text))) {}
  item_name(const char* text)  // NOLINT: implicit by design
      : text_(std::make_unique<std::string>(text)) {}
  /// `pattern` must outlive the item (a string literal).
  static item_name lazy(const char* pattern, std::uint64_t a = 0, std::uint64_t b = 0,
                        std::uint64_t c = 0) noexcept {
    item_name n;
    n.pattern_ = pattern;
    n.args_[0] = a;
    n.args_[1] = b;
    n.args_[2] = c;
    return n;
  }
  std::string str() const;

 private:
  const char* pattern_ = nullptr;
  std::uint64_t args_[3]{};
  std::unique_ptr<std::string> text_;  // owned text (rare: the lazy form is the common one)
};

/// A work item's callable: the core's own move-only `void()` with 48 bytes of inline storage,
/// so posting a work item usually allocates nothing.
using work = crosstown::task;

struct run_outcome {
  std::uint64_t steps = 0;
  bool capped = false;      ///< stopped by the step cap
  bool time_limit = false;  ///< stopped by the virtual-time limit
  /// With `capped`: the names of the items still runnable, most-run first.
  std::vector<std::string> live;
};

class scheduler {
 public:
  scheduler(virtual_time& time, strategy_options options, std::uint64_t seed,
            journal* log = nullptr);
  ~scheduler();
  scheduler(const scheduler&) = delete;
  scheduler& operator=(const scheduler&) = delete;

  virtual_time& time() noexcept { return time_; }

  /// Makes an item runnable now.
  void post(item_name name, actor_id actor, work fn);
  /// Makes an item runnable when virtual time reaches `at`.
  void post_at(time_point at, item_name name, actor_id actor, work fn);
  void post_after(duration d, item_name name, actor_id actor, work fn) {
    post_at(time_.now() + d, std::move(name), actor, std::move(fn));
  }

  /// Runs until idle, `until` (virtual time) or `step_cap` more steps.
  run_outcome run(std::uint64_t step_cap, std::optional<time_point> until = std::nullopt);

  std::size_t runnable() const noexcept { return runnable_.size(); }
  /// Every decision so far: the index picked among the runnable items.
  const std::vector<std::uint32_t>& decisions() const noexcept { return decisions_; }
  std::uint64_t steps() const noexcept { return steps_; }
  /// The item running now, if any ("" outside `run`).
  const std::string& current() const;

  struct item {
    item_name name;
    actor_id actor = 0;
    std::uint64_t seq = 0;
    work fn;
  };
  class strategy;

 private:
  std::uint32_t store(item_name&& name, actor_id actor, work&& fn);
  void make_runnable(std::uint32_t slot);

  virtual_time& time_;
  journal* log_;
  std::unique_ptr<strategy> strategy_;
  // Every posted item, runnable or waiting for its time, lives in a slot of `items_` until it
  // has run; the runnable list and the timers hold slot numbers, so an item is never moved
  // between being posted and being run.
  std::vector<item> items_;
  std::vector<std::uint32_t> free_slots_;
  std::vector<std::uint32_t> runnable_;  // slots, in the order they became runnable
  std::vector<actor_id> actors_;         // their actors, what the strategies choose among
  std::vector<std::uint32_t> decisions_;
  std::uint64_t next_seq_ = 0;
  std::uint64_t steps_ = 0;
  static constexpr std::uint32_t no_slot = ~std::uint32_t{0};
  std::uint32_t running_ = no_slot;
  mutable std::string current_;
};

}  // namespace crosstown::sim
