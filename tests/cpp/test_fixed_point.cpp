// SPDX-License-Identifier: Apache-2.0
// Fixed-point requantization: the §10 vectors of shared/reference/tflite-semantics.md (items 1-5
// and 15) for every method, the gemmlowp primitives' edges, and parameter validation. The
// expected values were computed by hand and with Python integers (exact rationals).
#include <doctest/doctest.h>

#include <climits>
#include <cstdint>
#include <limits>
#include <random>
#include <utility>

#include "qdrift/core/error.h"
#include "qdrift/core/fixed_point.h"
#include "testing/random.h"

using qdrift::RequantMethod;

namespace {

constexpr std::int32_t kM025 = 1 << 30;        // quantize_multiplier(0.25) = (2^30, -1)
constexpr std::int32_t kM03 = 1288490189;      // quantize_multiplier(0.3)  = (kM03, -1)

// The full output stage with zero point 0 and the int32 range.
std::int32_t fixed(RequantMethod m, std::int64_t acc, std::int32_t mult, int shift) {
  qdrift::RequantParams p;
  p.method = m;
  p.multiplier = mult;
  p.shift = shift;
  qdrift::validate(p);
  return qdrift::requantize(acc, p);
}

std::int32_t real(RequantMethod m, std::int64_t acc, double scale) {
  qdrift::RequantParams p;
  p.method = m;
  p.scale = scale;
  qdrift::validate(p);
  return qdrift::requantize(acc, p);
}

std::pair<std::int32_t, int> qm(double m) {
  const qdrift::QuantizedMultiplier q = qdrift::quantize_multiplier(m);
  return {q.multiplier, q.shift};
}

}  // namespace

TEST_CASE("fixed_point: gemmlowp primitives") {
  using qdrift::rounding_divide_by_pot;
  using qdrift::saturating_rounding_doubling_high_mul;
  CHECK(saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN) == INT32_MAX);   // the one saturating case
  CHECK(saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MAX) == -INT32_MAX);
  CHECK(saturating_rounding_doubling_high_mul(INT32_MAX, INT32_MAX) == INT32_MAX - 1);
  CHECK(saturating_rounding_doubling_high_mul(1, 1 << 30) == 1);     // +0.5 rounds up
  CHECK(saturating_rounding_doubling_high_mul(-1, 1 << 30) == 0);    // -0.5 rounds up
  CHECK(saturating_rounding_doubling_high_mul(-3, 1 << 30) == -1);   // -1.5 rounds up
  CHECK(rounding_divide_by_pot(-1, 1) == -1);                        // -0.5: half away from zero
  CHECK(rounding_divide_by_pot(1, 1) == 1);
  CHECK(rounding_divide_by_pot(-3, 1) == -2);
  CHECK(rounding_divide_by_pot(3, 1) == 2);
  CHECK(rounding_divide_by_pot(-5, 2) == -1);                        // -1.25
  CHECK(rounding_divide_by_pot(7, 0) == 7);
  CHECK(rounding_divide_by_pot(INT32_MIN, 31) == -1);
  CHECK(rounding_divide_by_pot(INT32_MAX, 31) == 1);
  CHECK(rounding_divide_by_pot(1 << 30, 31) == 1);                   // +0.5
  CHECK(rounding_divide_by_pot(-(1 << 30), 31) == -1);               // -0.5
}

TEST_CASE("fixed_point: quantize_multiplier edges (vector 4)") {
  using P = std::pair<std::int32_t, int>;
  CHECK(qm(0.0) == P(0, 0));
  CHECK(qm(0.25) == P(kM025, -1));
  CHECK(qm(0.3) == P(kM03, -1));
  CHECK(qm(0.0014402703931141053) == P(1583594044, -9));
  CHECK(qm(1.0 - 0x1p-33) == P(1 << 30, 1));            // q * 2^31 rounds to 2^31: renormalized
  CHECK(qm(1.0 - 0x1p-32) == P(1 << 30, 1));            // exactly 2^31 - 0.5 rounds away
  CHECK(qm(1.0 - 0x1p-31) == P(INT32_MAX, 0));
  CHECK(qm(0x1p-32) == P(1 << 30, -31));                // the smallest unflushed shift
  CHECK(qm(0.75 * 0x1p-31) == P(1610612736, -31));
  CHECK(qm(0x1p-33) == P(0, 0));                        // shift -32: flushed to zero
  CHECK(qm(0x1p-1074) == P(0, 0));                      // subnormal
  CHECK(qm(3.0) == P(1610612736, 2));
  CHECK(qm(0x1p40) == P(1 << 30, 41));                  // representable, but no kernel takes it
  CHECK_THROWS_WITH_AS(qdrift::quantize_multiplier(-0.5), doctest::Contains("finite and >= 0"), qdrift::ConfigError);
  CHECK_THROWS_AS(qdrift::quantize_multiplier(std::numeric_limits<double>::quiet_NaN()), qdrift::ConfigError);
  CHECK_THROWS_AS(qdrift::quantize_multiplier(std::numeric_limits<double>::infinity()), qdrift::ConfigError);
}

