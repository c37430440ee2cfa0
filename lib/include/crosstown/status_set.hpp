// crosstown/status_set.hpp - sets of HTTP status codes, used as "no-go" sets.
//
// Contract: a status_set is a set of HTTP status codes in 100-999, stored as a fixed-size
// bitset (bit index = code), so membership is O(1) and the type is trivially copyable. It is
// used as a "no-go" set: deferred work is skipped when the response status is in the set.
// The default no-go set is every 4xx and 5xx code (400-599). A status_set is a plain value
// type with no shared state: concurrent const use of one object is thread-safe; mutating an
// object concurrently with any other access to it needs external synchronisation.
//
// Text form ("spec"), accepted by status_set::parse, by string literals and by text items of
// a mixed list:
//
//   spec     := item ("," item)*
//   item     := code | wildcard | range        (ASCII spaces and tabs around an item are
//                                                ignored; whitespace inside one is an error)
//   code     := exactly 3 decimal digits, 100-999              "302"
//   wildcard := one digit 1-9 then "xx", or two digits then "x"
//               ("x" or "X"), always 3 characters             "5xx" = 500-599, "40x" = 400-409
//   range    := code "-" code, inclusive, start <= end         "400-405"
//
// Items may overlap; the result is their union. An empty item (an empty or all-blank spec, a
// doubled or trailing comma) is an error: an empty set is made with status_set{} or
// status_set::none(), never from text. Errors are reported as status_spec_error with the whole
// spec, the offending item (trimmed), its 0-based item index, the 0-based character offset of
// the trimmed item in the spec, and a reason, e.g.
//
//   invalid status spec "5xx,6xxx": item 1 "6xxx" at offset 4: wildcard must be 3 characters
//   like "5xx"
//
// Canonical text (to_string): ascending; an aligned full hundred is written "5xx", an aligned
// full ten "40x", any other run of 2 or more consecutive codes "a-b" (a run stops where a full
// aligned ten begins, so 395-412 is "395-399,40x,410-412"), single codes "302";
// comma-separated without spaces. parse(s.to_string()) == s for every non-empty set.
//
// Checked at compile time: every string literal, in every form - `status_set s = "5xz"`,
// `.no_go = "5xz"`, `.no_go = {"5xz"}`, `status_set{"5xx", "5xz"}` - all fail to compile, and
// a NUL inside a literal is an invalid character (`"404\0,5xx"` does not compile). An int in a
// mixed list is checked at compile time only when the whole set is constant-evaluated
// (`constexpr status_set s{"5xx", 1000}` does not compile); otherwise `status_set{"5xx", 1000}`
// throws status_spec_error at run time, as `status_set::parse(text)` does for run-time text.
// The error message escapes what is not printable in the spec and the item (`\0`, `\r`,
// `\n`, `\t`, `\xHH`; `\"` and `\\` too), so a NUL cannot cut it short and a CRLF config line
// cannot split a log line; `spec()` and `item()` keep the raw text.

#ifndef CROSSTOWN_STATUS_SET_HPP
#define CROSSTOWN_STATUS_SET_HPP

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

namespace crosstown {

/// Thrown when a status spec is malformed. The item index and offset are 0-based; the item
/// is the offending item with surrounding blanks removed.
class status_spec_error : public std::invalid_argument {
 public:
  /// Builds the message `invalid status spec "<spec>": item <index> "<item>" at offset
  /// <offset>: <reason>`.
  status_spec_error(std::string spec, std::string item, std::size_t item_index, std::size_t offset,
                    std::string reason);

  /// The whole spec text that failed to parse.
  const std::string& spec() const noexcept;
  /// The offending item, trimmed; empty for an empty item.
  const std::string& item() const noexcept;
  /// 0-based index of the offending item among the comma-separated items.
  std::size_t item_index() const noexcept;
  /// 0-based character offset of the (trimmed) offending item within spec().
  std::size_t offset() const noexcept;
  /// Why the item was rejected, e.g. `range start 405 is greater than end 400`.
  const std::string& reason() const noexcept;

