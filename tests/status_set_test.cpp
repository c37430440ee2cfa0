// Tests for crosstown/status_set.hpp: spec grammar, errors, canonical text, compile-time use.

#include <crosstown/status_set.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using crosstown::status_set;
using crosstown::status_spec_error;

using code_ranges = std::vector<std::pair<int, int>>;

bool in_ranges(const code_ranges& ranges, int code) {
  for (const auto& [first, last] : ranges) {
    if (code >= first && code <= last) return true;
  }
  return false;
}

// Checks every code 100-999 (and so every boundary) against the expected inclusive ranges.
void expect_exactly(const status_set& set, const code_ranges& expected) {
  std::size_t count = 0;
  for (int code = status_set::min_code; code <= status_set::max_code; ++code) {
    const bool want = in_ranges(expected, code);
    count += want ? 1 : 0;
    EXPECT_EQ(set.contains(code), want) << "code " << code;
  }
  EXPECT_EQ(set.size(), count);
}

// An independent, deliberately naive reading of a valid spec (std::string, std::stoi).
std::set<int> naive_codes(const std::string& spec) {
  std::set<int> codes;
  std::stringstream items(spec);
  std::string item;
  while (std::getline(items, item, ',')) {
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.erase(0, 1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.pop_back();
    int first = 0;
    int last = 0;
    if (const auto dash = item.find('-'); dash != std::string::npos) {
      first = std::stoi(item.substr(0, dash));
      last = std::stoi(item.substr(dash + 1));
    } else {
      std::string low = item;
      std::string high = item;
      for (std::size_t i = 0; i < item.size(); ++i) {
        if (item[i] == 'x' || item[i] == 'X') {
          low[i] = '0';
          high[i] = '9';
        }
      }
      first = std::stoi(low);
      last = std::stoi(high);
    }
    for (int code = first; code <= last; ++code) codes.insert(code);
  }
  return codes;
}

// ---- accepted specs -----------------------------------------------------------------------

struct accept_row {
  const char* spec;
  code_ranges expected;
};

TEST(StatusSetParse, AcceptsWellFormedSpecsWithExactMembership) {
  const std::vector<accept_row> rows = {
      {"4xx", {{400, 499}}},
      {"5xx", {{500, 599}}},
      {"5xx,400-405,302", {{500, 599}, {400, 405}, {302, 302}}},
      {"  5xx , 302 ", {{500, 599}, {302, 302}}},
      {"\t5xx\t,\t302", {{500, 599}, {302, 302}}},
      {"40x", {{400, 409}}},
      {"4XX", {{400, 499}}},
      {"4Xx", {{400, 499}}},
      {"40X", {{400, 409}}},
      {"100", {{100, 100}}},
      {"999", {{999, 999}}},
      {"100-999", {{100, 999}}},
      {"404-404", {{404, 404}}},
      {"4xx,400-405,404", {{400, 499}}},
      {"1xx,99x", {{100, 199}, {990, 999}}},
  };
  for (const auto& row : rows) {
    SCOPED_TRACE(std::string("spec \"") + row.spec + "\"");
    expect_exactly(status_set::parse(row.spec), row.expected);
  }
}

TEST(StatusSetParse, BoundariesOfMixedSpec) {
  const status_set set = status_set::parse("5xx,400-405,302");
  for (int code : {302, 400, 405, 500, 599}) EXPECT_TRUE(set.contains(code)) << code;
  for (int code : {301, 303, 399, 406, 499, 600}) EXPECT_FALSE(set.contains(code)) << code;
}

TEST(StatusSetParse, MembershipAgreesWithNaiveReference) {
  const char* const specs[] = {
      "5xx",     "4xx,5xx",         "5xx,400-405,302", " 1xx , 20x,301-310 ,999",
      "40x,4XX", "100-999",         "123,456,789",     "395-412,41x,7xx,700-701",
      "998-999", "100-100,101,10x",
  };
  for (const char* spec : specs) {
    SCOPED_TRACE(std::string("spec \"") + spec + "\"");
    const status_set set = status_set::parse(spec);
    const std::set<int> reference = naive_codes(spec);
    for (int code = status_set::min_code; code <= status_set::max_code; ++code) {
      EXPECT_EQ(set.contains(code), reference.count(code) == 1) << "code " << code;
    }
    EXPECT_EQ(set.size(), reference.size());
  }
}

TEST(StatusSetMixedList, AcceptsTextAndIntItems) {
  expect_exactly(status_set{"5xx", "400-405", 302}, {{500, 599}, {400, 405}, {302, 302}});
  expect_exactly(status_set{302, 404}, {{302, 302}, {404, 404}});
  expect_exactly(status_set{std::string_view("4xx"), 100, 999},
                 {{400, 499}, {100, 100}, {999, 999}});
  expect_exactly(status_set{"5xx, 302", 404}, {{500, 599}, {302, 302}, {404, 404}});
  EXPECT_EQ((status_set{"5xx", "400-405", 302}), status_set::parse("5xx,400-405,302"));
}

// ---- rejected specs -----------------------------------------------------------------------

struct reject_row {
  std::string spec;
  std::string item;
  std::size_t item_index;
  std::size_t offset;
  std::string reason;
};

// The text as status_spec_error::what() shows it: what is not printable escaped.
std::string as_shown(const std::string& text) {
  std::string out;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\0') {
      out += "\\0";
    } else if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (byte < 0x20 || byte >= 0x7f) {
      static constexpr char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[byte >> 4U];
      out += hex[byte & 15U];
    } else {
      out += c;
    }
  }
  return out;
}