TEST_CASE("fixed_point: M = 3.0 (left shift) and a flushed multiplier") {
  for (RequantMethod m :
       {RequantMethod::kGemmlowp, RequantMethod::kSingle, RequantMethod::kRuy, RequantMethod::kInt64}) {
    CAPTURE(qdrift::requant_method_name(m));
    CHECK(fixed(m, 100, 1610612736, 2) == 300);
    CHECK(fixed(m, -100, 1610612736, 2) == -300);
  }
  // A multiplier below 2^-32 is (0, 0): every output is the zero point.
  qdrift::RequantParams p;
  p.multiplier = qm(0x1p-34).first;
  p.shift = qm(0x1p-34).second;
  p.zero_point = -7;
  for (RequantMethod m : {RequantMethod::kGemmlowp, RequantMethod::kSingle, RequantMethod::kRuy}) {
    p.method = m;
    CHECK(qdrift::requantize(INT32_MAX, p) == -7);
    CHECK(qdrift::requantize(INT32_MIN, p) == -7);
  }
}

TEST_CASE("fixed_point: vector 1, the negative tie in the second rounding (M = 0.25)") {
  const std::int64_t accs[] = {-2, 2, -6, -10};
  const std::int32_t gemmlowp[] = {-1, 1, -2, -3};   // RHU then RHA: -0.5 -> -1
  const std::int32_t rhu[] = {0, 1, -1, -2};         // single, ruy, int64: ties toward +inf
  const std::int32_t xnnpack[] = {0, 0, -2, -2};     // ties to even
  const std::int32_t double_rha[] = {-1, 1, -2, -3}; // ties away from zero
  for (int i = 0; i < 4; ++i) {
    CAPTURE(accs[i]);
    CHECK(fixed(RequantMethod::kGemmlowp, accs[i], kM025, -1) == gemmlowp[i]);
    CHECK(fixed(RequantMethod::kSingle, accs[i], kM025, -1) == rhu[i]);
    CHECK(fixed(RequantMethod::kRuy, accs[i], kM025, -1) == rhu[i]);
    CHECK(fixed(RequantMethod::kInt64, accs[i], kM025, -1) == rhu[i]);
    CHECK(real(RequantMethod::kXnnpack, accs[i], 0.25) == xnnpack[i]);
    CHECK(real(RequantMethod::kDoubleRha, accs[i], 0.25) == double_rha[i]);
  }
}

TEST_CASE("fixed_point: negative ties per method (M = 2^-3, ties after one exact step)") {
  // acc / 8 = -0.5, -1.5, -2.5, +2.5: the high multiply is exact, so only the tie rule shows.
  const std::int64_t accs[] = {-4, -12, -20, 20};
  const std::int32_t gemmlowp[] = {-1, -2, -3, 3};
  const std::int32_t rhu[] = {0, -1, -2, 3};
  const std::int32_t even[] = {0, -2, -2, 2};
  for (int i = 0; i < 4; ++i) {
    CAPTURE(accs[i]);
    CHECK(fixed(RequantMethod::kGemmlowp, accs[i], 1 << 30, -2) == gemmlowp[i]);
    CHECK(fixed(RequantMethod::kSingle, accs[i], 1 << 30, -2) == rhu[i]);
    CHECK(fixed(RequantMethod::kRuy, accs[i], 1 << 30, -2) == rhu[i]);
    CHECK(fixed(RequantMethod::kInt64, accs[i], 1 << 30, -2) == rhu[i]);
    CHECK(real(RequantMethod::kXnnpack, accs[i], 0.125) == even[i]);
    CHECK(real(RequantMethod::kDoubleRha, accs[i], 0.125) == gemmlowp[i]);
  }
}

