// SPDX-License-Identifier: Apache-2.0
// The TFLite converter's formulas on the worked examples of tflite-semantics.md §2.3 and §10
// items 6-7, and the edge rules (ExpandVerySmallRange, TensorRangeSanityCheck, zero ranges,
// SafeCast). Expected values were computed with an independent NumPy restatement.
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "qdrift/core/error.h"
#include "qdrift/quantizers/tflite_formulas.h"

namespace tfl = qdrift::tflite;
using Codes = std::vector<std::int8_t>;

namespace {

constexpr float kExpandedScale = 0x1.0e8c94p-28f;   // f32(2 f32(5e-7) / 254) == f32(1e-6 / 254)

tfl::QuantizedWeights quantize(const std::vector<float>& w, const qdrift::Shape& shape, bool per_channel,
                               tfl::WeightScheme scheme) {
  return tfl::quantize_weights(w.data(), shape, per_channel, 0, scheme);
}

}  // namespace

TEST_CASE("tflite: int8 activation scale and zero point (§2.3 table, vector 6)") {
  struct Case {
    float min, max;
    float scale;
    std::int32_t zp;
  };
  const Case cases[] = {
      {-1.0f, 2.0f, 0x1.818182p-7f, -43},
      {0.5f, 2.0f, 0x1.010102p-7f, -128},          // min > 0: the range widens to [0, 2]
      {-2.0f, -0.5f, 0x1.010102p-7f, 127},         // zp_f = 126.999985
      {-1.0f, 1.0f, 0x1.010102p-7f, -1},           // zp_f = -0.50000757, a near-tie
      {0.0f, 6.0f, 0x1.818182p-6f, -128},
      {-1.23638105f, 1.29596567f, 0x1.45695ap-7f, -4},   // legacy float: -4; pure double: -3
      {0.0f, 0.0f, 0x1.0d7cf6p-27f, 0},            // TensorRangeSanityCheck: [-1e-6, 1e-6]
      {3.0f, 3.0f, 0x1.818182p-7f, -128},          // a constant tensor widens to [0, 3]
      {-1e-7f, 0.0f, 0x1.1af66ap-27f, 6},          // narrower than 1e-6: [-1.1e-6, 1e-6]
  };
  for (const Case& c : cases) {
    CAPTURE(c.min);
    CAPTURE(c.max);
    const tfl::AffineParams p = tfl::activation_params_int8(c.min, c.max);
    CHECK(p.scale == c.scale);
    CHECK(p.zero_point == c.zp);
  }
  CHECK_THROWS_WITH_AS(tfl::activation_params_int8(1.0f, 0.0f), doctest::Contains("min <= max"), qdrift::DataError);
  CHECK_THROWS_AS(tfl::activation_params_int8(std::numeric_limits<float>::quiet_NaN(), 1.0f), qdrift::DataError);
  CHECK_THROWS_WITH_AS(tfl::activation_params_int8(-3e38f, 3e38f), doctest::Contains("overflows float32"),
                       qdrift::DataError);
}

TEST_CASE("tflite: int16 activations (§2.6), no zero-range guard") {
  CHECK(tfl::activation_params_int16(-3.0f, 1.5f).scale == 3.0f / 32767.0f);
  CHECK(tfl::activation_params_int16(-3.0f, 1.5f).zero_point == 0);
  CHECK(tfl::activation_params_int16(0.5f, 2.0f).scale == 2.0f / 32767.0f);
  CHECK(tfl::activation_params_int16(0.0f, 0.0f).scale == 0.0f);   // the converter writes 0
}

TEST_CASE("tflite: weight ties round away from zero (vector 7)") {
  // max |w| = 127 gives scale exactly 1.0: 2.5 -> 3, -2.5 -> -3, 0.5 -> 1 (torch: 2, -2, 0).
  const std::vector<float> w{127.0f, 2.5f, -2.5f, 0.5f, -0.5f, 1.5f};
  for (auto scheme : {tfl::WeightScheme::kPtq, tfl::WeightScheme::kInt16x8, tfl::WeightScheme::kDynamicRange})
    for (bool per_channel : {true, false}) {
      CAPTURE(static_cast<int>(scheme));
      CAPTURE(per_channel);
      const tfl::QuantizedWeights q = quantize(w, {1, 6}, per_channel, scheme);
      CHECK(q.scale == std::vector<float>{1.0f});
      CHECK(q.values == Codes{127, 3, -3, 1, -1, 2});
    }
}

