// crosstown/response_scope.hpp - the deferred work of one HTTP response.
//
// A server adapter creates one `response_scope` per request when the request has been read
// ("request started") and reports the response's lifecycle to it:
//
//     status_known(200) -> headers_sent() -> response_sent()      (or delivery_failed())
//                                                          -> end() / destructor ("scope ended")
//
// Handlers register tasks with `defer`. A task waits for its phase (default: response sent,
// i.e. the last byte was accepted by the transport). When the phase is reached, each task is
// judged by its options (defer_options.hpp) against the response's final status and delivery
// outcome; allowed tasks are handed to their executors in registration order, each exactly
// once - one batch per executor, `same_thread` tasks last, run on the thread reporting the
// event. Nothing is released by another scope's events (invariant I5).
//
// Rules the design leaves to us, decided here:
//   - Final status: the last `status_known` before the headers were sent (or before
//     `delivery_failed`). A scope that fails delivery with no status counts as a 500. A scope
//     that ends with no outcome reported (neither sent nor failed) and its headers never sent
//     counts as a 500 - the response the application produced never started going out. An
//     explicit `delivery_failed` before the headers keeps the application's status: the
//     adapter says the response existed and could not be delivered, which the delivery rule
//     (not the status rule) governs.
//   - Delivery: a scope that ends before `response_sent` (or `headers_sent`, for tasks of the
//     headers phase) counts as a delivery failure.
//   - Late registration: a task registered after its phase has passed is judged at once by
//     the same rules and, if allowed, handed to its executor immediately. It still runs after
//     its phase, and after the tasks registered before it were handed over.
//   - Connection phase: on a scope created from a `connection_scope`, allowed
//     connection-phase tasks wait, after the scope ends, until the connection closes. On a
//     scope created from a runtime directly, the end of the scope stands for the close.
//   - Misuse by an adapter (headers before a status, a status change after the headers, an
//     event after `end()`, "sent" after "failed") throws std::logic_error naming the calls;
//     a status outside 100-999 throws std::invalid_argument.
//
// Thread safety: every member function may be called from any thread, concurrently (a
// handler registering on one thread while the adapter reports events on another). Handing
// over to executors happens outside the internal lock, serialized per scope, so a task run
// on the same thread may itself `defer` on this scope. No call may be in progress when the
// scope is destroyed. The runtime (and connection) must outlive the scope.
#pragma once

