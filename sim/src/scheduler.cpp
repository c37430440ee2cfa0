#include <crosstown/sim/scheduler.hpp>

#include <algorithm>
#include <map>
#include <unordered_map>
#include <utility>

namespace crosstown::sim {

std::string_view to_string(strategy_kind k) noexcept {
  switch (k) {
    case strategy_kind::fifo: return "fifo";
    case strategy_kind::random: return "random";
    case strategy_kind::pct: return "pct";
    case strategy_kind::replay: return "replay";
  }
  return "?";
}

std::optional<strategy_kind> parse_strategy(std::string_view text) noexcept {
  for (auto k :
       {strategy_kind::fifo, strategy_kind::random, strategy_kind::pct, strategy_kind::replay}) {
    if (text == to_string(k)) return k;
  }
  return std::nullopt;
}

class scheduler::strategy {
 public:
  virtual ~strategy() = default;
  /// Index of the item to run next among the runnable items, given by their actors
  /// (non-empty, in the order the items became runnable).
  virtual std::uint32_t pick(const std::vector<actor_id>& items, std::uint64_t step) = 0;

 protected:
  strategy() = default;
  strategy(const strategy&) = default;
  strategy& operator=(const strategy&) = default;
};

namespace {

class fifo_strategy final : public scheduler::strategy {
 public:
  std::uint32_t pick(const std::vector<actor_id>&, std::uint64_t) override { return 0; }
};

class random_strategy final : public scheduler::strategy {
 public:
  explicit random_strategy(rng r) : rng_(r) {}
  // A uniformly chosen actor runs its oldest item: one actor's items (a connection's
  // completions, like a strand's) keep their order; actors interleave at random.
  std::uint32_t pick(const std::vector<actor_id>& items, std::uint64_t) override {
    firsts_.clear();
    seen_.clear();
    for (std::uint32_t i = 0; i < items.size(); ++i) {
      const actor_id a = items[i];
      if (std::find(seen_.begin(), seen_.end(), a) == seen_.end()) {
        seen_.push_back(a);
        firsts_.push_back(i);
      }
    }
    return firsts_[rng_.below(firsts_.size())];
  }

 private:
  rng rng_;
  std::vector<std::uint32_t> firsts_;
  std::vector<actor_id> seen_;
};

// PCT (Burckhardt et al., ASPLOS 2010): random distinct priorities per actor, d - 1 change
// points at random steps where the running actor drops to a low priority.
class pct_strategy final : public scheduler::strategy {
 public:
  pct_strategy(rng r, std::uint32_t depth, std::uint64_t steps) : rng_(r) {
    for (std::uint32_t i = 1; i < depth; ++i) {
      change_points_.emplace(1 + rng_.below(std::max<std::uint64_t>(steps, 1)), depth - i);
    }
    low_base_ = depth;
  }

  std::uint32_t pick(const std::vector<actor_id>& items, std::uint64_t step) override {
    std::uint32_t best = 0;
    std::uint64_t best_priority = 0;
    for (std::uint32_t i = 0; i < items.size(); ++i) {
      const std::uint64_t p = priority(items[i]);
      if (i == 0 || p > best_priority) {
        best = i;
        best_priority = p;
      }
    }
    if (auto cp = change_points_.find(step); cp != change_points_.end()) {
      priorities_[items[best]] = cp->second;  // below every initial priority
    }
    return best;
  }

 private:
  std::uint64_t priority(actor_id actor) {
    auto [it, fresh] = priorities_.try_emplace(actor, 0);
    if (fresh) it->second = low_base_ + 1 + (rng_.next() >> 8U);
    return it->second;
  }

  rng rng_;
  std::uint64_t low_base_ = 0;
  std::map<std::uint64_t, std::uint64_t> change_points_;  // step -> new low priority
  std::unordered_map<actor_id, std::uint64_t> priorities_;
};

class replay_strategy final : public scheduler::strategy {
 public:
  explicit replay_strategy(std::vector<std::uint32_t> schedule) : schedule_(std::move(schedule)) {}
  std::uint32_t pick(const std::vector<actor_id>& items, std::uint64_t step) override {
    if (next_ >= schedule_.size()) {
      throw replay_divergence("replay: the recorded schedule ended at step " +
                              std::to_string(step) + " but " + std::to_string(items.size()) +
                              " items are runnable");
    }
    const std::uint32_t choice = schedule_[next_++];
    if (choice >= items.size()) {
      throw replay_divergence("replay: step " + std::to_string(step) + " recorded choice " +
                              std::to_string(choice) + " but only " + std::to_string(items.size()) +
                              " items are runnable");
    }
    return choice;
  }

