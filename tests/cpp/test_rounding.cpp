// SPDX-License-Identifier: Apache-2.0
// Rounding rules against libm and exact double arithmetic, over ties and every binade.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "qdrift/core/error.h"
#include "qdrift/core/rounding.h"
#include "testing/random.h"

namespace {

float from_bits(std::uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

// Exact oracles in double (every float and its fraction are exact in double).
double oracle_half_up(double v) {
  const double f = std::floor(v);
  return (v - f) >= 0.5 ? f + 1 : f;
}

}  // namespace

TEST_CASE("rounding: named rules on exact ties") {
  using qdrift::round_half_away;
  using qdrift::round_half_even;
  using qdrift::round_half_up;
  using qdrift::round_floor;
  const float ties[] = {-2.5f, -1.5f, -0.5f, 0.5f, 1.5f, 2.5f};
  const float even[] = {-2.f, -2.f, -0.f, 0.f, 2.f, 2.f};
  const float away[] = {-3.f, -2.f, -1.f, 1.f, 2.f, 3.f};
  const float up[] = {-2.f, -1.f, 0.f, 1.f, 2.f, 3.f};
  const float down[] = {-3.f, -2.f, -1.f, 0.f, 1.f, 2.f};
  for (int i = 0; i < 6; ++i) {
    CAPTURE(ties[i]);
    CHECK(round_half_even(ties[i]) == even[i]);
    CHECK(round_half_away(ties[i]) == away[i]);
    CHECK(round_half_up(ties[i]) == up[i]);
    CHECK(round_floor(ties[i]) == down[i]);
  }
  // floor(x + 0.5) misrounds this value to 1; the exact rule keeps 0.
  CHECK(round_half_up(0.49999997f) == 0.0f);
  CHECK(round_half_away(0.49999997f) == 0.0f);
  CHECK(round_half_even(8388609.0f) == 8388609.0f);     // beyond 2^23: already integral
  CHECK(std::isnan(round_half_even(std::nanf(""))));
  CHECK(round_half_away(-INFINITY) == -INFINITY);
}

TEST_CASE("rounding: every rule matches its oracle on random floats of every binade") {
  auto rng = qdrift::testing::make_rng(1);
  CAPTURE(qdrift::testing::test_seed());
  std::uniform_int_distribution<std::uint32_t> bits;
  int checked = 0;
  for (int i = 0; i < 2000000; ++i) {
    const float v = from_bits(bits(rng));
    if (!std::isfinite(v)) continue;
    CAPTURE(v);
    REQUIRE(qdrift::round_half_even(v) == std::nearbyint(v));
    REQUIRE(qdrift::round_half_away(v) == std::round(v));
    REQUIRE(qdrift::round_floor(v) == std::floor(v));
    REQUIRE(qdrift::round_half_up(v) == static_cast<float>(oracle_half_up(v)));
    REQUIRE(qdrift::round_half_even(static_cast<double>(v) / 3.0) == std::nearbyint(static_cast<double>(v) / 3.0));
    ++checked;
  }
  CHECK(checked > 1900000);
}

TEST_CASE("rounding: stochastic rounding is reproducible and unbiased") {
  // Same (seed, index) -> same result; the mean over many indices approaches the value.
  const float v = 2.3f;
  double sum = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const float r = qdrift::round_stochastic(v, 7, static_cast<std::uint64_t>(i));
    REQUIRE((r == 2.0f || r == 3.0f));
    REQUIRE(r == qdrift::round_stochastic(v, 7, static_cast<std::uint64_t>(i)));
    sum += r;
  }
  // Binomial std of the mean: sqrt(0.3 * 0.7 / n) ~ 1e-3; 5 sigma.
  CHECK(std::fabs(sum / n - 2.3) < 5.2e-3);
  CHECK(qdrift::round_stochastic(-1.0f, 7, 3) == -1.0f);   // integers never move
  int differ = 0;
  for (int i = 0; i < 1000; ++i)
    differ += qdrift::round_stochastic(v, 7, static_cast<std::uint64_t>(i)) !=
              qdrift::round_stochastic(v, 8, static_cast<std::uint64_t>(i));
  CHECK(differ > 200);   // another seed is another stream
}

TEST_CASE("rounding: names round-trip and unknown names are ConfigErrors") {
  for (auto r : {qdrift::Rounding::kHalfEven, qdrift::Rounding::kHalfAway, qdrift::Rounding::kHalfUp,
                 qdrift::Rounding::kFloor, qdrift::Rounding::kStochastic})
    CHECK(qdrift::parse_rounding(qdrift::rounding_name(r)) == r);
  CHECK_THROWS_AS(qdrift::parse_rounding("nearest"), qdrift::ConfigError);
  CHECK_THROWS_WITH(qdrift::parse_rounding("nearest"), doctest::Contains("half_even"));
}