TEST_CASE("fixed_point: vectors 2 and 3, double-rounding errors") {
  // M = 0.3: acc 1 -> exact 0.3; the high multiply gives 0.6 -> 1 -> RHA(0.5) = 1.
  CHECK(fixed(RequantMethod::kGemmlowp, 1, kM03, -1) == 1);
  CHECK(fixed(RequantMethod::kRuy, 1, kM03, -1) == 1);
  CHECK(fixed(RequantMethod::kSingle, 1, kM03, -1) == 0);
  CHECK(fixed(RequantMethod::kGemmlowp, 8, kM03, -1) == 3);
  CHECK(fixed(RequantMethod::kRuy, 8, kM03, -1) == 3);
  CHECK(fixed(RequantMethod::kSingle, 8, kM03, -1) == 2);
  CHECK(fixed(RequantMethod::kGemmlowp, -8, kM03, -1) == -3);
  CHECK(fixed(RequantMethod::kRuy, -8, kM03, -1) == -2);   // -2.5 rounds up
  CHECK(fixed(RequantMethod::kSingle, -8, kM03, -1) == -2);
  // TF issue #25087: M = 0.0014402703931141053, acc 7984, exact 11.4989.
  CHECK(fixed(RequantMethod::kGemmlowp, 7984, 1583594044, -9) == 12);
  CHECK(fixed(RequantMethod::kRuy, 7984, 1583594044, -9) == 12);
  CHECK(fixed(RequantMethod::kSingle, 7984, 1583594044, -9) == 11);
}

TEST_CASE("fixed_point: shift -31, the deepest right shift") {
  // (2^31 - 1) * 2^30 / 2^62 = 0.49999...: the high multiply rounds to 2^30, a tie for RDBPOT.
  CHECK(fixed(RequantMethod::kGemmlowp, INT32_MAX, 1 << 30, -31) == 1);
  CHECK(fixed(RequantMethod::kRuy, INT32_MAX, 1 << 30, -31) == 1);
  CHECK(fixed(RequantMethod::kSingle, INT32_MAX, 1 << 30, -31) == 0);
  // -2^31 * 2^30 / 2^62 = -0.5 exactly.
  CHECK(fixed(RequantMethod::kGemmlowp, INT32_MIN, 1 << 30, -31) == -1);
  CHECK(fixed(RequantMethod::kRuy, INT32_MIN, 1 << 30, -31) == 0);
  CHECK(fixed(RequantMethod::kSingle, INT32_MIN, 1 << 30, -31) == 0);
}

