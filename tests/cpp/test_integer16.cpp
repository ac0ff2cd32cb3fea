// SPDX-License-Identifier: Apache-2.0
// int16x8 kernels: edge cases the interpreter tests cannot reach cheaply -- the reduced 16-bit
// multiplier at m >= 0x7FFF0000, int64 sums beyond the int64 rule's range, wrapping int32 and int64
// accumulators, empty and size-1 dims, table saturation quirks, QUANTIZE ties and non-finite input.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "qdrift/core/error.h"
#include "qdrift/ops/integer16.h"
#include "qdrift/ops/ops.h"
#include "testing/random.h"

using qdrift::OutputStage;
using qdrift::RequantMethod;

namespace {

OutputStage fixed_stage(RequantMethod method, std::int32_t m, int shift) {
  OutputStage s;
  s.method = method;
  s.multiplier = {m};
  s.shift = {shift};
  s.act_min = -32768;
  s.act_max = 32767;
  return s;
}

OutputStage real_stage(double scale) {
  OutputStage s;
  s.method = RequantMethod::kDoubleRha;
  s.scale = {scale};
  s.act_min = -32768;
  s.act_max = 32767;
  return s;
}

// One output of a 1x1 FC: x * w + bias.
template <class Bias>
std::int16_t fc1(std::int16_t x, std::int8_t w, const Bias* bias, const OutputStage& s) {
  std::int16_t y = 0;
  qdrift::fully_connected_int16(&x, 1, 1, &w, 1, bias, s, &y);
  return y;
}

std::int64_t floor_shift(std::int64_t v, int n) { return v >> n; }   // arithmetic: floor

}  // namespace

TEST_CASE("int16 FC, int64 rule: the multiplier is rounded to 16 bits, saturating at 0x7FFF") {
  // acc = 3 * 2^20 through shift -7 (total shift 22): 0x7FFF gives 24575, 0x8000 would give 24576.
  const std::int64_t acc = 3 << 20;
  const std::int64_t bias = acc - 127 * 100;
  const auto expect = [&](std::int64_t reduced) {
    return floor_shift(acc * reduced + (std::int64_t{1} << 21), 22);
  };
  CHECK(expect(0x7FFF) == 24575);
  CHECK(expect(0x8000) == 24576);
  for (std::int32_t m : {0x7FFF0000, 0x7FFF8000, 0x7FFFFFFF})   // the saturated branch
    CHECK(fc1<std::int64_t>(100, 127, &bias, fixed_stage(RequantMethod::kInt64, m, -7)) == 24575);
  // Just below the branch, (m + 2^15) >> 16 rounds: 0x7FFEFFFF -> 0x7FFF, 0x7FFE7FFF -> 0x7FFE.
  CHECK(fc1<std::int64_t>(100, 127, &bias, fixed_stage(RequantMethod::kInt64, 0x7FFEFFFF, -7)) == 24575);
  CHECK(fc1<std::int64_t>(100, 127, &bias, fixed_stage(RequantMethod::kInt64, 0x7FFE7FFF, -7)) ==
        floor_shift(acc * 0x7FFE + (std::int64_t{1} << 21), 22));
}

TEST_CASE("int16 FC, int64 sums: the int64 rule's range, double requantization and wrapping") {
  const std::int64_t big = std::int64_t{1} << 47;   // first value outside [-2^47, 2^47)
  const std::int64_t lowest_inside = -big;   // -2^61 / 2^46 + 1/2 = -32767.5, floored
  CHECK_THROWS_AS(fc1<std::int64_t>(0, 0, &big, fixed_stage(RequantMethod::kInt64, 1 << 30, -31)), qdrift::DataError);
  CHECK(fc1<std::int64_t>(0, 0, &lowest_inside, fixed_stage(RequantMethod::kInt64, 1 << 30, -31)) == -32768);
  CHECK(floor_shift(-big * 0x4000 + (std::int64_t{1} << 45), 46) == -32768);
  // The FC's double rule takes any int64; a product beyond int32 casts to INT32_MIN (x86), so it
  // clamps to the bottom code even when positive (measured: test_int16x8.py).
  CHECK(fc1<std::int64_t>(0, 0, &big, real_stage(1.0)) == -32768);
  const std::int64_t most_negative = std::numeric_limits<std::int64_t>::min();
  CHECK(fc1<std::int64_t>(0, 0, &most_negative, real_stage(1e-30)) == 0);
  // A bias at INT64_MAX plus a positive product wraps to negative, like the kernel's register.
  const std::int64_t top = std::numeric_limits<std::int64_t>::max();
  CHECK(fc1<std::int64_t>(1, 1, &top, real_stage(1.0)) == -32768);
}

