#include <crosstown/sim/asio.hpp>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace crosstown::sim {

namespace {

// Maps an io_context to the io_actor stepping it: a service of the context itself, so any
// executor of it (or of a strand on it) leads back to the actor.
class io_actor_service final : public net::execution_context::service {
 public:
  using key_type = io_actor_service;
  static inline net::execution_context::id id;
  explicit io_actor_service(net::execution_context& ctx) : service(ctx) {}
  io_actor* owner = nullptr;

 private:
  void shutdown() override {}
};

thread_local io_actor* running_actor = nullptr;
thread_local detail::spend_hook worker_hook = nullptr;
thread_local void* worker_self = nullptr;

template <class Handler, class... Args>
void post_completion(io_actor* home, Handler&& h, Args&&... args) {
  if (home == nullptr || home->closing()) return;  // destroyed with the context
  // Run by the home context; one thread runs everything, so a strand the handler may be
  // bound to has nothing to serialize.
  net::post(home->get_executor(),
            [h = std::forward<Handler>(h), ... a = std::forward<Args>(args)]() mutable {
              std::move(h)(std::move(a)...);
            });
  home->kick();
}

}  // namespace

// --- io_actor ---

io_actor::io_actor(scheduler& sched, actor_id actor, std::string label)
    : sched_(sched), actor_(actor), label_(std::move(label)) {
  net::use_service<io_actor_service>(ioc_).owner = this;
}

io_actor::~io_actor() {
  closing_ = true;
  // The context's handlers (and the sessions they own) are destroyed with it, next.
}

io_actor* io_actor::of(net::execution_context& ctx) noexcept {
  if (!net::has_service<io_actor_service>(ctx)) return nullptr;
  return net::use_service<io_actor_service>(ctx).owner;
}

io_actor* io_actor::of(const net::any_io_executor& ex) noexcept {
  if (!ex) return nullptr;
  try {
    return of(net::query(ex, net::execution::context));
  } catch (...) {
    return nullptr;
  }
}

io_actor* io_actor::running() noexcept { return running_actor; }

void io_actor::kick() {
  if (posted_ || closing_) return;
  posted_ = true;
  if (busy_until_ > sched_.time().now()) {
    sched_.post_at(busy_until_, item_name::lazy("io {}: poll", actor_), actor_, [this] { step(); });
  } else {
    sched_.post(item_name::lazy("io {}: poll", actor_), actor_, [this] { step(); });
  }
}

void io_actor::spend(duration d) {
  const time_point now = sched_.time().now();
  busy_until_ = std::max(busy_until_, now) + d;
}

void io_actor::step() {
  posted_ = false;
  if (closing_) return;
  if (busy_until_ > sched_.time().now()) {
    kick();  // still busy (spend): poll when it is over
    return;
  }
  ++steps_;
  io_actor* const previous = std::exchange(running_actor, this);
  if (ioc_.stopped()) ioc_.restart();
  std::size_t ran = 0;
  try {
    ran = ioc_.poll_one();
  } catch (const std::exception& e) {
    ran = 1;
    if (on_exception) on_exception(e.what());
  } catch (...) {
    ran = 1;
    if (on_exception) on_exception("a non-standard exception");
  }
  running_actor = previous;
  if (on_step) on_step();
  if (ran > 0) kick();
}

void spend(duration d) {
  if (running_actor != nullptr) {
    running_actor->spend(d);
  } else if (worker_hook != nullptr) {
    worker_hook(worker_self, d);
  }
}

void detail::set_worker_spend(spend_hook hook, void* self) noexcept {
  worker_hook = hook;
  worker_self = self;
}

// --- sim_link ---

using io_handler = net::any_completion_handler<void(error_code, std::size_t)>;