TEST_CASE("fixed_point: vector 5, saturation, wrapping and the output clamp") {
  // SRDHM saturates INT32_MIN * INT32_MIN; ruy's high multiply wraps it (no saturation). Only a
  // negative multiplier reaches this, so these call the rules directly (validate rejects m < 0).
  CHECK(qdrift::requantize_gemmlowp(INT32_MIN, INT32_MIN, 0) == INT32_MAX);
  CHECK(qdrift::requantize_ruy(INT32_MIN, INT32_MIN, 0) == INT32_MIN);
  // The largest valid magnitudes.
  CHECK(fixed(RequantMethod::kGemmlowp, INT32_MIN, INT32_MAX, 0) == -INT32_MAX);
  CHECK(fixed(RequantMethod::kRuy, INT32_MIN, INT32_MAX, 0) == -INT32_MAX);
  CHECK(fixed(RequantMethod::kSingle, INT32_MIN, INT32_MAX, 0) == -INT32_MAX);
  CHECK(fixed(RequantMethod::kGemmlowp, INT32_MAX, INT32_MAX, 0) == INT32_MAX - 1);
  // A left shift wraps in int32 before the high multiply (x * (1 << left), vpsllvd): 2^30 * 4
  // becomes 0. Single rounding multiplies in int64 first and only its result wraps.
  CHECK(fixed(RequantMethod::kGemmlowp, 1 << 30, 1 << 30, 2) == 0);
  CHECK(fixed(RequantMethod::kRuy, 1 << 30, 1 << 30, 2) == 0);
  CHECK(fixed(RequantMethod::kSingle, 1 << 30, 1 << 30, 2) == INT32_MIN);
  // Accumulators near +-2^29 shifted left by 2 wrap past +-2^31: (2^31 + 4) -> -2^31 + 4.
  CHECK(fixed(RequantMethod::kGemmlowp, (1 << 29) + 1, 1 << 30, 2) == -1073741822);
  CHECK(fixed(RequantMethod::kGemmlowp, -(1 << 29) - 1, 1 << 30, 2) == 1073741822);
  // Output stage: + zero point, then clamp to [qmin, qmax].
  qdrift::RequantParams p;
  p.multiplier = 1 << 30;
  p.shift = 0;
  p.zero_point = 5;
  p.qmin = -128;
  p.qmax = 127;
  CHECK(qdrift::requantize(1000, p) == 127);
  CHECK(qdrift::requantize(-1000, p) == -128);
  CHECK(qdrift::requantize(244, p) == 127);    // 122 + 5
  CHECK(qdrift::requantize(-266, p) == -128);  // -133 + 5
  CHECK(qdrift::requantize(-264, p) == -127);
  p.method = RequantMethod::kXnnpack;
  p.scale = 0.5;
  CHECK(qdrift::requantize(1000, p) == 127);   // clamped to 122 in float, then + 5
  CHECK(qdrift::requantize(-1000, p) == -128);
  CHECK(qdrift::requantize(-265, p) == -127);  // -132.5 rounds to even (-132), then + 5
  // Beyond the int32 range the zero point saturates rather than wraps.
  p.method = RequantMethod::kGemmlowp;
  p.qmin = INT32_MIN;
  p.qmax = INT32_MAX;
  p.zero_point = 10;
  p.multiplier = INT32_MAX;
  CHECK(qdrift::requantize(INT32_MAX, p) == INT32_MAX);   // (INT32_MAX - 1) + 10
}

