// SPDX-License-Identifier: Apache-2.0
// The TFLite converter's quantization formulas (shared/reference/tflite-semantics.md §2.3-§2.7),
// with float32 and double steps exactly where the converter has them.
#include "qdrift/quantizers/tflite_formulas.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "qdrift/core/check.h"
#include "qdrift/core/rounding.h"
#include "qdrift/quantizers/layout.h"

namespace qdrift::tflite {
namespace {

void check_range(float min, float max, const char* fn) {
  QDRIFT_CHECK(std::isfinite(min) && std::isfinite(max) && min <= max, DataError, fn,
               ": the range must be finite with min <= max, got [", min, ", ", max, "]");
}

// Largest |w| of each slot; NaN/Inf weights are a DataError.
std::vector<float> max_abs_per_slot(const float* w, const SliceLayout& l) {
  std::vector<float> m(l.num_slots(), 0.0f);
  std::size_t i = 0;
  for (std::size_t o = 0; o < l.outer; ++o)
    for (std::size_t c = 0; c < l.channels; ++c)
      for (std::size_t k = 0; k < l.inner; ++k, ++i) {
        QDRIFT_CHECK(std::isfinite(w[i]), DataError, "quantize_weights: weight ", i, " is ", w[i]);
        float& slot = m[l.slot(o, c, k)];
        slot = std::max(slot, std::fabs(w[i]));
      }
  return m;
}

std::int8_t clamp127(double v) { return static_cast<std::int8_t>(std::clamp(v, -127.0, 127.0)); }

}  // namespace

AffineParams activation_params_int8(float min, float max) {
  check_range(min, max, "activation_params_int8");
  double rmin = std::min(static_cast<double>(min), 0.0);
  double rmax = std::max(static_cast<double>(max), 0.0);
  if (std::fabs(rmax - rmin) < 1e-6) {   // TensorRangeSanityCheck widens a constant tensor
    rmin -= 1e-6;
    rmax += 1e-6;
  }
  // DownCastScale (legacy_float_scale): the scale in float32, the zero point from the min
  // formula in double, narrowed to float, then clamped or rounded half away from zero.
  AffineParams p;
  p.scale = (static_cast<float>(rmax) - static_cast<float>(rmin)) / 255.0f;
  const auto zp = static_cast<float>(-128.0 - rmin / static_cast<double>(p.scale));
  p.zero_point = zp < -128.0f ? -128 : zp > 127.0f ? 127 : static_cast<std::int32_t>(round_half_away(zp));
  return p;
}

AffineParams activation_params_int16(float min, float max) {
  check_range(min, max, "activation_params_int16");
  const float range = std::max(std::fabs(std::min(min, 0.0f)), std::fabs(std::max(max, 0.0f)));
  // UNVERIFIED against the converter for an all-zero range; scale 1 keeps it usable.
  return {range == 0.0f ? 1.0f : range / 32767.0f, 0};
}

SymmetricScale weight_scale(float max_abs, bool per_channel, WeightScheme scheme) {
  SymmetricScale s;
  switch (scheme) {
    case WeightScheme::kPtq:
      if (per_channel) {
        // MLIR legacy: ExpandVerySmallRange, scale = f32(f32(2m) / 254), inverse in double.
        const float m = 2.0f * max_abs <= 1e-6f ? 5e-7f : max_abs;
        s.scale = (2.0f * m) / 254.0f;
        s.inv_scale = static_cast<float>(1.0 / static_cast<double>(s.scale));
        return s;
      }
      [[fallthrough]];   // per tensor: toco's PortableSymmetricQuantizeFloats, as kInt16x8
    case WeightScheme::kInt16x8:
      if (max_abs == 0.0f) return s;   // all-zero weights: scale 1, codes 0
      s.scale = max_abs / 127.0f;
      s.inv_scale = 127.0f / max_abs;   // computed separately, not as 1 / scale
      return s;
    case WeightScheme::kDynamicRange:
      if (max_abs == 0.0f) return s;
      s.scale = static_cast<float>(static_cast<double>(max_abs) / 127.0);
      s.inv_scale = 1.0f / s.scale;
      return s;
  }
  return s;
}

QuantizedWeights quantize_weights(const float* w, const Shape& shape, bool per_channel, int axis, WeightScheme scheme) {
  const SliceLayout l = make_layout(shape, per_channel ? Granularity::kPerChannel : Granularity::kPerTensor, axis, 0,
                                    "quantize_weights");
  const std::vector<float> max_abs = max_abs_per_slot(w, l);
  QuantizedWeights out;
  out.values.resize(l.num_elements());
  std::vector<SymmetricScale> scales;
  for (float m : max_abs) {
    scales.push_back(weight_scale(m, per_channel, scheme));
    out.scale.push_back(scales.back().scale);
  }
  std::size_t i = 0;
  for (std::size_t o = 0; o < l.outer; ++o)
    for (std::size_t c = 0; c < l.channels; ++c)
      for (std::size_t k = 0; k < l.inner; ++k, ++i) {
        const std::size_t s = l.slot(o, c, k);
        if (max_abs[s] == 0.0f && !(scheme == WeightScheme::kPtq && per_channel)) {
          out.values[i] = 0;
        } else if (scheme == WeightScheme::kDynamicRange) {
          // §2.7: double division by the double scale m / 127 (not by the stored float).
          out.values[i] = clamp127(round_half_away(static_cast<double>(w[i]) / (static_cast<double>(max_abs[s]) / 127.0)));
        } else {
          out.values[i] = clamp127(round_half_away(static_cast<double>(w[i] * scales[s].inv_scale)));
        }
      }
  return out;
}

std::vector<std::int32_t> quantize_bias_int32(const float* b, std::size_t n, float input_scale,
                                              const std::vector<float>& weight_scale) {
  QDRIFT_CHECK(weight_scale.size() == 1 || weight_scale.size() == n, ShapeError, "quantize_bias_int32: ", n,
               " biases but ", weight_scale.size(), " weight scales");
  constexpr double kMax = std::numeric_limits<std::int32_t>::max();
  std::vector<std::int32_t> q(n);
  for (std::size_t c = 0; c < n; ++c) {
    QDRIFT_CHECK(std::isfinite(b[c]), DataError, "quantize_bias_int32: bias ", c, " is ", b[c]);
    const float scale = static_cast<float>(static_cast<double>(input_scale) * weight_scale[weight_scale.size() == 1 ? 0 : c]);
    if (scale == 0.0f) continue;
    const auto inv = static_cast<float>(1.0 / static_cast<double>(scale));
    // SafeCast clamps to +-INT32_MAX (never INT32_MIN).
    q[c] = static_cast<std::int32_t>(std::clamp(static_cast<double>(round_half_away(b[c] * inv)), -kMax, kMax));
  }
  return q;
}

std::vector<std::int64_t> quantize_bias_int64(const float* b, std::size_t n, float input_scale,
                                              const std::vector<float>& weight_scale) {
  QDRIFT_CHECK(weight_scale.size() == 1 || weight_scale.size() == n, ShapeError, "quantize_bias_int64: ", n,
               " biases but ", weight_scale.size(), " weight scales");
  constexpr double kMax = 9.2233720368547748e18;   // largest double below INT64_MAX
  std::vector<std::int64_t> q(n);
  for (std::size_t c = 0; c < n; ++c) {
    QDRIFT_CHECK(std::isfinite(b[c]), DataError, "quantize_bias_int64: bias ", c, " is ", b[c]);
    const float scale = input_scale * weight_scale[weight_scale.size() == 1 ? 0 : c];   // float product
    if (scale == 0.0f) continue;
    const auto inv = static_cast<float>(1.0 / static_cast<double>(scale));
    q[c] = static_cast<std::int64_t>(std::clamp(static_cast<double>(round_half_away(b[c] * inv)), -kMax, kMax));
  }
  return q;
}

}  // namespace qdrift::tflite