void expect_error(const status_spec_error& error, const reject_row& row) {
  EXPECT_EQ(error.spec(), row.spec);
  EXPECT_EQ(error.item(), row.item);
  EXPECT_EQ(error.item_index(), row.item_index);
  EXPECT_EQ(error.offset(), row.offset);
  EXPECT_NE(error.reason().find(row.reason), std::string::npos) << error.reason();
  const std::string what = error.what();
  EXPECT_NE(what.find("\"" + as_shown(row.spec) + "\""), std::string::npos) << what;
  EXPECT_NE(what.find("item " + std::to_string(row.item_index) + " \"" + as_shown(row.item) + "\""),
            std::string::npos)
      << what;
  EXPECT_NE(what.find("at offset " + std::to_string(row.offset) + ":"), std::string::npos) << what;
  EXPECT_NE(what.find(error.reason()), std::string::npos) << what;
}

TEST(StatusSetParse, RejectsMalformedSpecsNamingItemOffsetAndReason) {
  const std::vector<reject_row> rows = {
      {"6xxx", "6xxx", 0, 0, "wildcard must be 3 characters"},
      {"405-400", "405-400", 0, 0, "range start 405 is greater than end 400"},
      {"abc", "abc", 0, 0, "invalid character 'a'"},
      {"", "", 0, 0, "empty item"},
      {"   ", "", 0, 0, "empty item"},
      {"5xx,,302", "", 1, 4, "empty item"},
      {"5xx,", "", 1, 4, "empty item"},
      {",5xx", "", 0, 0, "empty item"},
      {"99", "99", 0, 0, "code 99 is out of range 100-999"},
      {"1000", "1000", 0, 0, "code 1000 is out of range 100-999"},
      {"0404", "0404", 0, 0, "code 0404 must be exactly 3 digits"},
      {"042", "042", 0, 0, "code 042 is out of range 100-999"},
      {"4 xx", "4 xx", 0, 0, "whitespace inside an item"},
      {"5xz", "5xz", 0, 0, "invalid character 'z'"},
      {"xxx", "xxx", 0, 0, "wildcard must start with a digit 1-9"},
      {"0xx", "0xx", 0, 0, "wildcard must start with a digit 1-9"},
      {"4x5", "4x5", 0, 0, "wildcard must be 1 or 2 digits followed by 'x'"},
      {"4xx-5xx", "4xx-5xx", 0, 0, "wildcards are not allowed in ranges"},
      {"400-", "400-", 0, 0, "range must be two codes"},
      {"-400", "-400", 0, 0, "range must be two codes"},
      {"400-405-410", "400-405-410", 0, 0, "range must be two codes"},
      {"1-2", "1-2", 0, 0, "code 1 is out of range 100-999"},
      {"400-1000", "400-1000", 0, 0, "code 1000 is out of range 100-999"},
      {"5xx,6xxx", "6xxx", 1, 4, "wildcard must be 3 characters like \"5xx\""},
      {" 5xx ,  6xxx ", "6xxx", 1, 8, "wildcard must be 3 characters"},
      {"302,404,5x", "5x", 2, 8, "wildcard must be 3 characters"},
      {"302;404", "302;404", 0, 0, "invalid character ';'"},
      {"30\n2", "30\n2", 0, 0, "invalid character '\\x0a'"},
  };
  for (const auto& row : rows) {
    SCOPED_TRACE("spec \"" + row.spec + "\"");
    try {
      (void)status_set::parse(row.spec);
      ADD_FAILURE() << "no exception";
    } catch (const status_spec_error& error) {
      expect_error(error, row);
    }
  }
}

