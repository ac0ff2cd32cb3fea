// SPDX-License-Identifier: Apache-2.0
// The TFLite converter's formulas on the worked examples of tflite-semantics.md §2.3 and §10.
#include <doctest/doctest.h>

#include <vector>

#include "qdrift/core/error.h"
#include "qdrift/quantizers/tflite_formulas.h"

namespace tfl = qdrift::tflite;

TEST_CASE("tflite: int8 activation scale and zero point (§2.3, vector 6)") {
  struct Case {
    float min, max;
    float scale;
    std::int32_t zp;
  };
  const Case cases[] = {
      {-1.0f, 2.0f, 0x1.818182p-7f, -43},
      {0.5f, 2.0f, 2.0f / 255.0f, -128},
      {-2.0f, -0.5f, 2.0f / 255.0f, 127},
      {-1.0f, 1.0f, 2.0f / 255.0f, -1},                // zp_f = -0.5000076
      {0.0f, 6.0f, 6.0f / 255.0f, -128},
      {-1.23638105f, 1.29596567f, 0.0f, -4},           // legacy float path: -4, double: -3
  };
  for (const Case& c : cases) {
    CAPTURE(c.min);
    CAPTURE(c.max);
    const tfl::AffineParams p = tfl::activation_params_int8(c.min, c.max);
    if (c.scale != 0.0f) CHECK(p.scale == c.scale);
    CHECK(p.zero_point == c.zp);
  }
  // A constant tensor is widened by +-1e-6 so the scale is not zero.
  CHECK(tfl::activation_params_int8(0.0f, 0.0f).scale > 0.0f);
  CHECK_THROWS_AS(tfl::activation_params_int8(1.0f, 0.0f), qdrift::DataError);
}

TEST_CASE("tflite: weight ties round away from zero (vector 7)") {
  const std::vector<float> w{127.0f, 2.5f, -2.5f, 0.5f};
  const tfl::QuantizedWeights q = tfl::quantize_weights(w.data(), {1, 4}, true, 0, tfl::WeightScheme::kPtq);
  CHECK(q.scale == std::vector<float>{1.0f});
  CHECK(q.values == std::vector<std::int8_t>{127, 3, -3, 1});
  // Dynamic range divides by the double scale m / 127 = 1: same codes here.
  const tfl::QuantizedWeights d = tfl::quantize_weights(w.data(), {1, 4}, true, 0, tfl::WeightScheme::kDynamicRange);
  CHECK(d.values == std::vector<std::int8_t>{127, 3, -3, 1});
}

TEST_CASE("tflite: very small channels and biases") {
  const std::vector<float> w{0.0f, 0.0f, 1e-8f, -1e-8f};
  const tfl::QuantizedWeights q = tfl::quantize_weights(w.data(), {2, 2}, true, 0, tfl::WeightScheme::kPtq);
  CHECK(q.scale[0] == q.scale[1]);                   // ExpandVerySmallRange: both +-5e-7
  CHECK(q.scale[0] == (2.0f * 5e-7f) / 254.0f);
  const std::vector<float> b{1e30f, -1e30f, 0.5f};
  const auto q32 = tfl::quantize_bias_int32(b.data(), 3, 0.5f, {0.5f});
  CHECK(q32 == std::vector<std::int32_t>{2147483647, -2147483647, 2});
}