 private:
  struct details;
  // Shared so that copying the exception cannot throw.
  std::shared_ptr<const details> details_;
};

/// One element of a mixed list such as `{"5xx", "400-405", 302}`: an int code or a spec
/// text. It only refers to the text, so it must not outlive it.
class status_item {
 public:
  /// A single code; validated when the list is parsed (at compile time only when the whole
  /// set is constant-evaluated).
  constexpr status_item(int code) noexcept : code_(code), is_code_(true) {}
  /// A spec literal, checked at compile time like a bare literal: `{"5xx", "5xz"}` does not
  /// compile, whether or not the set is constant-evaluated. Positions in the diagnostic are
  /// relative to this item.
  template <std::size_t N>
  consteval status_item(const char (&spec)[N]);
  /// A spec text held by a pointer (checked when the list is parsed); a null pointer is
  /// treated as an empty text, and so rejected. A template only so that a literal prefers the
  /// checked constructor above.
  template <class Pointer>
  requires(std::is_same_v<Pointer, const char*> ||
           std::is_same_v<Pointer, char*>) constexpr status_item(Pointer spec) noexcept
      : spec_(spec != nullptr ? std::string_view(spec) : std::string_view()) {}
  /// A spec text (checked when the list is parsed).
  constexpr status_item(std::string_view spec) noexcept : spec_(spec) {}

  /// True if this item holds an int code rather than a text.
  constexpr bool is_code() const noexcept { return is_code_; }
  /// The code; meaningful only if is_code().
  constexpr int code() const noexcept { return code_; }
  /// The text; meaningful only if !is_code().
  constexpr std::string_view spec() const noexcept { return spec_; }

