// crosstown/beast/write.hpp - Boost.Beast writes that report a response's lifecycle.
//
// The Beast adapter is a handful of drop-in replacements for Beast's write functions. Each
// writes exactly what the Beast function it wraps writes, and reports to the request's
// `crosstown::response_scope`:
//
//     at initiation        status_known(status)        from the message, before it is written
//     header written       headers_sent()              (serializer writes)
//     last byte written    response_sent()             releases the response's deferred tasks
//     write failed         delivery_failed(ec.message())
//
// then completes with Beast's own signature `void(error_code, std::size_t)`. The events are
// reported inside the completion of the underlying write - that is, once the transport has
// accepted the bytes - and *before* the caller's completion handler runs, on the thread that
// runs the stream's completion. Any completion token works: callbacks, `asio::use_awaitable`,
// `asio::as_tuple(...)`, `asio::use_future`, `yield_context`.
//
// Adopting it in Beast's `http_server_async` example (one session per connection):
//
//     crosstown::connection_scope connection_{runtime};   // session member: the connection
//     std::optional<crosstown::response_scope> scope_;    // session member: the request
//
//     // on_read, once a request has been read:
//     scope_.emplace(connection_);
//     send_response(handle_request(*doc_root_, std::move(req_), *scope_));
//
//     // handle_request returns the response through the scope, so its status is captured
//     // before http::message_generator erases the type:
//     return crosstown::beast::make_generator(scope, std::move(res));
//
//     // send_response: instead of beast::async_write(stream_, std::move(msg), ...)
//     crosstown::beast::async_write_response(stream_, std::move(msg), *scope_, ...);
//
//     // on_write: the response is done
//     scope_.reset();
//
// Keep-alive and pipelining: create one scope per request and pass that request's scope to
// the write of its response; a write reports only to the scope it was given, so the write of
// request N+1 never releases the tasks of request N. Coroutine sessions hold the scope as a
// local (`crosstown::response_scope scope(connection);`) and pass it explicitly - to the
// handler and to the write - rather than binding it to the thread.
//
// Streamed responses: write the header with `async_write_header(stream, sr, scope, token)`
// (headers-phase tasks are released), then the body with `async_write_body(stream, sr,
// scope, token)`, repeatedly if the body is produced piecewise (`buffer_body`, where Beast
// completes with `http::error::need_buffer` until the last piece, which this adapter passes
// through without reporting anything); response-phase tasks are released when the serializer
// is done, i.e. after the last chunk of a chunked body.
//
// A stream or operation that fails reports `delivery_failed` once; a later write on the same
// scope is a misuse and throws `std::logic_error` from the core. The scope must outlive the
// operation, as the stream and message must for Beast's own functions.
#pragma once

#include <crosstown/response_scope.hpp>

#include <boost/asio/compose.hpp>
#include <boost/beast/core/buffers_generator.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/message_generator.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/write.hpp>

#include <cstddef>
#include <stdexcept>
#include <utility>

namespace crosstown::beast {

namespace http = boost::beast::http;
using error_code = boost::beast::error_code;

/// Reports the end of a write that carried a response's last byte: `response_sent()` if `ec`
/// is clear, else `delivery_failed(ec.message())`. For servers that write the last chunk
/// themselves.
inline void report_written(response_scope& scope, const error_code& ec) {
  if (ec) {
    scope.delivery_failed(ec.message());
  } else {
    scope.response_sent();
  }
}

/// Reports the response's status to `scope`, then type-erases it into a
/// `http::message_generator` for `async_write_response`.
template <class Body, class Fields>
http::message_generator make_generator(response_scope& scope,
                                       http::response<Body, Fields>&& response) {
  scope.status_known(response.result_int());
  return http::message_generator(std::move(response));
}

namespace detail {

template <class Stream, class Message>
struct write_message_op {
  Stream& stream_;
  Message& message_;
  response_scope& scope_;
  bool started_ = false;

  template <class Self>
  void operator()(Self& self, error_code ec = {}, std::size_t bytes = 0) {
    if (!started_) {
      started_ = true;
      http::async_write(stream_, message_, std::move(self));
      return;
    }
    report_written(scope_, ec);
    self.complete(ec, bytes);
  }
};

template <class Stream>
struct write_generator_op {
  Stream& stream_;
  http::message_generator generator_;
  response_scope& scope_;
  bool started_ = false;