TEST_CASE("tflite: the three weight paths round differently off ties") {
  // Per channel PTQ multiplies by f32(1 / scale) (double division), int16x8 and per-tensor PTQ by
  // f32(127 / m) (float division), dynamic range divides by m / 127 in double.
  const float m = 0x1.2f9592p+3f;
  const float w = -0x1.2acdacp+2f;
  const std::vector<float> t{m, w};
  CHECK(quantize(t, {1, 2}, true, tfl::WeightScheme::kPtq).values == Codes{127, -62});
  CHECK(quantize(t, {1, 2}, false, tfl::WeightScheme::kPtq).values == Codes{127, -63});
  CHECK(quantize(t, {1, 2}, true, tfl::WeightScheme::kInt16x8).values == Codes{127, -63});
  CHECK(quantize(t, {1, 2}, true, tfl::WeightScheme::kDynamicRange).values == Codes{127, -63});
  const float m2 = 0x1.47e0d6p+2f;
  const std::vector<float> t2{m2, 0x1.523484p+1f};
  CHECK(quantize(t2, {1, 2}, true, tfl::WeightScheme::kPtq).values == Codes{127, 66});
  CHECK(quantize(t2, {1, 2}, true, tfl::WeightScheme::kDynamicRange).values == Codes{127, 65});
  // All three store f32(m / 127) for an ordinary range.
  CHECK(quantize(t, {1, 2}, true, tfl::WeightScheme::kPtq).scale[0] == 0x1.31f986p-4f);
  CHECK(quantize(t, {1, 2}, true, tfl::WeightScheme::kDynamicRange).scale[0] == 0x1.31f986p-4f);
}

TEST_CASE("tflite: per-channel axis and layout") {
  // Shape (2, 3) along axis 1: channel c holds w[0, c] and w[1, c].
  const std::vector<float> w{1.0f, -4.0f, 0.0f, -2.0f, 2.0f, 0.0f};
  const tfl::QuantizedWeights q = tfl::quantize_weights(w.data(), {2, 3}, true, 1, tfl::WeightScheme::kPtq);
  CHECK(q.scale == std::vector<float>{2.0f / 127.0f, 4.0f / 127.0f, kExpandedScale});
  CHECK(q.values == Codes{64, -127, 0, -127, 64, 0});
  CHECK_THROWS_AS(tfl::quantize_weights(w.data(), {2, 3}, true, 2, tfl::WeightScheme::kPtq), qdrift::ShapeError);
}

TEST_CASE("tflite: very small and zero ranges (ExpandVerySmallRange)") {
  const std::vector<float> zero{0.0f, 0.0f};
  const std::vector<float> tiny{1e-8f, -0.5e-8f};
  // MLIR paths (PTQ, dynamic): ranges no wider than 1e-6 become +-5e-7, per channel or not.
  for (bool per_channel : {true, false}) {
    CAPTURE(per_channel);
    CHECK(quantize(zero, {1, 2}, per_channel, tfl::WeightScheme::kPtq).scale[0] == kExpandedScale);
    CHECK(quantize(zero, {1, 2}, per_channel, tfl::WeightScheme::kPtq).values == Codes{0, 0});
    CHECK(quantize(zero, {1, 2}, per_channel, tfl::WeightScheme::kDynamicRange).scale[0] == kExpandedScale);
    CHECK(quantize(tiny, {1, 2}, per_channel, tfl::WeightScheme::kPtq).scale[0] == kExpandedScale);
    CHECK(quantize(tiny, {1, 2}, per_channel, tfl::WeightScheme::kDynamicRange).values == Codes{3, -1});
  }
  // Per channel the codes follow the expanded scale; per tensor toco quantizes against max|w|.
  CHECK(quantize(tiny, {1, 2}, true, tfl::WeightScheme::kPtq).values == Codes{3, -1});
  CHECK(quantize(tiny, {1, 2}, false, tfl::WeightScheme::kPtq).values == Codes{127, -64});
  // Just above the threshold (2m > 1e-6) the range is kept.
  const std::vector<float> edge{5.1e-7f};
  CHECK(quantize(edge, {1}, true, tfl::WeightScheme::kPtq).scale[0] == (2.0f * 5.1e-7f) / 254.0f);
  // The old quantizer (int16x8): zero channel -> scale 0; zero tensor -> scale 1; no expansion.
  const std::vector<float> w{0.0f, 0.0f, 2.0f, -1.0f};
  const tfl::QuantizedWeights pc = quantize(w, {2, 2}, true, tfl::WeightScheme::kInt16x8);
  CHECK(pc.scale == std::vector<float>{0.0f, 2.0f / 127.0f});
  CHECK(pc.values == Codes{0, 0, 127, -64});
  CHECK(quantize(zero, {1, 2}, false, tfl::WeightScheme::kInt16x8).scale[0] == 1.0f);
  CHECK(quantize(tiny, {1, 2}, true, tfl::WeightScheme::kInt16x8).scale[0] == 1e-8f / 127.0f);
  // weight_scale() reports the same pairs.
  CHECK(tfl::weight_scale(0.0f, false, tfl::WeightScheme::kPtq).scale == kExpandedScale);
  CHECK(tfl::weight_scale(1e-8f, false, tfl::WeightScheme::kPtq).inv_scale == 127.0f / 1e-8f);
  CHECK(tfl::weight_scale(0.0f, true, tfl::WeightScheme::kInt16x8).inv_scale == 0.0f);
}