 private:
  int code_ = 0;
  bool is_code_ = false;
  std::string_view spec_;
};

namespace detail {

/// The bitset behind a status_set: bit `code` of 1024 bits.
using status_bits = std::array<std::uint64_t, 16>;

/// Why a spec item was rejected.
enum class spec_errc : unsigned char {
  empty_item,
  whitespace_in_item,
  invalid_character,
  code_out_of_range,
  code_not_3_digits,
  wildcard_length,
  wildcard_first_digit,
  wildcard_shape,
  wildcard_in_range,
  range_incomplete,
  range_reversed,
};

/// Where and why a spec failed. Offsets index the spec text (for a mixed list, the list's
/// items joined with ","); `detail_*` delimits the part the reason talks about (the bad
/// character, the bad code, or the whole item).
struct spec_error {
  spec_errc errc;
  std::size_t item_index;
  std::size_t offset;
  std::size_t length;
  std::size_t detail_offset;
  std::size_t detail_length;
};

constexpr bool valid_code(int code) noexcept { return code >= 100 && code <= 999; }

constexpr bool test_code(const status_bits& bits, int code) noexcept {
  const auto bit = static_cast<unsigned>(code);
  return ((bits[bit >> 6U] >> (bit & 63U)) & 1U) != 0;
}

constexpr void set_codes(status_bits& bits, int first, int last) noexcept {
  for (int code = first; code <= last; ++code) {
    const auto bit = static_cast<unsigned>(code);
    bits[bit >> 6U] |= std::uint64_t{1} << (bit & 63U);
  }
}

constexpr bool is_blank(char c) noexcept { return c == ' ' || c == '\t'; }
constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
constexpr bool is_x(char c) noexcept { return c == 'x' || c == 'X'; }

/// Number of characters std::to_string(code) produces.
constexpr std::size_t decimal_width(int code) noexcept {
  std::size_t width = code < 0 ? 2 : 1;
  for (long long rest = code < 0 ? -static_cast<long long>(code) : code; rest >= 10; rest /= 10) {
    ++width;
  }
  return width;
}

/// Reads an all-digit field as an exact code.
constexpr std::optional<spec_errc> parse_exact(std::string_view digits, int& code) noexcept {
  if (digits.size() == 3 && digits[0] != '0') {
    code = (digits[0] - '0') * 100 + (digits[1] - '0') * 10 + (digits[2] - '0');
    return std::nullopt;
  }
  // "0404" looks like 404 but has the wrong width; "042", "99" and "1000" are just out of range.
  if (digits.size() > 1 && digits.size() != 3 && digits[0] == '0') {
    return spec_errc::code_not_3_digits;
  }
  return spec_errc::code_out_of_range;
}

/// Parses the item spec[begin, end) (untrimmed) into bits.
constexpr std::optional<spec_error> parse_item(std::string_view spec, std::size_t begin,
                                               std::size_t end, std::size_t index,
                                               status_bits& bits) noexcept {
  std::size_t first = begin;
  std::size_t last = end;
  while (first < last && is_blank(spec[first])) ++first;
  while (last > first && is_blank(spec[last - 1])) --last;
  if (first == last) return spec_error{spec_errc::empty_item, index, begin, 0, begin, 0};

  const std::string_view item = spec.substr(first, last - first);
  const auto fail = [&](spec_errc errc, std::size_t at, std::size_t length) {
    return spec_error{errc, index, first, item.size(), first + at, length};
  };
  for (std::size_t i = 0; i < item.size(); ++i) {
    if (is_blank(item[i])) return fail(spec_errc::whitespace_in_item, i, 1);
    if (!is_digit(item[i]) && !is_x(item[i]) && item[i] != '-') {
      return fail(spec_errc::invalid_character, i, 1);
    }
  }

  if (const std::size_t dash = item.find('-'); dash != std::string_view::npos) {
    if (dash == 0 || dash + 1 == item.size() ||
        item.find('-', dash + 1) != std::string_view::npos) {
      return fail(spec_errc::range_incomplete, 0, item.size());
    }
    const std::string_view lo = item.substr(0, dash);
    const std::string_view hi = item.substr(dash + 1);
    const auto has_x = [](std::string_view text) {
      return text.find('x') != std::string_view::npos || text.find('X') != std::string_view::npos;
    };
    if (has_x(lo)) return fail(spec_errc::wildcard_in_range, 0, lo.size());
    if (has_x(hi)) return fail(spec_errc::wildcard_in_range, dash + 1, hi.size());
    int lo_code = 0;
    int hi_code = 0;
    if (const auto errc = parse_exact(lo, lo_code)) return fail(*errc, 0, lo.size());
    if (const auto errc = parse_exact(hi, hi_code)) return fail(*errc, dash + 1, hi.size());
    if (lo_code > hi_code) return fail(spec_errc::range_reversed, 0, item.size());
    set_codes(bits, lo_code, hi_code);
    return std::nullopt;
  }

  bool wildcard = false;
  for (const char c : item) wildcard = wildcard || is_x(c);
  if (wildcard) {
    if (item.size() != 3) return fail(spec_errc::wildcard_length, 0, item.size());
    if (item[0] < '1' || item[0] > '9') return fail(spec_errc::wildcard_first_digit, 0, 1);
    if (!is_x(item[2])) return fail(spec_errc::wildcard_shape, 0, item.size());
    const int hundred = (item[0] - '0') * 100;
    if (is_x(item[1])) {
      set_codes(bits, hundred, hundred + 99);
    } else {
      const int ten = hundred + (item[1] - '0') * 10;
      set_codes(bits, ten, ten + 9);
    }
    return std::nullopt;
  }

  int code = 0;
  if (const auto errc = parse_exact(item, code)) return fail(*errc, 0, item.size());
  set_codes(bits, code, code);
  return std::nullopt;
}

/// The one spec parser. Adds the codes of `spec` to `bits`; item indices and offsets in an
/// error are shifted by `index_base` and `offset_base` (used for mixed lists).
constexpr std::optional<spec_error> parse_spec_into(std::string_view spec, status_bits& bits,
                                                    std::size_t index_base = 0,
                                                    std::size_t offset_base = 0) noexcept {
  std::size_t begin = 0;
  for (std::size_t index = 0;; ++index) {
    std::size_t end = spec.find(',', begin);
    if (end == std::string_view::npos) end = spec.size();
    if (auto error = parse_item(spec, begin, end, index, bits)) {
      error->item_index += index_base;
      error->offset += offset_base;
      error->detail_offset += offset_base;
      return error;
    }
    if (end == spec.size()) return std::nullopt;
    begin = end + 1;
  }
}

/// Parses a mixed list into `bits`; error positions refer to the items joined with ",", an
/// int item written as std::to_string would.
constexpr std::optional<spec_error> parse_list_into(std::initializer_list<status_item> items,
                                                    status_bits& bits) noexcept {
  std::size_t index = 0;
  std::size_t offset = 0;
  for (const status_item& item : items) {
    if (item.is_code()) {
      const std::size_t width = decimal_width(item.code());
      if (!valid_code(item.code())) {
        return spec_error{spec_errc::code_out_of_range, index, offset, width, offset, width};
      }
      set_codes(bits, item.code(), item.code());
      offset += width + 1;
      ++index;
      continue;
    }
    if (auto error = parse_spec_into(item.spec(), bits, index, offset)) return error;
    for (const char c : item.spec()) index += c == ',' ? 1 : 0;
    offset += item.spec().size() + 1;
    ++index;
  }
  return std::nullopt;
}

// Deliberately not constexpr: constant evaluation that reaches one of these fails to compile,
// and the compiler's diagnostic names the function, i.e. the reason. The arguments are the
// 0-based item index and the character offset of the offending item.
namespace invalid_status_spec_literal {
inline void empty_item(std::size_t, std::size_t) noexcept {}
inline void whitespace_inside_item(std::size_t, std::size_t) noexcept {}
inline void invalid_character(std::size_t, std::size_t) noexcept {}
inline void code_out_of_range_100_to_999(std::size_t, std::size_t) noexcept {}
inline void code_must_be_exactly_3_digits(std::size_t, std::size_t) noexcept {}
inline void wildcard_must_be_3_characters(std::size_t, std::size_t) noexcept {}
inline void wildcard_must_start_with_digit_1_to_9(std::size_t, std::size_t) noexcept {}
inline void wildcard_must_be_digits_then_x(std::size_t, std::size_t) noexcept {}
inline void wildcard_not_allowed_in_range(std::size_t, std::size_t) noexcept {}
inline void range_must_have_start_and_end(std::size_t, std::size_t) noexcept {}
inline void range_start_greater_than_end(std::size_t, std::size_t) noexcept {}
}  // namespace invalid_status_spec_literal

/// The text of a literal array: up to its terminating NUL. A NUL before it stays in the text,
/// so the parser rejects it (`"404\0,5xx"` is not `"404"`).
template <std::size_t N>
constexpr std::string_view literal_text(const char (&spec)[N]) noexcept {
  return std::string_view(spec, N > 0 && spec[N - 1] == '\0' ? N - 1 : N);
}

/// Fails constant evaluation with a diagnostic that names the reason for `error`.
constexpr void reject_status_spec_literal(const spec_error& error) noexcept {
  namespace why = invalid_status_spec_literal;
  const std::size_t item = error.item_index;
  const std::size_t at = error.offset;
  switch (error.errc) {
    case spec_errc::empty_item: why::empty_item(item, at); break;
    case spec_errc::whitespace_in_item: why::whitespace_inside_item(item, at); break;
    case spec_errc::invalid_character: why::invalid_character(item, at); break;
    case spec_errc::code_out_of_range: why::code_out_of_range_100_to_999(item, at); break;
    case spec_errc::code_not_3_digits: why::code_must_be_exactly_3_digits(item, at); break;
    case spec_errc::wildcard_length: why::wildcard_must_be_3_characters(item, at); break;
    case spec_errc::wildcard_first_digit:
      why::wildcard_must_start_with_digit_1_to_9(item, at);
      break;
    case spec_errc::wildcard_shape: why::wildcard_must_be_digits_then_x(item, at); break;
    case spec_errc::wildcard_in_range: why::wildcard_not_allowed_in_range(item, at); break;
    case spec_errc::range_incomplete: why::range_must_have_start_and_end(item, at); break;
    case spec_errc::range_reversed: why::range_start_greater_than_end(item, at); break;
  }
}

/// Human-readable reason for `error`, whose offsets index `spec`.
std::string describe_spec_error(const spec_error& error, std::string_view spec);

/// Throws the status_spec_error for `error` found in `spec`.
[[noreturn]] void throw_spec_error(std::string_view spec, const spec_error& error);

/// Throws the status_spec_error for `error` found in the mixed list `items`.
[[noreturn]] void throw_list_error(std::initializer_list<status_item> items,
                                   const spec_error& error);

/// Throws the status_spec_error for status_set::range(first, last).
[[noreturn]] void throw_range_error(int first, int last);

/// Throws std::out_of_range for status_set::insert(code).
[[noreturn]] void throw_insert_error(int code);

}  // namespace detail

template <std::size_t N>
consteval status_item::status_item(const char (&spec)[N]) : spec_(detail::literal_text(spec)) {
  detail::status_bits scratch{};
  if (const auto error = detail::parse_spec_into(spec_, scratch)) {
    detail::reject_status_spec_literal(*error);
  }
}

/// A set of HTTP status codes 100-999 (see the file comment for the text form).
class status_set {
 public:
  /// Smallest code a set can hold.
  static constexpr int min_code = 100;
  /// Largest code a set can hold.
  static constexpr int max_code = 999;