  template <class Self>
  void operator()(Self& self, error_code ec = {}, std::size_t bytes = 0) {
    if (!started_) {
      started_ = true;
      boost::beast::async_write(stream_, std::move(generator_), std::move(self));
      return;
    }
    report_written(scope_, ec);
    self.complete(ec, bytes);
  }
};

template <class Stream, class Serializer>
struct write_header_op {
  Stream& stream_;
  Serializer& serializer_;
  response_scope& scope_;
  bool started_ = false;

  template <class Self>
  void operator()(Self& self, error_code ec = {}, std::size_t bytes = 0) {
    if (!started_) {
      started_ = true;
      http::async_write_header(stream_, serializer_, std::move(self));
      return;
    }
    if (ec) {
      scope_.delivery_failed(ec.message());
    } else {
      scope_.headers_sent();
    }
    self.complete(ec, bytes);
  }
};

template <class Stream, class Serializer>
struct write_body_op {
  Stream& stream_;
  Serializer& serializer_;
  response_scope& scope_;
  bool started_ = false;

  template <class Self>
  void operator()(Self& self, error_code ec = {}, std::size_t bytes = 0) {
    if (!started_) {
      started_ = true;
      http::async_write(stream_, serializer_, std::move(self));
      return;
    }
    if (ec == http::error::need_buffer) {
      // One piece of a body produced piecewise went out; more follows.
      if (serializer_.is_header_done()) scope_.headers_sent();
    } else if (ec || serializer_.is_done()) {
      report_written(scope_, ec);
    }
    self.complete(ec, bytes);
  }
};

template <class Serializer>
void report_status(response_scope& scope, Serializer& serializer) {
  if (!serializer.is_header_done()) scope.status_known(serializer.get().result_int());
}

}  // namespace detail

/// Writes a whole response like `http::async_write(stream, response, token)`, reporting its
/// status at once and `response_sent` / `delivery_failed` when the write completes. The
/// response and the scope must stay alive until then.
template <class AsyncWriteStream, class Body, class Fields, class CompletionToken>
auto async_write_response(AsyncWriteStream& stream, http::response<Body, Fields>& response,
                          response_scope& scope, CompletionToken&& token) {
  scope.status_known(response.result_int());
  using message = http::response<Body, Fields>;
  return boost::asio::async_compose<CompletionToken, void(error_code, std::size_t)>(
      detail::write_message_op<AsyncWriteStream, message>{stream, response, scope}, token, stream);
}

/// Writes a type-erased response like `beast::async_write(stream, std::move(generator),
/// token)`. Its status must already be known to the scope - build the generator with
/// `make_generator(scope, std::move(response))` - or this throws `std::logic_error`.
template <class AsyncWriteStream, class CompletionToken>
auto async_write_response(AsyncWriteStream& stream, http::message_generator generator,
                          response_scope& scope, CompletionToken&& token) {
  if (!scope.status()) {
    throw std::logic_error(
        "crosstown::beast::async_write_response: the scope has no status; create the "
        "message_generator with crosstown::beast::make_generator(scope, std::move(response))");
  }
  return boost::asio::async_compose<CompletionToken, void(error_code, std::size_t)>(
      detail::write_generator_op<AsyncWriteStream>{stream, std::move(generator), scope}, token,
      stream);
}

/// Writes the status line and headers like `http::async_write_header(stream, sr, token)`,
/// reporting the status at once and `headers_sent` (or `delivery_failed`) on completion.
template <class AsyncWriteStream, class Body, class Fields, class CompletionToken>
auto async_write_header(AsyncWriteStream& stream, http::response_serializer<Body, Fields>& sr,
                        response_scope& scope, CompletionToken&& token) {
  detail::report_status(scope, sr);
  using serializer = http::response_serializer<Body, Fields>;
  return boost::asio::async_compose<CompletionToken, void(error_code, std::size_t)>(
      detail::write_header_op<AsyncWriteStream, serializer>{stream, sr, scope}, token, stream);
}

/// Writes what is left of a serializer's message like `http::async_write(stream, sr, token)`.
/// Reports `response_sent` once the serializer is done (the last chunk went out), or
/// `delivery_failed`; `http::error::need_buffer` (more body to come) reports nothing.
template <class AsyncWriteStream, class Body, class Fields, class CompletionToken>
auto async_write_body(AsyncWriteStream& stream, http::response_serializer<Body, Fields>& sr,
                      response_scope& scope, CompletionToken&& token) {
  detail::report_status(scope, sr);
  using serializer = http::response_serializer<Body, Fields>;
  return boost::asio::async_compose<CompletionToken, void(error_code, std::size_t)>(
      detail::write_body_op<AsyncWriteStream, serializer>{stream, sr, scope}, token, stream);
}

}  // namespace crosstown::beast
