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

}  // namespace qdrift
