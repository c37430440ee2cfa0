#include <crosstown/sim/trace.hpp>

#include <boost/json.hpp>

#include <map>
#include <set>
#include <utility>

namespace crosstown::sim {

std::string text_trace(const std::vector<event>& events) {
  std::string out;
  for (const event& e : events) {
    out += describe(e);
    out += '\n';
  }
  return out;
}

namespace {

constexpr int server_pid = 1;
constexpr int pool_pid = 2;

double micros(std::int64_t ns) { return static_cast<double>(ns) / 1000.0; }

boost::json::object base(const char* ph, std::string name, int pid, std::int64_t tid,
                         std::int64_t ts_ns) {
  boost::json::object o;
  o["name"] = std::move(name);
  o["ph"] = ph;
  o["pid"] = pid;
  o["tid"] = tid;
  o["ts"] = micros(ts_ns);
  return o;
}

boost::json::object thread_name(int pid, std::int64_t tid, const std::string& name) {
  boost::json::object o = base("M", "thread_name", pid, tid, 0);
  o["args"] = boost::json::object{{"name", name}};
  return o;
}

}  // namespace

std::string chrome_trace_json(const std::vector<event>& events) {
  boost::json::array out;
  for (auto [pid, name] :
       {std::pair{server_pid, "server"}, std::pair{pool_pid, "simulated pool"}}) {
    boost::json::object o = base("M", "process_name", pid, 0, 0);
    o["args"] = boost::json::object{{"name", name}};
    out.push_back(std::move(o));
  }
  std::set<std::uint32_t> conns;
  std::set<std::int64_t> workers;
  // Requests from their start to their scope's end. An application's run (app_test.hpp) sees
  // no scope end, only the wire: its requests end at their last byte or failure, else at the
  // last event of the run.
  struct open_request {
    std::int64_t start_ns = 0;
    int status = 0;
    std::uint32_t conn = 0;
    std::int64_t done_ns = -1;
  };
  std::map<std::uint64_t, open_request> open;
  auto close_request = [&out](std::uint64_t request, const open_request& r, std::int64_t end_ns) {
    boost::json::object o =
        base("X", "request " + std::to_string(request) + " -> " + std::to_string(r.status),
             server_pid, r.conn, r.start_ns);
    o["dur"] = micros(end_ns - r.start_ns);
    o["cat"] = "request";
    out.push_back(std::move(o));
  };
  for (const event& e : events) {
    switch (e.kind) {
      case event_kind::connection_opened: conns.insert(e.conn); break;
      case event_kind::request_started:
        if (e.conn != 0) conns.insert(e.conn);
        open[e.request] = {.start_ns = e.time_ns, .conn = e.conn};
        break;
      case event_kind::status_chosen: {
        auto it = open.find(e.request);
        if (it != open.end()) it->second.status = static_cast<int>(e.value);
        break;
      }
      case event_kind::scope_ended: {
        auto it = open.find(e.request);
        if (it == open.end()) break;
        close_request(e.request, it->second, e.time_ns);
        open.erase(it);
        break;
      }
      case event_kind::bytes_accepted: {
        boost::json::object o =
            base("X", std::to_string(e.value) + " bytes", server_pid, e.conn, e.time_ns - e.value2);
        o["dur"] = micros(e.value2);
        o["cat"] = "bytes";
        out.push_back(std::move(o));
        break;
      }
      case event_kind::task_finished: {
        const std::string name =
            "task " + std::to_string(e.task) + " of request " + std::to_string(e.request);
        if (e.value < 0) {
          boost::json::object o = base("i", name + " (same thread)", server_pid, e.conn, e.time_ns);
          o["s"] = "t";
          o["cat"] = "task";
          out.push_back(std::move(o));
        } else {
          workers.insert(e.value);
          boost::json::object o = base("X", name, pool_pid, e.value, e.time_ns - e.value2);
          o["dur"] = micros(e.value2);
          o["cat"] = "task";
          out.push_back(std::move(o));
        }
        break;
      }
      case event_kind::last_byte_accepted:
      case event_kind::delivery_failed:
        if (auto it = open.find(e.request); it != open.end() && it->second.done_ns < 0)
          it->second.done_ns = e.time_ns;
        [[fallthrough]];
      case event_kind::headers_accepted:
      case event_kind::reset:
      case event_kind::stall:
      case event_kind::unstall:
      case event_kind::connection_closed:
      case event_kind::fault_fired:
      case event_kind::healed: {
        boost::json::object o =
            base("i", std::string(to_string(e.kind)), server_pid, e.conn, e.time_ns);
        o["s"] = e.conn == 0 ? "g" : "t";
        out.push_back(std::move(o));
        break;
      }
      default: break;
    }
  }
  const std::int64_t last_ns = events.empty() ? 0 : events.back().time_ns;
  for (const auto& [request, r] : open)
    close_request(request, r, r.done_ns >= 0 ? r.done_ns : last_ns);
  for (std::uint32_t c : conns)
    out.push_back(thread_name(server_pid, c, "connection " + std::to_string(c)));
  for (std::int64_t w : workers)
    out.push_back(thread_name(pool_pid, w, "worker " + std::to_string(w)));
  boost::json::object root;
  root["traceEvents"] = std::move(out);
  root["displayTimeUnit"] = "ns";
  return boost::json::serialize(root);
}

}  // namespace crosstown::sim