TEST(StatusSetParse, ErrorMessageHasDocumentedFormat) {
  try {
    (void)status_set::parse("5xx,6xxx");
    FAIL() << "no exception";
  } catch (const status_spec_error& error) {
    EXPECT_STREQ(error.what(),
                 "invalid status spec \"5xx,6xxx\": item 1 \"6xxx\" at offset 4: "
                 "wildcard must be 3 characters like \"5xx\"");
  }
}

TEST(StatusSetErrorText, ANulInTheSpecDoesNotCutTheMessageShortOfItsReason) {
  const std::string spec("404\0,5xx", 8);
  try {
    (void)status_set::parse(spec);
    FAIL() << "no exception";
  } catch (const status_spec_error& error) {
    EXPECT_EQ(error.spec(), spec) << "spec() keeps the raw text";
    EXPECT_STREQ(error.what(),
                 "invalid status spec \"404\\0,5xx\": item 0 \"404\\0\" at offset 0: "
                 "invalid character '\\x00'");
  }
}

TEST(StatusSetErrorText, ACrlfConfigLineIsShownEscapedOnOneLine) {
  try {
    (void)status_set::parse("5xx,302\r\n");
    FAIL() << "no exception";
  } catch (const status_spec_error& error) {
    const std::string what = error.what();
    EXPECT_EQ(what.find_first_of("\r\n"), std::string::npos) << what;
    EXPECT_EQ(what,
              "invalid status spec \"5xx,302\\r\\n\": item 1 \"302\\r\\n\" at offset 4: invalid "
              "character '\\x0d'");
  }
}

TEST(StatusSetErrorText, QuotesAndBackslashesInTheSpecCannotCloseTheQuotedText) {
  try {
    (void)status_set::parse("5xx\",\\");
    FAIL() << "no exception";
  } catch (const status_spec_error& error) {
    EXPECT_NE(std::string(error.what()).find("\"5xx\\\",\\\\\""), std::string::npos)
        << error.what();
  }
}

TEST(StatusSetLiteral, EveryLiteralFormIsCheckedAndUsableAtCompileTime) {
  // The malformed forms are the compile-fail tests (tests/compile_fail); these are the good
  // ones, each through the consteval path.
  constexpr status_set bare = "5xx,302";
  constexpr status_set braced{"5xx", "302"};
  constexpr status_set mixed{"5xx", 302};
  static_assert(bare == braced && braced == mixed);
  constexpr crosstown::status_item item = "40x";
  static_assert(!item.is_code() && item.spec() == "40x");
  // A literal's text ends at its terminator, not at the first NUL (which is then rejected).
  static_assert(crosstown::detail::literal_text("404").size() == 3);
  static_assert(crosstown::detail::literal_text("404\0,5xx").size() == 8);
  // Run-time text in a list is still parsed at run time.
  const char* from_config = "5xz";
  EXPECT_THROW((void)(status_set{302, from_config}), status_spec_error);
}