  /// The empty set.
  constexpr status_set() noexcept = default;

  /// Compile-time checked literal: `status_set s = "5xx,400-405";` or, in an aggregate,
  /// `.no_go = "5xx,302"`. A malformed literal is a compile error (consteval); the
  /// diagnostic names a function in detail::invalid_status_spec_literal giving the reason.
  template <std::size_t N>
  consteval status_set(const char (&spec)[N]) {
    if (const auto error = detail::parse_spec_into(detail::literal_text(spec), bits_)) {
      detail::reject_status_spec_literal(*error);
    }
  }

  /// Mixed list `{"5xx", "400-405", 302}`: the union of the items. In a constant expression
  /// a bad item fails to compile; at run time it throws status_spec_error whose spec is the
  /// items joined with "," (e.g. `5xx,400-405,99`), with indices and offsets into that text.
  constexpr status_set(std::initializer_list<status_item> items) {
    if (const auto error = detail::parse_list_into(items, bits_)) {
      if (std::is_constant_evaluated()) {
        detail::reject_status_spec_literal(*error);
      } else {
        detail::throw_list_error(items, *error);
      }
    }
  }

  /// Parses run-time text (config files, environment variables).
  /// Throws status_spec_error if `spec` is malformed.
  static status_set parse(std::string_view spec);

