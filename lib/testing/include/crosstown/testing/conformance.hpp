// crosstown/testing/conformance.hpp - the conformance kit: proves a server adapter keeps
// crosstown's rules over real sockets.
//
// An adapter is the one place that can break every rule (a task released before the last byte
// went out, a status the client never saw, a reset reported twice), so each adapter - ours or
// a user's - runs the same GoogleTest suite. The adapter's test provides a small
// `server_under_test`: start a server on 127.0.0.1, port 0, whose requests under `/kit` are
// answered by the kit's handler; stop it. Then, in one test file:
//
//     #include <crosstown/testing/conformance.hpp>
//     CROSSTOWN_CONFORMANCE_SUITE(MyServer, crosstown::testkit::conformance_target{
//         "my_server", [] { return std::make_unique<my_server_fixture>(); }});
//
// Each check is its own test, `MyServer/conformance.<Check>/my_server`. The checks (see
// README, "Adapters"): tasks start only after the write that carried their response's last
// byte completed - measured on the server's own socket (the kernel's count of bytes the
// process wrote to it, asked over sock_diag: tcpi_bytes_acked + the write queue), so the proof
// needs no instrumented stream - across keep-alive and pipelined requests, each request releasing
// only its own tasks; the status the scope sees is the one on the wire, for the handler's statuses
// and the server's own error paths (handler throws, unknown route); a client reset at a spread of
// byte offsets in the headers and the body fails delivery exactly once; HEAD, empty bodies, a
// streamed body whose headers-phase tasks run before the body is complete; connection-phase
// tasks after the close; a graceful stop that leaves every task in a terminal state.
//
// What the fixture's server must do:
//   - `start(rt, handler, on_outcome)`: listen on 127.0.0.1 port 0 and return the port. For
//     every request whose path is `/kit` (any method), create the request's
//     `crosstown::response_scope` (from the connection's `connection_scope`), call `handler`
//     with the method, the target and the scope, and send the `kit_response` it returns:
//     `status`, `body` (for HEAD: the headers of that body, no body), and when `chunks` is not
//     empty a streamed body - the headers written on their own first, then each chunk
//     (chunked transfer encoding). A handler that throws goes to the server's own error path.
//     Any other path goes to the server's own "not found".
//   - Call `on_outcome` once per response when the adapter reported its delivery outcome (or
//     its scope ended without one): method, target, the scope's status and delivery state.
//   - Keep-alive connections, pipelining as the server supports it.
//   - `stop()`: graceful; returns once every connection is closed and every scope has ended.
//
// Documented limits: an adapter that cannot prove a check declares it in `limits()` and
// counts each such response in `unverified_responses()`. The kit then checks the documented
// fallback (the order still holds, the response is counted) and marks the test SKIPPED with
// the limit's text, so the listing shows which checks pass.
//
// Bounds: every wait has a deadline (`conformance_deadline`); nothing sleeps. Linux only (the
// socket probe is a NETLINK_SOCK_DIAG query).
#pragma once

#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace crosstown::testkit {

/// How long any single wait of the kit may take before the check fails.
inline constexpr std::chrono::seconds conformance_deadline{30};

/// A request as the fixture gives it to the kit's handler.
struct kit_request {
  std::string method;  ///< "GET", "HEAD", "POST"
  std::string target;  ///< path and query, as on the request line
};

/// The response the fixture's server must send.
struct kit_response {
  int status = 200;
  std::string body;                 ///< the whole body (unless `chunks` is not empty)
  std::vector<std::string> chunks;  ///< non-empty: headers first, alone, then each chunk
};

using kit_handler = std::function<kit_response(const kit_request&, response_scope&)>;

/// What the adapter reported for one response.
struct response_outcome {
  std::string method;
  std::string target;
  std::optional<int> status;  ///< the scope's status
  delivery outcome = delivery::pending;
};

using outcome_hook = std::function<void(const response_outcome&)>;

/// Checks an adapter cannot pass, each with the fallback it documents instead.
struct adapter_limits {
  /// HEAD: delivery is reported "sent" without proof (counted in unverified_responses).
  bool head_unverified = false;
  /// An empty body: delivery is reported "sent" without proof (counted).
  bool empty_body_unverified = false;
  /// Range requests: delivery is reported "sent" without proof (counted).
  bool range_unverified = false;
  /// The server does not answer pipelined requests (only the first of a batch is checked).
  bool no_pipelining = false;
};

/// The fixture an adapter's test provides. Its member functions are called from the test's
/// thread; `start` once, `stop` once (also when a check failed).
class server_under_test {
 public:
  virtual ~server_under_test() = default;
  /// Starts the server on 127.0.0.1, port 0; returns the port.
  virtual unsigned short start(runtime& rt, kit_handler handler, outcome_hook on_outcome) = 0;
  /// Stops gracefully: returns once every connection closed and every scope ended.
  virtual void stop() = 0;
  virtual adapter_limits limits() const { return {}; }
  /// Responses whose delivery the adapter reported without proof (see adapter_limits).
  virtual std::uint64_t unverified_responses() const { return 0; }
};

/// One adapter under test: a name for the test listing and a factory for its fixture.
struct conformance_target {
  std::string name;
  std::function<std::unique_ptr<server_under_test>()> make;
};

inline void PrintTo(const conformance_target& target, std::ostream* out) { *out << target.name; }

namespace detail {
class kit_state;
}  // namespace detail

/// The parameterised suite. Instantiate it with CROSSTOWN_CONFORMANCE_SUITE.
class conformance : public ::testing::TestWithParam<conformance_target> {
 protected:
  void SetUp() override;
  void TearDown() override;

  std::unique_ptr<detail::kit_state> kit_;
};

/// Referenced by CROSSTOWN_CONFORMANCE_SUITE so the kit's tests are linked in from the static
/// library. Returns 0.
int conformance_anchor() noexcept;

}  // namespace crosstown::testkit

/// Instantiates the kit for one or more `conformance_target`s, as
/// `prefix/conformance.<Check>/<target name>`.
#define CROSSTOWN_CONFORMANCE_SUITE(prefix, ...)                                            \
  [[maybe_unused]] static const int crosstown_conformance_anchor_##prefix =                 \
      ::crosstown::testkit::conformance_anchor();                                           \
  namespace crosstown::testkit {                                                            \
  INSTANTIATE_TEST_SUITE_P(prefix, conformance, ::testing::Values(__VA_ARGS__),             \
                           [](const ::testing::TestParamInfo<conformance_target>& target) { \
                             return target.param.name;                                      \
                           });                                                              \
  }
