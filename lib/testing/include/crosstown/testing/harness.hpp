// crosstown/testing/harness.hpp - test a handler's deferred work without threads or sockets.
//
//     crosstown::testkit::harness h;
//     int status = h.call([&] { return handle_calls(request); });  // scope bound for the call
//     EXPECT_THAT(h.deferred(), SizeIs(100));                     // registered, none ran
//     h.respond(status);                                           // headers + last byte
//     EXPECT_EQ(h.queued(), 100u);                                 // released, not yet run
//     h.next_task();                                               // run one ...
//     h.run_all();                                                 // ... or all of them
//     EXPECT_THAT(h.history(), AllRanAfterResponse(100));           // exactly 100, none before
//
// A test may drive `h.scope()` itself (`status_known(201)`, `headers_sent()`, ...) instead of
// `respond`: the records learn the status from the scope either way.
//
// Escapes: while a `call` runs, a `crosstown::defer` that finds no scope bound - made from a
// helper thread the handler started, whose thread has no binding - would run at once in
// production, during the handler. The harness takes such a deferral instead (it never runs),
// records it in `escaped()` and fails the test with a message naming it (ADD_FAILURE, on the
// deferring thread). One harness at a time watches for escapes.
//
// The harness owns a runtime whose released tasks all go to a manual executor (whatever
// executor the handler named, `same_thread` included), so nothing runs until the test says so
// and everything runs on the test's thread. The status and delivery rules are the real ones.
// Each `call` starts a new request (a new response scope); the previous one ends first.
//
// Coroutine handlers: `call_awaitable(fn)` runs `fn(scope)` - returning a
// `boost::asio::awaitable<T>` - to completion on the harness's own io_context; the scope is
// passed explicitly, as crosstown requires for coroutines.
//
// Not thread-safe: one test thread drives a harness.
#pragma once

#include <crosstown/binding.hpp>
#include <crosstown/manual_executor.hpp>
#include <crosstown/metrics.hpp>
#include <crosstown/response_scope.hpp>
#include <crosstown/runtime.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace crosstown::testkit {

/// What became of one task, as the harness saw it.
struct task_record {
  std::uint64_t request_id = 0;
  std::uint32_t index = 0;
  std::string name;
  task_state state = task_state::pending;
  /// Final status of the task's response when the task settled (0: unknown).
  int status = 0;
  /// The task was released (handed to its executor) only after its response had been sent
  /// or had failed, and then settled. False for a task released at "headers sent", or by any
  /// event before the response's completion was reported.
  bool after_response = false;
  /// The task was handed to an executor at all (false when skipped or cancelled).
  bool released = false;
};

/// A `crosstown::defer` that escaped the harness: made with no scope bound during a `call`.
struct escaped_deferral {
  std::string name;          ///< the task's name, if it had options with one
  std::uint64_t request_id;  ///< the request being handled when it escaped
  bool on_handler_thread;    ///< false: another thread (the usual case)
};

void PrintTo(const task_record& r, std::ostream* out);

class harness {
 public:
  harness();
  harness(const harness&) = delete;
  harness& operator=(const harness&) = delete;
  ~harness();

  /// Starts a request and calls `handler()` or `handler(scope)` with the scope bound to this
  /// thread. Returns what the handler returns.
  template <class Handler>
  decltype(auto) call(Handler&& handler) {
    response_scope& s = begin_request();
    escape_watch watching(*this);
    scope_binding bound(s);
    if constexpr (std::is_invocable_v<Handler, response_scope&>) {
      return std::forward<Handler>(handler)(s);
    } else {
      return std::forward<Handler>(handler)();
    }
  }

