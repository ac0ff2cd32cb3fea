// SPDX-License-Identifier: Apache-2.0
// Scale and zero point from observed ranges (torch's observer formula, or the TFLite
// converter's), and QuantParams built from explicit values.
#include "qdrift/quantizers/affine.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "qdrift/core/check.h"
#include "qdrift/quantizers/tflite_formulas.h"

namespace qdrift {
namespace {

// torch.ao.quantization.observer._calculate_qparams, in float32 as torch computes it.
SlotParams torch_params(const QuantSpec& spec, float min, float max) {
  constexpr float kEps = std::numeric_limits<float>::epsilon();  // torch.finfo(float32).eps
  const std::int32_t qmin = spec.qmin();
  const std::int32_t qmax = spec.qmax();
  const float min_neg = std::min(min, 0.0f);
  const float max_pos = std::max(max, 0.0f);
  SlotParams p{};
  if (spec.symmetric) {
    const float amax = std::max(-min_neg, max_pos);
    p.scale = std::max(amax / (static_cast<float>(qmax - qmin) / 2.0f), kEps);
    // Unsigned symmetric codes centre on the middle code. torch uses 128 for its default
    // quint8 range [0, 255] and the rounded-down midpoint for any other range.
    const bool default_quint8 = qmin == 0 && qmax == 255;
    p.zero_point = spec.is_signed ? 0 : (default_quint8 ? 128 : (qmin + qmax) / 2);
  } else {
    p.scale = std::max((max_pos - min_neg) / static_cast<float>(qmax - qmin), kEps);
    const float shifted = round_half_even(min_neg / p.scale);   // torch.round: ties to even
    const float zp = static_cast<float>(qmin) - shifted;
    p.zero_point = static_cast<std::int32_t>(std::clamp(zp, static_cast<float>(qmin), static_cast<float>(qmax)));
  }
  p.inv_scale = 1.0f / p.scale;
  return p;
}

// The TFLite converter (shared/reference/tflite-semantics.md): §2.3 int8 activations, §2.4
// int8 weights (per-channel MLIR legacy; per-tensor toco), §2.6 int16 activations.
SlotParams tflite_params(const QuantSpec& spec, bool per_channel, float min, float max) {
  SlotParams p{};
  if (spec.bits == 16) {
    const tflite::AffineParams a = tflite::activation_params_int16(min, max);
    // The converter writes scale 0 for an all-zero int16 range; every value is then code 0,
    // which scale 1 reproduces without a division by zero.
    const float scale = a.scale > 0.0f ? a.scale : 1.0f;
    p = {scale, a.zero_point, 1.0f / scale};
  } else if (!spec.symmetric) {
    const tflite::AffineParams a = tflite::activation_params_int8(min, max);
    p = {a.scale, a.zero_point, 1.0f / a.scale};
  } else {
    const float range = std::max(std::fabs(std::min(min, 0.0f)), std::fabs(std::max(max, 0.0f)));
    const tflite::SymmetricScale w = tflite::weight_scale(range, per_channel, tflite::WeightScheme::kPtq);
    p = {w.scale, 0, w.inv_scale};
  }
  return p;
}

}  // namespace

SlotParams slot_params(const QuantSpec& spec, bool per_channel, float min, float max) {
  return spec.formula == ParamFormula::kTflite ? tflite_params(spec, per_channel, min, max)
                                               : torch_params(spec, min, max);
}

QuantParams params_from_ranges(const QuantSpec& spec, const std::vector<float>& min,
                               const std::vector<float>& max, const SliceLayout& layout,
                               const Shape& shape) {
  QDRIFT_CHECK(spec.format == Format::kInt, UnsupportedError, "params_from_ranges: format ",
               format_name(spec.format), " has no scale or zero point");
  QDRIFT_CHECK(min.size() == layout.num_slots() && max.size() == layout.num_slots(), ShapeError,
               "params_from_ranges: ", layout.num_slots(), " slots but ", min.size(), " ranges");
  QuantParams p;
  p.qmin = spec.qmin();
  p.qmax = spec.qmax();
  p.granularity = spec.granularity;
  p.axis = spec.granularity == Granularity::kPerTensor
               ? -1
               : normalize_axis(spec.axis, shape.size(), "params_from_ranges");
  p.group_size = spec.granularity == Granularity::kPerGroup ? spec.group_size : 0;
  p.param_shape = param_shape(shape, layout, p.axis);
  const bool per_channel = spec.granularity != Granularity::kPerTensor;
  for (std::size_t i = 0; i < min.size(); ++i) {
    QDRIFT_CHECK(std::isfinite(min[i]) && std::isfinite(max[i]) && min[i] <= max[i], DataError,
                 "params_from_ranges: slot ", i, " has an invalid range [", min[i], ", ", max[i], "]");
    const SlotParams s = slot_params(spec, per_channel, min[i], max[i]);
    p.scale.push_back(s.scale);
    p.zero_point.push_back(s.zero_point);
    p.inv_scale.push_back(s.inv_scale);
  }
  return p;
}

QuantParams make_params(std::vector<float> scale, std::vector<std::int32_t> zero_point, std::int32_t qmin,
                        std::int32_t qmax, Granularity g, int axis, int group_size, const Shape& input_shape) {
  QuantParams p;
  p.qmin = qmin;
  p.qmax = qmax;
  p.granularity = g;
  const SliceLayout layout = make_layout(input_shape, g, axis, group_size, "fake_quant");
  p.axis = g == Granularity::kPerTensor ? -1 : normalize_axis(axis, input_shape.size(), "fake_quant");
  p.group_size = g == Granularity::kPerGroup ? group_size : 0;
  p.param_shape = param_shape(input_shape, layout, p.axis);
  // A scalar zero point goes with every scale (torch takes one int per tensor or per channel).
  if (zero_point.size() == 1 && scale.size() > 1) zero_point.assign(scale.size(), zero_point[0]);
  p.inv_scale.reserve(scale.size());
  for (float s : scale) p.inv_scale.push_back(1.0f / s);   // torch: inv_scale = 1.0f / scale
  p.scale = std::move(scale);
  p.zero_point = std::move(zero_point);
  validate(p, input_shape);
  return p;
}

}  // namespace qdrift
