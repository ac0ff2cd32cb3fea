// SPDX-License-Identifier: Apache-2.0
// Affine integer quantization, real = scale * (q - zero_point): parameters from observed
// ranges, and the element kernels (quantize, dequantize, fake quantize with the
// straight-through mask, and the STE / LSQ backward passes).
//
// Element rule (torch's CPU kernel, for every rounding rule):
//   q    = clamp(round(f32(x * inv_scale)) + zero_point, qmin, qmax)
//   y    = f32((q - zero_point) * scale)
//   mask = qmin <= round(f32(x * inv_scale)) + zero_point <= qmax    (before the clamp)
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "qdrift/quantizers/layout.h"
#include "qdrift/quantizers/quant_spec.h"

namespace qdrift {

// NaN and Inf in data (pinned by tests/python/test_errors.py):
//  * fake_quant: NaN -> NaN, mask 0; +Inf -> the top code, -Inf -> the bottom code, mask 0.
//  * quantize:   NaN -> zero_point (a NaN has no code; zero is the neutral value);
//                +-Inf -> qmax / qmin.
//  * observers:  NaN and Inf are rejected with DataError (a range cannot contain them).

// Scale, zero point and the quantizer's inverse scale of one slot whose observed range is
// [min, max] (widened to include 0), by spec.formula.
struct SlotParams {
  float scale;
  std::int32_t zero_point;
  float inv_scale;
};
SlotParams slot_params(const QuantSpec& spec, bool per_channel, float min, float max);

// Parameters from per-slot ranges [min[i], max[i]] (widened to include 0) by spec.formula.
// `shape` is the observed tensor's shape (it fixes the parameter layout).
QuantParams params_from_ranges(const QuantSpec& spec, const std::vector<float>& min,
                               const std::vector<float>& max, const SliceLayout& layout,
                               const Shape& shape);

// Builds per-tensor or per-channel params from explicit values (qd.fake_quant's arguments).
// Validates: scales finite and > 0, zero points in [qmin, qmax], qmin < qmax.
QuantParams make_params(std::vector<float> scale, std::vector<std::int32_t> zero_point,
                        std::int32_t qmin, std::int32_t qmax, Granularity g, int axis,
                        int group_size, const Shape& input_shape);

// All kernels: x has layout.num_elements() elements in row-major order; p matches layout.
// `seed` is used by Rounding::kStochastic only (element index = flat index).
struct ElementwiseArgs {
  const SliceLayout* layout = nullptr;
  const QuantParams* params = nullptr;
  Rounding rounding = Rounding::kHalfEven;
  std::uint64_t seed = 0;
};

void quantize(const ElementwiseArgs& a, const float* x, std::int32_t* q);
void dequantize(const ElementwiseArgs& a, const std::int32_t* q, float* y);
// mask may be null.
void fake_quant(const ElementwiseArgs& a, const float* x, float* y, std::uint8_t* mask);
// Straight-through estimator: dx = dy * mask (torch semantics).
void apply_ste_mask(const std::uint8_t* mask, const float* dy, std::size_t n, float* dx);
void fake_quant_backward(const ElementwiseArgs& a, const float* x, const float* dy, float* dx);
// LSQ / torch._fake_quantize_learnable_*: dx as STE, plus per-slot d(scale), d(zero_point)
// (summed over each slot's elements, in double, then narrowed), scaled by grad_factor.
void fake_quant_lsq_backward(const ElementwiseArgs& a, const float* x, const float* dy,
                             float grad_factor, float* dx, float* dscale, float* dzero_point);

namespace ref {
// The readable spec of the element kernels: one loop over (o, c, k), round_with() per element.
// The fast kernels above must match these bit for bit (tests/cpp/test_affine.cpp).
void quantize(const ElementwiseArgs& a, const float* x, std::int32_t* q);
void fake_quant(const ElementwiseArgs& a, const float* x, float* y, std::uint8_t* mask);
}  // namespace ref

}  // namespace qdrift
