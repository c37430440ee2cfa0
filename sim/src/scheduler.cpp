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
  for (auto k : {strategy_kind::fifo, strategy_kind::random, strategy_kind::pct,
                 strategy_kind::replay}) {
    if (text == to_string(k)) return k;
  }
  return std::nullopt;
}

class scheduler::strategy {
 public:
  virtual ~strategy() = default;
  /// Index of the item to run next among `items` (non-empty, in posting order).
  virtual std::uint32_t pick(const std::vector<item>& items, std::uint64_t step) = 0;

 protected:
  strategy() = default;
  strategy(const strategy&) = default;
  strategy& operator=(const strategy&) = default;
};

namespace {

using item = scheduler::item;

class fifo_strategy final : public scheduler::strategy {
 public:
  std::uint32_t pick(const std::vector<item>&, std::uint64_t) override { return 0; }
};

class random_strategy final : public scheduler::strategy {
 public:
  explicit random_strategy(rng r) : rng_(r) {}
  // A uniformly chosen actor runs its oldest item: one actor's items (a connection's
  // completions, like a strand's) keep their order; actors interleave at random.
  std::uint32_t pick(const std::vector<item>& items, std::uint64_t) override {
    firsts_.clear();
    for (std::uint32_t i = 0; i < items.size(); ++i) {
      const actor_id a = items[i].actor;
      if (std::none_of(firsts_.begin(), firsts_.end(),
                       [&](std::uint32_t f) { return items[f].actor == a; })) {
        firsts_.push_back(i);
      }
    }
    return firsts_[rng_.below(firsts_.size())];
  }

 private:
  rng rng_;
  std::vector<std::uint32_t> firsts_;
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

  std::uint32_t pick(const std::vector<item>& items, std::uint64_t step) override {
    std::uint32_t best = 0;
    std::uint64_t best_priority = 0;
    for (std::uint32_t i = 0; i < items.size(); ++i) {
      const std::uint64_t p = priority(items[i].actor);
      if (i == 0 || p > best_priority) {
        best = i;
        best_priority = p;
      }
    }
    if (auto cp = change_points_.find(step); cp != change_points_.end()) {
      priorities_[items[best].actor] = cp->second;  // below every initial priority
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
  std::uint32_t pick(const std::vector<item>& items, std::uint64_t step) override {
    if (next_ >= schedule_.size()) {
      throw replay_divergence("replay: the recorded schedule ended at step " +
                              std::to_string(step) + " but " + std::to_string(items.size()) +
                              " items are runnable");
    }
    const std::uint32_t choice = schedule_[next_++];
    if (choice >= items.size()) {
      throw replay_divergence("replay: step " + std::to_string(step) + " recorded choice " +
                              std::to_string(choice) + " but only " +
                              std::to_string(items.size()) + " items are runnable");
    }
    return choice;
  }

 private:
  std::vector<std::uint32_t> schedule_;
  std::size_t next_ = 0;
};

}  // namespace

scheduler::scheduler(virtual_time& time, strategy_options options, std::uint64_t seed,
                     journal* log)
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

void scheduler::post(std::string name, actor_id actor, std::function<void()> fn) {
  runnable_.push_back({std::move(name), actor, next_seq_++, std::move(fn)});
}

void scheduler::post_at(time_point at, std::string name, actor_id actor,
                        std::function<void()> fn) {
  time_.call_at(at, [this, name = std::move(name), actor, fn = std::move(fn)]() mutable {
    post(std::move(name), actor, std::move(fn));
  });
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
      for (const item& i : runnable_) named.emplace_back(recent[i.name], i.name);
      std::stable_sort(named.begin(), named.end(),
                       [](const auto& a, const auto& b) { return a.first > b.first; });
      for (auto& [count, name] : named) out.live.push_back(std::move(name));
      break;
    }
    const std::uint32_t choice = strategy_->pick(runnable_, steps_);
    decisions_.push_back(choice);
    if (log_ != nullptr) {
      log_->add(journal_kind::decision, "pick", choice, runnable_.size(), time_.now_ns());
    }
    item chosen = std::move(runnable_[choice]);
    runnable_.erase(runnable_.begin() + choice);
    ++steps_;
    ++out.steps;
    if (step_cap - out.steps < 1000) ++recent[chosen.name];
    current_ = chosen.name;
    chosen.fn();
    current_.clear();
  }
  return out;
}

}  // namespace crosstown::sim
