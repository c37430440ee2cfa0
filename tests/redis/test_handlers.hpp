// tests/redis/test_handlers.hpp - task handlers shared by the in-process workers of the tests
// and the worker process they kill.
//
//   "record"    adds the key to the set test:done and counts test:runs:<key>
//   "hold-once" the first runner of a key (SET test:held:<key> NX) says so on stdout and hangs
//               until killed; any later runner counts test:success:<key> and returns
#pragma once

#include <crosstown/redis/worker.hpp>

#include <chrono>
#include <iostream>
#include <thread>

#include <unistd.h>

namespace crosstown::redis::test {

inline void record(const task_context& ctx) {
  ctx.redis->pipeline(
      {{"SADD", "test:done", ctx.key}, {"INCR", std::string("test:runs:") + std::string(ctx.key)}});
}

inline void hold_once(const task_context& ctx) {
  if (mark_once(*ctx.redis, std::string("test:held:") + std::string(ctx.key),
                std::chrono::seconds(600))) {
    std::cout << "holding " << ctx.key << std::endl;
    for (;;) ::pause();  // parked until kill -9: no timer, nothing to wake for
  }
  ctx.redis->command({"INCR", std::string("test:success:") + std::string(ctx.key)});
}

inline void add_test_handlers(worker& w) {
  w.handle("record", record);
  w.handle("hold-once", hold_once);
}

}  // namespace crosstown::redis::test
