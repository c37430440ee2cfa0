// Tests of crosstown/beast/write.hpp on its own: a connected pair of sockets on 127.0.0.1, one
// io_context run on the test thread, an inline executor so released tasks are visible at once.
#include <crosstown/beast/write.hpp>

#include <crosstown/crosstown.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <gtest/gtest.h>

#include <future>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace net = boost::asio;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;

class BeastWriteTest : public ::testing::Test {
 protected:
  BeastWriteTest() {
    tcp::acceptor acceptor(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    client_.connect(acceptor.local_endpoint());
    acceptor.accept(server_);
  }

  http::response<http::string_body> read_response() {
    http::response<http::string_body> res;
    http::read(client_, buffer_, res);
    return res;
  }

  crosstown::runtime rt_{{.threads = 1}};
  crosstown::inline_executor here_;
  net::io_context ioc_;
  tcp::socket server_{ioc_};
  tcp::socket client_{ioc_};
  boost::beast::flat_buffer buffer_;
};

http::response<http::string_body> hello(http::status status) {
  http::response<http::string_body> res{status, 11};
  res.body() = "hello";
  res.prepare_payload();
  return res;
}

TEST_F(BeastWriteTest, GeneratorCarriesTheStatusCapturedBeforeErasure) {
  crosstown::response_scope scope(rt_);
  bool ran = false;
  scope.defer([&] { ran = true; }, {.executor = here_});
  http::message_generator generator =
      crosstown::beast::make_generator(scope, hello(http::status::created));
  EXPECT_EQ(scope.status(), 201);

  bool completed = false;
  crosstown::beast::async_write_response(server_, std::move(generator), scope,
                                         [&](boost::beast::error_code ec, std::size_t) {
                                           EXPECT_FALSE(ec);
                                           EXPECT_TRUE(ran) << "tasks are released first";
                                           completed = true;
                                         });
  EXPECT_FALSE(ran) << "nothing is released at initiation";
  ioc_.run();
  EXPECT_TRUE(completed);
  EXPECT_EQ(scope.delivery_state(), crosstown::delivery::delivered);
  EXPECT_EQ(read_response().result_int(), 201);
}

TEST_F(BeastWriteTest, GeneratorWithoutAStatusIsRejectedAtInitiation) {
  crosstown::response_scope scope(rt_);
  http::message_generator generator(hello(http::status::ok));
  EXPECT_THROW(crosstown::beast::async_write_response(server_, std::move(generator), scope,
                                                      [](boost::beast::error_code, std::size_t) {}),
               std::logic_error);
}

TEST_F(BeastWriteTest, FailedWriteReportsDeliveryFailedWithTheError) {
  crosstown::response_scope scope(rt_);
  bool ran = false;
  scope.defer([&] { ran = true; }, {.executor = here_, .require_delivery = true});
  server_.close();
  auto res = hello(http::status::ok);
  boost::beast::error_code result;
  crosstown::beast::async_write_response(
      server_, res, scope, [&](boost::beast::error_code ec, std::size_t) { result = ec; });
  ioc_.run();
  EXPECT_TRUE(result);
  EXPECT_EQ(scope.delivery_state(), crosstown::delivery::failed);
  EXPECT_EQ(scope.failure_reason(), result.message());
  EXPECT_FALSE(ran);
  EXPECT_EQ(rt_.metrics().count(crosstown::task_state::skipped_by_delivery), 1u);
}

TEST_F(BeastWriteTest, SerializerReportsHeadersThenResponseSent) {
  crosstown::response_scope scope(rt_);
  std::vector<std::string> ran;
  scope.defer([&] { ran.push_back("response"); }, {.executor = here_});
  scope.defer([&] { ran.push_back("headers"); },
              {.executor = here_, .phase = crosstown::task_phase::headers_sent});
  auto res = hello(http::status::ok);
  res.chunked(true);
  http::response_serializer<http::string_body> sr(res);
  crosstown::beast::async_write_header(
      server_, sr, scope, [&](boost::beast::error_code ec, std::size_t) {
        ASSERT_FALSE(ec);
        EXPECT_EQ(ran, std::vector<std::string>{"headers"});
        crosstown::beast::async_write_body(
            server_, sr, scope,
            [&](boost::beast::error_code ec2, std::size_t) { EXPECT_FALSE(ec2); });
      });
  ioc_.run();
  EXPECT_EQ(ran, (std::vector<std::string>{"headers", "response"}));
  const auto got = read_response();
  EXPECT_TRUE(got.chunked());
  EXPECT_EQ(got.body(), "hello");
}

TEST_F(BeastWriteTest, WorksWithFutures) {
  crosstown::response_scope scope(rt_);
  auto res = hello(http::status::not_found);
  std::future<std::size_t> written =
      crosstown::beast::async_write_response(server_, res, scope, net::use_future);
  std::thread io([this] { ioc_.run(); });
  EXPECT_GT(written.get(), 0u);
  io.join();
  EXPECT_EQ(scope.status(), 404);
  EXPECT_EQ(scope.delivery_state(), crosstown::delivery::delivered);
}

// Second writes on one scope (issue: a second write was silently accepted, unreported, or
// threw out of io.run()). Each case must complete the handler with the same crosstown error,
// write nothing, and leave io.run() normally.

TEST_F(BeastWriteTest, SecondWriteAfterASuccessCompletesWithResponseAlreadyReported) {
  crosstown::response_scope scope(rt_);
  auto res = hello(http::status::ok);
  boost::beast::error_code first, second;
  std::size_t second_bytes = 99;
  bool second_done = false;
  crosstown::beast::async_write_response(
      server_, res, scope, [&](boost::beast::error_code ec, std::size_t) {
        first = ec;
        auto again = hello(http::status::ok);
        crosstown::beast::async_write_response(server_, again, scope,
                                               [&](boost::beast::error_code ec2, std::size_t n) {
                                                 second = ec2;
                                                 second_bytes = n;
                                                 second_done = true;
                                               });
        EXPECT_FALSE(second_done) << "never completed inside the initiating call";
      });
  EXPECT_NO_THROW(ioc_.run());
  EXPECT_FALSE(first);
  ASSERT_TRUE(second_done);
  EXPECT_EQ(second, crosstown::beast::error::response_already_reported);
  EXPECT_EQ(second.category().name(), std::string("crosstown.beast"));
  EXPECT_EQ(second_bytes, 0u);
  EXPECT_EQ(scope.delivery_state(), crosstown::delivery::delivered);
  read_response();
  // Nothing more came: the second response was not written.
  client_.non_blocking(true);
  char byte = 0;
  boost::system::error_code ec;
  client_.read_some(net::buffer(&byte, 1), ec);
  EXPECT_EQ(ec, net::error::would_block) << "the refused write sent bytes";
}

TEST_F(BeastWriteTest, SecondWriteAfterAFailureCompletesWithResponseAlreadyReported) {
  crosstown::response_scope scope(rt_);
  server_.close();
  auto res = hello(http::status::ok);
  boost::beast::error_code first, second, third;
  crosstown::beast::async_write_response(
      server_, res, scope, [&](boost::beast::error_code ec, std::size_t) { first = ec; });
  EXPECT_NO_THROW(ioc_.run());
  ASSERT_TRUE(first);
  const std::string reason = scope.failure_reason();
  // Again on a closed socket (it would fail again) and on a fresh, working one (it would
  // succeed): reported the same way both times.
  ioc_.restart();
  crosstown::beast::async_write_response(
      server_, res, scope, [&](boost::beast::error_code ec, std::size_t) { second = ec; });
  tcp::acceptor acceptor(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  tcp::socket other_client(ioc_), other_server(ioc_);
  other_client.connect(acceptor.local_endpoint());
  acceptor.accept(other_server);
  auto res2 = hello(http::status::ok);
  crosstown::beast::async_write_response(
      other_server, res2, scope, [&](boost::beast::error_code ec, std::size_t) { third = ec; });
  EXPECT_NO_THROW(ioc_.run());
  EXPECT_EQ(second, crosstown::beast::error::response_already_reported);
  EXPECT_EQ(third, crosstown::beast::error::response_already_reported);
  EXPECT_EQ(scope.delivery_state(), crosstown::delivery::failed);
  EXPECT_EQ(scope.failure_reason(), reason) << "the first outcome stands";
}

TEST_F(BeastWriteTest, WriteOnAnEndedScopeCompletesWithScopeEnded) {
  crosstown::response_scope scope(rt_);
  scope.end();
  auto res = hello(http::status::ok);
  http::response_serializer<http::string_body> sr(res);
  std::vector<boost::beast::error_code> results;
  const auto record = [&](boost::beast::error_code ec, std::size_t) { results.push_back(ec); };
  crosstown::beast::async_write_response(server_, res, scope, record);
  crosstown::beast::async_write_header(server_, sr, scope, record);
  crosstown::beast::async_write_body(server_, sr, scope, record);
  EXPECT_NO_THROW(ioc_.run());
  ASSERT_EQ(results.size(), 3u);
  for (const auto& ec : results) EXPECT_EQ(ec, crosstown::beast::error::scope_ended);
}

// A status change after the headers went out is a misuse the core rejects with
// std::logic_error; started from a completion handler, it must not escape io.run().
TEST_F(BeastWriteTest, StatusChangeAfterTheHeaderCompletesWithLifecycleMisuseInsteadOfThrowing) {
  crosstown::response_scope scope(rt_);
  auto res = hello(http::status::ok);
  res.chunked(true);
  http::response_serializer<http::string_body> sr(res);
  auto other = hello(http::status::not_found);
  http::response_serializer<http::string_body> sr404(other);
  boost::beast::error_code second;
  std::size_t second_bytes = 99;
  crosstown::beast::async_write_header(
      server_, sr, scope, [&](boost::beast::error_code ec, std::size_t) {
        ASSERT_FALSE(ec);
        crosstown::beast::async_write_body(server_, sr404, scope,
                                           [&](boost::beast::error_code ec2, std::size_t n) {
                                             second = ec2;
                                             second_bytes = n;
                                           });
      });
  EXPECT_NO_THROW(ioc_.run());
  EXPECT_EQ(second, crosstown::beast::error::lifecycle_misuse);
  EXPECT_EQ(second_bytes, 0u) << "refused at initiation: nothing written";
  EXPECT_EQ(scope.status(), 200);
}

TEST_F(BeastWriteTest, WholeMessageWriteReleasesHeadersPhaseTasksBeforeTheResponsePhase) {
  crosstown::response_scope scope(rt_);
  std::vector<std::string> ran;
  scope.defer([&] { ran.push_back("response"); }, {.executor = here_});
  scope.defer([&] { ran.push_back("headers"); },
              {.executor = here_, .phase = crosstown::task_phase::headers_sent});
  auto res = hello(http::status::ok);
  crosstown::beast::async_write_response(server_, res, scope,
                                         [](boost::beast::error_code, std::size_t) {});
  ioc_.run();
  EXPECT_EQ(ran, (std::vector<std::string>{"headers", "response"}));
}

// A reset mid-body: the client had the headers, so a headers-phase require_delivery task runs;
// the response-phase one is skipped.
TEST_F(BeastWriteTest, WholeMessageWriteReportsHeadersSentWhenTheClientResetsMidBody) {
  server_.set_option(net::socket_base::send_buffer_size(4096));
  crosstown::response_scope scope(rt_);
  std::atomic<int> header_task{0};
  std::atomic<int> response_task{0};
  scope.defer([&] { response_task = 1; }, {.executor = here_, .require_delivery = true});
  scope.defer(
      [&] { header_task = 1; },
      {.executor = here_, .phase = crosstown::task_phase::headers_sent, .require_delivery = true});
  http::response<http::string_body> res{http::status::ok, 11};
  res.body().assign(4 * 1024 * 1024, 'x');
  res.prepare_payload();
  boost::beast::error_code result;
  crosstown::beast::async_write_response(
      server_, res, scope, [&](boost::beast::error_code ec, std::size_t) { result = ec; });
  std::thread io([this] { ioc_.run(); });
  http::response_parser<http::string_body> parser;
  parser.body_limit(boost::none);
  http::read_header(client_, buffer_, parser);
  client_.set_option(net::socket_base::linger(true, 0));
  client_.close();
  io.join();
  EXPECT_TRUE(result);
  EXPECT_EQ(scope.delivery_state(), crosstown::delivery::failed);
  EXPECT_EQ(header_task.load(), 1) << "the header was accepted before the reset";
  EXPECT_EQ(response_task.load(), 0);
  EXPECT_EQ(rt_.metrics().count(crosstown::task_state::skipped_by_delivery), 1u);
}

// Per-operation cancellation: the write ends with operation_aborted and the scope hears
// delivery_failed with that reason.
TEST_F(BeastWriteTest, CancelledWriteReportsDeliveryFailedWithTheReason) {
  server_.set_option(net::socket_base::send_buffer_size(4096));
  client_.set_option(net::socket_base::receive_buffer_size(4096));
  crosstown::response_scope scope(rt_);
  bool ran = false;
  bool ran_required = false;
  scope.defer([&] { ran = true; }, {.executor = here_});
  scope.defer([&] { ran_required = true; }, {.executor = here_, .require_delivery = true});
  http::response<http::string_body> res{http::status::ok, 11};
  res.body().assign(4 * 1024 * 1024, 'x');  // the client reads nothing: the write stalls
  res.prepare_payload();
  net::cancellation_signal cancel;
  boost::beast::error_code result;
  crosstown::beast::async_write_response(
      server_, res, scope,
      net::bind_cancellation_slot(cancel.slot(),
                                  [&](boost::beast::error_code ec, std::size_t) { result = ec; }));
  net::post(ioc_, [&] { cancel.emit(net::cancellation_type::terminal); });
  ioc_.run();
  EXPECT_EQ(result, net::error::operation_aborted);
  EXPECT_EQ(scope.delivery_state(), crosstown::delivery::failed);
  EXPECT_EQ(scope.failure_reason(), result.message());
  EXPECT_TRUE(ran) << "a default task still runs after a failed delivery";
  EXPECT_FALSE(ran_required);
}

TEST_F(BeastWriteTest, DefaultCompletionTokenOfTheStreamIsUsed) {
  using awaitable_socket = net::use_awaitable_t<>::as_default_on_t<tcp::socket>;
  awaitable_socket socket(std::move(server_));
  crosstown::response_scope scope(rt_);
  std::size_t written = 0;
  net::co_spawn(
      ioc_,
      [&]() -> net::awaitable<void> {
        auto res = hello(http::status::accepted);
        written = co_await crosstown::beast::async_write_response(socket, res, scope);
      },
      net::detached);
  ioc_.run();
  EXPECT_GT(written, 0u);
  EXPECT_EQ(scope.delivery_state(), crosstown::delivery::delivered);
  EXPECT_EQ(read_response().result_int(), 202);
}

}  // namespace
