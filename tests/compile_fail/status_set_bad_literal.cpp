// Must not compile with -DCROSSTOWN_COMPILE_FAIL: a malformed status_set literal is rejected
// at compile time ("5xz": invalid character 'z'). Without the macro it compiles and runs.

#include <crosstown/status_set.hpp>

int main() {
  constexpr crosstown::status_set good = "5xx,302";
  static_assert(good.contains(302));
#ifdef CROSSTOWN_COMPILE_FAIL
  const crosstown::status_set bad = "5xz";
  return bad.contains(500) ? 0 : 1;
#else
  return good.contains(503) ? 0 : 1;
#endif
}
