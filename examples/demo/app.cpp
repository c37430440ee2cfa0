// The phone-calls app and its call placers (app.hpp). No server types here: this file is
// compiled once, into crosstown_demo_core.
#include "app.hpp"

#include <boost/asio/awaitable.hpp>

#include <algorithm>
#include <cctype>
#include <sstream>
#include <thread>

namespace crosstown_demo {

std::int64_t steady_now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

namespace {

bool iequal(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

/// A query string's parameters, parsed strictly: `key=value` items separated by `&`, each
/// key once. `error` names what was wrong.
struct query_params {
  std::map<std::string, std::string, std::less<>> values;
  std::string error;

  static query_params parse(std::string_view target) {
    query_params q;
    const auto at = target.find('?');
    if (at == std::string_view::npos) return q;
    std::string_view rest = target.substr(at + 1);
    while (!rest.empty()) {
      const auto amp = rest.find('&');
      const std::string_view item = rest.substr(0, amp);
      rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
      if (item.empty()) continue;
      const auto eq = item.find('=');
      const std::string key(item.substr(0, eq));
      if (q.values.count(key) != 0) {
        q.error = "query parameter " + key + " given twice";
        return q;
      }
      q.values[key] =
          eq == std::string_view::npos ? std::string{} : std::string(item.substr(eq + 1));
    }
    return q;
  }
};

/// Why a number from the query was refused.
enum class number_error : std::uint8_t { none, invalid, too_large };

/// A decimal number 0..max, digits only (no sign, hex, exponent or spaces).
number_error parse_bounded(std::string_view text, std::uint64_t max, std::uint64_t& out) {
  if (text.empty() || text.size() > 19) {
    return text.empty() ? number_error::invalid
                        : (text.find_first_not_of("0123456789") == std::string_view::npos
                               ? number_error::too_large
                               : number_error::invalid);
  }
  std::uint64_t value = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return number_error::invalid;
    value = value * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (value > max) return number_error::too_large;
  out = value;
  return number_error::none;
}

app_response text(int status, std::string body) {
  app_response res;
  res.status = status;
  res.headers = {{"Server", "crosstown-demo"}, {"Content-Type", "text/plain; charset=utf-8"}};
  res.body = std::move(body);
  return res;
}

app_response not_allowed(std::string_view allow) {
  app_response res = text(405, "method not allowed; allowed: " + std::string(allow) + "\n");
  res.headers.emplace_back("Allow", std::string(allow));
  return res;
}

crosstown::task started(const std::shared_ptr<exchange>& record) {
  return [record] {
    if (record) record->task_started();
  };
}

app_response finish(const std::shared_ptr<exchange>& record, int deferred, app_response res) {
  if (record) {
    record->status = res.status;
    record->deferred = deferred;
  }
  return res;
}

std::uint64_t splitmix64(std::uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// One attempt of a simulated call: the API's latency, then its answer. Parameters by value:
// the coroutine frame owns them (the factory that made it may be called again).
boost::asio::awaitable<void> simulated_call(crosstown::task_clock& clock,
                                            std::chrono::microseconds latency, bool fail) {
  co_await clock.wait(latency);
  if (fail) throw call_failed();
}

}  // namespace

const std::string* app_request::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (iequal(key, name)) return &value;
  }
  return nullptr;
}

std::string app_response::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (iequal(key, name)) return value;
  }
  return {};
}

void exchange::task_started() noexcept {
  std::int64_t unset = 0;
  first_task_ns.compare_exchange_strong(unset, steady_now_ns());
  started.fetch_add(1);
}

bool failure_draw::fails_at(std::uint64_t k) const noexcept {
  if (rate_ <= 0) return false;
  if (rate_ >= 1) return true;
  const double unit = static_cast<double>(splitmix64(seed_ + k) >> 11) * 0x1.0p-53;
  return unit < rate_;
}

// ---- placers ---------------------------------------------------------------------------------

awaitable_call_placer::awaitable_call_placer(crosstown::runtime& rt, crosstown::task_clock& clock,
                                             awaitable_call_settings settings)
    : rt_(rt),
      clock_(clock),
      settings_(std::move(settings)),
      lane_(rt.lane(settings_.lane, settings_.lane_options)),
      stats_(std::make_shared<stats>(settings_.failure_rate, settings_.seed)) {
  if (!(settings_.failure_rate >= 0 && settings_.failure_rate <= 1)) {
    throw std::invalid_argument("call failure rate must be between 0 and 1, got " +
                                std::to_string(settings_.failure_rate));
  }
}

