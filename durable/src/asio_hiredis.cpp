#include "asio_hiredis.hpp"

#include <boost/system/error_code.hpp>

#include <utility>

namespace crosstown::redis::detail {

int asio_hiredis::attach(redisAsyncContext* ac, boost::asio::io_context& io) {
  if (ac->ev.data != nullptr) return REDIS_ERR;
  auto attachment = std::make_shared<asio_hiredis>(ac, io);
  attachment->self_ = attachment;
  ac->ev.addRead = &asio_hiredis::add_read;
  ac->ev.delRead = &asio_hiredis::del_read;
  ac->ev.addWrite = &asio_hiredis::add_write;
  ac->ev.delWrite = &asio_hiredis::del_write;
  ac->ev.cleanup = &asio_hiredis::cleanup;
  ac->ev.data = attachment.get();
  return REDIS_OK;
}

asio_hiredis::asio_hiredis(redisAsyncContext* ac, boost::asio::io_context& io)
    : ac_(ac), socket_(io, ac->c.fd) {}

asio_hiredis::~asio_hiredis() {
  // Never close hiredis's socket: it closes it in redisFree.
  release_socket();
}

void asio_hiredis::release_socket() noexcept {
  try {
    if (socket_.is_open()) socket_.release();  // also cancels what is pending
  } catch (...) {  // cannot happen on an open descriptor; never escape a destructor
  }
}

void asio_hiredis::add_read(void* self) {
  auto* a = static_cast<asio_hiredis*>(self);
  a->want_read_ = true;
  if (!a->read_armed_) a->arm_read();
}

void asio_hiredis::del_read(void* self) { static_cast<asio_hiredis*>(self)->want_read_ = false; }

void asio_hiredis::add_write(void* self) {
  auto* a = static_cast<asio_hiredis*>(self);
  a->want_write_ = true;
  if (!a->write_armed_) a->arm_write();
}

void asio_hiredis::del_write(void* self) { static_cast<asio_hiredis*>(self)->want_write_ = false; }

void asio_hiredis::cleanup(void* self) {
  auto* a = static_cast<asio_hiredis*>(self);
  if (a == nullptr) return;
  a->want_read_ = false;
  a->want_write_ = false;
  if (a->ac_ != nullptr) {
    // hiredis checks each hook for null before calling it: nothing reaches us after this.
    a->ac_->ev = {};
  }
  a->ac_ = nullptr;
  a->release_socket();
  // Pending handlers hold their own references; this may be the last one.
  std::shared_ptr<asio_hiredis> keep = std::move(a->self_);
}

void asio_hiredis::arm_read() {
  read_armed_ = true;
  socket_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                     [self = shared_from_this()](const boost::system::error_code& ec) {
                       self->read_armed_ = false;
                       if (ec || self->ac_ == nullptr || !self->want_read_) return;
                       redisAsyncHandleRead(self->ac_);  // may run cleanup
                       if (self->ac_ != nullptr && self->want_read_ && !self->read_armed_) {
                         self->arm_read();
                       }
                     });
}

void asio_hiredis::arm_write() {
  write_armed_ = true;
  socket_.async_wait(boost::asio::posix::stream_descriptor::wait_write,
                     [self = shared_from_this()](const boost::system::error_code& ec) {
                       self->write_armed_ = false;
                       if (ec || self->ac_ == nullptr || !self->want_write_) return;
                       redisAsyncHandleWrite(self->ac_);  // may run cleanup
                       if (self->ac_ != nullptr && self->want_write_ && !self->write_armed_) {
                         self->arm_write();
                       }
                     });
}

}  // namespace crosstown::redis::detail
