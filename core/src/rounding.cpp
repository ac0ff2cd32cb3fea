// SPDX-License-Identifier: Apache-2.0
// Names of the rounding rules (the spellings used in configs and the Python API).
#include "qdrift/core/rounding.h"

#include <array>
#include <string>
#include <utility>

#include "qdrift/core/check.h"

namespace qdrift {
namespace {
constexpr std::array<std::pair<Rounding, std::string_view>, 5> kRoundingNames{{
    {Rounding::kHalfEven, "half_even"},
    {Rounding::kHalfAway, "half_away"},
    {Rounding::kHalfUp, "half_up"},
    {Rounding::kFloor, "floor"},
    {Rounding::kStochastic, "stochastic"},
}};
}  // namespace

std::string_view rounding_name(Rounding r) {
  for (const auto& [value, name] : kRoundingNames)
    if (value == r) return name;
  return "?";
}

Rounding parse_rounding(std::string_view name) {
  for (const auto& [value, n] : kRoundingNames)
    if (n == name) return value;
  throw ConfigError("rounding: unknown rule '" + std::string(name) +
                    "'; expected one of half_even, half_away, half_up, floor, stochastic");
}

}  // namespace qdrift
