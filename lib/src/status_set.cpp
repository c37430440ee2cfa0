// crosstown/status_set.cpp - run-time parts of status_set: errors, parsing, formatting.

#include <crosstown/status_set.hpp>

#include <ostream>
#include <utility>

namespace crosstown {

struct status_spec_error::details {
  std::string spec;
  std::string item;
  std::size_t item_index;
  std::size_t offset;
  std::string reason;
};

namespace {

// Appends `text` with what is not printable ASCII escaped, and the quote and backslash too, so
// that the text between the message's quotes reads back unambiguously.
void append_escaped(std::string& out, std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    switch (c) {
      case '\0': out += "\\0"; continue;
      case '\r': out += "\\r"; continue;
      case '\n': out += "\\n"; continue;
      case '\t': out += "\\t"; continue;
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      default: break;
    }
    if (byte >= 0x20 && byte < 0x7f) {
      out += c;
    } else {
      out += "\\x";
      out += hex[byte >> 4U];
      out += hex[byte & 15U];
    }
  }
}

std::string error_message(std::string_view spec, std::string_view item, std::size_t item_index,
                          std::size_t offset, std::string_view reason) {
  std::string message = "invalid status spec \"";
  append_escaped(message, spec);
  message += "\": item ";
  message += std::to_string(item_index);
  message += " \"";
  append_escaped(message, item);
  message += "\" at offset ";
  message += std::to_string(offset);
  message += ": ";
  message += reason;
  return message;
}

std::string quoted_char(char c) {
  static constexpr char hex[] = "0123456789abcdef";
  const auto byte = static_cast<unsigned char>(c);
  if (byte >= 0x20 && byte < 0x7f) return std::string{'\'', c, '\''};
  return std::string{'\'', '\\', 'x', hex[byte >> 4U], hex[byte & 15U], '\''};
}

std::string out_of_range_reason(std::string_view code) {
  std::string reason = "code ";
  reason += code;
  reason += " is out of range 100-999";
  return reason;
}

}  // namespace

status_spec_error::status_spec_error(std::string spec, std::string item, std::size_t item_index,
                                     std::size_t offset, std::string reason)
    : std::invalid_argument(error_message(spec, item, item_index, offset, reason)),
      details_(std::make_shared<const details>(
          details{std::move(spec), std::move(item), item_index, offset, std::move(reason)})) {}

const std::string& status_spec_error::spec() const noexcept { return details_->spec; }
const std::string& status_spec_error::item() const noexcept { return details_->item; }
std::size_t status_spec_error::item_index() const noexcept { return details_->item_index; }
std::size_t status_spec_error::offset() const noexcept { return details_->offset; }
const std::string& status_spec_error::reason() const noexcept { return details_->reason; }

namespace detail {

std::string describe_spec_error(const spec_error& error, std::string_view spec) {
  const std::string_view part = spec.substr(error.detail_offset, error.detail_length);
  switch (error.errc) {
    case spec_errc::empty_item: return "empty item";
    case spec_errc::whitespace_in_item: return "whitespace inside an item";
    case spec_errc::invalid_character:
      return "invalid character " + quoted_char(part.empty() ? '\0' : part.front());
    case spec_errc::code_out_of_range: return out_of_range_reason(part);
    case spec_errc::code_not_3_digits:
      return "code " + std::string(part) + " must be exactly 3 digits";
    case spec_errc::wildcard_length: return "wildcard must be 3 characters like \"5xx\"";
    case spec_errc::wildcard_first_digit: return "wildcard must start with a digit 1-9";
    case spec_errc::wildcard_shape:
      return "wildcard must be 1 or 2 digits followed by 'x', like \"5xx\" or \"40x\"";
    case spec_errc::wildcard_in_range: return "wildcards are not allowed in ranges";
    case spec_errc::range_incomplete: return "range must be two codes like \"400-405\"";
    case spec_errc::range_reversed: {
      const std::size_t dash = part.find('-');
      return "range start " + std::string(part.substr(0, dash)) + " is greater than end " +
             std::string(part.substr(dash + 1));
    }
  }
  return "malformed item";
}

void throw_spec_error(std::string_view spec, const spec_error& error) {
  throw status_spec_error(std::string(spec), std::string(spec.substr(error.offset, error.length)),
                          error.item_index, error.offset, describe_spec_error(error, spec));
}

void throw_list_error(std::initializer_list<status_item> items, const spec_error& error) {
  std::string joined;
  for (const status_item& item : items) {
    if (&item != items.begin()) joined += ',';
    if (item.is_code()) {
      joined += std::to_string(item.code());
    } else {
      joined += item.spec();
    }
  }
  throw_spec_error(joined, error);
}

void throw_range_error(int first, int last) {
  const std::string spec = std::to_string(first) + "-" + std::to_string(last);
  std::string reason;
  if (!valid_code(first)) {
    reason = out_of_range_reason(std::to_string(first));
  } else if (!valid_code(last)) {
    reason = out_of_range_reason(std::to_string(last));
  } else {
    reason =
        "range start " + std::to_string(first) + " is greater than end " + std::to_string(last);
  }
  throw status_spec_error(spec, spec, 0, 0, std::move(reason));
}

void throw_insert_error(int code) {
  throw std::out_of_range("crosstown::status_set::insert: " +
                          out_of_range_reason(std::to_string(code)));
}

}  // namespace detail

status_set status_set::parse(std::string_view spec) {
  status_set set;
  if (const auto error = detail::parse_spec_into(spec, set.bits_)) {
    detail::throw_spec_error(spec, *error);
  }
  return set;
}

std::string status_set::to_string() const {
  const auto full = [this](int first, int count) {
    for (int code = first; code < first + count; ++code) {
      if (!contains(code)) return false;
    }
    return true;
  };
  const auto full_ten_at = [&](int code) { return code % 10 == 0 && full(code, 10); };

  std::string out;
  for (int code = min_code; code <= max_code;) {
    if (!contains(code)) {
      ++code;
      continue;
    }
    if (!out.empty()) out += ',';
    if (code % 100 == 0 && full(code, 100)) {
      out += std::to_string(code / 100);
      out += "xx";
      code += 100;
    } else if (full_ten_at(code)) {
      out += std::to_string(code / 10);
      out += 'x';
      code += 10;
    } else {
      int last = code;
      while (last < max_code && contains(last + 1) && !full_ten_at(last + 1)) ++last;
      out += std::to_string(code);
      if (last > code) {
        out += '-';
        out += std::to_string(last);
      }
      code = last + 1;
    }
  }
  return out;
}

std::ostream& operator<<(std::ostream& out, const status_set& set) {
  return out << set.to_string();
}

}  // namespace crosstown
