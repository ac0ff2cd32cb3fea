// SPDX-License-Identifier: Apache-2.0
// Integer (int8 activations, int8 weights, int32 bias) FULLY_CONNECTED and CONV_2D as LiteRT's
// kernels compute them: int32 accumulation of w * (x - zp_in) plus bias, then each kernel path's
// output stage (requantization rule, + zero point, clamp to the fused activation's range).
// Depthwise convolution is the grouped case with one input channel per group.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "qdrift/core/fixed_point.h"
#include "qdrift/ops/ops.h"

namespace qdrift {

// Per output channel (size 1 = shared by all channels).
struct OutputStage {
  RequantMethod method = RequantMethod::kGemmlowp;
  std::vector<std::int32_t> multiplier;   // fixed-point methods
  std::vector<int> shift;
  std::vector<double> scale;              // xnnpack / double_rha
  std::int32_t zero_point = 0;
  std::int32_t act_min = -128;
  std::int32_t act_max = 127;
  // Channels from `tail_from` on use `tail_method` instead (same multiplier/shift or scale):
  // LiteRT's x86 builtin DEPTHWISE_CONV_2D rounds its 8-channel SIMD blocks like ruy and the
  // O % 8 channels left over with the scalar gemmlowp rule (measured against the interpreter).
  std::size_t tail_from = SIZE_MAX;
  RequantMethod tail_method = RequantMethod::kGemmlowp;
  // Validates sizes against `channels` and every channel's parameters; throws ConfigError.
  std::vector<RequantParams> per_channel(std::size_t channels) const;
};

// The accumulator the integer kernels sum into (issue #5). The default, int32 with wrap, is
// what every LiteRT int8 kernel path uses. Overflow counting is defined on the reference order
// (bias first, then one product per tap: i ascending for FC; ky, kx, ic for conv; padding taps
// add nothing and are not counted): each step whose exact result leaves
// [-2^(bits-1), 2^(bits-1) - 1] is one overflow; kWrap keeps the result modulo 2^bits, kSaturate
// the nearest bound. Products are exact (int8 * (x - zp) needs 17 bits). Under wrap the final
// sum is the same in any order; under saturate it depends on the order, which is the reference's.
enum class OverflowRule : std::uint8_t { kWrap, kSaturate };
struct AccumulatorSpec {
  int bits = 32;                                  // 2..64
  OverflowRule on_overflow = OverflowRule::kWrap;
  bool is_default() const { return bits == 32 && on_overflow == OverflowRule::kWrap; }
};
void validate(const AccumulatorSpec& a);          // ConfigError unless 2 <= bits <= 64
OverflowRule parse_overflow_rule(std::string_view name);   // "wrap" | "saturate"

// Path::kFast (bit-identical to kReference) runs the blocked/SIMD kernels of integer_fast.cpp;
// it falls back to the reference for a non-default accumulator or when the input zero point
// or the weights could overflow int32 (then the sums are the reference's by construction).
// `overflows` (optional) receives the number of accumulator overflows of this call.

// x (N, I) int8, filter (O, I) int8 (TFLite layout), bias int32 (O) or null; y (N, O) int8.
void fully_connected_int8(const std::int8_t* x, std::size_t batch, std::size_t in, std::int32_t x_zero_point,
                          const std::int8_t* filter, std::size_t out, const std::int32_t* bias,
                          const OutputStage& stage, std::int8_t* y, Path path = Path::kReference,
                          const AccumulatorSpec& accumulator = {}, std::uint64_t* overflows = nullptr);

// x NHWC int8; filter in qdrift's float layout (KH, KW, C/groups, O); padded taps contribute 0
// (they equal x_zero_point); y (N, OH, OW, O) int8.
void conv2d_int8(const ConvGeometry& g, const std::int8_t* x, std::int32_t x_zero_point, const std::int8_t* filter,
                 const std::int32_t* bias, const OutputStage& stage, std::int8_t* y, Path path = Path::kReference,
                 const AccumulatorSpec& accumulator = {}, std::uint64_t* overflows = nullptr);

// int8 ADD (same shapes). kTflite: the reference/builtin kernel (inputs shifted left by 20,
// each rescaled by its gemmlowp multiplier, summed, rescaled to the output).
// kXnnpack: XNNPACK's qs8 vadd (20-bit multipliers from the float scale ratios, one rounding
// shift). act_min/act_max clamp the output codes.
enum class AddKernel : std::uint8_t { kTflite, kXnnpack };
void add_int8(AddKernel kernel, const std::int8_t* a, const std::int8_t* b, std::size_t n, float a_scale,
              std::int32_t a_zero_point, float b_scale, std::int32_t b_zero_point, float out_scale,
              std::int32_t out_zero_point, std::int32_t act_min, std::int32_t act_max, std::int8_t* y);

// int8 MUL (same shapes; callers broadcast a constant operand): acc = (a - zp_a) * (b - zp_b),
// exact in int32. kTflite (the reference and the builtin x86 kernels): gemmlowp
// MultiplyByQuantizedMultiplier with the multiplier of f32(f32(s_a * s_b) / s_out) (mul.cc's Prepare
// computes it in float32; the double product differs at near-ties, measured), + zp_out, clamp.
// kXnnpack: XNNPACK's qs8 vmul fp32 rule, RNE(f32(acc) * f32(f32(s_a * s_b) / s_out)) clamped in
// float to [act_min - zp_out, act_max - zp_out], + zp_out. ConfigError unless the scales are
// finite and positive.
enum class MulKernel : std::uint8_t { kTflite, kXnnpack };
void mul_int8(MulKernel kernel, const std::int8_t* a, const std::int8_t* b, std::size_t n, float a_scale,
              std::int32_t a_zero_point, float b_scale, std::int32_t b_zero_point, float out_scale,
              std::int32_t out_zero_point, std::int32_t act_min, std::int32_t act_max, std::int8_t* y);

// 256-entry lookup tables of int8 TANH / LOGISTIC: dequantize, transform in float32
// (std::tanh, 1 / (1 + std::exp(-x))), scale by f32(1 / s_out), round (half away for the
// TFLite kernels, half even for XNNPACK), add the zero point, clamp. lut[v + 128] is f(v).
enum class LutFunction : std::uint8_t { kTanh, kLogistic };
std::vector<std::int8_t> lut_int8(LutFunction f, float in_scale, std::int32_t in_zero_point, float out_scale,
                                  std::int32_t out_zero_point, bool round_half_even);

}  // namespace qdrift
