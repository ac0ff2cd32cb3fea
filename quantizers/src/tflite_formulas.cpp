// SPDX-License-Identifier: Apache-2.0
// The TFLite converter's quantization formulas (shared/reference/tflite-semantics.md §2.3-§2.7),
// with float32 and double steps exactly where the converter has them.
//
// Sources, restated here (LiteRT f674577, tensorflow/tensorflow):
//  - MLIR quantizer, tflite/converter/quantization/common/quantization_lib/quantization_utils.{h,cc}:
//    ConvertStatsToQDQs (activations), ExtractMinMaxFromAttr + GetQuantizedType (weights, with
//    ExpandVerySmallRange), DownCastScale (legacy float scale), QuantizeLegacy,
//    GetUniformQuantizedTypeForBias; TF FakeQuantSupport.cc and UniformSupport.h (non-legacy).
//  - toco_legacy/portable_tensor_utils.cc PortableSymmetricQuantizeFloats (per-tensor weights).
//  - tflite_migration / tools/optimize quantization_utils.cc: SymmetricPerChannelQuantizeValues,
//    SymmetricBiasQuantize (+ SafeCast), and the old quantizer's int16x8 formulas.
//
// Where the semantics doc is wrong or incomplete (checked against the sources above):
//  - §2.4 per tensor: the scale written to the file is the MLIR type's (DownCastScale after
//    ExpandVerySmallRange), not PortableSymmetricQuantizeFloats' scale; only the codes come from
//    the toco function. An all-zero tensor therefore gets scale f32(2 f32(5e-7) / 254) ~ 3.9e-9,
//    not 1, and a tensor with 0 < max|w| <= 5e-7 gets that expanded scale with codes computed
//    against max|w| (the converter's own inconsistency, reproduced).
//  - §2.7: ExpandVerySmallRange applies to dynamic-range weights too (zero channel: scale
//    f32(1e-6 / 254), not 1).
//  - §2.6: the old quantizer has no zero-range guard: an int16 activation range [0, 0] gives
//    scale 0, and an all-zero per-channel weight channel gets scale 0 (inverse 0, codes 0).
//    Only per-tensor int16x8 weights (PortableSymmetricQuantizeFloats) get scale 1.
//  - §2.5 vs §2.6: f32((double)s_in * s_w) and f32(s_in * s_w) are the same number: the product
//    of two floats is exact in double, so both round the exact product once.
#include "qdrift/quantizers/tflite_formulas.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "qdrift/core/check.h"
#include "qdrift/core/rounding.h"
#include "qdrift/quantizers/layout.h"

