// crosstown/beast/write.hpp - Boost.Beast writes that report a response's lifecycle.
//
// The Beast adapter is a handful of drop-in replacements for Beast's write functions. Each
// writes exactly what the Beast function it wraps writes, and reports to the request's
// `crosstown::response_scope`:
//
//     at initiation        status_known(status)        from the message, before it is written
//     header accepted      headers_sent()              once the transport took the last byte
//                                                      of the header (not for generators)
//     last byte written    response_sent()             releases the response's deferred tasks
//     write failed         delivery_failed(ec.message())
//
// then completes with Beast's own signature `void(error_code, std::size_t)`. The events are
// reported inside the completion of the underlying write - that is, once the transport has
// accepted the bytes - and *before* the caller's completion handler runs, on the thread that
// runs the stream's completion. Any completion token works: callbacks, `asio::use_awaitable`,
// `asio::as_tuple(...)`, `asio::use_future`, `yield_context`, `asio::deferred`; without one,
// the stream executor's default completion token is used, as Beast's own functions do (so a
// stream made with `use_awaitable_t<>::as_default_on_t` can be `co_await`ed directly).
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
// Headers of whole-message writes: `async_write_response(stream, message, ...)` writes the
// message through a serializer, piece by piece as Beast's `http::async_write` does, and
// reports `headers_sent()` as soon as a write completion shows the header wholly accepted (the
// first one, unless the header is larger than one write). A client that resets the connection
// mid-body has had the headers, so headers-phase `require_delivery` tasks run. A
// `http::message_generator` hides where its header ends, so a generator write reports only
// `response_sent` / `delivery_failed` (which imply the header's outcome); write the message
// itself, or header and body with a serializer, when headers-phase tasks matter.
//
// Streamed responses: write the header with `async_write_header(stream, sr, scope, token)`
// (headers-phase tasks are released), then the body with `async_write_body(stream, sr,
// scope, token)`, repeatedly if the body is produced piecewise (`buffer_body`, where Beast
// completes with `http::error::need_buffer` until the last piece, which this adapter passes
// through without reporting anything); response-phase tasks are released when the serializer
// is done, i.e. after the last chunk of a chunked body.
//
// Misuse is reported, never thrown out of the event loop: a write on a scope whose outcome is
// already reported (sent or failed: a second write of the same response) or that has ended
// writes nothing and completes - posted, never inline - with
// `crosstown::beast::error::response_already_reported` or `error::scope_ended`; a lifecycle
// call the core rejects during a write (`std::logic_error`, e.g. a header written twice)
// completes the write with `error::lifecycle_misuse` after the bytes went out. The same call
// gives the same report every time, whatever the previous write's result. Only a generator
// whose status the scope does not know throws (`std::logic_error`), at initiation, from the
// caller's own call.
//
// Cancellation: per-operation cancellation (`asio::bind_cancellation_slot`, `asio::cancel_after`,
// a coroutine's or a `parallel_group`'s cancellation) reaches the stream's write. Terminal and
// partial cancellation are accepted; total is filtered out, because a write abandoned midway
// has had effects (bytes went out). Between two pieces of a write, a cancellation already
// requested stops the write without starting the next. A cancelled write completes with
// `asio::error::operation_aborted` and tells the scope `delivery_failed` with that error's
// message ("Operation canceled"): the response counts as not delivered even if part of it
// went out, so `require_delivery` tasks are skipped and default ones still run; headers-phase
// tasks whose header had been accepted before the cancellation were already released as sent.
// A stream timeout (`basic_stream::expires_after`) completes with `beast::error::timeout` and
// is reported the same way, with that error's message.
//
// The scope must outlive the operation, as the stream and message must for Beast's own
// functions.
#pragma once

#include <crosstown/response_scope.hpp>

#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/buffer_traits.hpp>
#include <boost/beast/core/buffers_generator.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/message_generator.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/system/error_category.hpp>

#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

namespace crosstown::beast {

namespace http = boost::beast::http;
namespace net = boost::asio;
using error_code = boost::beast::error_code;

/// Errors a crosstown write completes with (category "crosstown.beast").
enum class error {
  /// The scope's delivery outcome was already reported (a second write of one response):
  /// nothing was written.
  response_already_reported = 1,
  /// The scope has ended: nothing was written.
  scope_ended,
  /// The core rejected a lifecycle call made during the write (`std::logic_error`, e.g. a
  /// header written twice); the bytes were written.
  lifecycle_misuse,
};

namespace detail {

// boost::system::error_category's destructor is protected and not virtual by design (categories
// are never deleted through it); GCC's -Wnon-virtual-dtor does not know that.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
#endif
class error_category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "crosstown.beast"; }
  std::string message(int ev) const override {
    switch (static_cast<error>(ev)) {
      case error::response_already_reported:
        return "crosstown: the response's delivery was already reported on this scope; "
               "nothing was written";
      case error::scope_ended:
        return "crosstown: the response scope has ended; nothing was written";
      case error::lifecycle_misuse:
        return "crosstown: the core rejected a lifecycle event reported by this write";
    }
    return "crosstown.beast: unknown error";
  }
};
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

}  // namespace detail