bool awaitable_call_placer::admits(std::uint64_t n) const {
  if (!rt_.accepting()) return false;
  // Calls that cannot wait in the lane would be rejected there: refuse them up front.
  const crosstown::lane_snapshot s = lane_.snapshot();
  const std::uint64_t free_slots =
      s.options.max_in_flight - std::min<std::uint64_t>(s.in_flight, s.options.max_in_flight);
  return s.waiting + n <= s.options.capacity + free_slots;
}

void awaitable_call_placer::place(crosstown::response_scope& scope, std::uint64_t n,
                                  const call_params& params) {
  const std::chrono::microseconds latency =
      params.latency.count() < 0 ? settings_.latency : params.latency;
  crosstown::task_clock* clock = &clock_;
  for (std::uint64_t i = 0; i < n; ++i) {
    scope.defer(
        [clock, latency, st = stats_, on_start = params.on_start,
         first = true]() mutable -> boost::asio::awaitable<void> {
          if (first) {
            first = false;
            if (on_start) on_start();
          }
          st->attempts.fetch_add(1, std::memory_order_relaxed);
          const bool fail = st->draw.next();
          if (fail) st->failures.fetch_add(1, std::memory_order_relaxed);
          return simulated_call(*clock, latency, fail);
        },
        {.lane = settings_.lane, .timeout = settings_.timeout, .retry = settings_.retry});
  }
}

std::string awaitable_call_placer::prometheus() const {
  std::ostringstream out;
  out << "# HELP crosstown_demo_call_attempts_total Attempts of simulated calls.\n"
         "# TYPE crosstown_demo_call_attempts_total counter\n"
         "crosstown_demo_call_attempts_total "
      << stats_->attempts.load() << "\n"
      << "# HELP crosstown_demo_call_failures_total Attempts the simulated API failed.\n"
         "# TYPE crosstown_demo_call_failures_total counter\n"
         "crosstown_demo_call_failures_total "
      << stats_->failures.load() << "\n";
  return out.str();
}

bool blocking_call_placer::admits(std::uint64_t) const { return rt_.accepting(); }

void blocking_call_placer::place(crosstown::response_scope& scope, std::uint64_t n,
                                 const call_params& params) {
  const std::chrono::microseconds latency = params.latency.count() < 0 ? latency_ : params.latency;
  for (std::uint64_t i = 0; i < n; ++i) {
    scope.defer([on_start = params.on_start, latency] {
      if (on_start) on_start();
      // Stands in for a call to a telephony API: it holds its pool thread while it waits.
      if (latency.count() > 0) std::this_thread::sleep_for(latency);
    });
  }
}

// ---- the app ---------------------------------------------------------------------------------

calls_app::calls_app(crosstown::runtime& rt, call_placer& placer, app_limits limits)
    : rt_(rt), placer_(placer), limits_(limits) {}

std::uint64_t calls_app::records_evicted() const {
  std::lock_guard lock(mutex_);
  return evicted_;
}

std::size_t calls_app::records() const {
  std::lock_guard lock(mutex_);
  return exchanges_.size();
}

std::shared_ptr<const exchange> calls_app::find(const std::string& id) const {
  std::lock_guard lock(mutex_);
  auto it = exchanges_.find(id);
  return it == exchanges_.end() ? nullptr : it->second;
}

app_response calls_app::handle(const app_request& req, crosstown::response_scope& scope,
                               std::shared_ptr<const write_record> written) {
  const std::string_view target = req.target;
  const std::string_view path = target.substr(0, target.find('?'));
  const std::string_view method = req.method;
  const bool get = method == "GET" || method == "HEAD";
  const bool post = method == "POST";

  if (path == "/calls") {
    if (!post) return not_allowed("POST");
    return calls(req, scope, std::move(written));
  }
  if (path == "/audit") {
    if (!post) return not_allowed("POST");
    // 500; an `always` audit task runs, a default one is skipped.
    auto record = track(req, std::move(written));
    scope.defer(started(record), {.always = true, .name = "audit"});
    scope.defer(started(record));
    return finish(record, 2, text(500, "audit failed\n"));
  }
  if (path == "/moved") {
    if (!get) return not_allowed("GET, HEAD");
    // 302 with a custom no-go spec.
    auto record = track(req, std::move(written));
    scope.defer(started(record), {.no_go = "5xx,400-405,302"});
    scope.defer(started(record));
    app_response res = text(302, "moved to /calls\n");
    res.headers.emplace_back("Location", "/calls");
    return finish(record, 2, std::move(res));
  }
  if (path == "/stream") {
    if (!get) return not_allowed("GET, HEAD");
    // Chunked; a headers-phase and a response-phase task.
    auto record = track(req, std::move(written));
    scope.defer(started(record), {.phase = crosstown::task_phase::headers_sent});
    scope.defer(started(record));
    app_response res = text(200, std::string(64 * 1024, 's'));
    res.chunked = true;
    return finish(record, 2, std::move(res));
  }
  if (path == "/metrics") {
    if (!get) return not_allowed("GET, HEAD");
    auto record = track(req, std::move(written));
    return finish(record, 0, metrics());
  }
  // Anything else: deferred before the handler finds out there is nothing here, so skipped
  // by the 404.
  auto record = track(req, std::move(written));
  scope.defer(started(record), {.name = "visit-log"});
  return finish(record, 1, text(404, "not found\n"));
}

