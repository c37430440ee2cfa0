// servers_common.hpp - internal to crosstown_demo_core: what the server glue files share.
#pragma once

#include "servers.hpp"

#include <string_view>

namespace crosstown_demo::glue {

/// The reason phrase of the demo's statuses ("Unknown" for others).
std::string_view reason(int status) noexcept;

std::unique_ptr<running_server> start_beast(crosstown::runtime& rt, calls_app& app,
                                            const serve_settings& settings);
std::unique_ptr<running_server> start_restinio(crosstown::runtime& rt, calls_app& app,
                                               const serve_settings& settings);
std::unique_ptr<running_server> start_httplib(crosstown::runtime& rt, calls_app& app,
                                              const serve_settings& settings);

}  // namespace crosstown_demo::glue
