// Boost.JSON in header-only mode: its implementation is compiled here, once for the library.
#include <boost/json/src.hpp>
