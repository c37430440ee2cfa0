// durable/src/asio_hiredis.hpp - not API. hiredis's async API driven by Boost.Asio.
//
// hiredis 0.14 ships adapters for libevent, libev, libuv, ... but not Asio. `attach` installs
// the five event hooks of a `redisAsyncContext`: add/del read and write interest become
// `posix::stream_descriptor::async_wait` operations, re-armed after each readiness while
// hiredis still wants that interest, and `cleanup` releases the descriptor (hiredis owns the
// socket and closes it itself) and cancels what is pending. The handlers keep the attachment
// alive; the context must be used on the io_context's thread only.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <hiredis/async.h>

#include <memory>

namespace crosstown::redis::detail {

class asio_hiredis : public std::enable_shared_from_this<asio_hiredis> {
 public:
  /// Installs the hooks on `ac`; REDIS_OK, or REDIS_ERR if hooks were already installed.
  static int attach(redisAsyncContext* ac, boost::asio::io_context& io);

  asio_hiredis(redisAsyncContext* ac, boost::asio::io_context& io);
  ~asio_hiredis();
  asio_hiredis(const asio_hiredis&) = delete;
  asio_hiredis& operator=(const asio_hiredis&) = delete;

 private:
  static void add_read(void* self);
  static void del_read(void* self);
  static void add_write(void* self);
  static void del_write(void* self);
  static void cleanup(void* self);

  void arm_read();
  void release_socket() noexcept;
  void arm_write();

  redisAsyncContext* ac_;  // null after cleanup
  boost::asio::posix::stream_descriptor socket_;
  bool want_read_ = false;
  bool want_write_ = false;
  bool read_armed_ = false;
  bool write_armed_ = false;
  std::shared_ptr<asio_hiredis> self_;  // the context's reference, dropped by cleanup
};

}  // namespace crosstown::redis::detail
