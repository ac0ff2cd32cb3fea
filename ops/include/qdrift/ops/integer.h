// SPDX-License-Identifier: Apache-2.0
// Integer (int8 activations, int8 weights, int32 bias) FULLY_CONNECTED and CONV_2D as LiteRT's
// kernels compute them: int32 accumulation of w * (x - zp_in) plus bias, then each kernel path's
// output stage (requantization rule, + zero point, clamp to the fused activation's range).
// Depthwise convolution is the grouped case with one input channel per group.
#pragma once

#include <cstdint>
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
  // Validates sizes against `channels` and every channel's parameters; throws ConfigError.
  std::vector<RequantParams> per_channel(std::size_t channels) const;
};

// x (N, I) int8, filter (O, I) int8 (TFLite layout), bias int32 (O) or null; y (N, O) int8.
void fully_connected_int8(const std::int8_t* x, std::size_t batch, std::size_t in, std::int32_t x_zero_point,
                          const std::int8_t* filter, std::size_t out, const std::int32_t* bias,
                          const OutputStage& stage, std::int8_t* y);

// x NHWC int8; filter in qdrift's float layout (KH, KW, C/groups, O); padded taps contribute 0
// (they equal x_zero_point); y (N, OH, OW, O) int8.
void conv2d_int8(const ConvGeometry& g, const std::int8_t* x, std::int32_t x_zero_point, const std::int8_t* filter,
                 const std::int32_t* bias, const OutputStage& stage, std::int8_t* y);

// int8 ADD (same shapes). kTflite: the reference/builtin kernel (inputs shifted left by 20,
// each rescaled by its gemmlowp multiplier, summed, rescaled to the output).
// kXnnpack: XNNPACK's qs8 vadd (20-bit multipliers from the float scale ratios, one rounding
// shift). act_min/act_max clamp the output codes.
enum class AddKernel : std::uint8_t { kTflite, kXnnpack };
void add_int8(AddKernel kernel, const std::int8_t* a, const std::int8_t* b, std::size_t n, float a_scale,
              std::int32_t a_zero_point, float b_scale, std::int32_t b_zero_point, float out_scale,
              std::int32_t out_zero_point, std::int32_t act_min, std::int32_t act_max, std::int8_t* y);

// 256-entry lookup tables of int8 TANH / LOGISTIC: dequantize, transform in float32
// (std::tanh, 1 / (1 + std::exp(-x))), scale by f32(1 / s_out), round (half away for the
// TFLite kernels, half even for XNNPACK), add the zero point, clamp. lut[v + 128] is f(v).
enum class LutFunction : std::uint8_t { kTanh, kLogistic };
std::vector<std::int8_t> lut_int8(LutFunction f, float in_scale, std::int32_t in_zero_point, float out_scale,
                                  std::int32_t out_zero_point, bool round_half_even);

}  // namespace qdrift