class sim_link {
 public:
  sim_link(sim_network& network, std::uint32_t id, link_options link, link_faults faults,
           io_actor* client_home)
      : net_(network),
        id_(id),
        link_(link),
        faults_(faults),
        ends_{end(network.seed_, 201 + 4 * id, network.log_),
              end(network.seed_, 200 + 4 * id, network.log_)} {
    if (link_.max_chunk == 0) link_.max_chunk = 1;
    if (link_.window == 0) link_.window = 1;
    ends_[0].home = client_home;
    ends_[0].actor = client_home->actor();
    ends_[1].actor = network.first_actor_ + id;
    for (auto& e : ends_) e.draws.set_clock(&now_ns_);
  }

  std::uint32_t id() const noexcept { return id_; }
  void set_server_home(io_actor* home) noexcept { ends_[1].home = home; }
  io_actor* home(int side) const noexcept { return ends_[side].home; }
  bool open(int side) const noexcept { return ends_[side].open && !reset_; }

  // The network's shutdown: destroys the pending operations without completing them, as an
  // io_context's shutdown destroys a socket's. Their handlers may own the sessions that own
  // this link's streams (a write blocked by a stalled client, when a run ends), and hold work
  // on their contexts: they must go while those contexts still exist.
  void drop_pending() noexcept {
    std::vector<pending> dropped;
    for (end& e : ends_) {
      for (std::optional<pending>* op : {&e.read, &e.write}) {
        if (*op) dropped.push_back(std::move(**op));
        op->reset();
      }
    }
    // `dropped` is destroyed here: a session it owned closes its stream, which finds nothing
    // pending any more.
  }

  void start_read(int s, std::vector<net::mutable_buffer> bufs, io_handler h) {
    end& e = ends_[s];
    if (!e.open) return post_completion(e.home, std::move(h), net::error::bad_descriptor, 0);
    if (reset_) return post_completion(e.home, std::move(h), net::error::connection_reset, 0);
    if (e.read) return post_completion(e.home, std::move(h), net::error::in_progress, 0);
    e.read.emplace(pending{std::move(h), {}, std::move(bufs), 0});
    std::size_t room = 0;
    for (auto& b : e.read->in) room += b.size();
    if (room == 0) return complete(s, false, {}, 0);
    try_read(s);
  }

  void start_write(int s, std::vector<net::const_buffer> bufs, io_handler h) {
    end& e = ends_[s];
    if (!e.open) return post_completion(e.home, std::move(h), net::error::bad_descriptor, 0);
    if (reset_ || ends_[1 - s].peer_gone_sent)
      return post_completion(e.home, std::move(h), net::error::connection_reset, 0);
    if (e.shut_send) return post_completion(e.home, std::move(h), net::error::broken_pipe, 0);
    if (e.write) return post_completion(e.home, std::move(h), net::error::in_progress, 0);
    std::size_t total = 0;
    for (auto& b : bufs) total += b.size();
    e.write.emplace(pending{std::move(h), std::move(bufs), {}, total});
    if (total == 0) return complete(s, true, {}, 0);
    try_write(s);
  }

  void shutdown_send(int s) {
    end& e = ends_[s];
    if (!e.open || e.shut_send || reset_) return;
    e.shut_send = true;
    note("fin", s, accepted_[s]);
    const int r = 1 - s;
    net_.sched_.post_after(link_.latency, item_name::lazy("conn {}: fin arrives", id_),
                           ends_[r].actor, [this, r] {
                             ends_[r].fin = true;
                             try_read(r);
                           });
  }

  void close(int s) noexcept {
    end& e = ends_[s];
    if (!e.open) return;
    e.open = false;
    if (net_.down_) {
      e.read.reset();
      e.write.reset();
      return;
    }
    try {
      note("close", s, accepted_[s]);
      if (net_.observer_ != nullptr) net_.observer_->on_closed(id_, s == 1);
      abort(s, net::error::operation_aborted);
      if (reset_) return;
      // The peer reads what is in flight, then the end of the stream; its writes fail.
      const int r = 1 - s;
      e.peer_gone_sent = true;
      net_.sched_.post_after(link_.latency, item_name::lazy("conn {}: close arrives", id_),
                             ends_[r].actor, [this, r] {
                               ends_[r].fin = true;
                               if (ends_[r].write)
                                 complete(r, true, net::error::connection_reset, 0);
                               try_read(r);
                             });
    } catch (...) {
      // Posting can only fail for lack of memory; the end is closed either way.
    }
  }

