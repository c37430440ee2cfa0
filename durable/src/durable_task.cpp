#include <crosstown/redis/durable_task.hpp>

#include <crosstown/redis/publisher.hpp>
#include <crosstown/response_scope.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

namespace crosstown::redis {

durable_task json_task(std::string name, const boost::json::value& value, std::string key) {
  return durable_task{std::move(name), boost::json::serialize(value), std::move(key), {}};
}

std::string make_idempotency_key() {
  // Seeded once per thread from the system; keys only need to be unique, not secret.
  thread_local std::mt19937_64 generator = [] {
    std::random_device device;
    std::seed_seq seed{device(), device(), device(), device()};
    return std::mt19937_64(seed);
  }();
  static constexpr char digits[] = "0123456789abcdef";
  std::string key(32, '0');
  for (int half = 0; half < 2; ++half) {
    std::uint64_t bits = generator();
    for (int i = 0; i < 16; ++i) {
      key[static_cast<std::size_t>(half * 16 + i)] = digits[bits & 0xf];
      bits >>= 4;
    }
  }
  return key;
}

boost::json::value parse_json_payload(std::string_view payload) {
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(payload, ec);
  if (ec) {
    throw malformed_task("bad payload: not JSON (" + ec.message() + ") in " +
                         std::to_string(payload.size()) + " bytes");
  }
  return v;
}

namespace detail {

void check_task_name(std::string_view name) {
  if (name.empty()) throw std::invalid_argument("durable task name is empty");
  if (name.size() > 200) {
    throw std::invalid_argument("durable task name is " + std::to_string(name.size()) +
                                " bytes long (at most 200)");
  }
  for (std::size_t i = 0; i < name.size(); ++i) {
    const auto c = static_cast<unsigned char>(name[i]);
    if (c < 0x20 || c == 0x7f) {
      throw std::invalid_argument("durable task name \"" + std::string(name.substr(0, i)) +
                                  "...\" has a control character at byte " + std::to_string(i));
    }
  }
}

void durable_call::operator()() const {
  if (record->run_locally) {
    record->run_locally(record->task);
    return;
  }
  if (!record->handled) {
    throw std::logic_error("durable task \"" + record->task.name +
                           "\" ran on an executor that is not a crosstown::redis::publisher: it "
                           "was not handed to Redis");
  }
  if (!record->failure.empty()) throw std::runtime_error(record->failure);
}

}  // namespace detail

std::string defer_durable(response_scope& scope, publisher& pub, durable_task task,
                          defer_options options) {
  detail::check_task_name(task.name);
  if (options.same_thread) {
    throw std::invalid_argument("defer_durable: same_thread does not apply, the task \"" +
                                task.name + "\" runs on its publisher");
  }
  if (options.executor && options.executor.get() != &pub) {
    throw std::invalid_argument("defer_durable: the options name another executor for \"" +
                                task.name + "\"; a durable task's executor is its publisher");
  }
  options.executor = pub;
  if (task.key.empty()) task.key = make_idempotency_key();
  std::string key = task.key;
  auto record = std::make_unique<detail::durable_record>();
  record->task = std::move(task);
  scope.defer(detail::durable_call{std::move(record)}, std::move(options));
  return key;
}

}  // namespace crosstown::redis
