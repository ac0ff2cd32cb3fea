// SPDX-License-Identifier: Apache-2.0
// The TFLite converter's formulas for scales, zero points and quantized constants, bit for
// bit (shared/reference/tflite-semantics.md §2.3-§2.7). Each function names the converter
// path it reproduces; float32 vs double steps follow the converter exactly.
#pragma once

#include <cstdint>
#include <vector>

#include "qdrift/core/tensor.h"

namespace qdrift::tflite {

struct AffineParams {
  float scale = 1.0f;
  std::int32_t zero_point = 0;
};

// §2.3: int8 activations, MLIR quantizer with legacy_float_scale (full-integer PTQ).
AffineParams activation_params_int8(float min, float max);
// §2.6: int16 activations of the int16x8 mode (old quantizer): symmetric, zero point 0.
AffineParams activation_params_int16(float min, float max);

// Which converter path quantizes a weight tensor.
enum class WeightScheme : std::uint8_t {
  kPtq,           // §2.4: full-integer PTQ (MLIR legacy); per-tensor falls back to toco's formula
  kInt16x8,       // §2.6: old quantizer, int8 weights for int16 activations
  kDynamicRange,  // §2.7: dynamic-range ("hybrid"), double arithmetic
};

struct QuantizedWeights {
  std::vector<float> scale;        // one per channel (size 1 per tensor)
  std::vector<std::int8_t> values; // same layout as the float weights, in [-127, 127]
};

// Scale of one symmetric narrow-range int8 weight slot whose largest |w| is max_abs, and the
// float inverse the converter multiplies by: q = clamp(RHA(f32(w * inv_scale)), -127, 127).
// kDynamicRange divides in double instead (quantize_weights); its inv_scale is only f32(1/scale).
struct SymmetricScale {
  float scale = 1.0f;
  float inv_scale = 1.0f;
};
SymmetricScale weight_scale(float max_abs, bool per_channel, WeightScheme scheme);

// Symmetric narrow-range int8 weights. axis < 0 or per_channel == false: one scale for the
// whole tensor. Throws ShapeError / DataError (NaN/Inf weights).
QuantizedWeights quantize_weights(const float* w, const Shape& shape, bool per_channel, int axis,
                                  WeightScheme scheme);

// §2.5: int32 bias, scale f32((double)s_in * s_w[c]), clamp to +-INT32_MAX.
std::vector<std::int32_t> quantize_bias_int32(const float* b, std::size_t n, float input_scale,
                                              const std::vector<float>& weight_scale);
// §2.6: int64 bias of the int16x8 mode, scale f32(s_in * s_w[c]) (float product).
std::vector<std::int64_t> quantize_bias_int64(const float* b, std::size_t n, float input_scale,
                                              const std::vector<float>& weight_scale);

}  // namespace qdrift::tflite