 private:
  std::vector<std::uint32_t> schedule_;
  std::size_t next_ = 0;
};

}  // namespace

scheduler::scheduler(virtual_time& time, strategy_options options, std::uint64_t seed, journal* log)
    : time_(time), log_(log) {
  // The strategy's draws are journaled through decisions, not as draws: stream 1.
  rng r(seed, 1);
  switch (options.kind) {
    case strategy_kind::fifo: strategy_ = std::make_unique<fifo_strategy>(); break;
    case strategy_kind::random: strategy_ = std::make_unique<random_strategy>(r); break;
    case strategy_kind::pct:
      strategy_ = std::make_unique<pct_strategy>(r, std::max<std::uint32_t>(options.pct_depth, 1),
                                                 options.pct_steps);
      break;
    case strategy_kind::replay:
      strategy_ = std::make_unique<replay_strategy>(std::move(options.schedule));
      break;
  }
}

scheduler::~scheduler() = default;

std::string item_name::str() const {
  if (pattern_ == nullptr) return text_ != nullptr ? *text_ : std::string();
  std::string out;
  std::size_t arg = 0;
  for (const char* p = pattern_; *p != '\0'; ++p) {
    if (p[0] == '{' && p[1] == '}' && arg < 3) {
      out += std::to_string(args_[arg++]);
      ++p;
    } else {
      out += *p;
    }
  }
  return out;
}

const std::string& scheduler::current() const {
  current_ = running_ != no_slot ? items_[running_].name.str() : std::string();
  return current_;
}

std::uint32_t scheduler::store(item_name&& name, actor_id actor, work&& fn) {
  std::uint32_t slot = 0;
  if (free_slots_.empty()) {
    slot = static_cast<std::uint32_t>(items_.size());
    items_.emplace_back();
  } else {
    slot = free_slots_.back();
    free_slots_.pop_back();
  }
  item& i = items_[slot];
  i.name = std::move(name);
  i.actor = actor;
  i.fn = std::move(fn);
  return slot;
}

void scheduler::make_runnable(std::uint32_t slot) {
  items_[slot].seq = next_seq_++;
  runnable_.push_back(slot);
  actors_.push_back(items_[slot].actor);
}

void scheduler::post(item_name name, actor_id actor, work fn) {
  make_runnable(store(std::move(name), actor, std::move(fn)));
}

void scheduler::post_at(time_point at, item_name name, actor_id actor, work fn) {
  const std::uint32_t slot = store(std::move(name), actor, std::move(fn));
  // The timer holds only the slot: a closure small enough for std::function's inline storage.
  time_.call_at(at, [this, slot] { make_runnable(slot); });
}

run_outcome scheduler::run(std::uint64_t step_cap, std::optional<time_point> until) {
  run_outcome out;
  std::unordered_map<std::string, std::uint64_t> recent;  // runs per name near the cap
  for (;;) {
    if (runnable_.empty()) {
      if (!time_.auto_advance()) break;
      const auto next = time_.next_deadline();
      if (!next) break;
      if (until && *next > *until) {
        out.time_limit = true;
        break;
      }
      time_.advance_to_next();
      continue;
    }
    if (out.steps >= step_cap) {
      out.capped = true;
      std::vector<std::pair<std::uint64_t, std::string>> named;
      for (const std::uint32_t slot : runnable_) {
        std::string name = items_[slot].name.str();
        const std::uint64_t count = recent[name];
        named.emplace_back(count, std::move(name));
      }
      std::stable_sort(named.begin(), named.end(),
                       [](const auto& a, const auto& b) { return a.first > b.first; });
      for (auto& [count, name] : named) out.live.push_back(std::move(name));
      break;
    }
    const std::uint32_t choice = strategy_->pick(actors_, steps_);
    decisions_.push_back(choice);
    if (log_ != nullptr) {
      log_->add(journal_kind::decision, "pick", choice, runnable_.size(), time_.now_ns());
    }
    const std::uint32_t slot = runnable_[choice];
    runnable_.erase(runnable_.begin() + choice);
    actors_.erase(actors_.begin() + choice);
    ++steps_;
    ++out.steps;
    if (step_cap - out.steps < 1000) ++recent[items_[slot].name.str()];
    // Out of the slot before running: the item may post others, which may reuse or grow the
    // storage. The slot (and its name, for current()) is freed once the item has run.
    work fn = std::move(items_[slot].fn);
    struct finish_guard {
      scheduler& s;
      std::uint32_t slot;
      ~finish_guard() {
        s.running_ = no_slot;
        s.items_[slot].name = item_name();
        s.free_slots_.push_back(slot);
      }
    } guard{*this, slot};
    running_ = slot;
    fn();
  }
  return out;
}

}  // namespace crosstown::sim
