// start_server and friends (servers.hpp): which servers this build has, and their names.
#include "servers_common.hpp"

#include <stdexcept>
#include <string>

namespace crosstown_demo {

std::string_view to_string(server_kind kind) noexcept {
  switch (kind) {
    case server_kind::beast: return "beast";
    case server_kind::restinio: return "restinio";
    case server_kind::httplib: return "httplib";
  }
  return "unknown";
}

std::optional<server_kind> parse_server_kind(std::string_view name) noexcept {
  for (const server_kind k : {server_kind::beast, server_kind::restinio, server_kind::httplib}) {
    if (name == to_string(k)) return k;
  }
  return std::nullopt;
}

bool server_available(server_kind kind) noexcept {
  switch (kind) {
    case server_kind::beast: return true;
#ifdef CROSSTOWN_DEMO_WITH_RESTINIO
    case server_kind::restinio: return true;
#endif
#ifdef CROSSTOWN_DEMO_WITH_HTTPLIB
    case server_kind::httplib: return true;
#endif
    default: return false;
  }
}

std::unique_ptr<running_server> start_server(server_kind kind, crosstown::runtime& rt,
                                             calls_app& app, const serve_settings& settings) {
  switch (kind) {
    case server_kind::beast: return glue::start_beast(rt, app, settings);
    case server_kind::restinio:
#ifdef CROSSTOWN_DEMO_WITH_RESTINIO
      return glue::start_restinio(rt, app, settings);
#else
      throw std::invalid_argument(
          "this crosstown-demo was built without RESTinio (install librestinio-dev, libfmt-dev "
          "and libhttp-parser-dev and reconfigure)");
#endif
    case server_kind::httplib:
#ifdef CROSSTOWN_DEMO_WITH_HTTPLIB
      return glue::start_httplib(rt, app, settings);
#else
      throw std::invalid_argument(
          "this crosstown-demo was built without cpp-httplib (install libcpp-httplib-dev and "
          "reconfigure)");
#endif
  }
  throw std::invalid_argument("unknown server kind");
}

namespace glue {

std::string_view reason(int status) noexcept {
  switch (status) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 302: return "Found";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
  }
}

}  // namespace glue

}  // namespace crosstown_demo
