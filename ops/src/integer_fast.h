// SPDX-License-Identifier: Apache-2.0
// Private: the fast int8 FULLY_CONNECTED / CONV_2D drivers (integer_fast.cpp). They return false,
// before writing anything, when they cannot guarantee the reference's int32 sums (input zero
// point outside int8 for padded convs, or weights large enough that a partial sum could
// overflow); the caller then runs the reference.
#pragma once

#include <cstdint>

#include "integer_kernels_isa.h"
#include "qdrift/ops/integer.h"

namespace qdrift::fast {

bool fully_connected_int8(const std::int8_t* x, std::size_t batch, std::size_t in, std::int32_t x_zero_point,
                          const std::int8_t* filter, std::size_t out, const std::int32_t* bias,
                          const OutputStage& stage, std::int8_t* y);
bool conv2d_int8(const ConvGeometry& g, const std::int8_t* x, std::int32_t x_zero_point, const std::int8_t* filter,
                 const std::int32_t* bias, const OutputStage& stage, std::int8_t* y);

// The same with a chosen kernel variant (white-box tests).
bool fully_connected_int8_with(const detail::Int8Kernels& k, const std::int8_t* x, std::size_t batch, std::size_t in,
                               std::int32_t x_zero_point, const std::int8_t* filter, std::size_t out,
                               const std::int32_t* bias, const OutputStage& stage, std::int8_t* y);
bool conv2d_int8_with(const detail::Int8Kernels& k, const ConvGeometry& g, const std::int8_t* x,
                      std::int32_t x_zero_point, const std::int8_t* filter, const std::int32_t* bias,
                      const OutputStage& stage, std::int8_t* y);

}  // namespace qdrift::fast
