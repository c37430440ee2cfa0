// crosstown/testing/generators.hpp - RapidCheck generators for crosstown's inputs.
//
// For application authors' own properties, and crosstown's:
//
//     rc::check("my handler never runs mail tasks on 4xx", [] {
//       const auto life = *crosstown::testkit::gen::lifecycle_value();
//       ...
//     });
//
// All generators shrink towards simple values (small codes, short specs, default options).
#pragma once

#include <crosstown/defer_options.hpp>
#include <crosstown/status_set.hpp>

#include <rapidcheck.h>

#include <algorithm>
#include <cstddef>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace crosstown::testkit {

/// How far a simulated response got, and how it ended.
struct lifecycle {
  int status = 200;          ///< 100-999
  bool headers_sent = true;  ///< headers reported before the outcome
  enum outcome_kind { delivered, failed, ended_silently } outcome = delivered;

  friend std::ostream& operator<<(std::ostream& out, const lifecycle& l) {
    static const char* const names[] = {"delivered", "failed", "ended silently"};
    return out << "{status " << l.status << (l.headers_sent ? ", headers sent" : ", no headers")
               << ", " << names[l.outcome] << "}";
  }
};

/// A spec that must be rejected, and the item the error must name.
struct invalid_spec {
  std::string spec;
  std::string bad_item;    ///< trimmed text of the offending item
  std::size_t item_index;  ///< 0-based

  friend std::ostream& operator<<(std::ostream& out, const invalid_spec& s) {
    return out << "spec \"" << s.spec << "\" (bad item " << s.item_index << " \"" << s.bad_item
               << "\")";
  }
};

namespace gen {

/// Any valid status code, 100-999, biased towards the common classes.
inline rc::Gen<int> status_code() {
  return rc::gen::weightedOneOf<int>({
      {4, rc::gen::element(200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 405, 409, 422,
                           429, 500, 502, 503, 504)},
      {1, rc::gen::inRange(100, 1000)},
  });
}

/// One valid spec item: "302", "5xx", "40x" or "400-405".
inline rc::Gen<std::string> spec_item() {
  return rc::gen::oneOf(
      rc::gen::map(rc::gen::inRange(100, 1000), [](int c) { return std::to_string(c); }),
      rc::gen::map(rc::gen::inRange(1, 10), [](int h) { return std::to_string(h) + "xx"; }),
      rc::gen::map(rc::gen::inRange(10, 100), [](int t) { return std::to_string(t) + "x"; }),
      rc::gen::map(rc::gen::pair(rc::gen::inRange(100, 1000), rc::gen::inRange(0, 60)),
                   [](std::pair<int, int> p) {
                     const int last = std::min(999, p.first + p.second);
                     return std::to_string(p.first) + "-" + std::to_string(last);
                   }));
}

/// A valid spec text: 1-6 items, comma-separated, sometimes with blanks around items.
inline rc::Gen<std::string> valid_spec() {
  return rc::gen::exec([] {
    const auto items = *rc::gen::resize(
        6, rc::gen::nonEmpty(rc::gen::container<std::vector<std::string>>(spec_item())));
    const bool spaced = *rc::gen::arbitrary<bool>();
    std::string spec;
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (i != 0) spec += spaced ? " , " : ",";
      spec += items[i];
    }
    return spaced ? " " + spec + " " : spec;
  });
}

/// A non-empty status set, built from a valid spec.
inline rc::Gen<status_set> status_set_value() {
  return rc::gen::map(valid_spec(),
                      [](const std::string& spec) { return status_set::parse(spec); });
}

/// One malformed item (never valid on its own).
inline rc::Gen<std::string> invalid_item() {
  return rc::gen::oneOf(
      rc::gen::element<std::string>("", "6xxx", "abc", "5xz", "4 xx", "4\txx", "xxx", "0xx", "4x5",
                                    "0404", "042", "4xx-5xx", "400-", "-400", "1-2", "40X5", "4XZ",
                                    "5XXX"),
      rc::gen::map(rc::gen::inRange(0, 100), [](int c) { return std::to_string(c); }),
      rc::gen::map(rc::gen::inRange(1000, 100000), [](int c) { return std::to_string(c); }),
      rc::gen::exec([] {
        const int first = *rc::gen::inRange(101, 1000);
        const int last = *rc::gen::inRange(100, first);
        return std::to_string(first) + "-" + std::to_string(last);  // start > end
      }));
}

/// A spec with exactly one malformed item among valid ones.
inline rc::Gen<invalid_spec> invalid_spec_value() {
  return rc::gen::exec([] {
    auto items = *rc::gen::resize(4, rc::gen::container<std::vector<std::string>>(spec_item()));
    const std::string bad = *invalid_item();
    const auto at = *rc::gen::inRange<std::size_t>(0, items.size() + 1);
    items.insert(items.begin() + static_cast<std::ptrdiff_t>(at), bad);
    std::string spec;
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (i != 0) spec += ",";
      spec += items[i];
    }
    return invalid_spec{spec, bad, at};
  });
}

/// Deferral options without an executor: phase, status rules, names from a small pool (so
/// replacement and cancellation happen), `same_thread` sometimes.
inline rc::Gen<defer_options> options() {
  return rc::gen::exec([] {
    defer_options o;
    o.same_thread = *rc::gen::weightedElement<bool>({{4, false}, {1, true}});
    o.no_go = *rc::gen::weightedOneOf<status_set>(
        {{3, rc::gen::just(status_set::default_no_go())}, {1, status_set_value()}});
    o.always = *rc::gen::weightedElement<bool>({{4, false}, {1, true}});
    o.name = *rc::gen::weightedElement<std::string>({{4, ""}, {1, "a"}, {1, "b"}});
    o.phase = *rc::gen::weightedElement<task_phase>({{4, task_phase::response_sent},
                                                     {1, task_phase::headers_sent},
                                                     {1, task_phase::connection_closed}});
    o.require_delivery = *rc::gen::weightedElement<bool>({{4, false}, {1, true}});
    return o;
  });
}

/// A response's life: status, whether headers went out, how it ended.
inline rc::Gen<lifecycle> lifecycle_value() {
  return rc::gen::exec([] {
    lifecycle l;
    l.status = *status_code();
    l.headers_sent = *rc::gen::arbitrary<bool>();
    l.outcome =
        *rc::gen::element(lifecycle::delivered, lifecycle::failed, lifecycle::ended_silently);
    if (l.outcome == lifecycle::delivered) l.headers_sent = true;
    return l;
  });
}

}  // namespace gen
}  // namespace crosstown::testkit