  void cancel(int s) { abort(s, net::error::operation_aborted); }

  void reset() {
    if (reset_) return;
    reset_ = true;
    note("reset", accepted_[1], 0);
    if (net_.observer_ != nullptr) net_.observer_->on_reset(id_, accepted_[1]);
    for (int s = 0; s < 2; ++s) {
      ends_[s].inbound.clear();
      if (ends_[s].open) abort(s, net::error::connection_reset);
    }
  }

  void heal() {
    faults_.reset_at_byte.reset();
    ++stall_epoch_;
    stall_used_ = true;
    set_stalled(false);
  }

 private:
  struct pending {
    io_handler h;
    std::vector<net::const_buffer> out;
    std::vector<net::mutable_buffer> in;
    std::size_t total = 0;
  };
  struct end {
    end(std::uint64_t seed, std::uint64_t stream, journal* log) : draws(seed, stream, log) {}
    io_actor* home = nullptr;
    actor_id actor = 0;
    rng draws;
    bool open = true;
    bool shut_send = false;
    bool fin = false;             // the peer's FIN (or close) arrived
    bool peer_gone_sent = false;  // this end closed: the peer's writes fail
    bool chunk_in_flight = false;
    bool read_scheduled = false;
    std::optional<pending> read;
    std::optional<pending> write;
    std::string inbound;       // arrived at this end, not yet read
    std::uint64_t unread = 0;  // accepted toward this end, not yet read: the window
    std::uint64_t read_total = 0;
  };

  void note(const char* what, std::uint64_t a, std::uint64_t b) {
    if (net_.log_ != nullptr)
      net_.log_->add(journal_kind::transport, what, id_ * 0x100000000ULL + a, b,
                     net_.sched_.time().now_ns());
  }

  void abort(int s, error_code ec) {
    if (ends_[s].read) complete(s, false, ec, 0);
    if (ends_[s].write) complete(s, true, ec, 0);
  }

  void complete(int s, bool write, error_code ec, std::size_t n) {
    end& e = ends_[s];
    std::optional<pending>& op = write ? e.write : e.read;
    if (!op) return;
    io_handler h = std::move(op->h);
    op.reset();
    if (e.home == nullptr || e.home->closing()) return;
    link_observer* obs = s == 1 ? net_.observer_ : nullptr;
    const std::uint32_t id = id_;
    net::post(e.home->get_executor(), [h = std::move(h), ec, n, obs, id, write]() mutable {
      if (obs != nullptr) obs->on_server_completion(id, write, ec, n);
      std::move(h)(ec, n);
    });
    e.home->kick();
  }

  void try_write(int s) {
    end& e = ends_[s];
    const int r = 1 - s;
    if (reset_ || !e.write || e.chunk_in_flight) return;
    const std::uint64_t free = link_.window > ends_[r].unread ? link_.window - ends_[r].unread : 0;
    if (free == 0) {
      note("blocked", s, ends_[r].unread);
      return;  // the peer's next read makes room
    }
    std::uint64_t chunk = 1 + e.draws.below(link_.max_chunk);
    chunk = std::min<std::uint64_t>({chunk, e.write->total, free});
    bool then_reset = false;
    if (s == 1 && faults_.reset_at_byte && accepted_[1] + chunk > *faults_.reset_at_byte) {
      chunk = *faults_.reset_at_byte - std::min(accepted_[1], *faults_.reset_at_byte);
      then_reset = true;
    }
    if (chunk == 0) {
      reset();
      return;
    }
    std::string data(static_cast<std::size_t>(chunk), '\0');
    net::buffer_copy(net::buffer(data), e.write->out);
    e.chunk_in_flight = true;
    net_.sched_.post_after(duration(static_cast<std::int64_t>(chunk * link_.ns_per_byte)),
                           item_name::lazy("conn {}: accept {} bytes", id_, chunk), e.actor,
                           [this, s, d = std::make_shared<std::string>(std::move(data)),
                            then_reset] { on_chunk(s, std::move(*d), then_reset); });
  }

