// Tests of crosstown/beast/write.hpp on its own: a connected pair of sockets on 127.0.0.1, one
// io_context run on the test thread, an inline executor so released tasks are visible at once.
#include <crosstown/beast/write.hpp>

#include <crosstown/crosstown.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <gtest/gtest.h>

#include <future>
#include <stdexcept>
#include <string>
#include <thread>

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

}  // namespace
