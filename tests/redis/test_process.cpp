// crosstown_redis_test_process: the processes the crash tests kill with SIGKILL.
//
//   worker <redis> <consumer> <visibility-ms>   a worker with the test handlers; prints
//                                               "ready" once started
//   web <redis> <responses> <tasks-per-response>  answers that many requests whose tasks are
//                                               "record" tasks, prints "acknowledged <n>" once
//                                               Redis acknowledged every append, then waits to
//                                               be killed
#include "test_handlers.hpp"
#include "web_fixture.hpp"

#include <crosstown/redis/publisher.hpp>
#include <crosstown/redis/worker.hpp>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>

int main(int argc, char** argv) {
  namespace redis = crosstown::redis;
  using namespace std::chrono_literals;
  if (argc < 3) {
    std::cerr << "usage: crosstown_redis_test_process worker|web <redis> ...\n";
    return 2;
  }
  const std::string mode = argv[1];
  const auto where = redis::endpoint::parse(argv[2]);
  if (mode == "worker" && argc == 5) {
    redis::worker_options o;
    o.redis = where;
    o.consumer = argv[3];
    o.visibility_timeout = std::chrono::milliseconds(std::atol(argv[4]));
    o.claim_interval = 50ms;
    o.block = 50ms;
    redis::worker w(o);
    redis::test::add_test_handlers(w);
    w.start();
    std::cout << "ready" << std::endl;
    for (;;) ::pause();  // parked until the test kills the process
  }
  if (mode == "web" && argc == 5) {
    const int responses = std::atoi(argv[3]);
    const int per_response = std::atoi(argv[4]);
    redis::test::web_process web(redis::test::test_publisher(where));
    for (int r = 0; r < responses; ++r) {
      std::vector<redis::durable_task> tasks;
      for (int i = 0; i < per_response; ++i) tasks.push_back(redis::test::task_named("record"));
      web.respond(200, std::move(tasks));
    }
    const auto total =
        static_cast<std::uint64_t>(responses) * static_cast<std::uint64_t>(per_response);
    // Waits (woken by the runtime, bounded by the test's own deadline on this line) until
    // every append was acknowledged: the test reads this line and kills the process after it.
    const crosstown::drain_report drained = web.rt().drain_for(60s);
    if (!drained.complete || web.count(crosstown::task_state::ran) < total) {
      std::cout << "unacknowledged " << total - web.count(crosstown::task_state::ran) << std::endl;
      return 1;
    }
    std::cout << "acknowledged " << web.count(crosstown::task_state::ran) << std::endl;
    for (;;) ::pause();  // parked until the test kills the process
  }
  std::cerr << "bad arguments\n";
  return 2;
}
