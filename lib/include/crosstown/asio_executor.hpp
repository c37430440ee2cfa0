// crosstown/asio_executor.hpp - run deferred tasks on any Boost.Asio executor.
//
// Wraps an executor such as `io_context::get_executor()`, a strand, or an
// `asio::thread_pool`'s executor. Each job of a batch is `post`ed separately, in registration
// order, so a strand runs them one after another in that order and a multi-threaded pool may
// run them in parallel. A job whose handler is destroyed without running (the io_context was
// stopped and destroyed) is counted as `dropped_at_shutdown`.
//
// The wrapped Asio execution context must outlive this object, and this object must outlive
// every scope that may hand it work.
#pragma once

#include <crosstown/executor.hpp>

#include <boost/asio/post.hpp>

#include <utility>

namespace crosstown {

template <class AsioExecutor>
class asio_executor final : public executor {
 public:
  explicit asio_executor(AsioExecutor ex) : ex_(std::move(ex)) {}

  void execute(job_batch batch) override {
    for (job& j : batch) {
      boost::asio::post(ex_, [j = std::move(j)]() mutable { j.run(); });
    }
  }

  const AsioExecutor& get_inner_executor() const noexcept { return ex_; }

 private:
  AsioExecutor ex_;
};

template <class AsioExecutor>
asio_executor(AsioExecutor) -> asio_executor<AsioExecutor>;

}  // namespace crosstown