#include <crosstown/defer_options.hpp>
#include <crosstown/detail/released_task.hpp>
#include <crosstown/detail/task_name.hpp>
#include <crosstown/status_set.hpp>
#include <crosstown/task.hpp>

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace crosstown {

class runtime;
class connection_scope;
class response_scope;

namespace detail {
// A callable whose result looks like boost::asio::awaitable (checked exactly, with a clear
// message, in crosstown/awaitable_task.hpp, which defines defer_awaitable).
template <class F>
concept returns_awaitable = requires {
  typename std::invoke_result_t<std::decay_t<F>&>::value_type;
  typename std::invoke_result_t<std::decay_t<F>&>::executor_type;
};
template <class F>
void defer_awaitable(response_scope& scope, F&& fn, defer_options&& options);
}  // namespace detail

/// A registered task still waiting for its phase, as `response_scope::pending_tasks` shows it.
struct pending_task {
  std::uint32_t index;  ///< registration index within the scope
  std::string name;
  task_phase phase;
  status_set no_go;
  bool always;
  bool require_delivery;
  bool same_thread;
  executor* target;  ///< the executor named in the options; null: the runtime's pool
};

/// How the response's delivery ended, as far as the scope knows.
enum class delivery : std::uint8_t {
  pending,    ///< neither sent nor failed yet
  delivered,  ///< `response_sent` was reported
  failed,     ///< `delivery_failed` was reported, or the scope ended first
};

class response_scope {
 public:
  /// Request started: a scope whose connection-phase tasks are released when it ends.
  explicit response_scope(runtime& rt);
  /// Request started on a keep-alive connection: connection-phase tasks wait for its close.
  explicit response_scope(connection_scope& connection);
  response_scope(const response_scope&) = delete;
  response_scope& operator=(const response_scope&) = delete;
  /// Scope ended: calls `end()`.
  ~response_scope();

  // --- registration (handlers) ---

  /// Room for this many tasks is made at the first `defer`; the list then grows geometrically.
  static constexpr std::size_t initial_capacity = 4;

  /// Registers a task. Throws std::invalid_argument if both `same_thread` and `executor` are
  /// set. Deferring a closure of at most 48 bytes allocates nothing beyond the scope's task
  /// list (and the name, if longer than the standard library's small-string buffer).
  void defer(task fn, defer_options options);
  /// Registers a task with the default options. The same as `defer(fn, {})`, without
  /// building and destroying a `defer_options` on every call.
  void defer(task fn);
  /// Registers an awaitable task: `fn()` returns `boost::asio::awaitable<void>` and runs as a
  /// coroutine on the runtime's I/O executor once released (include
  /// crosstown/awaitable_task.hpp). Same rules and options; `executor` and `same_thread` are
  /// refused with std::invalid_argument.
  template <class F>
  requires detail::returns_awaitable<F>
  void defer(F&& fn, defer_options options = {}) {
    detail::defer_awaitable(*this, std::forward<F>(fn), std::move(options));
  }
  /// Cancels the pending task of that name (counted `cancelled`). False if there is none.
  bool cancel(std::string_view name);

  // --- lifecycle (adapter) ---

  /// The handler chose a status (100-999). May be called again until the headers are sent.
  void status_known(int status);
  /// The status line and headers were accepted by the transport. Releases headers-phase tasks.
  void headers_sent();
  /// The last byte was accepted by the transport. Implies `headers_sent()` if not yet
  /// reported. Releases response-phase tasks.
  void response_sent();
  /// The response could not be delivered (reset, timeout, write error). Releases headers- and
  /// response-phase tasks under the delivery-failure rule. `reason` is kept for diagnostics.
  void delivery_failed(std::string_view reason = {});
  /// Scope ended: settles everything still pending (see the rules above). Idempotent; waits
  /// for a hand-off in progress on another thread to finish.
  void end() noexcept;

  // --- observers ---

  /// Runtime-unique id, from 1, in creation order.
  std::uint64_t id() const noexcept { return id_; }
  /// The status reported so far (or decided at the end), if any.
  std::optional<int> status() const;
  delivery delivery_state() const;
  /// The reason given to `delivery_failed`, or a description of why the end counted as one.
  std::string failure_reason() const;
  /// Tasks registered and still waiting for their phase.
  std::size_t pending() const;
  /// Those tasks with their options, in registration order (for tests and diagnostics).
  std::vector<pending_task> pending_tasks() const;
  bool ended() const;
  runtime& owner() const noexcept { return rt_; }

 private:
  // A pending task. Its no-go set is held by number, not by value: a status_set is 128 bytes
  // and nearly every task uses the default, so entries stay small and cheap to move.
  struct entry {
    task fn;
    detail::task_name name;
    executor* target;  // null: the runtime's pool
    std::uint32_t index;
    std::uint16_t no_go;  // 0: the default set; n: no_go_sets_[n - 1]
    task_phase phase;
    bool always;
    bool require_delivery;
  };

  static constexpr std::size_t max_no_go_sets = 0xffff;

  task_info info_of(const entry& e) const noexcept;
  const status_set& no_go_of(const entry& e) const noexcept;
  void add(task&& fn, std::string_view name, executor* target, const status_set* no_go,
           task_phase phase, bool always, bool require_delivery);
  // The number `entry::no_go` holds for `set`, adding it to no_go_sets_ if it is new.
  std::uint16_t intern_locked(const status_set& set);
  bool due_locked(task_phase p) const noexcept;
  // Judges a due entry: settles it if skipped, else queues it for hand-off.
  void settle_or_release_locked(entry&& e);
  void release_due_locked();
  void flush(std::unique_lock<std::mutex>& lock);
  void finish_locked(std::string_view reason);
  void check_open_locked(const char* event) const;

  runtime& rt_;
  connection_scope* connection_;
  const std::uint64_t id_;

  mutable std::mutex mutex_;
  std::condition_variable handoff_done_;   // dispatching_ became false
  std::vector<entry> entries_;             // pending tasks; guarded by mutex_
  std::vector<status_set> no_go_sets_;     // distinct non-default sets; mutex_
  detail::released_tasks outbox_;          // allowed, not yet handed over; mutex_
  detail::released_tasks to_connection_;   // mutex_
  std::string failure_reason_;             // guarded by mutex_
  std::uint32_t next_index_ = 0;           // guarded by mutex_
  int status_ = 0;                         // 0: unknown; guarded by mutex_
  delivery delivery_ = delivery::pending;  // guarded by mutex_
  bool headers_sent_ = false;              // guarded by mutex_
  bool ended_ = false;                     // guarded by mutex_
  bool dispatching_ = false;               // a thread is handing over; mutex_
  std::thread::id dispatcher_;             // that thread; guarded by mutex_
};

/// A keep-alive connection: holds the connection-phase tasks of its ended responses until it
/// closes. Create one per connection; create each request's `response_scope` from it.
/// Thread-safe. Must outlive its response scopes.
class connection_scope {
 public:
  explicit connection_scope(runtime& rt);
  connection_scope(const connection_scope&) = delete;
  connection_scope& operator=(const connection_scope&) = delete;
  /// Calls `closed()`.
  ~connection_scope();

  /// The connection closed: hands over the held tasks (in the order their responses ended,
  /// then registration order). Tasks of responses that end later are handed over at their
  /// end. Idempotent.
  void closed() noexcept;
  bool is_closed() const;
  /// Allowed connection-phase tasks waiting for the close.
  std::size_t held() const;
  runtime& owner() const noexcept { return rt_; }

 private:
  friend class response_scope;
  // Takes an ended response's connection-phase tasks; hands them over at once if closed.
  void adopt(detail::released_tasks&& tasks) noexcept;

  runtime& rt_;
  mutable std::mutex mutex_;
  detail::released_tasks held_;  // guarded by mutex_
  bool closed_ = false;          // guarded by mutex_
};

}  // namespace crosstown