TEST_CASE("int16 FC, int32 sums wrap modulo 2^32 (the int32-bias kernels' register)") {
  const std::int32_t top = std::numeric_limits<std::int32_t>::max();
  // INT32_MAX + 1 -> INT32_MIN; times 0.5 (m = 2^30, shift 0) is -2^30, clamped to -32768.
  CHECK(fc1<std::int32_t>(1, 1, &top, fixed_stage(RequantMethod::kGemmlowp, 1 << 30, 0)) == -32768);
  CHECK(fc1<std::int32_t>(0, 1, &top, fixed_stage(RequantMethod::kGemmlowp, 1 << 30, -16)) == 16384);
  // Many maximal products: 40000 taps of 32767 * 127 = 1.66e11, taken modulo 2^32.
  const std::size_t in = 40000;
  std::vector<std::int16_t> x(in, 32767);
  std::vector<std::int8_t> w(in, 127);
  const std::int64_t exact = std::int64_t{32767} * 127 * static_cast<std::int64_t>(in);
  const auto wrapped = static_cast<std::int32_t>(static_cast<std::uint32_t>(static_cast<std::uint64_t>(exact)));
  std::int16_t y32 = 0, y64 = 0;
  const std::int32_t zero32 = 0;
  const std::int64_t zero64 = 0;
  qdrift::fully_connected_int16(x.data(), 1, in, w.data(), 1, &zero32, real_stage(1.0 / 65536), &y32);
  qdrift::fully_connected_int16(x.data(), 1, in, w.data(), 1, &zero64, real_stage(1.0 / (1 << 24)), &y64);
  CHECK(y32 == std::clamp<std::int64_t>(static_cast<std::int64_t>(std::round(wrapped / 65536.0)), -32768, 32767));
  CHECK(y64 == std::clamp<std::int64_t>(static_cast<std::int64_t>(std::round(exact / 16777216.0)), -32768, 32767));
}

TEST_CASE("int16 FC and conv: empty and size-1 dims") {
  const std::int64_t bias[2] = {300, -300};
  std::int16_t y[2] = {7, 7};
  // in == 0: the sum is the bias alone.
  qdrift::fully_connected_int16<std::int64_t>(nullptr, 1, 0, nullptr, 2, bias, real_stage(0.5), y);
  CHECK(y[0] == 150);
  CHECK(y[1] == -150);
  // batch == 0 writes nothing; a null bias adds nothing.
  y[0] = 7;
  qdrift::fully_connected_int16<std::int64_t>(nullptr, 0, 3, nullptr, 2, bias, real_stage(0.5), y);
  CHECK(y[0] == 7);
  const std::int16_t x1 = -5;
  const std::int8_t w1 = 3;
  qdrift::fully_connected_int16<std::int64_t>(&x1, 1, 1, &w1, 1, nullptr, real_stage(1.0), y);
  CHECK(y[0] == -15);
  // A 1x1x1 image through a 1x1 kernel equals the FC.
  const qdrift::ConvGeometry g = qdrift::make_conv_geometry({1, 1, 1, 1}, {1, 1, 1, 1}, 1, 1, 1, 1,
                                                            qdrift::Padding::kSame, 1, "test");
  qdrift::conv2d_int16<std::int64_t>(g, &x1, &w1, bias, real_stage(1.0), y);
  CHECK(y[0] == 285);
}

TEST_CASE("int16 conv 1x1 equals FC, depthwise equals per-channel FC, on random data") {
  std::mt19937_64 rng = qdrift::testing::make_rng(16);
  CAPTURE(qdrift::testing::test_seed());
  std::uniform_int_distribution<int> xd(-32768, 32767), wd(-127, 127), bd(-1000000, 1000000);
  const std::size_t n = 2, h = 3, w = 4, c = 5, o = 3;
  std::vector<std::int16_t> x(n * h * w * c);
  for (auto& v : x) v = static_cast<std::int16_t>(xd(rng));
  std::vector<std::int8_t> k(c * o), fc(o * c);   // conv (1, 1, C, O); FC (O, C)
  for (std::size_t i = 0; i < c; ++i)
    for (std::size_t j = 0; j < o; ++j) fc[j * c + i] = k[i * o + j] = static_cast<std::int8_t>(wd(rng));
  std::vector<std::int64_t> bias(o);
  for (auto& v : bias) v = bd(rng);
  const OutputStage stage = fixed_stage(RequantMethod::kInt64, 1518500250, -9);
  std::vector<std::int16_t> y_conv(n * h * w * o), y_fc(n * h * w * o);
  const qdrift::ConvGeometry g = qdrift::make_conv_geometry({n, h, w, c}, {1, 1, c, o}, 1, 1, 1, 1,
                                                            qdrift::Padding::kValid, 1, "test");
  qdrift::conv2d_int16(g, x.data(), k.data(), bias.data(), stage, y_conv.data());
  qdrift::fully_connected_int16(x.data(), n * h * w, c, fc.data(), o, bias.data(), stage, y_fc.data());
  CHECK(y_conv == y_fc);
}

