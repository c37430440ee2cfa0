// Must not compile with -DCROSSTOWN_COMPILE_FAIL=<n>: each n is one form of a malformed
// status-spec literal, all rejected at compile time (see status_set.hpp, "Checked at compile
// time"). Without the macro it compiles and runs, so a failure cannot come from elsewhere.
//   1  a bare literal              status_set s = "5xz"
//   2  a braced literal in options .no_go = {"5xxx"} (was a run-time error)
//   3  a NUL inside a literal      "404\0,5xx" (was silently {404})
//   4  a literal in a mixed list   status_set{302, "0xx"} (was a run-time error)

#include <crosstown/defer_options.hpp>
#include <crosstown/status_set.hpp>

int main() {
  constexpr crosstown::status_set good = "5xx,302";
  static_assert(good.contains(302));
  const crosstown::defer_options braced{.no_go = {"5xx", "302"}};
  const crosstown::status_set mixed{302, "4xx"};
#if !defined(CROSSTOWN_COMPILE_FAIL)
  return good.contains(503) && braced.no_go.contains(302) && mixed.contains(404) ? 0 : 1;
#elif CROSSTOWN_COMPILE_FAIL == 1
  const crosstown::status_set bad = "5xz";
  return bad.contains(500) ? 0 : 1;
#elif CROSSTOWN_COMPILE_FAIL == 2
  const crosstown::defer_options bad{.no_go = {"5xxx"}};
  return bad.no_go.contains(500) ? 0 : 1;
#elif CROSSTOWN_COMPILE_FAIL == 3
  const crosstown::status_set bad = "404\0,5xx";
  return bad.contains(404) ? 0 : 1;
#elif CROSSTOWN_COMPILE_FAIL == 4
  const crosstown::status_set bad{302, "0xx"};
  return bad.contains(302) ? 0 : 1;
#endif
}
