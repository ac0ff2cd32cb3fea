// SPDX-License-Identifier: Apache-2.0
// Private: what the hybrid reference loops (hybrid.cpp) and the fast hybrid drivers
// (hybrid_fast.cpp) share: the per-row input quantization, each path's choice of input rule and
// float epilogue, and the fast drivers themselves. Sharing the choices (not the loops) keeps the
// two paths from disagreeing on which rule runs; the loops are tested against each other.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "integer_kernels_isa.h"
#include "qdrift/ops/hybrid.h"

namespace qdrift::detail {

inline float clampf(float v, float lo, float hi) { return std::min(std::max(v, lo), hi); }

enum class InputRule : std::uint8_t { kTfliteSymmetric, kTfliteAsymmetric, kXnnpack };

struct QuantizedRows {
  std::vector<std::int8_t> q;
  std::vector<float> scale;
  std::vector<std::int32_t> zero_point;
};
// `rows` rows of n floats, each quantized by `rule` (the functions of hybrid.h).
QuantizedRows quantize_rows(InputRule rule, const float* x, std::size_t rows, std::size_t n);

// The float epilogue of one hybrid conv output, acc the int32 sum, sf the row's input scale, pcs
// the channel's filter scale, b the bias (0 when there is none): which float operations, in which
// order (every product rounds; -ffp-contract=off).
enum class ConvEpilogue : std::uint8_t {
  kFma,           // fma(acc * sf, pcs, b): XNNPACK
  kScaleProduct,  // acc * (pcs * sf) + b: one combined scale (multiplication commutes)
  kPcsThenSf,     // acc * pcs * sf + b
  kSfThenPcs,     // acc * sf * pcs + b
};

inline float conv_epilogue(ConvEpilogue e, float acc, float sf, float pcs, float b) {
  switch (e) {
    case ConvEpilogue::kFma: return std::fma(acc * sf, pcs, b);
    case ConvEpilogue::kScaleProduct: return acc * (pcs * sf) + b;
    case ConvEpilogue::kPcsThenSf: return acc * pcs * sf + b;
    case ConvEpilogue::kSfThenPcs: return acc * sf * pcs + b;
  }
  return 0.0f;
}

// How a hybrid CONV_2D / DEPTHWISE_CONV_2D runs on a path (see conv2d_hybrid in hybrid.cpp).
struct HybridConvPlan {
  InputRule rule = InputRule::kTfliteAsymmetric;
  bool symmetric = false;   // conv.cc's per-tensor EvalHybrid: filter_scale[0] for every channel
  bool per_pixel = false;   // XNNPACK 1x1 stride-1: one quantization per pixel, not per image
  ConvEpilogue head = ConvEpilogue::kScaleProduct;   // output channels below tail_start
  ConvEpilogue tail = ConvEpilogue::kScaleProduct;   // output channels from tail_start on
  std::size_t tail_start = 0;
};
HybridConvPlan hybrid_conv_plan(KernelPath path, const ConvGeometry& g, const float* filter_scale,
                                std::size_t n_scales, bool depthwise);

// ---- the builtin float GEMM's summation orders (defined in hybrid.cpp) ----------------------
// The builtin float GEMM (cpu_backend_gemm_eigen: dst = filter * columns, then bias) sums each
// output in one of these orders, depending on which Eigen product runs. P = 4 (SSE packets).
enum class EigenSum : std::uint8_t {
  kSequential, kPlain, kGemv, kRedux, kInnerProduct, kGebpPairs, kGebpSwapped, kGebpSwappedAvx, kGemvHalf
};
// The product's order for an (out x depth) * (depth x cols) product; kSequential means the blocked
// GEMM, whose per-output order gebp_order gives (kSequential: t = 0, t += x[i] * w[i] for i in order).
EigenSum eigen_sum_order(std::size_t out, std::size_t depth, std::size_t cols);
EigenSum gebp_order(std::size_t row, std::size_t col, std::size_t out, std::size_t cols, bool avx);
EigenSum tf_gemv_order(std::size_t row, std::size_t col, std::size_t out, std::size_t cols);
float eigen_dot(EigenSum order, const float* x, const float* w, std::size_t depth, bool avx);

// ---- the float loops of the fast kernels, per instruction set -----------------------------------
// Each output's chain of float operations in vector lanes; every variant gives the same bits
// (IEEE operations, each exactly rounded). Index [fused]: acc + x * w (0) or fma(x, w, acc) (1).
using FloatChainFn = void (*)(float* acc, const float* x, const float* w, std::size_t ldw, std::size_t depth,
                              std::size_t n);
using FloatDepthwiseFn = void (*)(float* acc, const float* x, const float* w, std::size_t n, std::size_t multiplier);
using FmaEpilogueFn = void (*)(const std::int32_t* c, const std::int32_t* wsum, std::int32_t zp, float sf,
                               const float* pcs, const float* b, std::size_t begin, std::size_t end, float lo,
                               float hi, float* y);
struct FloatKernels {
  const char* name;                 // "portable" (SSE2 on x86; std::fma through libm), "avx2_fma"
  FloatChainFn chain[2];            // acc[o] op= x[k] * w[k * ldw + o] for k < depth, in order; o < n
  FloatChainFn rows[2];             // the same with w[o * ldw + k]
  FloatDepthwiseFn depthwise[2];    // acc[o] op= x[o / multiplier] * w[o] (one depthwise tap)
  FmaEpilogueFn fma_epilogue;       // y[o] = clamp(fma(f32(c[o] - zp * wsum[o]) * sf, pcs[o], b[o])), o in [begin, end)
};
// The variants this binary has and this CPU runs, portable first, best last.
const std::vector<FloatKernels>& available_float_kernels();

}  // namespace qdrift::detail

namespace qdrift::fast {

// The fast hybrid kernels: the same input quantization, the int8 x int8 sums by the int8 GEMM /
// depthwise kernels (exact: true sums below 2^31 are checked, else they return false before
// writing, and the caller runs the reference), then the same float epilogue per output.
bool fully_connected_hybrid(const detail::Int8Kernels& k, const detail::FloatKernels& fk, KernelPath path, const float* x, std::size_t batch,
                            std::size_t in, const std::int8_t* filter, std::size_t out, const float* filter_scale,
                            std::size_t n_scales, const float* bias, bool asymmetric_inputs, float lo, float hi,
                            float* y);
bool conv2d_hybrid(const detail::Int8Kernels& k, const detail::FloatKernels& fk, KernelPath path, const ConvGeometry& g, const float* x,
                   const std::int8_t* filter, const float* filter_scale, std::size_t n_scales, const float* bias,
                   bool depthwise, float lo, float hi, float* y);

// The float32 kernels with the output channels' chains in vector lanes (same bits); false (before
// writing) for the builtin GEMM's matrix-vector and tiny products, which the reference runs.
bool fully_connected_f32(const detail::FloatKernels& fk, KernelPath path, const float* x, std::size_t batch, std::size_t in, const float* filter,
                         std::size_t out, const float* bias, float lo, float hi, float* y);
bool conv2d_f32(const detail::FloatKernels& fk, KernelPath path, const ConvGeometry& g, const float* x, const float* filter, const float* bias,
                bool depthwise, float lo, float hi, float* y);

}  // namespace qdrift::fast