TEST_CASE("int16 TANH / LOGISTIC: input rescaling, fixed points and saturation") {
  using qdrift::LutFunction;
  // Non-power-of-two scale 1e-4: 1e-4 * 12288 = 1.2288, doubled 14 times to 20132.66, truncated.
  const qdrift::Int16TableInput p = qdrift::int16_table_input(LutFunction::kTanh, 1e-4f);
  CHECK_FALSE(p.power_of_two);
  CHECK(p.left_shift == 14);
  CHECK(p.multiplier == 20132);
  // 2^-12: a power of two for both (shift 0); 2^-11 only for tanh (shift 1).
  CHECK(qdrift::int16_table_input(LutFunction::kTanh, 1.0f / 4096).power_of_two);
  CHECK(qdrift::int16_table_input(LutFunction::kLogistic, 1.0f / 4096).power_of_two);
  CHECK(qdrift::int16_table_input(LutFunction::kTanh, 1.0f / 2048).left_shift == 1);
  CHECK_FALSE(qdrift::int16_table_input(LutFunction::kLogistic, 1.0f / 2048).power_of_two);
  CHECK_THROWS_AS(qdrift::int16_table_input(LutFunction::kTanh, 0.0f), qdrift::ConfigError);

  const qdrift::Int16TableInput q = qdrift::int16_table_input(LutFunction::kTanh, 1e-3f);
  const std::int16_t x[5] = {-32768, -1, 0, 1, 32767};
  std::int16_t t[5], s[5];
  qdrift::tanh_int16(q, x, 5, t);
  qdrift::logistic_int16(qdrift::int16_table_input(LutFunction::kLogistic, 1e-3f), x, 5, s);
  CHECK(t[2] == 0);
  CHECK(s[2] == 16384);
  // Saturation is not symmetric: tanh(-big) = -32767, logistic(-big) = 1 (not 0), logistic(big) = 32767.
  CHECK(t[0] == -32767);
  CHECK(t[4] == 32767);
  CHECK(s[0] == 1);
  CHECK(s[4] == 32767);
  // Monotone over every input.
  std::vector<std::int16_t> all(65536), out(65536);
  for (int v = -32768; v <= 32767; ++v) all[static_cast<std::size_t>(v + 32768)] = static_cast<std::int16_t>(v);
  for (const LutFunction f : {LutFunction::kTanh, LutFunction::kLogistic}) {
    const qdrift::Int16TableInput r = qdrift::int16_table_input(f, 3e-4f);
    if (f == LutFunction::kTanh) qdrift::tanh_int16(r, all.data(), all.size(), out.data());
    else qdrift::logistic_int16(r, all.data(), all.size(), out.data());
    for (std::size_t i = 1; i < out.size(); ++i) REQUIRE(out[i] >= out[i - 1]);
  }
  // The builtin kernels' gemmlowp fixed point (power-of-two scales): Q3.12 in, Q0.15 out.
  std::int16_t f[5];
  qdrift::tanh_int16_fixed_point(0, x, 5, f);
  CHECK(f[2] == 0);
  CHECK(f[4] == 32767);   // tanh(8) rounds to 1 - 2^-15
  qdrift::logistic_int16_fixed_point(x, 5, f);
  CHECK(f[2] == 16384);
  CHECK(f[0] >= 0);
  CHECK(f[0] <= 12);      // logistic(-8) = 3.4e-4 = 11 / 32768
  // Unlike the table, gemmlowp's 16-bit exp is not monotone: its 16-bit barrel-shifter constants
  // make the output step back by up to 12 LSB where a remainder bit flips (LiteRT agrees, bit for
  // bit, over all 65536 inputs: tests/python/test_int16x8.py). 602 such steps for tanh, shift 0.
  qdrift::tanh_int16_fixed_point(0, all.data(), all.size(), out.data());
  int steps_back = 0;
  for (std::size_t i = 1; i < out.size(); ++i) {
    REQUIRE(out[i] >= out[i - 1] - 12);
    steps_back += out[i] < out[i - 1];
  }
  CHECK(steps_back == 602);
  CHECK_THROWS_AS(qdrift::tanh_int16_fixed_point(2, x, 1, f), qdrift::ConfigError);
}