  void on_chunk(int s, std::string data, bool then_reset) {
    end& e = ends_[s];
    e.chunk_in_flight = false;
    if (reset_ || !e.open || !e.write) return;  // failed or aborted meanwhile: not accepted
    const int r = 1 - s;
    const std::uint64_t offset = accepted_[s];
    const std::size_t n = data.size();
    accepted_[s] += n;
    ends_[r].unread += n;
    now_ns_ = net_.sched_.time().now_ns();
    note("accepted", s, accepted_[s]);
    if (s == 1 && net_.observer_ != nullptr)
      net_.observer_->on_server_bytes(id_, offset, data.data(), n);
    net_.sched_.post_after(
        link_.latency, item_name::lazy("conn {}: bytes arrive", id_), ends_[r].actor,
        [this, r, d = std::make_shared<std::string>(std::move(data))] { on_arrive(r, *d); });
    complete(s, true, {}, n);
    if (then_reset) reset();
  }

  void on_arrive(int r, const std::string& data) {
    if (reset_) return;
    end& e = ends_[r];
    if (!e.open) {
      // Bytes for a closed end: the writer's connection is reset, as TCP does.
      ends_[1 - r].peer_gone_sent = true;
      e.unread -= std::min<std::uint64_t>(e.unread, data.size());
      return;
    }
    e.inbound += data;
    try_read(r);
  }

  void try_read(int r) {
    end& e = ends_[r];
    if (!e.read || e.read_scheduled || reset_) return;
    if (r == 0 && stalled_) return;
    if (e.inbound.empty()) {
      if (e.fin) complete(r, false, net::error::eof, 0);
      return;
    }
    e.read_scheduled = true;
    net_.sched_.post_after(link_.read_delay, item_name::lazy("conn {}: read", id_), e.actor,
                           [this, r] { do_read(r); });
  }

  void do_read(int r) {
    end& e = ends_[r];
    e.read_scheduled = false;
    if (!e.read || reset_ || !e.open) return;
    if (r == 0 && stalled_) return;
    std::size_t room = 0;
    for (auto& b : e.read->in) room += b.size();
    std::uint64_t n = 1 + e.draws.below(link_.max_chunk);
    n = std::min<std::uint64_t>({n, room, e.inbound.size()});
    if (r == 0 && faults_.stall_at_byte && !stall_used_ &&
        e.read_total + n >= *faults_.stall_at_byte) {
      n = *faults_.stall_at_byte - std::min(e.read_total, *faults_.stall_at_byte);
      stall_used_ = true;
      set_stalled(true);
      if (faults_.stall_for > duration::zero()) {
        const std::uint64_t epoch = stall_epoch_;
        net_.sched_.post_after(faults_.stall_for, item_name::lazy("conn {}: stall ends", id_),
                               e.actor, [this, epoch] {
                                 if (epoch == stall_epoch_) set_stalled(false);
                               });
      }
      if (n == 0) return;  // the read waits for the stall to end
    }
    net::buffer_copy(e.read->in, net::buffer(e.inbound.data(), static_cast<std::size_t>(n)));
    e.inbound.erase(0, static_cast<std::size_t>(n));
    e.read_total += n;
    e.unread -= std::min<std::uint64_t>(e.unread, n);
    complete(r, false, {}, static_cast<std::size_t>(n));
    try_write(1 - r);  // room in the window
  }

  void set_stalled(bool stalled) {
    if (stalled_ == stalled) return;
    stalled_ = stalled;
    note(stalled ? "stall" : "unstall", ends_[0].read_total, 0);
    if (net_.observer_ != nullptr) net_.observer_->on_stall(id_, stalled);
    if (!stalled) try_read(0);
  }

