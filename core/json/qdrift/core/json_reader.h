// SPDX-License-Identifier: Apache-2.0
// The one strict JSON reader (private: include it only from .cpp files that link
// qdrift_json_reader PRIVATE). Unknown keys, wrong types and bad values are ConfigErrors whose
// message starts with the JSON pointer of the offending field (STYLE.md §3.6).
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "qdrift/core/check.h"

namespace qdrift::json {

using Json = nlohmann::json;

template <class E, std::size_t N>
using NameTable = std::array<std::pair<E, std::string_view>, N>;

template <class E, std::size_t N>
std::string_view name_of(const NameTable<E, N>& table, E value) {
  for (const auto& [v, n] : table)
    if (v == value) return n;
  return "?";
}

template <class E, std::size_t N>
std::string expected_names(const NameTable<E, N>& table) {
  std::string s;
  for (const auto& [v, n] : table) s += (s.empty() ? "" : ", ") + std::string(n);
  return s;
}

inline std::string type_name(const Json& j) { return j.type_name(); }

// RFC 6901: "~" -> "~0", "/" -> "~1" inside one reference token.
inline std::string escape_token(std::string_view key) {
  std::string s;
  for (char c : key) {
    if (c == '~') s += "~0";
    else if (c == '/') s += "~1";
    else s += c;
  }
  return s;
}

// The pointer of `key` inside the object at `pointer` ("" is the root).
inline std::string child_pointer(std::string_view pointer, std::string_view key) {
  return std::string(pointer) + "/" + escape_token(key);
}

inline std::string display_pointer(std::string_view pointer) {
  return pointer.empty() ? std::string("/") : std::string(pointer);
}

// Reads one JSON object field by field; finish() rejects every key that was not read.
class ObjectReader {
 public:
  ObjectReader(const Json& j, std::string pointer) : j_(j), pointer_(std::move(pointer)) {
    QDRIFT_CHECK(j.is_object(), ConfigError, where(""), ": expected an object, got ", type_name(j));
  }

  void read(const char* key, bool* out) {
    if (const Json* v = take(key)) {
      QDRIFT_CHECK(v->is_boolean(), ConfigError, where(key), ": expected a boolean, got ", type_name(*v));
      *out = v->get<bool>();
    }
  }
  template <class Int, std::enable_if_t<std::is_integral_v<Int>, int> = 0>
  void read(const char* key, Int* out) {
    if (const Json* v = take(key)) {
      QDRIFT_CHECK(v->is_number_integer(), ConfigError, where(key), ": expected an integer, got ",
                   type_name(*v), " ", v->dump());
      if constexpr (std::is_unsigned_v<Int>) {
        QDRIFT_CHECK(v->is_number_unsigned(), ConfigError, where(key),
                     ": expected a non-negative integer, got ", v->dump());
        const auto value = v->get<std::uint64_t>();
        QDRIFT_CHECK(value <= std::numeric_limits<Int>::max(), ConfigError, where(key), ": ", value,
                     " is out of range");
        *out = static_cast<Int>(value);
      } else {
        QDRIFT_CHECK(!v->is_number_unsigned() ||
                         v->get<std::uint64_t>() <= static_cast<std::uint64_t>(std::numeric_limits<Int>::max()),
                     ConfigError, where(key), ": ", v->dump(), " is out of range");
        const auto value = v->get<std::int64_t>();
        QDRIFT_CHECK(value >= std::numeric_limits<Int>::min() && value <= std::numeric_limits<Int>::max(),
                     ConfigError, where(key), ": ", value, " is out of range");
        *out = static_cast<Int>(value);
      }
    }
  }
  void read(const char* key, double* out) {
    if (const Json* v = take(key)) {
      QDRIFT_CHECK(v->is_number(), ConfigError, where(key), ": expected a number, got ", type_name(*v));
      *out = v->get<double>();
    }
  }
  void read(const char* key, std::string* out) {
    if (const Json* v = take(key)) {
      QDRIFT_CHECK(v->is_string(), ConfigError, where(key), ": expected a string, got ", type_name(*v));
      *out = v->get<std::string>();
    }
  }
  template <class E, std::size_t N>
  void read_enum(const char* key, const NameTable<E, N>& table, E* out) {
    if (const Json* v = take(key)) *out = parse_enum(*v, table, where(key));
  }

  // The raw value of `key` (nullptr if absent); marks the key as read.
  const Json* take(const char* key) {
    read_.emplace_back(key);
    auto it = j_.find(key);
    return it == j_.end() ? nullptr : &*it;
  }
  // Like take(), but the key must be present.
  const Json& require(const char* key) {
    const Json* v = take(key);
    QDRIFT_CHECK(v != nullptr, ConfigError, where(key), ": missing required key '", key, "'");
    return *v;
  }

  void finish() const {
    for (auto it = j_.begin(); it != j_.end(); ++it) {
      bool known = false;
      for (const auto& k : read_) known = known || k == it.key();
      QDRIFT_CHECK(known, ConfigError, where(it.key()), ": unknown key '", it.key(), "'");
    }
  }

  std::string where(const std::string& key) const {
    return key.empty() ? display_pointer(pointer_) : child_pointer(pointer_, key);
  }
  const std::string& pointer() const { return pointer_; }

  template <class E, std::size_t N>
  static E parse_enum(const Json& v, const NameTable<E, N>& table, const std::string& pointer) {
    QDRIFT_CHECK(v.is_string(), ConfigError, pointer, ": expected a string (one of ", expected_names(table),
                 "), got ", type_name(v));
    const auto& s = v.get_ref<const std::string&>();
    for (const auto& [value, name] : table)
      if (name == s) return value;
    throw ConfigError(pointer + ": unknown value '" + s + "'; expected one of " + expected_names(table));
  }

 private:
  const Json& j_;
  std::string pointer_;
  std::vector<std::string> read_;
};

}  // namespace qdrift::json