TEST(StatusSetParse, ErrorIsAnInvalidArgumentAndCopiesCheaply) {
  static_assert(std::is_base_of_v<std::invalid_argument, status_spec_error>);
  static_assert(std::is_nothrow_copy_constructible_v<status_spec_error>);
  const status_spec_error error("s", "i", 1, 2, "r");
  const status_spec_error copy = error;
  EXPECT_STREQ(copy.what(), error.what());
  EXPECT_EQ(copy.reason(), "r");
}

TEST(StatusSetMixedList, RejectsBadItemsAtRunTime) {
  const auto check = [](auto make, const reject_row& row) {
    SCOPED_TRACE("list \"" + row.spec + "\"");
    try {
      (void)make();
      ADD_FAILURE() << "no exception";
    } catch (const status_spec_error& error) {
      expect_error(error, row);
    }
  };
  check(
      [] {
        return status_set{"5xx", 99};
      },
      {"5xx,99", "99", 1, 4, "code 99 is out of range 100-999"});
  check([] { return status_set{1000}; },
        {"1000", "1000", 0, 0, "code 1000 is out of range 100-999"});
  check(
      [] {
        return status_set{"5xx,302", -1};
      },
      {"5xx,302,-1", "-1", 2, 8, "code -1 is out of range 100-999"});
  check(
      [] {
        return status_set{"5xx", std::string_view("6xxx")};
      },
      {"5xx,6xxx", "6xxx", 1, 4, "wildcard must be 3 characters"});
  check(
      [] {
        return status_set{302, std::string_view("4xx, abc")};
      },
      {"302,4xx, abc", "abc", 2, 9, "invalid character 'a'"});
  check([] { return status_set{302, std::string_view("")}; }, {"302,", "", 1, 4, "empty item"});
  check([] { return status_set{static_cast<const char*>(nullptr)}; }, {"", "", 0, 0, "empty item"});
}

// ---- named sets, membership, operations ---------------------------------------------------

TEST(StatusSetBasics, DefaultNoGoIsExactly4xxAnd5xx) {
  expect_exactly(status_set::default_no_go(), {{400, 599}});
  EXPECT_EQ(status_set::default_no_go(), status_set::parse("4xx,5xx"));
}

TEST(StatusSetBasics, NoneAndDefaultConstructedAreEmpty) {
  EXPECT_TRUE(status_set::none().empty());
  EXPECT_EQ(status_set::none().size(), 0U);
  EXPECT_EQ(status_set{}, status_set::none());
  EXPECT_EQ(status_set::none().to_string(), "");
  EXPECT_FALSE(status_set::parse("302").empty());
}

TEST(StatusSetBasics, ContainsIsFalseOutsideValidCodes) {
  const status_set all = status_set::range(100, 999);
  for (int code : {0, 99, 1000, 1023, 1024, -1, INT_MIN, INT_MAX}) {
    EXPECT_FALSE(all.contains(code)) << code;
  }
  EXPECT_TRUE(all.contains(100));
  EXPECT_TRUE(all.contains(999));
}

