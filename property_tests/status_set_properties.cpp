// Properties of the status-spec parser and formatter (status_set.hpp), checked against a
// naive reference interpreter and formatter written here from the grammar in the header.
#include <crosstown/status_set.hpp>
#include <crosstown/testing/generators.hpp>

#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace gen = crosstown::testkit::gen;
using crosstown::status_set;
using crosstown::status_spec_error;

// --- reference implementation -------------------------------------------------------------

// Membership table indexed by code; only 100-999 are ever set.
using codes = std::array<bool, 1000>;

// The item as the error message quotes it: the documented escapes (status_set.hpp) of what
// is not printable, the quote and the backslash; written here from that contract.
std::string escaped_as_in_message(std::string_view text) {
  std::string out;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '\0') {
      out += "\\0";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (byte >= 0x20 && byte < 0x7f) {
      out += c;
    } else {
      static constexpr char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[byte >> 4U];
      out += hex[byte & 15U];
    }
  }
  return out;
}

std::string trim(std::string_view s) {
  std::size_t b = 0;
  std::size_t e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
  return std::string(s.substr(b, e - b));
}

std::vector<std::string> split_commas(std::string_view spec) {
  std::vector<std::string> items;
  std::string current;
  for (const char c : spec) {
    if (c == ',') {
      items.push_back(current);
      current.clear();
    } else {
      current += c;
    }
  }
  items.push_back(current);
  return items;
}

int digit(char c) { return c - '0'; }
bool is_x(char c) { return c == 'x' || c == 'X'; }

// Interprets a spec that is known to be valid; returns the set of codes it names.
codes reference_parse(std::string_view spec) {
  codes in{};
  for (const std::string& raw : split_commas(spec)) {
    const std::string item = trim(raw);
    int first = 0;
    int last = 0;
    if (const auto dash = item.find('-'); dash != std::string::npos) {
      first = std::stoi(item.substr(0, dash));
      last = std::stoi(item.substr(dash + 1));
    } else if (is_x(item[1])) {  // "Dxx"
      first = digit(item[0]) * 100;
      last = first + 99;
    } else if (is_x(item[2])) {  // "DDx"
      first = digit(item[0]) * 100 + digit(item[1]) * 10;
      last = first + 9;
    } else {  // "DDD"
      first = std::stoi(item);
      last = first;
    }
    for (int c = first; c <= last; ++c) in[static_cast<std::size_t>(c)] = true;
  }
  return in;
}

bool all_in(const codes& in, int first, int last) {
  for (int c = first; c <= last; ++c) {
    if (!in[static_cast<std::size_t>(c)]) return false;
  }
  return true;
}

// The canonical text, as the header describes it.
std::string reference_format(const codes& in) {
  std::string out;
  const auto emit = [&](const std::string& item) {
    if (!out.empty()) out += ',';
    out += item;
  };
  int c = 100;
  while (c <= 999) {
    if (c % 100 == 0 && all_in(in, c, c + 99)) {
      emit(std::to_string(c / 100) + "xx");
      c += 100;
    } else if (c % 10 == 0 && all_in(in, c, c + 9)) {
      emit(std::to_string(c / 10) + "x");
      c += 10;
    } else if (in[static_cast<std::size_t>(c)]) {
      const int start = c;
      // Extend while the next code is in and does not begin a full aligned ten.
      while (c + 1 <= 999 && in[static_cast<std::size_t>(c + 1)] &&
             !((c + 1) % 10 == 0 && all_in(in, c + 1, c + 10))) {
        ++c;
      }
      emit(c == start ? std::to_string(c) : std::to_string(start) + "-" + std::to_string(c));
      ++c;
    } else {
      ++c;
    }
  }
  return out;
}

codes members(const status_set& s) {
  codes in{};
  for (int c = 100; c <= 999; ++c) in[static_cast<std::size_t>(c)] = s.contains(c);
  return in;
}

// First code (100-999) where the two disagree, or 0.
int first_difference(const codes& a, const codes& b) {
  for (int c = 100; c <= 999; ++c) {
    if (a[static_cast<std::size_t>(c)] != b[static_cast<std::size_t>(c)]) return c;
  }
  return 0;
}

// A status set with arbitrary membership (not only unions of spec items): a few runs of
// codes plus scattered single codes.
rc::Gen<status_set> arbitrary_set() {
  return rc::gen::exec([] {
    status_set s;
    const auto runs = *rc::gen::container<std::vector<std::pair<int, int>>>(
        rc::gen::pair(rc::gen::inRange(100, 1000), rc::gen::inRange(0, 130)));
    for (const auto& [first, length] : runs) {
      for (int c = first; c <= std::min(999, first + length); ++c) s.insert(c);
    }
    for (const int c : *rc::gen::container<std::vector<int>>(rc::gen::inRange(100, 1000))) {
      s.insert(c);
    }
    return s;
  });
}