  /// Starts a request and runs the coroutine `handler(scope)` to completion. Returns its
  /// result; rethrows its exception.
  template <class Handler>
  auto call_awaitable(Handler&& handler) {
    response_scope& s = begin_request();
    escape_watch watching(*this);
    using awaitable_type = std::invoke_result_t<Handler, response_scope&>;
    using value_type = typename awaitable_type::value_type;
    io_.restart();
    std::exception_ptr error;
    if constexpr (std::is_void_v<value_type>) {
      boost::asio::co_spawn(io_, std::forward<Handler>(handler)(s),
                            [&](std::exception_ptr e) { error = e; });
      io_.run();
      if (error) std::rethrow_exception(error);
    } else {
      std::optional<value_type> result;
      boost::asio::co_spawn(io_, std::forward<Handler>(handler)(s),
                            [&](std::exception_ptr e, value_type v) {
                              error = e;
                              if (!e) result.emplace(std::move(v));
                            });
      io_.run();
      if (error) std::rethrow_exception(error);
      return std::move(*result);
    }
  }

  /// The current request's scope. Precondition: `call` was made.
  response_scope& scope();

  /// Tasks the current request registered that wait for their phase, with their options.
  std::vector<pending_task> deferred() const;

  /// Completes the current response: status, headers sent, last byte sent.
  void respond(int status);
  /// Completes the current response with a delivery failure after `status` was chosen.
  void fail_delivery(int status, std::string_view reason = "simulated delivery failure");
  /// Ends the current request's scope (without a response, unless one was reported).
  void end_request();
  /// Reports the connection closed: releases connection-phase tasks of ended requests.
  void close_connection();

  /// Runs the oldest released task. False if none is queued.
  bool next_task();
  /// Runs released tasks until none is queued. Returns how many ran.
  std::size_t run_all();
  /// Released tasks not yet run.
  std::size_t queued() const { return manual_.pending(); }

  /// Every task that reached a terminal state, in the order they did.
  const std::vector<task_record>& history() const;
  /// Deferrals that escaped the harness (see the file comment); each also failed the test.
  std::vector<escaped_deferral> escaped() const;
  /// The record of the named task (last one of that name), or null.
  const task_record* find(std::string_view name) const;
  /// How many tasks ran (returned normally).
  std::size_t ran() const;

  metrics_snapshot metrics() const { return rt_->metrics(); }
  runtime& rt() { return *rt_; }

 private:
  // Installed for the duration of a call: takes deferrals made with no scope bound.
  class escape_watch final : public detail::unbound_deferral_observer {
   public:
    explicit escape_watch(harness& owner) noexcept;
    escape_watch(const escape_watch&) = delete;
    escape_watch& operator=(const escape_watch&) = delete;
    ~escape_watch() override;
    bool escaped(task& fn, const defer_options* options) noexcept override;

   private:
    harness& owner_;
    detail::unbound_deferral_observer* previous_;
    std::thread::id handler_thread_;
  };

  response_scope& begin_request();
  void on_settled(const task_info& info, task_state state);
  // After a completion event: records of the current request learn its final status.
  void fill_status();
  int status_of(std::uint64_t request_id) const;

  // Sits between the runtime and the manual executor: notes, for every job handed over,
  // whether its response had been completed at that moment.
  class release_recorder final : public executor {
   public:
    explicit release_recorder(harness& owner) : owner_(owner) {}
    void execute(job_batch batch) override;

   private:
    harness& owner_;
  };
  bool completed(std::uint64_t request_id) const;

  // Records whose status was unknown when they settled learn it when read.
  mutable std::vector<task_record> history_;
  std::vector<std::pair<std::uint64_t, int>> responded_;  // request id, final status
  // Tasks handed over: (request id, index) -> released after their response completed.
  std::map<std::pair<std::uint64_t, std::uint32_t>, bool> released_;
  mutable std::mutex escaped_mutex_;
  std::vector<escaped_deferral> escaped_;  // guarded by escaped_mutex_
  std::vector<task> escaped_tasks_;        // never run; guarded by escaped_mutex_
  boost::asio::io_context io_;
  manual_executor manual_;
  release_recorder recorder_{*this};
  std::unique_ptr<runtime> rt_;
  std::unique_ptr<connection_scope> connection_;
  std::unique_ptr<response_scope> scope_;
};

}  // namespace crosstown::testkit
