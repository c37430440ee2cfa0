// crosstown walkthrough: the phone-calls example, with the server's side played by hand.
//
// A real server calls the lifecycle hooks from its adapter (see the Beast adapter); here the
// program reports them itself, so you can watch the rules without a network:
//   1. POST /calls -> 202: 100 calls are deferred; none starts before "response sent".
//   2. GET /missing -> 404: its deferred work is skipped (default no-go: 4xx, 5xx).
//   3. POST /audit -> 500 with an `always` task and a custom no-go spec.
// Then the runtime drains and prints its counters.
#include <crosstown/crosstown.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <sstream>
#include <string>

namespace {

using clock_type = std::chrono::steady_clock;

const clock_type::time_point start = clock_type::now();

double ms_since_start(clock_type::time_point t) {
  return std::chrono::duration<double, std::milli>(t - start).count();
}

std::mutex print_mutex;
template <class... Args>
void say(const char* format, Args... args) {
  std::lock_guard lock(print_mutex);
  std::printf(format, args...);
  std::fflush(stdout);
}

// Stands in for an API call to a telephony provider.
void place_call(int number) {
  volatile unsigned spin = 0;
  for (int i = 0; i < 200000; ++i) spin = spin + static_cast<unsigned>(number);
}

// The handler: decides the response and defers the calls. It never waits for them.
int handle_calls(crosstown::response_scope& scope, int n, std::atomic<int>& calls_started,
                 std::atomic<long long>& first_start_ns) {
  crosstown::scope_binding bound(scope);  // deep code can now use crosstown::defer
  for (int i = 0; i < n; ++i) {
    crosstown::defer([i, &calls_started, &first_start_ns] {
      long long now =
          std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - start).count();
      long long unset = 0;
      first_start_ns.compare_exchange_strong(unset, now);
      calls_started.fetch_add(1);
      place_call(i);
    });
  }
  return 202;
}

}  // namespace

int main() {
  crosstown::runtime rt({.threads = 2});

  say("crosstown walkthrough (in-process: the program reports the response lifecycle itself)\n\n");

  // 1. POST /calls?n=100 -> 202
  {
    std::atomic<int> started{0};
    std::atomic<long long> first_start_ns{0};
    crosstown::response_scope scope(rt);
    const int status = handle_calls(scope, 100, started, first_start_ns);
    say("POST /calls?n=100  handler returned %d, %zu calls deferred, %d started\n", status,
        scope.pending(), started.load());
    scope.status_known(status);
    scope.headers_sent();
    say("                   headers sent: %d calls started (they wait for the last byte)\n",
        started.load());
    const auto sent_at = clock_type::now();
    scope.response_sent();
    say("                   t=%8.3f ms  last byte written (response sent)\n",
        ms_since_start(sent_at));
    rt.drain_for(std::chrono::seconds(30));
    const double first = static_cast<double>(first_start_ns.load()) / 1e6;
    say("                   t=%8.3f ms  first deferred call started (+%.3f ms)\n", first,
        first - ms_since_start(sent_at));
    say("                   %d calls ran after the response\n\n", started.load());
  }

  // 2. GET /missing -> 404
  {
    std::atomic<int> started{0};
    crosstown::response_scope scope(rt);
    for (int i = 0; i < 100; ++i) scope.defer([&started] { started.fetch_add(1); });
    scope.status_known(404);
    scope.response_sent();
    rt.drain_for(std::chrono::seconds(30));
    say("GET /missing       404: %d of 100 deferred tasks ran (skipped by status: %llu)\n\n",
        started.load(),
        static_cast<unsigned long long>(
            rt.metrics().count(crosstown::task_state::skipped_by_status)));
  }

  // 3. POST /audit -> 500, with an always-task and a custom no-go spec
  {
    crosstown::inline_executor here;
    crosstown::response_scope scope(rt);
    scope.defer([] { say("POST /audit        500: the `always` audit record ran anyway\n"); },
                {.executor = here, .always = true, .name = "audit"});
    scope.defer([] { say("POST /audit        (never printed: 5xx is in this task's no-go)\n"); },
                {.executor = here, .no_go = "5xx,400-405,302"});
    scope.status_known(500);
    scope.response_sent();
  }

  const crosstown::drain_report report = rt.drain_for(std::chrono::seconds(30));
  const crosstown::metrics_snapshot m = rt.metrics();
  say("\ndrain: %s\n", report.complete ? "complete" : "INCOMPLETE");
  std::ostringstream counters;
  counters << m;
  say("counters: %s\n", counters.str().c_str());
  say("every task accounted for: %s\n", m.unfinished() == 0 ? "yes" : "NO");
  return report.complete && m.unfinished() == 0 ? 0 : 1;
}
