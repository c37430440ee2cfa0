// demo_server.cpp - the TCP demo server, compiled once (demo_server.hpp declares it).
#include "demo_server_impl.hpp"

namespace crosstown_demo {

template class basic_server<tcp_transport>;

}  // namespace crosstown_demo