TEST_CASE("fixed_point: vector 15, int64 accumulators with the reduced multiplier") {
  // M = 0.3: the 16-bit multiplier round(m / 2^16) = 19661 is 0.30000305 -> +31 at 10^7.
  CHECK(fixed(RequantMethod::kInt64, 10'000'000, kM03, -1) == 3'000'031);
  CHECK(fixed(RequantMethod::kGemmlowp, 10'000'000, kM03, -1) == 3'000'000);
  CHECK(fixed(RequantMethod::kInt64, -10'000'000, kM03, -1) == -3'000'031);
  CHECK(fixed(RequantMethod::kInt64, INT32_MAX, kM03, -1) == 644'251'648);
  CHECK(fixed(RequantMethod::kGemmlowp, INT32_MAX, kM03, -1) == 644'245'094);
  // m >= 0x7FFF0000 reduces to 0x7FFF (no carry into bit 15): 2^40 * 0x7FFF / 2^25.
  CHECK(qdrift::requantize_int64(std::int64_t{1} << 40, 0x7FFF8000, -10) == 32767 * 32768);
  CHECK(qdrift::requantize_int64(std::int64_t{1} << 40, 0x7FFEFFFF, -10) == 32767 * 32768);
  CHECK(qdrift::requantize_int64(3, 1 << 30, -1) == 1);   // RHU(3 * 0x4000 / 2^16) = RHU(0.75)
  // The accepted accumulator range is [-2^47, 2^47).
  CHECK(fixed(RequantMethod::kInt64, -(std::int64_t{1} << 47), 1 << 30, -20) == -67'108'864);
  CHECK(fixed(RequantMethod::kInt64, (std::int64_t{1} << 47) - 1, INT32_MAX, -31) == 65'534);
  CHECK_THROWS_WITH_AS(fixed(RequantMethod::kInt64, std::int64_t{1} << 47, 1 << 30, 0),
                       doctest::Contains("-2^47 <= acc < 2^47"), qdrift::DataError);
  CHECK_THROWS_AS(fixed(RequantMethod::kInt64, -(std::int64_t{1} << 47) - 1, 1 << 30, 0), qdrift::DataError);
  CHECK_THROWS_WITH_AS(fixed(RequantMethod::kGemmlowp, std::int64_t{1} << 31, 1 << 30, 0),
                       doctest::Contains("takes int32 accumulators"), qdrift::DataError);
}

TEST_CASE("fixed_point: ruy and gemmlowp differ exactly at negative ties of the second step") {
  // Property over random (acc, m, shift): both share the first step (RHU high multiply) for
  // m >= 0; the second step is RHU (ruy) vs RHA (gemmlowp). Replay with QDRIFT_TEST_SEED.
  auto rng = qdrift::testing::make_rng(0xF1);
  CAPTURE(qdrift::testing::test_seed());
  std::uniform_int_distribution<std::int32_t> any_acc(INT32_MIN, INT32_MAX);
  std::uniform_int_distribution<std::int32_t> any_m(1 << 30, INT32_MAX);
  std::uniform_int_distribution<int> any_shift(-31, 0);
  int differing = 0;
  for (int i = 0; i < 200'000; ++i) {
    const std::int32_t acc = i % 2 ? any_acc(rng) : any_acc(rng) >> 16;
    const std::int32_t m = any_m(rng);
    const int shift = any_shift(rng);
    const std::int32_t high = qdrift::saturating_rounding_doubling_high_mul(acc, m);
    const int right = -shift;
    const bool negative_tie =
        right > 0 && high < 0 && (static_cast<std::int64_t>(high) & ((std::int64_t{1} << right) - 1)) ==
                                     (std::int64_t{1} << (right - 1));
    const std::int32_t g = qdrift::requantize_gemmlowp(acc, m, shift);
    const std::int32_t r = qdrift::requantize_ruy(acc, m, shift);
    CAPTURE(acc);
    CAPTURE(m);
    CAPTURE(shift);
    CHECK(g == (negative_tie ? r - 1 : r));
    differing += negative_tie;
  }
  CHECK(differing > 0);
}

TEST_CASE("fixed_point: method names and validation name the problem") {
  for (RequantMethod m : {RequantMethod::kGemmlowp, RequantMethod::kSingle, RequantMethod::kRuy, RequantMethod::kInt64,
                          RequantMethod::kXnnpack, RequantMethod::kDoubleRha})
    CHECK(qdrift::parse_requant_method(qdrift::requant_method_name(m)) == m);
  CHECK(qdrift::requant_method_uses_real_scale(RequantMethod::kXnnpack));
  CHECK(qdrift::requant_method_uses_real_scale(RequantMethod::kDoubleRha));
  CHECK_FALSE(qdrift::requant_method_uses_real_scale(RequantMethod::kRuy));
  CHECK_THROWS_WITH_AS(qdrift::parse_requant_method("double"), doctest::Contains("gemmlowp, single"),
                       qdrift::ConfigError);
  qdrift::RequantParams p;
  p.shift = 31;
  CHECK_THROWS_WITH_AS(qdrift::validate(p), doctest::Contains("needs shift in [-31, 30], got 31"),
                       qdrift::ConfigError);
  p.shift = -32;
  CHECK_THROWS_AS(qdrift::validate(p), qdrift::ConfigError);
  p.shift = 0;
  p.multiplier = -1;
  CHECK_THROWS_WITH_AS(qdrift::validate(p), doctest::Contains("multiplier must be >= 0"), qdrift::ConfigError);
  p.multiplier = 1 << 30;
  p.qmin = 5;
  p.qmax = 4;
  CHECK_THROWS_WITH_AS(qdrift::validate(p), doctest::Contains("qmin (5) must be <= qmax (4)"), qdrift::ConfigError);
  p.qmin = -128;
  p.qmax = 127;
  p.method = RequantMethod::kInt64;
  p.shift = 8;
  CHECK_THROWS_WITH_AS(qdrift::validate(p), doctest::Contains("[-31, 7]"), qdrift::ConfigError);
  p.method = RequantMethod::kXnnpack;
  p.scale = -1.0;
  CHECK_THROWS_WITH_AS(qdrift::validate(p), doctest::Contains("finite scale >= 0"), qdrift::ConfigError);
  p.scale = 1e300;   // finite as a double, infinite as the float XNNPACK stores
  CHECK_THROWS_AS(qdrift::validate(p), qdrift::ConfigError);
  p.method = RequantMethod::kDoubleRha;
  CHECK_NOTHROW(qdrift::validate(p));
}