  sim_network& net_;
  std::uint32_t id_;
  link_options link_;
  link_faults faults_;
  end ends_[2];
  std::uint64_t accepted_[2]{};
  bool reset_ = false;
  bool stalled_ = false;
  bool stall_used_ = false;
  std::uint64_t stall_epoch_ = 0;
  std::int64_t now_ns_ = 0;
};

// --- sim_stream ---

sim_stream::executor_type sim_stream::get_executor() const noexcept {
  return home_ != nullptr ? executor_type(home_->get_executor()) : executor_type();
}

bool sim_stream::is_open() const noexcept { return link_ != nullptr && link_->open(side_); }

std::uint32_t sim_stream::id() const noexcept { return link_ != nullptr ? link_->id() : 0; }

void sim_stream::start_read(std::vector<net::mutable_buffer> bufs,
                            net::any_completion_handler<void(error_code, std::size_t)> h) {
  if (link_ == nullptr) return post_completion(home_, std::move(h), net::error::bad_descriptor, 0);
  link_->start_read(side_, std::move(bufs), std::move(h));
}

void sim_stream::start_write(std::vector<net::const_buffer> bufs,
                             net::any_completion_handler<void(error_code, std::size_t)> h) {
  if (link_ == nullptr) return post_completion(home_, std::move(h), net::error::bad_descriptor, 0);
  link_->start_write(side_, std::move(bufs), std::move(h));
}

void sim_stream::shutdown(net::socket_base::shutdown_type what) {
  if (link_ == nullptr) return;
  if (what == net::socket_base::shutdown_send || what == net::socket_base::shutdown_both)
    link_->shutdown_send(side_);
}

void sim_stream::close() noexcept {
  if (link_ == nullptr) return;
  link_->close(side_);
  link_ = nullptr;
}

void sim_stream::cancel() {
  if (link_ != nullptr) link_->cancel(side_);
}

void sim_stream::reset() {
  if (link_ != nullptr) link_->reset();
}

// --- sim_network and sim_acceptor ---

sim_network::sim_network(scheduler& sched, std::uint64_t seed, journal* log,
                         link_observer* observer, actor_id first_actor)
    : sched_(sched), seed_(seed), log_(log), observer_(observer), first_actor_(first_actor) {}

sim_network::~sim_network() { shut_down(); }

void sim_network::shut_down() {
  if (down_) return;
  down_ = true;
  // A pending accept holds what the server's accept loop captured - typically the server's
  // state, which owns the acceptor: a cycle that a real io_context breaks when its shutdown
  // destroys the operation. Aborting it hands the handler to its home context, which frees it
  // when destroyed.
  if (acceptor_ != nullptr) acceptor_->close();
  for (std::size_t i = 0; i < links_.size(); ++i) links_[i]->drop_pending();
  // Contexts first (their handlers own sessions, which own streams), newest first.
  while (!actors_.empty()) {
    std::unique_ptr<io_actor> a = std::move(actors_.back());
    actors_.pop_back();
    a.reset();
  }
}

io_actor* sim_network::server_actor(std::uint32_t n) const noexcept {
  for (const auto& a : actors_) {
    if (a->actor() == first_actor_ + n) return a.get();
  }
  return nullptr;
}

sim_stream sim_network::connect(io_actor& client, link_options link, link_faults faults) {
  const auto id = static_cast<std::uint32_t>(links_.size() + 1);
  links_.push_back(std::make_unique<sim_link>(*this, id, link, faults, &client));
  sim_link* l = links_.back().get();
  sched_.post_after(link.latency, item_name::lazy("conn {}: connection arrives", id),
                    first_actor_ + id, [this, l, id] {
                      if (down_) return;
                      auto a = std::make_unique<io_actor>(sched_, first_actor_ + id,
                                                          "server conn " + std::to_string(id));
                      l->set_server_home(a.get());
                      io_actor* raw = a.get();
                      actors_.push_back(std::move(a));
                      if (on_new_actor) on_new_actor(*raw);
                      arrived_.push_back(l);
                      if (acceptor_ != nullptr) acceptor_->offer();
                    });
  return sim_stream(l, 0, &client);
}

