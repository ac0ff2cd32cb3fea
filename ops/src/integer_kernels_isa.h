// SPDX-License-Identifier: Apache-2.0
// Private: the fast int8 kernels (int8 GEMM in dot form, depthwise tap, output stage of a row),
// compiled once per instruction set (integer_kernels.inc) and picked at run time. Every variant
// gives exactly the reference's integers (tests/cpp/test_integer_fast.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "qdrift/core/fixed_point.h"

namespace qdrift::detail {

// The output stage of one row of `channels` outputs, as per-channel arrays (all of length
// `channels`). Fixed-point rules read multiplier/left/right/mask (gemmlowp), multiplier/left/
// right/round (ruy) or multiplier/total/round (single); xnnpack reads scale_f, double_rha
// scale_d; int64 the scalar `params`. (Constants shifted by per-lane amounts are precomputed:
// GCC 12 does not vectorize `int64_t{1} << v[i]`.)
struct StageArrays {
  RequantMethod method = RequantMethod::kGemmlowp;
  const std::int32_t* base = nullptr;   // added (mod 2^32) to each sum before the rule
  const std::int32_t* multiplier = nullptr;
  const std::int32_t* left = nullptr;    // max(shift, 0)
  const std::int32_t* right = nullptr;   // max(-shift, 0)
  const std::int32_t* total = nullptr;   // 31 - shift
  const std::int32_t* mask = nullptr;    // gemmlowp: 2^right - 1
  const std::int64_t* round = nullptr;   // single: 2^(total - 1); ruy: 2^right / 2 (0 when right == 0)
  const float* scale_f = nullptr;
  const double* scale_d = nullptr;
  const RequantParams* params = nullptr;
  std::int32_t zero_point = 0, act_min = -128, act_max = 127;
};

// c[m * ldc + o] = sum_i a[m * lda + i] * w[o * k + i] (mod 2^32) for m < rows, o < cols.
// wsum[o] = sum_i w[o * k + i] (the VNNI variant multiplies unsigned a + 128 and subtracts
// 128 * wsum).
using GemmKernel = void (*)(const std::int8_t* a, std::size_t rows, std::size_t lda, const std::int8_t* w,
                            std::size_t cols, std::size_t k, const std::int32_t* wsum, std::int32_t* c, std::size_t ldc);
// acc[oc] += w[oc] * (x[oc / multiplier] - zp) for oc < channels (one tap of a depthwise conv).
using DepthwiseTapKernel = void (*)(std::int32_t* acc, const std::int8_t* w, const std::int8_t* x,
                                    std::size_t channels, std::size_t multiplier, std::int32_t zp);
// sum[o] = sum_i w[o * k + i]; abs_sum[o] = sum_i |w[o * k + i]| unless abs_sum is null
// (int32: exact for k < 2^24).
using RowSumsKernel = void (*)(const std::int8_t* w, std::size_t rows, std::size_t k, std::int32_t* sum,
                               std::int32_t* abs_sum);
// y[o] = output_stage(base[o] + sums[o]) for o < channels.
using RequantRowKernel = void (*)(const std::int32_t* sums, std::size_t channels, const StageArrays& s, std::int8_t* y);

struct Int8Kernels {
  const char* name;   // "baseline", "avx2", "avx512_vnni"
  GemmKernel gemm;
  DepthwiseTapKernel depthwise_tap;
  RequantRowKernel requantize_row;
  RowSumsKernel row_sums;
};

// The variants this binary has and this CPU runs, baseline first, best last.
const std::vector<Int8Kernels>& available_int8_kernels();

}  // namespace qdrift::detail