TEST_CASE("tflite: inverse scales that overflow follow the x86 conversions") {
  // 127 / 1e-38 overflows float32. toco's per-tensor path: w * inf and 0 * inf convert to
  // INT32_MIN (cvttss2si) and clamp to -127; the per-channel path truncates that to int8 0.
  const std::vector<float> w{1e-38f, 0.0f, -1e-38f};
  CHECK(quantize(w, {1, 3}, false, tfl::WeightScheme::kPtq).values == Codes{-127, -127, -127});
  CHECK(quantize(w, {1, 3}, true, tfl::WeightScheme::kInt16x8).values == Codes{0, 0, 0});
}

TEST_CASE("tflite: NaN and Inf weights are a DataError") {
  const std::vector<float> nan{1.0f, std::numeric_limits<float>::quiet_NaN()};
  const std::vector<float> inf{std::numeric_limits<float>::infinity(), 1.0f};
  CHECK_THROWS_WITH_AS(quantize(nan, {2}, false, tfl::WeightScheme::kPtq), doctest::Contains("weight 1 is nan"),
                       qdrift::DataError);
  CHECK_THROWS_AS(quantize(inf, {2}, true, tfl::WeightScheme::kDynamicRange), qdrift::DataError);
  const std::vector<float> huge{3e38f, 1.0f};   // 2 max|w| overflows: DownCastScale drops it
  CHECK_THROWS_WITH_AS(quantize(huge, {2}, false, tfl::WeightScheme::kPtq), doctest::Contains("overflows float32"),
                       qdrift::DataError);
}

TEST_CASE("tflite: int32 and int64 bias (§2.5, §2.6)") {
  const std::vector<float> b{1.0f, -2.5f, 0.1875f, -0.1875f, 0.0f, 1e30f, -1e30f};
  // scale = 0.5 * 0.25 = 0.125, inverse 8; ties (+-1.5) round away from zero.
  CHECK(tfl::quantize_bias_int32(b.data(), b.size(), 0.5f, {0.25f}) ==
        std::vector<std::int32_t>{8, -20, 2, -2, 0, INT32_MAX, -INT32_MAX});
  CHECK(tfl::quantize_bias_int64(b.data(), b.size(), 0.5f, {0.25f}) ==
        std::vector<std::int64_t>{8, -20, 2, -2, 0, INT64_MAX, -INT64_MAX});
  // Per channel, with a zero scale (inverse 0 -> code 0).
  const std::vector<float> b3{1.0f, 1.0f, 1.0f};
  CHECK(tfl::quantize_bias_int32(b3.data(), 3, 2.0f, {0.25f, 0.0f, 0.125f}) == std::vector<std::int32_t>{2, 0, 4});
  // Large int64 values are exact: 1e18f = 999999984306749440.
  const std::vector<float> big{1e18f};
  CHECK(tfl::quantize_bias_int64(big.data(), 1, 1.0f, {1.0f}) == std::vector<std::int64_t>{999999984306749440});
  // A subnormal bias scale (2^-149) has an inverse that overflows to inf: SafeCast saturates
  // +-inf and maps 0 * inf = NaN to 0.
  const std::vector<float> around_zero{1.0f, 0.0f, -1.0f};
  CHECK(tfl::quantize_bias_int32(around_zero.data(), 3, 1e-30f, {1e-15f}) ==
        std::vector<std::int32_t>{INT32_MAX, 0, -INT32_MAX});
  CHECK_THROWS_WITH_AS(tfl::quantize_bias_int32(b3.data(), 3, 1.0f, {1.0f, 2.0f}),
                       doctest::Contains("3 biases but 2 weight scales"), qdrift::ShapeError);
  CHECK_THROWS_AS(tfl::quantize_bias_int64(b3.data(), 3, -1.0f, {1.0f}), qdrift::ConfigError);
  const std::vector<float> nan{std::numeric_limits<float>::quiet_NaN()};
  CHECK_THROWS_AS(tfl::quantize_bias_int32(nan.data(), 1, 1.0f, {1.0f}), qdrift::DataError);
}