inline const boost::system::error_category& error_category() noexcept {
  static const detail::error_category category;
  return category;
}

inline error_code make_error_code(error e) noexcept {
  return {static_cast<int>(e), error_category()};
}

}  // namespace crosstown::beast

template <>
struct boost::system::is_error_code_enum<crosstown::beast::error> : std::true_type {};

namespace crosstown::beast {

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

// What a write goes through: a serializer (the caller's, or owned for a whole message) or a
// message generator. Each offers one step of writing and says how far it got.
template <class Serializer>
struct serializer_source {
  Serializer* sr;
  std::unique_ptr<Serializer> owned{};  // stable: the operation moves between steps
  // The header's size, to see it accepted: Beast's serializer writes header and body as one
  // buffer sequence and says `is_header_done()` only once all of it went out.
  std::size_t header_bytes = 0;
  std::size_t written = 0;

  explicit serializer_source(Serializer& s) : sr(&s) { measure(); }
  explicit serializer_source(std::unique_ptr<Serializer> s) : sr(s.get()), owned(std::move(s)) {
    measure();
  }

  void report_status(response_scope& scope) const {
    if (!sr->is_header_done()) scope.status_known(sr->get().result_int());
  }
  template <class Stream, class Self>
  void write_some(Stream& stream, Self&& self) {
    http::async_write_some(stream, *sr, std::forward<Self>(self));  // consumes by itself
  }
  void consumed(std::size_t n) noexcept { written += n; }
  bool header_done() const { return sr->is_header_done() || written >= header_bytes; }
  bool done() const { return sr->is_done(); }

 private:
  void measure() {
    if (sr->is_header_done()) return;
    const auto& m = sr->get();
    // The Fields concept's writer: the bytes the serializer will write as the header.
    const typename std::decay_t<decltype(m)>::fields_type::writer header(m, m.version(),
                                                                         m.result_int());
    header_bytes = boost::beast::buffer_bytes(header.get());
  }
};

struct generator_source {
  http::message_generator generator;
  error_code prepare_error{};

  void report_status(response_scope&) const noexcept {}  // checked at initiation
  template <class Stream, class Self>
  void write_some(Stream& stream, Self&& self) {
    auto buffers = generator.prepare(prepare_error);
    if (prepare_error) {
      net::post(stream.get_executor(), std::forward<Self>(self));
      return;
    }
    stream.async_write_some(buffers, std::forward<Self>(self));
  }
  void consumed(std::size_t n) { generator.consume(n); }
  bool header_done() const noexcept { return false; }  // the generator does not say
  bool done() const { return generator.is_done(); }
};

// How far one operation writes: the header only, or to the end of the message (a body
// write may also stop at `need_buffer`).
enum class write_until : std::uint8_t { header, end };

// The one write operation behind every function below: checks the scope, writes the source
// step by step, reports each lifecycle event as soon as the transport has accepted the bytes
// it depends on, then completes the caller's handler.
template <class Stream, class Source, write_until Until>
struct write_op {
  Stream& stream_;
  Source source_;
  response_scope& scope_;
  std::size_t total_ = 0;
  bool started_ = false;
  bool headers_reported_ = false;
  bool nothing_to_write_ = false;  // the serializer was already as far as asked
  error_code refused_{};           // set at initiation: complete with it, write nothing

  template <class Self>
  void operator()(Self& self, error_code ec = {}, std::size_t bytes = 0) {
    if (!started_) {
      started_ = true;
      // Terminal and partial cancellation reach the stream's write; total is filtered out,
      // since a write abandoned midway has had effects (see the file comment).
      self.reset_cancellation_state(net::enable_partial_cancellation());
      headers_reported_ = source_.header_done();
      refused_ = refusal();
      nothing_to_write_ = !refused_ && reached();
      if (refused_ || nothing_to_write_) {
        // Complete as Beast does, never inside the initiating call.
        net::post(stream_.get_executor(), std::move(self));
        return;
      }
      return step(self);
    }
    if (refused_) return self.complete(refused_, 0);
    if (nothing_to_write_) return self.complete(error_code{}, 0);
    if constexpr (std::is_same_v<Source, generator_source>) {
      if (source_.prepare_error) return finish(self, source_.prepare_error);
    }
    total_ += bytes;
    if (!ec) source_.consumed(bytes);
    const error_code misuse = report_progress();
    if (misuse) return self.complete(misuse, total_);
    if (ec) return finish(self, ec);
    if (reached()) return finish(self, {});
    if (self.get_cancellation_state().cancelled() != net::cancellation_type::none) {
      return finish(self, net::error::operation_aborted);
    }
    step(self);
  }

 private:
  // At initiation: a write the scope cannot take writes nothing. Otherwise the status.
  error_code refusal() {
    if (scope_.ended()) return error::scope_ended;
    if (scope_.delivery_state() != delivery::pending) return error::response_already_reported;
    return report([&] { source_.report_status(scope_); });
  }