TEST_CASE("int16 QUANTIZE: ties by position, non-finite and out-of-range input") {
  // scale 1: 2.5 is a tie. Reference: half away (3). Builtin: RNE in blocks of 8 (2), half away in the tail (3).
  std::vector<float> x(9, 2.5f);
  x[1] = -2.5f;
  x[2] = std::numeric_limits<float>::quiet_NaN();
  x[3] = std::numeric_limits<float>::infinity();
  x[4] = -std::numeric_limits<float>::infinity();
  x[5] = 3e9f;   // beyond int32
  x[6] = 40000.0f;
  std::vector<std::int16_t> ref(9), neon(9);
  qdrift::quantize_int16(qdrift::QuantizeRule::kReference, x.data(), x.size(), 1.0f, 0, ref.data());
  qdrift::quantize_int16(qdrift::QuantizeRule::kNeonBlocks, x.data(), x.size(), 1.0f, 0, neon.data());
  CHECK(ref == std::vector<std::int16_t>{3, -3, -32768, -32768, -32768, -32768, 32767, 3, 3});
  CHECK(neon == std::vector<std::int16_t>{2, -2, -32768, -32768, -32768, -32768, 32767, 2, 3});
  CHECK_THROWS_AS(qdrift::quantize_int16(qdrift::QuantizeRule::kReference, x.data(), 1, 0.0f, 0, ref.data()),
                  qdrift::ConfigError);
  float back = 0;
  const std::int16_t q = -32768;
  qdrift::dequantize_int16(&q, 1, 0.5f, 0, &back);
  CHECK(back == -16384.0f);
}

TEST_CASE("int16 ADD: rescaling, clamp, and the >= 1 output multiplier LiteRT rejects") {
  const std::int16_t a[3] = {1000, -32768, 32767};
  const std::int16_t b[3] = {1000, -32768, 32767};
  std::int16_t y[3];
  qdrift::add_int16(a, b, 3, 0.5f, 0.5f, 1.0f, -32768, 32767, y);
  CHECK(y[0] == 1000);
  CHECK(y[1] == -32768);
  CHECK(y[2] == 32767);
  qdrift::add_int16(a, b, 1, 0.5f, 0.5f, 1.0f, 0, 500, y);   // fused RELU-style clamp
  CHECK(y[0] == 500);
  CHECK_THROWS_AS(qdrift::add_int16(a, b, 1, 1.0f, 1.0f, 1e-6f, -32768, 32767, y), qdrift::UnsupportedError);
}

TEST_CASE("int16 MUL: ties round half up, the largest product, clamps") {
  // s_a s_b / s_out = 0.5: 3 * 1 -> 1.5 -> 2 and -3 * 1 -> -1.5 -> -1 (gemmlowp's high multiply
  // rounds half up); -32768^2 = 2^30 fits the int32 product and saturates the output.
  const std::int16_t a[4] = {3, -3, -32768, 1000};
  const std::int16_t b[4] = {1, 1, -32768, -7};
  std::int16_t y[4];
  qdrift::mul_int16(a, b, 4, 0.5f, 0.25f, 0.25f, -32768, 32767, y);
  CHECK(y[0] == 2);
  CHECK(y[1] == -1);
  CHECK(y[2] == 32767);
  CHECK(y[3] == -3500);
  qdrift::mul_int16(a, b, 4, 0.5f, 0.25f, 0.25f, 0, 32767, y);   // fused RELU-style clamp
  CHECK(y[1] == 0);
  CHECK(y[3] == 0);
  CHECK_THROWS_AS(qdrift::mul_int16(a, b, 1, 0.5f, 0.0f, 0.25f, -32768, 32767, y), qdrift::ConfigError);
  CHECK_THROWS_AS(qdrift::mul_int16(a, b, 1, 0.5f, 0.25f, 0.25f, 1, 0, y), qdrift::ConfigError);
}