TEST(StatusSetBasics, RangeValidatesAndThrowsWithSynthesizedItem) {
  expect_exactly(status_set::range(400, 405), {{400, 405}});
  expect_exactly(status_set::range(404, 404), {{404, 404}});
  const std::vector<std::pair<std::pair<int, int>, reject_row>> rows = {
      {{405, 400}, {"405-400", "405-400", 0, 0, "range start 405 is greater than end 400"}},
      {{99, 200}, {"99-200", "99-200", 0, 0, "code 99 is out of range 100-999"}},
      {{200, 1000}, {"200-1000", "200-1000", 0, 0, "code 1000 is out of range 100-999"}},
      {{-5, 200}, {"-5-200", "-5-200", 0, 0, "code -5 is out of range 100-999"}},
  };
  for (const auto& [args, row] : rows) {
    SCOPED_TRACE("range " + row.spec);
    try {
      (void)status_set::range(args.first, args.second);
      ADD_FAILURE() << "no exception";
    } catch (const status_spec_error& error) {
      expect_error(error, row);
    }
  }
}

TEST(StatusSetBasics, InsertAddsCodesAndRejectsOutOfRange) {
  status_set set;
  set.insert(302).insert(404).insert(302);
  expect_exactly(set, {{302, 302}, {404, 404}});
  for (int code : {99, 1000, -1}) {
    try {
      set.insert(code);
      ADD_FAILURE() << "no exception for " << code;
    } catch (const std::out_of_range& error) {
      EXPECT_NE(std::string(error.what()).find(std::to_string(code)), std::string::npos)
          << error.what();
    }
  }
  expect_exactly(set, {{302, 302}, {404, 404}});
}

TEST(StatusSetBasics, UnionEqualityAndSize) {
  const status_set a = status_set::parse("4xx");
  const status_set b = status_set::parse("450-550,302");
  expect_exactly(a | b, {{400, 550}, {302, 302}});
  EXPECT_EQ(a | status_set{}, a);
  EXPECT_NE(a, b);
  EXPECT_EQ(status_set::parse("40x,41x,42x,43x,44x,45x,46x,47x,48x,49x"), a);
  EXPECT_EQ(a.size(), 100U);
  EXPECT_EQ(status_set::range(100, 999).size(), 900U);
}

TEST(StatusSetBasics, IsATriviallyCopyableValueType) {
  static_assert(std::is_trivially_copyable_v<status_set>);
  static_assert(std::is_nothrow_default_constructible_v<status_set>);
  const status_set a = status_set::parse("5xx");
  status_set b = a;
  b.insert(302);
  EXPECT_FALSE(a.contains(302));
  EXPECT_TRUE(b.contains(302));
}

TEST(StatusSetBasics, StreamsCanonicalText) {
  std::ostringstream out;
  out << status_set::parse("302, 5xx ,4xx");
  EXPECT_EQ(out.str(), "302,4xx,5xx");
}

// ---- canonical text and round trip --------------------------------------------------------

status_set from_ranges(const code_ranges& ranges) {
  status_set set;
  for (const auto& [first, last] : ranges) set = set | status_set::range(first, last);
  return set;
}

TEST(StatusSetToString, IsCanonicalForHandPickedSets) {
  const std::vector<std::pair<code_ranges, std::string>> rows = {
      {{}, ""},
      {{{400, 599}}, "4xx,5xx"},
      {{{400, 409}, {302, 302}}, "302,40x"},
      {{{302, 302}}, "302"},
      {{{302, 303}}, "302-303"},
      {{{302, 304}}, "302-304"},
      {{{100, 100}, {102, 102}}, "100,102"},
      {{{395, 405}}, "395-405"},
      {{{395, 412}}, "395-399,40x,410-412"},
      {{{390, 415}}, "39x,40x,410-415"},
      {{{100, 999}}, "1xx,2xx,3xx,4xx,5xx,6xx,7xx,8xx,9xx"},
      {{{990, 999}}, "99x"},
      {{{998, 999}}, "998-999"},
      {{{400, 599}, {302, 302}}, "302,4xx,5xx"},
      {{{401, 499}}, "401-409,41x,42x,43x,44x,45x,46x,47x,48x,49x"},
      {{{400, 498}}, "40x,41x,42x,43x,44x,45x,46x,47x,48x,490-498"},
  };
  for (const auto& [ranges, text] : rows) {
    const status_set set = from_ranges(ranges);
    EXPECT_EQ(set.to_string(), text);
    if (!set.empty()) {
      EXPECT_EQ(status_set::parse(set.to_string()), set) << text;
    }
  }
}