// POST /calls?n=100[&ms=2 | &us=500]
app_response calls_app::calls(const app_request& req, crosstown::response_scope& scope,
                              std::shared_ptr<const write_record> written) {
  const query_params q = query_params::parse(req.target);
  if (!q.error.empty()) return text(400, q.error + "\n");
  if (q.values.count("ms") != 0 && q.values.count("us") != 0) {
    return text(400, "query parameters ms and us are exclusive: give one latency\n");
  }
  std::uint64_t n = 100;
  std::uint64_t latency_us = 0;
  bool latency_given = false;
  for (const auto& [key, value] : q.values) {
    std::uint64_t parsed = 0;
    std::uint64_t max = 0;
    if (key == "n") {
      max = limits_.max_calls;
    } else if (key == "us") {
      max = limits_.max_call_us;
    } else if (key == "ms") {
      max = limits_.max_call_us / 1000;
    } else {
      return text(400, "unknown query parameter " + key + "\n");
    }
    switch (parse_bounded(value, max, parsed)) {
      case number_error::none: break;
      case number_error::invalid:
        return text(400, "query parameter " + key + " must be a decimal number 0-" +
                             std::to_string(max) + ", got \"" + value + "\"\n");
      case number_error::too_large:
        return text(413, "query parameter " + key + " is over its limit of " + std::to_string(max) +
                             ", got " + value + "\n");
    }
    if (key == "n") {
      n = parsed;
    } else {
      latency_us = key == "ms" ? parsed * 1000 : parsed;
      latency_given = true;
    }
  }
  // Admission: calls the placer cannot take are refused before any is deferred (the client
  // may retry), so memory stays bounded under any load.
  if (!placer_.admits(n)) {
    refused_busy_.fetch_add(1, std::memory_order_relaxed);
    app_response res = text(503, "busy: deferred work is backed up, retry later\n");
    res.headers.emplace_back("Retry-After", "1");
    return res;
  }
  auto record = track(req, std::move(written));
  call_params params;
  if (latency_given) params.latency = std::chrono::microseconds(latency_us);
  if (record) params.on_start = [record] { record->task_started(); };
  placer_.place(scope, n, params);
  return finish(record, static_cast<int>(n), text(202, "queued " + std::to_string(n) + " calls\n"));
}

app_response calls_app::metrics() const {
  const server_counters s = counters_ ? counters_() : server_counters{};
  std::ostringstream out;
  out << crosstown::to_prometheus(rt_.metrics(), rt_.lane_metrics())
      << "# HELP crosstown_demo_requests_total Requests handled.\n"
         "# TYPE crosstown_demo_requests_total counter\n"
         "crosstown_demo_requests_total "
      << s.requests << "\n"
      << "# HELP crosstown_demo_bad_requests_total Malformed requests answered with 400.\n"
         "# TYPE crosstown_demo_bad_requests_total counter\n"
         "crosstown_demo_bad_requests_total "
      << s.bad_requests << "\n"
      << "# HELP crosstown_demo_busy_total POST /calls answered 503.\n"
         "# TYPE crosstown_demo_busy_total counter\n"
         "crosstown_demo_busy_total "
      << refused_busy_.load() << "\n"
      << placer_.prometheus();
  app_response res = text(200, out.str());
  res.headers[1].second = "text/plain; version=0.0.4";
  return res;
}

std::shared_ptr<exchange> calls_app::track(const app_request& req,
                                           std::shared_ptr<const write_record> written) {
  const std::string* id = req.header("X-Request-Id");
  if (id == nullptr) return nullptr;
  auto record = std::make_shared<exchange>();
  record->target = req.target;
  record->written = std::move(written);
  std::shared_ptr<exchange> forgotten;  // destroyed outside the lock
  std::lock_guard lock(mutex_);
  auto [it, added] = exchanges_.insert_or_assign(*id, record);
  if (added) {
    order_.push_back(it->first);
    if (exchanges_.size() > limits_.max_records) {
      auto oldest = exchanges_.find(order_.front());
      forgotten = std::move(oldest->second);
      exchanges_.erase(oldest);
      order_.pop_front();
      ++evicted_;
    }
  }
  return record;
}

}  // namespace crosstown_demo