void sim_network::heal() {
  for (auto& l : links_) l->heal();
}

sim_acceptor::sim_acceptor(sim_network& network, executor_type ex)
    : network_(network), ex_(std::move(ex)), home_(io_actor::of(ex_)) {
  if (home_ == nullptr)
    throw std::invalid_argument(
        "crosstown::sim::sim_acceptor: the executor is not an io_actor's (create the acceptor "
        "with the executor the simulation gave the server)");
  if (network_.acceptor_ != nullptr)
    throw std::logic_error("crosstown::sim::sim_acceptor: the network already has an acceptor");
  network_.acceptor_ = this;
}

sim_acceptor::~sim_acceptor() {
  if (network_.acceptor_ == this) network_.acceptor_ = nullptr;
  pending_.reset();
}

void sim_acceptor::start_accept(net::any_completion_handler<void(error_code, sim_stream)> h) {
  if (!open_) return post_completion(home_, std::move(h), net::error::bad_descriptor, sim_stream());
  if (pending_) return post_completion(home_, std::move(h), net::error::in_progress, sim_stream());
  pending_.emplace(std::move(h));
  offer();
}

void sim_acceptor::offer() {
  if (!pending_ || network_.arrived_.empty() || network_.down_) return;
  sim_link* l = network_.arrived_.front();
  network_.arrived_.pop_front();
  auto h = std::move(*pending_);
  pending_.reset();
  post_completion(home_, std::move(h), error_code(), sim_stream(l, 1, l->home(1)));
}

void sim_acceptor::close() {
  open_ = false;
  if (network_.acceptor_ == this) network_.acceptor_ = nullptr;
  if (pending_) {
    auto h = std::move(*pending_);
    pending_.reset();
    post_completion(home_, std::move(h), net::error::operation_aborted, sim_stream());
  }
}

// --- sim_timer ---

sim_timer::sim_timer(const executor_type& ex) : ex_(ex), actor_(io_actor::of(ex)) {
  if (actor_ == nullptr)
    throw std::invalid_argument(
        "crosstown::sim::sim_timer: the executor is not an io_actor's (make simulated timers "
        "from a simulated stream's or acceptor's executor)");
  expiry_ = actor_->sched().time().now();
}

sim_timer::~sim_timer() {
  disarm();
  if (actor_->closing()) {
    waits_.clear();
    return;
  }
  try {
    cancel();
  } catch (...) {
    waits_.clear();
  }
}

std::size_t sim_timer::expires_at(time_point at) {
  const std::size_t n = cancel();
  expiry_ = at;
  return n;
}

std::size_t sim_timer::expires_after(duration d) {
  return expires_at(actor_->sched().time().now() + d);
}

std::size_t sim_timer::cancel() {
  disarm();
  std::vector<net::any_completion_handler<void(error_code)>> waits = std::move(waits_);
  waits_.clear();
  for (auto& h : waits) post_completion(actor_, std::move(h), net::error::operation_aborted);
  return waits.size();
}

void sim_timer::start_wait(net::any_completion_handler<void(error_code)> h) {
  waits_.push_back(std::move(h));
  arm();
}

void sim_timer::arm() {
  if (armed_ || waits_.empty()) return;
  virtual_time& t = actor_->sched().time();
  if (expiry_ <= t.now()) {
    fire();
    return;
  }
  armed_ = t.call_at(expiry_, [this] {
    armed_.reset();
    fire();
  });
}

void sim_timer::disarm() {
  if (armed_) actor_->sched().time().cancel(*armed_);
  armed_.reset();
}

void sim_timer::fire() {
  std::vector<net::any_completion_handler<void(error_code)>> waits = std::move(waits_);
  waits_.clear();
  for (auto& h : waits) post_completion(actor_, std::move(h), error_code());
}

}  // namespace crosstown::sim