namespace qdrift::tflite {
namespace {

constexpr double kNearZeroTolerance = 1.0e-6;   // quantization_utils.h

void check_range(float min, float max, const char* fn) {
  QDRIFT_CHECK(std::isfinite(min) && std::isfinite(max) && min <= max, DataError, fn,
               ": the range must be finite with min <= max, got [", min, ", ", max, "]");
}

// ExpandVerySmallRange on the symmetric weight range [-m, m] (in double): a range no wider than
// 1e-6 becomes [-5e-7, 5e-7].
double expand_very_small_range(double half_range) {
  return 2.0 * half_range > kNearZeroTolerance ? half_range : kNearZeroTolerance / 2.0;
}

// DownCastScale for the narrow int8 range [-127, 127]: f32(f32(max) - f32(min)) / 254, all in
// float. The converter drops the quantization (returns a null type) when this is not finite.
float downcast_symmetric_scale(double half_range) {
  const auto m = static_cast<float>(half_range);
  const float scale = (m - (-m)) / 254.0f;
  QDRIFT_CHECK(std::isfinite(scale), DataError, "quantize_weights: the weight range +-", half_range,
               " overflows float32; the converter cannot quantize it");
  return scale;
}

// q = clamp(RHA(f32(w * inv)), -127, 127) in the two spellings the converter uses:
// PortableSymmetricQuantizeFloats clamps the int32; SymmetricPerChannelQuantizeValues passes the
// int32 through std::max<int8_t>/std::min<int8_t>, which truncates it to int8 first. The two
// differ only for the INT32_MIN of a NaN/overflowing product.
std::int8_t quantize_clamp_int32(float w, float inv) {
  return static_cast<std::int8_t>(std::clamp(truncate_to_int32_x86(round_half_away(w * inv)), -127, 127));
}
std::int8_t quantize_clamp_int8(float w, float inv) {
  const auto truncated = static_cast<std::int8_t>(truncate_to_int32_x86(round_half_away(w * inv)));
  return std::clamp(truncated, std::int8_t{-127}, std::int8_t{127});
}

// Largest |w| of each slot; NaN/Inf weights are a DataError (the converter leaves them float).
std::vector<float> max_abs_per_slot(const float* w, const SliceLayout& l) {
  std::vector<float> m(l.num_slots(), 0.0f);
  for_each_element(l, [&](std::size_t i, std::size_t s) {
    QDRIFT_CHECK(std::isfinite(w[i]), DataError, "quantize_weights: weight ", i, " is ", w[i],
                 "; the converter quantizes finite weights only");
    m[s] = std::max(m[s], std::fabs(w[i]));
  });
  return m;
}

// Dynamic range (§2.7, non-legacy FakeQuantSupport): the double scale (m - (-m)) / 254 = m / 127
// of the expanded range; the file stores it narrowed to float.
double dynamic_range_scale(float max_abs) { return expand_very_small_range(max_abs) / 127.0; }

// UniformSupport quantizeF32ToInt8: double division by the double scale (zero point 0), RHA,
// clamp in double.
std::int8_t quantize_dynamic(float w, double scale) {
  const double q = round_half_away(static_cast<double>(w) / scale);
  return static_cast<std::int8_t>(std::clamp(q, -127.0, 127.0));
}

// The bias scale. GetUniformQuantizedTypeForBias (legacy) narrows the double product to float;
// the old quantizer multiplies in float. Both round the exact product (it fits a double) once.
float bias_scale(float input_scale, float weight_scale) {
  return static_cast<float>(static_cast<double>(input_scale) * static_cast<double>(weight_scale));
}

// SymmetricBiasQuantize: inv = f32(1.0 / scale) (0 for a zero scale), r = RHA(f32(b * inv)),
// SafeCast (NaN -> 0, saturating), clamp to [-max, max] (never the type's min).
template <class Int>
std::vector<Int> quantize_bias(const float* b, std::size_t n, float input_scale,
                               const std::vector<float>& weight_scale, const char* fn) {
  QDRIFT_CHECK(weight_scale.size() == 1 || weight_scale.size() == n, ShapeError, fn, ": ", n,
               " biases but ", weight_scale.size(), " weight scales (expected 1 or ", n, ")");
  QDRIFT_CHECK(std::isfinite(input_scale) && input_scale >= 0.0f, ConfigError, fn,
               ": input_scale must be finite and >= 0, got ", input_scale);
  for (float s : weight_scale)
    QDRIFT_CHECK(std::isfinite(s) && s >= 0.0f, ConfigError, fn, ": weight_scales must be finite and >= 0, got ", s);
  constexpr Int kMax = std::numeric_limits<Int>::max();
  constexpr float kLimit = static_cast<float>(kMax / 2 + 1) * 2.0f;   // 2^digits, exact in float
  std::vector<Int> q(n);
  for (std::size_t c = 0; c < n; ++c) {
    QDRIFT_CHECK(std::isfinite(b[c]), DataError, fn, ": bias ", c, " is ", b[c]);
    const float scale = bias_scale(input_scale, weight_scale[weight_scale.size() == 1 ? 0 : c]);
    const float inv = scale == 0.0f ? 0.0f : static_cast<float>(1.0 / static_cast<double>(scale));
    const float r = round_half_away(b[c] * inv);
    if (std::isnan(r)) q[c] = 0;   // 0 * inf when 1 / scale overflowed
    else if (r >= kLimit) q[c] = kMax;
    else if (r <= -kLimit) q[c] = -kMax;
    else q[c] = static_cast<Int>(r);   // |r| < 2^digits: exact
  }
  return q;
}

}  // namespace

AffineParams activation_params_int8(float min, float max) {
  check_range(min, max, "activation_params_int8");
  // ConvertStatsToQDQs: widen to include 0 (double), then TensorRangeSanityCheck.
  double rmin = std::min(static_cast<double>(min), 0.0);
  double rmax = std::max(static_cast<double>(max), 0.0);
  if (std::fabs(rmax - rmin) < kNearZeroTolerance) {
    rmin -= kNearZeroTolerance;
    rmax += kNearZeroTolerance;
  }
  // DownCastScale (legacy_float_scale): the scale in float32; the zero point from the min
  // formula in double, narrowed to float, then clamped or rounded half away from zero.
  AffineParams p;
  p.scale = (static_cast<float>(rmax) - static_cast<float>(rmin)) / 255.0f;
  QDRIFT_CHECK(std::isfinite(p.scale), DataError, "activation_params_int8: the range [", min, ", ", max,
               "] overflows float32; the converter cannot quantize it");
  const auto zp = static_cast<float>(-128.0 - rmin / static_cast<double>(p.scale));
  p.zero_point = zp < -128.0f ? -128 : zp > 127.0f ? 127 : static_cast<std::int32_t>(round_half_away(zp));
  return p;
}

AffineParams activation_params_int16(float min, float max) {
  check_range(min, max, "activation_params_int16");
  // Old quantizer GetSymmetricQuantizationParams, float32: max(|min|, |max|) / 32767. There is
  // no zero-range guard: [0, 0] gives scale 0, as the converter writes it. (Its calibrator starts
  // max at FLT_MIN, so an all-zero tensor calibrates to [0, FLT_MIN] and gets a tiny scale.)
  const float lo = std::min(min, 0.0f);
  const float hi = std::max(max, 0.0f);
  return {std::max(std::fabs(hi), std::fabs(lo)) / 32767.0f, 0};
}

SymmetricScale weight_scale(float max_abs, bool per_channel, WeightScheme scheme) {
  SymmetricScale s;
  switch (scheme) {
    case WeightScheme::kPtq:
      // The file's scale is always the MLIR type's. Per channel the codes use the inverse
      // f32(1.0 / scale) in double (QuantizeLegacy); per tensor they come from toco's
      // PortableSymmetricQuantizeFloats, whose inverse is 127 / max|w| in float. (QuantizeLegacy
      // re-quantizes with the type's scale only when toco's scale differs from it by > 1e-3,
      // which happens only for an all-zero tensor: toco says 1, the type ~3.9e-9; codes are 0.)
      s.scale = downcast_symmetric_scale(expand_very_small_range(max_abs));
      s.inv_scale = per_channel || max_abs == 0.0f ? static_cast<float>(1.0 / static_cast<double>(s.scale))
                                                   : 127.0f / max_abs;
      return s;
    case WeightScheme::kInt16x8:
      // Per tensor this is tensor_utils::SymmetricQuantizeFloats, restated in its portable form
      // (ties away). UNVERIFIED: an x86 build with USE_NEON (NEON_2_SSE) would round ties to
      // even in blocks of 8 (NeonSymmetricQuantizeFloats); the wheels' flags are unknown.
      if (!per_channel && max_abs == 0.0f) return {1.0f, 0.0f};   // zero range: scale 1
      // SymmetricPerChannelQuantization (or per tensor, SymmetricQuantizeFloats): float32.
      s.scale = max_abs / 127.0f;
      s.inv_scale = max_abs == 0.0f ? 0.0f : 127.0f / max_abs;
      return s;
    case WeightScheme::kDynamicRange: {
      const double scale = dynamic_range_scale(max_abs);
      s.scale = static_cast<float>(scale);
      s.inv_scale = static_cast<float>(1.0 / scale);
      return s;
    }
  }
  return s;
}

QuantizedWeights quantize_weights(const float* w, const Shape& shape, bool per_channel, int axis, WeightScheme scheme) {
  const SliceLayout l = make_layout(shape, per_channel ? Granularity::kPerChannel : Granularity::kPerTensor, axis, 0,
                                    "quantize_weights");
  const std::vector<float> max_abs = max_abs_per_slot(w, l);
  std::vector<SymmetricScale> scales;
  std::vector<double> dynamic_scale;   // §2.7 divides by the double scale, not the stored float
  QuantizedWeights out;
  for (float m : max_abs) {
    scales.push_back(weight_scale(m, per_channel, scheme));
    out.scale.push_back(scales.back().scale);
    if (scheme == WeightScheme::kDynamicRange) dynamic_scale.push_back(dynamic_range_scale(m));
  }
  // Per tensor (toco/portable) the int32 clamp; per channel the int8-truncating one.
  const auto quantize = per_channel ? quantize_clamp_int8 : quantize_clamp_int32;
  out.values.resize(l.num_elements());
  for_each_element(l, [&](std::size_t i, std::size_t s) {
    if (scheme == WeightScheme::kDynamicRange) {
      out.values[i] = quantize_dynamic(w[i], dynamic_scale[s]);
    } else if (!per_channel && max_abs[s] == 0.0f) {
      out.values[i] = 0;   // toco memsets an all-zero tensor (PTQ: its fallback gives 0 too)
    } else {
      out.values[i] = quantize(w[i], scales[s].inv_scale);
    }
  });
  return out;
}

std::vector<std::int32_t> quantize_bias_int32(const float* b, std::size_t n, float input_scale,
                                              const std::vector<float>& weight_scale) {
  return quantize_bias<std::int32_t>(b, n, input_scale, weight_scale, "quantize_bias_int32");
}

std::vector<std::int64_t> quantize_bias_int64(const float* b, std::size_t n, float input_scale,
                                              const std::vector<float>& weight_scale) {
  return quantize_bias<std::int64_t>(b, n, input_scale, weight_scale, "quantize_bias_int64");
}

}  // namespace qdrift::tflite