// A valid spec with its spelling varied the ways the grammar allows: upper-case X, tabs and
// spaces around items. Membership must not change.
rc::Gen<std::string> respelled_valid_spec() {
  return rc::gen::exec([] {
    std::string spec = *gen::valid_spec();
    for (char& c : spec) {
      if (c == 'x' && *rc::gen::arbitrary<bool>()) c = 'X';
    }
    std::string out;
    const auto blanks = [] {
      return *rc::gen::container<std::string>(rc::gen::element(' ', '\t'));
    };
    out += blanks();
    for (const char c : spec) {
      if (c == ',') {
        out += blanks();
        out += ',';
        out += blanks();
      } else {
        out += c;
      }
    }
    out += blanks();
    return out;
  });
}

}  // namespace

// --- round trip and canonical text -------------------------------------------------------------

RC_GTEST_PROP(StatusSetProp, ParseOfToStringIsIdentity, ()) {
  const status_set s = *rc::gen::oneOf(gen::status_set_value(), arbitrary_set());
  RC_PRE(!s.empty());
  const std::string text = s.to_string();
  RC_ASSERT(status_set::parse(text) == s);
}

RC_GTEST_PROP(StatusSetProp, ToStringIsCanonical, ()) {
  const status_set s = *rc::gen::oneOf(gen::status_set_value(), arbitrary_set());
  const std::string text = s.to_string();
  RC_ASSERT(s.to_string() == text);  // formatting twice gives the same text
  const status_set copy = s;
  RC_ASSERT(copy.to_string() == text);  // and depends only on the codes
  RC_ASSERT(text == reference_format(members(s)));
  RC_ASSERT(text.find(' ') == std::string::npos);
}

RC_GTEST_PROP(StatusSetProp, ParseFormatParseIsAFixedPoint, ()) {
  const std::string spec = *gen::valid_spec();
  const status_set once = status_set::parse(spec);
  const std::string canonical = once.to_string();
  const status_set twice = status_set::parse(canonical);
  RC_ASSERT(twice == once);
  RC_ASSERT(twice.to_string() == canonical);
}

// --- membership against the reference interpreter --------------------------------------------

RC_GTEST_PROP(StatusSetProp, MembershipAgreesWithReferenceOnAll900Codes, ()) {
  const std::string spec = *rc::gen::oneOf(gen::valid_spec(), respelled_valid_spec());
  const status_set s = status_set::parse(spec);
  const codes expected = reference_parse(spec);
  const int diff = first_difference(members(s), expected);
  RC_ASSERT(diff == 0);
  for (const int outside : {-1, 0, 99, 1000, 1023}) RC_ASSERT(!s.contains(outside));
  std::size_t count = 0;
  for (const bool b : expected) count += b ? 1 : 0;
  RC_ASSERT(s.size() == count);
}

// --- invalid specs ------------------------------------------------------------------------------

RC_GTEST_PROP(StatusSetProp, InvalidSpecIsRejectedNamingTheItem, ()) {
  const crosstown::testkit::invalid_spec bad = *gen::invalid_spec_value();
  bool threw = false;
  try {
    (void)status_set::parse(bad.spec);
  } catch (const status_spec_error& e) {
    threw = true;
    RC_ASSERT(e.spec() == bad.spec);
    RC_ASSERT(e.item() == trim(bad.bad_item));
    RC_ASSERT(e.item_index() == bad.item_index);
    // Offset of the trimmed item: the items before it, each followed by a comma (the generated
    // spec has no blanks between items), plus the blanks that lead the bad item.
    const std::vector<std::string> items = split_commas(bad.spec);
    std::size_t offset = 0;
    for (std::size_t i = 0; i < bad.item_index; ++i) offset += items[i].size() + 1;
    const std::string& raw = items[bad.item_index];
    const std::size_t lead = trim(raw).empty() ? 0 : raw.find_first_not_of(" \t");
    RC_ASSERT(e.offset() == offset + lead);
    const std::string what = e.what();
    // Named in quotes, escaped as documented: a tab in a spec is printed as \t.
    RC_ASSERT(what.find("\"" + escaped_as_in_message(e.item()) + "\"") != std::string::npos);
    RC_ASSERT(what.find("item " + std::to_string(bad.item_index)) != std::string::npos);
    RC_ASSERT(!e.reason().empty());
  }
  RC_ASSERT(threw);
}
