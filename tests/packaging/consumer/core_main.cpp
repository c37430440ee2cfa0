// The core alone: defers two tasks and checks the status rule end to end.
#include <crosstown/crosstown.hpp>

#include <cstdio>

int main() {
  crosstown::manual_executor manual;
  crosstown::runtime rt({.threads = 1});
  int ran = 0;
  {
    crosstown::response_scope ok(rt);
    ok.defer([&] { ++ran; }, {.executor = manual});
    ok.status_known(200);
    ok.response_sent();
  }
  {
    crosstown::response_scope missing(rt);
    missing.defer([&] { ++ran; }, {.executor = manual});
    missing.status_known(404);
    missing.response_sent();
  }
  manual.run_all();
  const crosstown::metrics_snapshot m = rt.metrics();
  const bool good = ran == 1 && m.count(crosstown::task_state::skipped_by_status) == 1;
  std::printf("core consumer: ran=%d %s\n", ran, good ? "ok" : "WRONG");
  return good ? 0 : 1;
}