TEST(StatusSetToString, RoundTripsPseudoRandomSets) {
  constexpr std::mt19937::result_type seed = 20240611;
  std::mt19937 rng(seed);
  const auto uniform = [&rng](int low, int high) {
    return std::uniform_int_distribution<int>(low, high)(rng);
  };
  for (int iteration = 0; iteration < 2000; ++iteration) {
    status_set set;
    switch (iteration % 4) {
      case 0: {  // scattered codes at a random density
        const int per_mille = uniform(1, 999);
        for (int code = 100; code <= 999; ++code) {
          if (uniform(0, 999) < per_mille) set.insert(code);
        }
        break;
      }
      case 1:  // a few runs of random length
        for (int runs = uniform(1, 6); runs > 0; --runs) {
          const int first = uniform(100, 999);
          set = set | status_set::range(first, std::min(999, first + uniform(0, 150)));
        }
        break;
      case 2:  // full tens and hundreds plus stray codes next to them
        for (int blocks = uniform(1, 5); blocks > 0; --blocks) {
          const int first = uniform(10, 99) * 10;
          const int width = uniform(0, 2) == 0 ? 100 - first % 100 : 10;
          set = set | status_set::range(first, first + width - 1);
          if (first > 100) set.insert(first - 1);
        }
        break;
      default:  // the whole range with a few holes punched in it
        for (int code = 100; code <= 999; ++code) {
          if (uniform(0, 99) != 0) set.insert(code);
        }
        break;
    }
    if (set.empty()) set.insert(uniform(100, 999));
    const std::string text = set.to_string();
    ASSERT_EQ(status_set::parse(text), set)
        << "seed " << seed << ", iteration " << iteration << ", text \"" << text << "\"";
    ASSERT_EQ(status_set::parse(text).to_string(), text)
        << "seed " << seed << ", iteration " << iteration;
    ASSERT_EQ(text.find(' '), std::string::npos) << "seed " << seed;
  }
}

// ---- compile-time use ---------------------------------------------------------------------

struct opts {
  status_set no_go = status_set::default_no_go();
  bool always = false;
};

static_assert(status_set{"5xx"}.contains(503));
static_assert(!status_set{"5xx"}.contains(499));

constexpr status_set literal = "5xx,400-405,302";
static_assert(literal.contains(302) && literal.contains(400) && literal.contains(405));
static_assert(literal.contains(500) && literal.contains(599));
static_assert(!literal.contains(301) && !literal.contains(303) && !literal.contains(406));
static_assert(!literal.contains(499) && !literal.contains(600));
static_assert(literal.size() == 100 + 6 + 1);

constexpr status_set mixed = {"5xx", "400-405", 302};
static_assert(mixed == literal);

static_assert(status_set::default_no_go().size() == 200);
static_assert(status_set::none().empty());
static_assert(status_set::range(400, 405) == status_set{"400-405"});
static_assert(status_set{}.insert(302).contains(302));
static_assert((status_set{"4xx"} | status_set{"5xx"}) == status_set::default_no_go());

constexpr opts designated{.no_go = "5xx,302"};
static_assert(designated.no_go.contains(302) && designated.no_go.contains(550));
static_assert(!designated.no_go.contains(404) && !designated.always);

TEST(StatusSetCompileTime, LiteralWorksInDesignatedInitializers) {
  const opts defaults;
  EXPECT_EQ(defaults.no_go, status_set::default_no_go());
  const opts custom{.no_go = "5xx,302"};
  expect_exactly(custom.no_go, {{500, 599}, {302, 302}});
  EXPECT_FALSE(custom.always);
  status_set assigned;
  assigned = "40x";
  expect_exactly(assigned, {{400, 409}});
}

}  // namespace
