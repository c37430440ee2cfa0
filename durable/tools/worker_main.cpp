// crosstown-worker: runs durable tasks from Redis Streams with the built-in handlers.
//
//   crosstown-worker --redis unix:/run/redis.sock [--stream crosstown:tasks]... [--group g]
//                    [--consumer name] [--threads n] [--visibility-timeout ms]
//                    [--max-attempts n] [--max-deliveries n] [--metrics]
//
// Built-in task types: "log" (prints the payload) and "phone-call" (the demo's call: a JSON
// payload {"to": "...", "call": n, "us": latency}; spends the latency, then records the key in
// the set crosstown:demo:placed, once per key). An application links crosstown::redis and
// registers its own handlers the same way.
// SIGINT or SIGTERM stops gracefully: the handler in hand finishes, the rest is given back.
#include <crosstown/redis/worker.hpp>

#include <boost/json.hpp>

#include <pthread.h>
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

namespace {

[[noreturn]] void usage(std::string_view error) {
  std::cerr << "crosstown-worker: " << error
            << "\nusage: crosstown-worker --redis ADDRESS [--stream NAME]... [--group NAME]"
               " [--consumer NAME] [--threads N] [--visibility-timeout MS] [--max-attempts N]"
               " [--max-deliveries N] [--metrics]\n";
  std::exit(2);
}

long number(std::string_view flag, const char* text) {
  char* end = nullptr;
  const long v = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || v <= 0) {
    usage(std::string(flag) + " needs a positive number, got \"" + text + "\"");
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  namespace redis = crosstown::redis;
  redis::worker_options options;
  bool streams_given = false;
  bool print_metrics = false;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string_view flag = argv[i];
      auto value = [&]() -> const char* {
        if (i + 1 >= argc) usage(std::string(flag) + " needs a value");
        return argv[++i];
      };
      if (flag == "--redis") {
        options.redis = redis::endpoint::parse(value());
      } else if (flag == "--stream") {
        if (!streams_given) options.streams.clear();
        streams_given = true;
        options.streams.emplace_back(value());
      } else if (flag == "--group") {
        options.group = value();
      } else if (flag == "--consumer") {
        options.consumer = value();
      } else if (flag == "--threads") {
        options.threads = static_cast<std::size_t>(number(flag, value()));
      } else if (flag == "--visibility-timeout") {
        options.visibility_timeout = std::chrono::milliseconds(number(flag, value()));
      } else if (flag == "--max-attempts") {
        options.max_attempts = static_cast<std::uint32_t>(number(flag, value()));
      } else if (flag == "--max-deliveries") {
        options.max_deliveries = static_cast<std::uint32_t>(number(flag, value()));
      } else if (flag == "--metrics") {
        print_metrics = true;
      } else {
        usage("unknown option \"" + std::string(flag) + "\"");
      }
    }
  } catch (const std::invalid_argument& e) {
    usage(e.what());
  }

  // Signals are taken by sigwait below, not by a handler on a random thread.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  options.on_dead_letter = [](const redis::task_context& ctx, std::string_view reason) {
    std::cerr << "dead-lettered " << ctx.stream << ' ' << ctx.id << " \"" << ctx.name
              << "\": " << reason << '\n';
  };
  redis::worker w(options);
  w.handle("log", [](const redis::task_context& ctx) {
    std::cout << ctx.name << ' ' << ctx.key << ' ' << ctx.payload << '\n';
  });
  w.handle_json("phone-call", [](const boost::json::value& v, const redis::task_context& ctx) {
    if (!v.is_object() || !v.as_object().contains("to")) {
      throw redis::malformed_task("bad payload: a phone call needs {\"to\": ...}");
    }
    // Placing the call is where a real application talks to its telephony provider; the demo
    // spends the call's "us" (at most 5 s) and records it, once per idempotency key.
    if (const auto* us = v.as_object().if_contains("us"); us != nullptr && us->is_int64()) {
      const auto spend = std::min<std::int64_t>(us->as_int64(), 5'000'000);
      if (spend > 0) std::this_thread::sleep_for(std::chrono::microseconds(spend));
    }
    if (ctx.redis != nullptr) {
      ctx.redis->command({"SADD", "crosstown:demo:placed", ctx.key});
    }
  });
  w.start();
  std::cerr << "crosstown-worker: consuming";
  for (const auto& s : options.streams) std::cerr << ' ' << s;
  std::cerr << " as group " << options.group << " at " << options.redis.to_string() << '\n';
  int sig = 0;
  sigwait(&signals, &sig);
  w.stop();
  w.join();
  if (print_metrics) std::cout << w.metrics() << '\n';
  return 0;
}