  /// The empty set.
  static constexpr status_set none() noexcept { return status_set(); }

  /// Every 4xx and 5xx code: 400-599.
  static constexpr status_set default_no_go() noexcept {
    status_set set;
    detail::set_codes(set.bits_, 400, 599);
    return set;
  }

  /// The codes first..last inclusive. Both must be in 100-999 and first <= last; otherwise a
  /// constant expression fails to compile and run-time code throws status_spec_error whose
  /// spec and item are the synthesized text "first-last".
  static constexpr status_set range(int first, int last) {
    if (!detail::valid_code(first) || !detail::valid_code(last) || first > last) {
      if (std::is_constant_evaluated()) {
        if (first > last && detail::valid_code(first) && detail::valid_code(last)) {
          detail::invalid_status_spec_literal::range_start_greater_than_end(0, 0);
        } else {
          detail::invalid_status_spec_literal::code_out_of_range_100_to_999(0, 0);
        }
      } else {
        detail::throw_range_error(first, last);
      }
    }
    status_set set;
    detail::set_codes(set.bits_, first, last);
    return set;
  }

  /// True if `code` is in the set; false for anything outside 100-999. O(1).
  constexpr bool contains(int code) const noexcept {
    return detail::valid_code(code) && detail::test_code(bits_, code);
  }

  /// Adds `code`. Throws std::out_of_range naming the code if it is outside 100-999 (a
  /// compile error in a constant expression).
  constexpr status_set& insert(int code) {
    if (!detail::valid_code(code)) {
      if (std::is_constant_evaluated()) {
        detail::invalid_status_spec_literal::code_out_of_range_100_to_999(0, 0);
      } else {
        detail::throw_insert_error(code);
      }
    }
    detail::set_codes(bits_, code, code);
    return *this;
  }

  /// True if the set holds no code.
  constexpr bool empty() const noexcept {
    for (const std::uint64_t word : bits_) {
      if (word != 0) return false;
    }
    return true;
  }

  /// Number of codes in the set.
  constexpr std::size_t size() const noexcept {
    std::size_t count = 0;
    for (const std::uint64_t word : bits_) count += static_cast<std::size_t>(std::popcount(word));
    return count;
  }

  /// Same codes.
  friend constexpr bool operator==(const status_set&, const status_set&) noexcept = default;

  /// Union.
  friend constexpr status_set operator|(status_set lhs, const status_set& rhs) noexcept {
    for (std::size_t i = 0; i < lhs.bits_.size(); ++i) lhs.bits_[i] |= rhs.bits_[i];
    return lhs;
  }

  /// Canonical text (see the file comment): e.g. "302,4xx,5xx"; "" for the empty set.
  std::string to_string() const;

 private:
  friend struct std::hash<status_set>;
  detail::status_bits bits_{};
};

/// Writes `set.to_string()`.
std::ostream& operator<<(std::ostream& out, const status_set& set);

}  // namespace crosstown

/// Hashes the codes, so that sets can key unordered containers.
template <>
struct std::hash<crosstown::status_set> {
  std::size_t operator()(const crosstown::status_set& set) const noexcept {
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (const std::uint64_t word : set.bits_) {
      h ^= word + 0x9e3779b97f4a7c15ULL + (h << 6U) + (h >> 2U);
    }
    return static_cast<std::size_t>(h);
  }
};

#endif  // CROSSTOWN_STATUS_SET_HPP