  bool reached() const {
    return Until == write_until::header ? source_.header_done() : source_.done();
  }

  template <class Self>
  void step(Self& self) {
    source_.write_some(stream_, std::move(self));
  }

  // After each write: the header, once it has all been accepted.
  error_code report_progress() {
    if (headers_reported_ || !source_.header_done()) return {};
    headers_reported_ = true;
    return report([&] { scope_.headers_sent(); });
  }

  template <class Self>
  void finish(Self& self, error_code ec) {
    error_code misuse;
    if (ec == http::error::need_buffer) {
      // One piece of a body produced piecewise went out; more follows: nothing to report.
    } else if (ec) {
      misuse = report([&] { scope_.delivery_failed(ec.message()); });
    } else if (Until == write_until::end) {
      misuse = report([&] { scope_.response_sent(); });
    }
    self.complete(misuse ? misuse : ec, total_);
  }

  // The core throws std::logic_error on misuse; it must not escape the event loop.
  template <class Event>
  static error_code report(Event&& event) noexcept {
    try {
      event();
      return {};
    } catch (const std::logic_error&) {
      return error::lifecycle_misuse;
    } catch (...) {
      return error::lifecycle_misuse;
    }
  }
};

template <write_until Until, class Stream, class Source, class CompletionToken>
auto async_write(Stream& stream, Source source, response_scope& scope, CompletionToken&& token) {
  return net::async_compose<CompletionToken, void(error_code, std::size_t)>(
      write_op<Stream, Source, Until>{stream, std::move(source), scope}, token, stream);
}

template <class Stream>
using default_token = net::default_completion_token_t<typename Stream::executor_type>;

}  // namespace detail

/// Writes a whole response like `http::async_write(stream, response, token)`, reporting its
/// status at once, `headers_sent` once the header was accepted and `response_sent` /
/// `delivery_failed` when the write completes. The response and the scope must stay alive
/// until then.
template <class AsyncWriteStream, class Body, class Fields,
          class CompletionToken = detail::default_token<AsyncWriteStream>>
auto async_write_response(AsyncWriteStream& stream, http::response<Body, Fields>& response,
                          response_scope& scope, CompletionToken&& token = CompletionToken{}) {
  using serializer = http::response_serializer<Body, Fields>;
  return detail::async_write<detail::write_until::end>(
      stream, detail::serializer_source<serializer>(std::make_unique<serializer>(response)), scope,
      std::forward<CompletionToken>(token));
}

/// Writes a type-erased response like `beast::async_write(stream, std::move(generator),
/// token)`. Its status must already be known to the scope - build the generator with
/// `make_generator(scope, std::move(response))` - or this throws `std::logic_error`.
template <class AsyncWriteStream, class CompletionToken = detail::default_token<AsyncWriteStream>>
auto async_write_response(AsyncWriteStream& stream, http::message_generator generator,
                          response_scope& scope, CompletionToken&& token = CompletionToken{}) {
  if (!scope.status()) {
    throw std::logic_error(
        "crosstown::beast::async_write_response: the scope has no status; create the "
        "message_generator with crosstown::beast::make_generator(scope, std::move(response))");
  }
  return detail::async_write<detail::write_until::end>(
      stream, detail::generator_source{std::move(generator)}, scope,
      std::forward<CompletionToken>(token));
}

/// Writes the status line and headers like `http::async_write_header(stream, sr, token)`,
/// reporting the status at once and `headers_sent` (or `delivery_failed`) on completion.
template <class AsyncWriteStream, class Body, class Fields,
          class CompletionToken = detail::default_token<AsyncWriteStream>>
auto async_write_header(AsyncWriteStream& stream, http::response_serializer<Body, Fields>& sr,
                        response_scope& scope, CompletionToken&& token = CompletionToken{}) {
  sr.split(true);  // as http::async_write_header does: stop after the header
  using serializer = http::response_serializer<Body, Fields>;
  return detail::async_write<detail::write_until::header>(
      stream, detail::serializer_source<serializer>(sr), scope,
      std::forward<CompletionToken>(token));
}

/// Writes what is left of a serializer's message like `http::async_write(stream, sr, token)`.
/// Reports `headers_sent` if the header goes out in this write, `response_sent` once the
/// serializer is done (the last chunk went out), or `delivery_failed`;
/// `http::error::need_buffer` (more body to come) reports nothing more.
template <class AsyncWriteStream, class Body, class Fields,
          class CompletionToken = detail::default_token<AsyncWriteStream>>
auto async_write_body(AsyncWriteStream& stream, http::response_serializer<Body, Fields>& sr,
                      response_scope& scope, CompletionToken&& token = CompletionToken{}) {
  sr.split(false);  // as http::async_write does
  using serializer = http::response_serializer<Body, Fields>;
  return detail::async_write<detail::write_until::end>(stream,
                                                       detail::serializer_source<serializer>(sr),
                                                       scope, std::forward<CompletionToken>(token));
}

}  // namespace crosstown::beast
