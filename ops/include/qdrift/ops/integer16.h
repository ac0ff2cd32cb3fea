// SPDX-License-Identifier: Apache-2.0
// The int16x8 profile's kernels as LiteRT computes them: int16 activations (symmetric, zero
// point 0), int8 symmetric weights, int64 or int32 biases. FULLY_CONNECTED / CONV_2D (groups,
// depthwise) sum w * x in the bias's width and hand the sum to an OutputStage (integer.h) with
// int16 clamp bounds; ADD, TANH, LOGISTIC, QUANTIZE and DEQUANTIZE follow LiteRT's int16 code.
// Which output stage each LiteRT path uses is decided in python/qdrift/tflite_int16.py.
#pragma once

#include <cstddef>
#include <cstdint>

#include "qdrift/ops/integer.h"

namespace qdrift {

// Accumulation width follows the bias type (Bias = std::int64_t or std::int32_t), as in LiteRT:
// an int32 sum wraps modulo 2^32 like the kernels' int32 registers; an int64 sum wraps modulo
// 2^64 (only a bias near +-2^63 can get there). A missing bias (null) adds nothing.
// The stage's int64 rule rejects sums outside [-2^47, 2^47) with DataError (LiteRT's contract).
// x (N, I) int16, filter (O, I) int8 (TFLite layout); y (N, O) int16.
template <class Bias>
void fully_connected_int16(const std::int16_t* x, std::size_t batch, std::size_t in, const std::int8_t* filter,
                           std::size_t out, const Bias* bias, const OutputStage& stage, std::int16_t* y);

// x NHWC int16; filter in qdrift's float layout (KH, KW, C/groups, O); padded taps add 0 (the
// zero point is 0); y (N, OH, OW, O) int16. Depthwise is groups == C with filter (KH, KW, 1, C*M).
template <class Bias>
void conv2d_int16(const ConvGeometry& g, const std::int16_t* x, const std::int8_t* filter, const Bias* bias,
                  const OutputStage& stage, std::int16_t* y);

// int16 ADD, general scales (add.cc with pot_scale_int16 false or non-power-of-two scales):
// each input shifted left by 15, rescaled by its gemmlowp multiplier relative to twice the larger
// input scale, summed in int32, rescaled to the output, clamped to [act_min, act_max].
void add_int16(const std::int16_t* a, const std::int16_t* b, std::size_t n, float a_scale, float b_scale,
               float out_scale, std::int32_t act_min, std::int32_t act_max, std::int16_t* y);

// int16 MUL (zero points 0; callers broadcast): acc = a * b in int32 (|acc| <= 2^30), gemmlowp MultiplyByQuantizedMultiplier with the
// multiplier of f32(f32(s_a * s_b) / s_out) (float32, as for int8), clamp to [act_min, act_max]. The reference and builtin
// kernels both run this (reference_integer_ops::Mul); XNNPACK takes no int16 op.
void mul_int16(const std::int16_t* a, const std::int16_t* b, std::size_t n, float a_scale, float b_scale,
               float out_scale, std::int32_t act_min, std::int32_t act_max, std::int16_t* y);

// int16 TANH / LOGISTIC (reference_integer_ops: the reference kernel always, the builtin kernel
// unless the input scale is a power of two, see *_fixed_point below): x is rescaled to 3 * 4096 units per 1.0 by an integer multiplier,
// then a 256-entry sigmoid table (sigmoid(i/24) in 0.16 format) is interpolated linearly
// (tanh uses tanh(x) = 2 sigmoid(2x) - 1); the output scale is 2^-15.
struct Int16TableInput {
  std::int32_t multiplier = 0;   // 0: power-of-two input scale (3 << left_shift is used)
  int left_shift = 0;
  bool power_of_two = false;
};
// Prepare(): the input rescaling for scale s_in (ConfigError if s_in is not finite and > 0).
// A scale within 1e-3 of a power of two in log2 counts as one (CheckedLog2), if that power
// puts the shift where the kernel accepts it (tanh: 12 + log2 in {0, 1}; logistic: 0).
Int16TableInput int16_table_input(LutFunction f, float in_scale);
void tanh_int16(const Int16TableInput& p, const std::int16_t* x, std::size_t n, std::int16_t* y);
void logistic_int16(const Int16TableInput& p, const std::int16_t* x, std::size_t n, std::int16_t* y);
// The builtin (optimized) kernels' path for a power-of-two input scale: gemmlowp's 16-bit
// fixed-point tanh / logistic of the input read as Q3.12 (tanh doubles it first, saturating, when
// input_left_shift is 1), output Q0.15.
void tanh_int16_fixed_point(int input_left_shift, const std::int16_t* x, std::size_t n, std::int16_t* y);
void logistic_int16_fixed_point(const std::int16_t* x, std::size_t n, std::int16_t* y);
// The table itself, entry i = sigmoid(i / 24) * 65536 to within 1.2 (LiteRT's tuned constants).
const std::uint16_t* sigmoid_table_uint16();

// float -> int16 QUANTIZE. kReference: RHA(f32(x / s)); kNeonBlocks (the builtin optimized
// kernel on this x86 build): elements in whole blocks of 8 get RNE(f32(x * f32(1 / (double)s))),
// the tail n % 8 gets RHA((double)x / s). Values whose rounded code leaves int32 (and NaN)
// become INT32_MIN before the zero point and clamp, as x86's float -> int conversion gives, so
// +inf, NaN and huge positive values quantize to -32768.
enum class QuantizeRule : std::uint8_t { kReference, kNeonBlocks };
void quantize_int16(QuantizeRule rule, const float* x, std::size_t n, float scale, std::int32_t zero_point,
                    std::int16_t* y);
// int16 -> float DEQUANTIZE: f32(s * (q - zp)) (exact product, one rounding).
void dequantize_int16(const std::int16_t* q, std::size_t n, float scale, std::int32_t zero_point, float* y);

}  // namespace qdrift
