#include <crosstown/sim/transport.hpp>

#include <algorithm>
#include <utility>

namespace crosstown::sim {

connection::connection(std::uint32_t id, scheduler& sched, rng& draws, link_options link,
                       link_faults faults, journal* log, transport_observer* observer)
    : id_(id),
      sched_(sched),
      draws_(draws),
      link_(link),
      faults_(faults),
      log_(log),
      observer_(observer) {
  if (link_.max_chunk == 0) link_.max_chunk = 1;
  if (link_.window == 0) link_.window = 1;
}

void connection::note(const char* what, std::uint64_t a, std::uint64_t b) {
  if (log_ != nullptr)
    log_->add(journal_kind::transport, what, id_ * 0x100000000ULL + a, b, sched_.time().now_ns());
}

void connection::async_write(std::uint64_t bytes, write_handler done) {
  done_ = std::move(done);
  remaining_ = bytes;
  note("write", bytes, accepted_);
  if (reset_) {
    fail_write();
    return;
  }
  if (remaining_ == 0) {
    write_handler h = std::move(done_);
    done_ = nullptr;
    sched_.post(item_name::lazy("conn {}: write done", id_), id_, [h = std::move(h)] { h(true); });
    return;
  }
  do_write();
}

void connection::fail_write() {
  if (!done_) return;
  write_handler h = std::move(done_);
  done_ = nullptr;
  remaining_ = 0;
  blocked_ = false;
  sched_.post(item_name::lazy("conn {}: write failed", id_), id_, [h = std::move(h)] { h(false); });
}

void connection::do_write() {
  if (reset_ || !done_ || chunk_in_flight_) return;
  const std::uint64_t free = link_.window > unread_ ? link_.window - unread_ : 0;
  if (free == 0) {
    blocked_ = true;
    note("blocked", unread_, 0);
    return;
  }
  blocked_ = false;
  std::uint64_t chunk = 1 + draws_.below(link_.max_chunk);
  chunk = std::min({chunk, remaining_, free});
  bool then_reset = false;
  if (faults_.reset_at_byte && accepted_ + chunk > *faults_.reset_at_byte) {
    chunk = *faults_.reset_at_byte - std::min(accepted_, *faults_.reset_at_byte);
    then_reset = true;
  }
  chunk_in_flight_ = true;
  sched_.post_after(duration(static_cast<std::int64_t>(chunk * link_.ns_per_byte)),
                    item_name::lazy("conn {}: accept {} bytes", id_, chunk), id_,
                    [this, chunk, then_reset] { on_chunk(chunk, then_reset); });
}

void connection::on_chunk(std::uint64_t bytes, bool then_reset) {
  chunk_in_flight_ = false;
  if (reset_) return;
  if (bytes > 0) {
    const std::uint64_t first = accepted_;
    accepted_ += bytes;
    unread_ += bytes;
    remaining_ -= std::min(remaining_, bytes);
    note("accepted", bytes, accepted_);
    if (observer_ != nullptr) observer_->on_accepted(id_, first, bytes);
    sched_.post_after(link_.latency, item_name::lazy("conn {}: bytes arrive", id_), id_,
                      [this, bytes] { on_arrive(bytes); });
  }
  if (then_reset) {
    reset();
    return;
  }
  if (remaining_ == 0) {
    write_handler h = std::move(done_);
    done_ = nullptr;
    // The last byte was accepted: the write completes now, as a socket write would.
    h(true);
    return;
  }
  do_write();
}

void connection::reset() {
  if (reset_) return;
  reset_ = true;
  note("reset", accepted_, 0);
  if (observer_ != nullptr) observer_->on_reset(id_, accepted_);
  fail_write();
}

void connection::on_arrive(std::uint64_t bytes) {
  if (reset_) return;
  arrived_ += bytes;
  maybe_read();
}

void connection::maybe_read() {
  if (reset_ || stalled_ || read_scheduled_ || arrived_ == 0) return;
  read_scheduled_ = true;
  sched_.post_after(link_.read_delay, item_name::lazy("conn {}: client reads", id_), id_,
                    [this] { on_read(); });
}

void connection::on_read() {
  read_scheduled_ = false;
  if (reset_ || stalled_) return;
  std::uint64_t n = arrived_;
  if (faults_.stall_at_byte && !stall_used_ && read_ + n >= *faults_.stall_at_byte) {
    n = *faults_.stall_at_byte - std::min(read_, *faults_.stall_at_byte);
    stall_used_ = true;
    set_stalled(true);
  }
  arrived_ -= n;
  read_ += n;
  unread_ -= std::min(unread_, n);
  note("read", n, read_);
  if (stalled_ && faults_.stall_for > duration::zero()) {
    const std::uint64_t epoch = stall_epoch_;
    sched_.post_after(faults_.stall_for, item_name::lazy("conn {}: stall ends", id_), id_,
                      [this, epoch] {
                        if (epoch == stall_epoch_) set_stalled(false);
                      });
  }
  if (blocked_ && n > 0) do_write();
  maybe_read();
}

void connection::set_stalled(bool stalled) {
  if (stalled_ == stalled) return;
  stalled_ = stalled;
  note(stalled ? "stall" : "unstall", read_, 0);
  if (observer_ != nullptr) observer_->on_stall(id_, stalled);
  if (!stalled) {
    maybe_read();
    if (blocked_) do_write();
  }
}

void connection::heal() {
  faults_.reset_at_byte.reset();
  ++stall_epoch_;
  stall_used_ = true;
  set_stalled(false);
}

}  // namespace crosstown::sim
