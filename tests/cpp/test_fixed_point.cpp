// SPDX-License-Identifier: Apache-2.0
// Fixed-point requantization: the §10 vectors of shared/reference/tflite-semantics.md, the
// gemmlowp primitives' edge cases, and parameter validation.
#include <doctest/doctest.h>

#include <climits>
#include <cstdint>

#include "qdrift/core/error.h"
#include "qdrift/core/fixed_point.h"

using qdrift::RequantMethod;

namespace {
std::int32_t rq(std::int64_t acc, RequantMethod m, std::int32_t mult, int shift, double scale = 0.0) {
  qdrift::RequantParams p;
  p.method = m;
  p.multiplier = mult;
  p.shift = shift;
  p.scale = scale;
  qdrift::validate(p);
  return qdrift::requantize(acc, p);
}
}  // namespace

TEST_CASE("fixed_point: gemmlowp primitives") {
  using qdrift::rounding_divide_by_pot;
  using qdrift::saturating_rounding_doubling_high_mul;
  CHECK(saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN) == INT32_MAX);
  CHECK(saturating_rounding_doubling_high_mul(1, 1 << 30) == 1);     // +0.5 rounds up
  CHECK(saturating_rounding_doubling_high_mul(-1, 1 << 30) == 0);    // -0.5 rounds up
  CHECK(saturating_rounding_doubling_high_mul(-3, 1 << 30) == -1);   // -1.5 rounds up
  CHECK(rounding_divide_by_pot(-1, 1) == -1);                        // half away from zero
  CHECK(rounding_divide_by_pot(-3, 1) == -2);
  CHECK(rounding_divide_by_pot(3, 1) == 2);
  CHECK(rounding_divide_by_pot(INT32_MIN, 31) == -1);
  CHECK(rounding_divide_by_pot(INT32_MAX, 31) == 1);
}

TEST_CASE("fixed_point: quantize_multiplier edges (vector 4)") {
  auto qm = [](double m) {
    const auto q = qdrift::quantize_multiplier(m);
    return std::pair<std::int32_t, int>(q.multiplier, q.shift);
  };
  CHECK(qm(1.0 - 0x1p-33) == std::pair<std::int32_t, int>(1073741824, 1));
  CHECK(qm(0x1p-32) == std::pair<std::int32_t, int>(1 << 30, -31));
  CHECK(qm(0.75 * 0x1p-31) == std::pair<std::int32_t, int>(1610612736, -31));
  CHECK(qm(0x1p-34) == std::pair<std::int32_t, int>(0, 0));
  CHECK(qm(3.0) == std::pair<std::int32_t, int>(1610612736, 2));
  CHECK(qm(0.25) == std::pair<std::int32_t, int>(1 << 30, -1));
  CHECK(qm(0.3) == std::pair<std::int32_t, int>(1288490189, -1));
  CHECK(rq(100, RequantMethod::kGemmlowp, 1610612736, 2) == 300);
  CHECK_THROWS_AS(qdrift::quantize_multiplier(-0.5), qdrift::ConfigError);
}

TEST_CASE("fixed_point: vector 1, the negative tie in the second rounding") {
  const std::int64_t accs[] = {-2, 2, -6, -10};
  const std::int32_t gemmlowp[] = {-1, 1, -2, -3};
  const std::int32_t single[] = {0, 1, -1, -2};
  const std::int32_t xnnpack[] = {0, 0, -2, -2};
  const std::int32_t double_rha[] = {-1, 1, -2, -3};
  for (int i = 0; i < 4; ++i) {
    CAPTURE(accs[i]);
    CHECK(rq(accs[i], RequantMethod::kGemmlowp, 1 << 30, -1) == gemmlowp[i]);
    CHECK(rq(accs[i], RequantMethod::kSingle, 1 << 30, -1) == single[i]);
    CHECK(rq(accs[i], RequantMethod::kRuy, 1 << 30, -1) == single[i]);
    CHECK(rq(accs[i], RequantMethod::kXnnpack, 0, 0, 0.25) == xnnpack[i]);
    CHECK(rq(accs[i], RequantMethod::kDoubleRha, 0, 0, 0.25) == double_rha[i]);
  }
}

TEST_CASE("fixed_point: vectors 2 and 3, double rounding errors") {
  CHECK(rq(1, RequantMethod::kGemmlowp, 1288490189, -1) == 1);
  CHECK(rq(1, RequantMethod::kSingle, 1288490189, -1) == 0);
  CHECK(rq(8, RequantMethod::kGemmlowp, 1288490189, -1) == 3);
  CHECK(rq(-8, RequantMethod::kGemmlowp, 1288490189, -1) == -3);
  CHECK(rq(-8, RequantMethod::kSingle, 1288490189, -1) == -2);
  CHECK(rq(7984, RequantMethod::kGemmlowp, 1583594044, -9) == 12);
  CHECK(rq(7984, RequantMethod::kSingle, 1583594044, -9) == 11);
}

TEST_CASE("fixed_point: vector 5, saturation, wrapping and the output clamp") {
  // ruy does not saturate INT32_MIN * INT32_MIN-like products; its first step wraps.
  CHECK(qdrift::requantize_ruy(INT32_MIN, INT32_MAX, 0) == INT32_MIN + 1);
  CHECK(qdrift::requantize_gemmlowp(1 << 30, 1 << 30, 2) == 0);   // left shift wraps to 0 in int32
  qdrift::RequantParams p;
  p.multiplier = 1 << 30;
  p.shift = 0;
  p.zero_point = 5;
  p.qmin = -128;
  p.qmax = 127;
  CHECK(qdrift::requantize(1000, p) == 127);
  CHECK(qdrift::requantize(-1000, p) == -128);
  p.method = RequantMethod::kXnnpack;
  p.scale = 0.5;
  CHECK(qdrift::requantize(1000, p) == 127);   // clamped in float before rounding
}

TEST_CASE("fixed_point: vector 15, int64 accumulators with the reduced multiplier") {
  // m >= 0x7FFF0000 reduces to 0x7FFF: 2^40 * 0x7FFF / 2^25 = 32767 * 2^15.
  CHECK(qdrift::requantize_int64(std::int64_t{1} << 40, 0x7FFF8000, -10) == 32767 * 32768);
  // Below that threshold: round(m / 2^16) = 0x4000 for m = 2^30.
  CHECK(qdrift::requantize_int64(3, 1 << 30, -1) == 1);   // RHU(3 * 0x4000 / 2^16) = RHU(0.75)
}

TEST_CASE("fixed_point: validation names the problem") {
  qdrift::RequantParams p;
  p.shift = 31;
  CHECK_THROWS_WITH_AS(qdrift::validate(p), doctest::Contains("needs shift in [-31, 30], got 31"),
                       qdrift::ConfigError);
  p.method = RequantMethod::kInt64;
  p.shift = 8;
  CHECK_THROWS_WITH_AS(qdrift::validate(p), doctest::Contains("[-31, 7]"), qdrift::ConfigError);
  p.method = RequantMethod::kXnnpack;
  p.scale = -1.0;
  CHECK_THROWS_AS(qdrift::validate(p), qdrift::ConfigError);
  CHECK_THROWS_WITH_AS(qdrift::parse_requant_method("double"), doctest::Contains("gemmlowp, single"),
                       qdrift::ConfigError);
}
