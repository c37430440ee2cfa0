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
//     its phase, and after the tasks registered before it were handed over. It does not wait
//     for a same-thread task of the scope that is running; a late same-thread task runs after
//     it, on the thread running the scope's same-thread tasks (they run one after another).
//   - Registration after `end()` is accepted and judged the same way, against the final
//     outcome: unlike an event, it can race with the end legitimately.
//   - Connection phase: on a scope created from a `connection_scope`, allowed
//     connection-phase tasks wait, after the scope ends, until the connection closes. On a
//     scope created from a runtime directly, the end of the scope stands for the close.
//   - Misuse by an adapter (headers before a status, a status change after the headers, an
//     event after `end()`, "sent" after "failed") throws std::logic_error naming the calls;
//     a status outside 100-999 throws std::invalid_argument.
//   - Memory: `defer` may throw std::bad_alloc (nothing registered, the scope unchanged).
//     Events, `end()` and the destructor never throw for lack of memory: a task that cannot be
//     released ends `dropped_out_of_memory`, counted and reported to `on_lost`; due tasks that
//     cannot be set apart from waiting ones stay until the next event, and the end releases
//     everything without allocating. An executor whose `execute` throws: the jobs destroyed
//     by its exception end `rejected_by_executor`, reported too.
//   - Cost and limits: a named `defer`, `cancel`, and a new distinct no-go set are amortised
//     O(1) (hash indexes); there is no limit on names or sets. A scope registers at most
//     2^32 - 1 tasks over its life, and a name has at most that many characters; beyond,
//     `defer` throws std::length_error.
//
// Thread safety: every member function may be called from any thread, concurrently (a
// handler registering on one thread while the adapter reports events on another). Tasks are
// judged under the internal lock; everything that runs user code happens outside it: closures,
// the destruction of skipped, cancelled and replaced closures, the runtime's hooks, executors'
// `execute`. So a capture's destructor or a hook may call into this scope. Hand-offs are
// serialized per scope (they keep registration order), and same-thread tasks run one at a
// time on one thread, so a task run on the same thread may itself `defer` on this scope. No
// call may be in progress when the scope is destroyed. The runtime (and connection) must
// outlive the scope.
#pragma once

#include <crosstown/defer_options.hpp>
#include <crosstown/detail/position_index.hpp>
#include <crosstown/detail/released_task.hpp>
#include <crosstown/detail/task_name.hpp>
#include <crosstown/metrics.hpp>
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
  /// set, std::length_error past the limits above, std::bad_alloc without memory (the scope
  /// is then unchanged). Deferring a closure of at most 48 bytes allocates nothing beyond the
  /// scope's task list (and, amortised, its name index; the name if longer than 23 bytes).
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
  /// Tasks registered and not yet judged (still waiting for their phase).
  std::size_t pending() const;
  /// Those tasks with their options, in registration order (for tests and diagnostics).
  std::vector<pending_task> pending_tasks() const;
  bool ended() const;
  runtime& owner() const noexcept { return rt_; }

 private:
  // What a due entry's judgement decided (set under the lock, acted on outside it).
  enum class verdict : std::uint8_t { pending, release, to_connection, skip_status, skip_delivery };

  // A registered task. Its no-go set is held by number, not by value: a status_set is 128
  // bytes and nearly every task uses the default, so entries stay small and cheap to move.
  // An entry whose `fn` is empty was cancelled or replaced: a tombstone, removed in bulk.
  struct entry {
    task fn;
    detail::task_name name;
    executor* target;  // null: the runtime's pool
    std::uint32_t index;
    std::uint32_t no_go;  // 0: the default set; n: no_go_sets_[n - 1]
    task_phase phase;
    bool always;
    bool require_delivery;
    verdict judged;
  };
  // A closure taken out of the scope under the lock, destroyed and reported after it.
  struct settled_entry {
    task fn;
    detail::task_name name;
    std::uint32_t index;
    task_state state;
  };

  task_info info_of(const entry& e) const noexcept;
  const status_set& no_go_of(const entry& e) const noexcept;
  // What `add` takes from the options: both `defer` overloads fill one, the one without
  // options without building a `defer_options` (a status_set is 128 bytes).
  struct registration {
    std::string_view name;
    executor* target = nullptr;         // null: the runtime's pool
    const status_set* no_go = nullptr;  // null: the default set
    task_phase phase = task_phase::response_sent;
    bool always = false;
    bool require_delivery = false;
  };
  void add(task&& fn, const registration& r);
  // The number `entry::no_go` holds for `set`, adding it to no_go_sets_ if it is new.
  std::uint32_t intern_locked(const status_set& set);
  // The live entry of that name still waiting for its phase, if any.
  entry* find_named_locked(std::string_view name) noexcept;
  // Turns `e` into a tombstone; its closure and name move to the returned record.
  settled_entry bury_locked(entry& e, task_state state) noexcept;
  // Drops tombstones when they are at least half the list (amortised O(1) per removal).
  void compact_if_sparse_locked() noexcept;
  void rebuild_name_index_locked() noexcept;
  void settle(settled_entry&& s) noexcept;
  bool due_locked(task_phase p) const noexcept;
  bool any_due_locked() const noexcept;
  verdict judge_locked(const entry& e) const noexcept;
  // Moves the due entries, judged, into `out`. False if none is due or there was no memory
  // to split them from the others (they stay and are taken at a later event or the end).
  bool take_due_locked(std::vector<entry>& out) noexcept;
  // Outside the lock: settles the skipped, hands the allowed to their executors, passes the
  // connection's to it. Returns the same-thread jobs, for the one thread that runs them.
  detail::released_tasks release(std::vector<entry>&& due) noexcept;
  void flush(std::unique_lock<std::mutex>& lock) noexcept;
  void run_same_thread(std::unique_lock<std::mutex>& lock) noexcept;
  void finish_locked(std::string_view reason, bool static_reason) noexcept;
  void check_open_locked(const char* event) const;

  runtime& rt_;
  connection_scope* connection_;
  const std::uint64_t id_;

  mutable std::mutex mutex_;
  std::condition_variable handoff_done_;   // handing_off_ or running_same_thread_ fell
  std::vector<entry> entries_;             // registration order, tombstones included; mutex_
  std::size_t dead_ = 0;                   // tombstones in entries_; guarded by mutex_
  detail::position_index names_;           // named entries waiting for their phase; mutex_
  std::vector<status_set> no_go_sets_;     // distinct non-default sets; mutex_
  detail::position_index no_go_index_;     // into no_go_sets_; guarded by mutex_
  detail::released_tasks same_thread_;     // same-thread jobs not yet run; mutex_
  std::string failure_reason_;             // a reason given by the adapter; mutex_
  std::string_view static_reason_;         // or one of crosstown's literals; mutex_
  std::uint32_t next_index_ = 0;           // guarded by mutex_
  int status_ = 0;                         // 0: unknown; guarded by mutex_
  delivery delivery_ = delivery::pending;  // guarded by mutex_
  bool headers_sent_ = false;              // guarded by mutex_
  bool ended_ = false;                     // guarded by mutex_
  bool handing_off_ = false;               // a thread is handing jobs to executors; mutex_
  bool running_same_thread_ = false;       // a thread is running same-thread jobs; mutex_
  std::thread::id hand_off_thread_;        // guarded by mutex_
  std::thread::id same_thread_runner_;     // guarded by mutex_
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
