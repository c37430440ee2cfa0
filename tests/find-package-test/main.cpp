// Defers two tasks on an installed crosstown and checks the status rule end to end.
#include <crosstown/beast/write.hpp>
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
  std::printf("consumer: ran=%d %s\n", ran, ran == 1 && m.skipped_by_status == 1 ? "ok" : "WRONG");
  return ran == 1 && m.skipped_by_status == 1 ? 0 : 1;
}
