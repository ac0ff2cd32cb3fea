// SPDX-License-Identifier: Apache-2.0
// Dynamic-range ("hybrid": float activations, int8 weights) and float32 FULLY_CONNECTED /
// CONV_2D / DEPTHWISE_CONV_2D as each LiteRT kernel path computes them on the x86 wheel
// (ai-edge-litert 2.3.0), plus the per-row input quantizers they use. Verified against the real
// interpreter in tests/python/test_dynamic_fp16.py; the rules are in tflite-semantics.md §5 with
// the corrections recorded in the header comments below.
#pragma once

#include <cstddef>
#include <cstdint>

#include "qdrift/ops/ops.h"

namespace qdrift {

// ---- Input quantization of one row of n floats --------------------------------------------
// The TFLite kernels call the NEON versions of tensor_utils through NEON_2_SSE on x86 (the
// reference and builtin paths alike). Elements in whole blocks of 8 round with NEON's pre-v8
// RoundToNearest, trunc(f32(v + (v < 0 ? -0.5f : 0.5f))); the tail (n mod 8) with std::round.
// The two differ only at v = ±0.49999997 (0.5 - 2^-25), where the float add rounds up to 1.
// (Not round-half-even in the blocks, as tflite-semantics.md §5.2 said: measured on the wheel.)

// Symmetric: range = max|x|; range 0 gives q = 0, scale 1. scale = f32(range / 127),
// inv = f32(127 / range), q = clamp(round(f32(x * inv)), -127, 127).
void quantize_row_symmetric_tflite(const float* x, std::size_t n, std::int8_t* q, float* scale);

// Asymmetric: rmin = min(0, min x), rmax = max(0, max x) in float; equal gives q = 0, scale 1,
// zp 0. scale_d = f32(rmax - rmin) / 255 in double; zp from the min or max formula, whichever
// has the smaller error, clamped to [-128, 127] (<=, >=), else round(); scale = f32(scale_d);
// inv = f32(1.0 / scale); q = clamp(zp + round(f32(x * inv)), -128, 127): rounded, then zp added.
void quantize_row_asymmetric_tflite(const float* x, std::size_t n, std::int8_t* q, float* scale,
                                    std::int32_t* zero_point);

// XNNPACK's qd8 quantization (float32 throughout): k = 255 / (rmax - rmin) (1 if equal), the zero
// point nudged from the min or max side, rounded half to even; q = RNE(clamp(f32(x * k),
// -128 - zp, 127 - zp)) + zp. `scale` receives the dequantization scale f32(1 / k).
void quantize_row_xnnpack(const float* x, std::size_t n, std::int8_t* q, float* scale, std::int32_t* zero_point);

// ---- Hybrid kernels ---------------------------------------------------------------------------
// kTfBuiltin: the builtin kernels as the tensorflow wheel builds them (its TFLite calibrator runs
// these): Eigen with AVX (8-float packets), still without FMA. Only the float matrix-vector
// product, the blocked GEMM's tiles and LOGISTIC differ from kBuiltin (measured); DEPTHWISE
// and TANH are LiteRT's builtin ones.
enum class KernelPath : std::uint8_t { kReference, kBuiltin, kXnnpack, kTfBuiltin };
// "reference" | "builtin" | "xnnpack" | "tf_builtin"
KernelPath parse_kernel_path(std::string_view name);

// `impl` picks qdrift's implementation, not the LiteRT path: kReference runs the readable loops
// below, kFast (the same bits) the int8 GEMM / depthwise kernels of integer_kernels.inc for the
// integer sums (hybrid_fast.cpp); it falls back to the loops when the sums could overflow int32.
// y = clamp(bias + x W^T, lo, hi); x (batch, in) float, filter (out, in) int8 with filter_scale
// per output channel (n_scales == out) or shared (n_scales == 1); bias (out) or null.
// TFLite (reference, builtin): if the whole input is zero, y = clamp(bias); else each row is
// quantized asymmetrically (the converter sets asymmetric_quantize_inputs) or symmetrically, and
// y = f32(bias + f32(dot * f32(s_row * s_w[o]))), dot = sum w q - rowsum(w) zp.
// XNNPACK: y = fma(f32(dot * s_row), s_w[o], bias).
void fully_connected_hybrid(KernelPath path, const float* x, std::size_t batch, std::size_t in,
                            const std::int8_t* filter, std::size_t out, const float* filter_scale,
                            std::size_t n_scales, const float* bias, bool asymmetric_inputs, float lo, float hi,
                            float* y, Path impl = Path::kReference);

// Convolution (groups from g; depthwise is groups == C with filter (KH, KW, 1, C*M)); x NHWC
// float; filter in qdrift's layout (KH, KW, C/groups, O) int8; one quantization per batch image.
// `depthwise` selects DEPTHWISE_CONV_2D's rules (always per-channel, asymmetric; never XNNPACK).
void conv2d_hybrid(KernelPath path, const ConvGeometry& g, const float* x, const std::int8_t* filter,
                   const float* filter_scale, std::size_t n_scales, const float* bias, bool depthwise, float lo,
                   float hi, float* y, Path impl = Path::kReference);

// ---- float32 kernels, each path's summation order ---------------------------------------------
// reference: sequential float32 sum over the taps (FC: i; conv: ky, kx, ic), then + bias (no FMA).
// builtin: TFLite's Eigen GEMM (filter rows x input columns; for conv the im2col patches, padding
//   as zeros), built with SSE and without FMA. A matrix-vector product (batch 1, or one output)
//   sums 4 lanes (i mod 4) over whole packets, reduces them as (l0 + l2) + (l1 + l3) and adds the
//   tail sequentially; tiny products (outputs + depth + columns < 20) use Eigen's redux (two
//   packet accumulators, merged); the rest the blocked GEMM (GEBP), whose order depends on the
//   output's micro-tile (sequential; two alternating accumulators; four "swapped" ones; see
//   gebp_order in hybrid.cpp). A 1 x 1 product (one output, batch 1) is Eigen's inner product:
//   four packet accumulators, packet k into accumulator k mod 4, merged a0 + (a1 + (a2 + a3)),
//   lanes reduced, then the depth mod P tail in order (inner_product_dot). Then + bias. Measured bit-exact for FULLY_CONNECTED and CONV_2D
//   (im2col + GEMM) for depths below Eigen's k block.
// tf_builtin: as builtin, but the matrix-vector product sums 8 lanes (i mod 8) over whole
//   packets of 8, reduces them as l_k + l_{k+4} then (b0 + b2) + (b1 + b3), and adds the rest
//   (depth mod 8) sequentially: no half packets; the inner product takes packets of 8. Measured
//   bit-exact against tf.lite.Interpreter (BUILTIN_WITHOUT_DEFAULT_DELEGATES) for batch-1
//   FULLY_CONNECTED. CONV_2D is the calibrator's: its interpreter keeps the default thread count,
//   so conv.cc runs the multithreaded kernel (an Eigen tensor contraction on a pool of 4 threads),
//   which sums every output in the AVX GEBP order (gebp_order; no coefficient-based, GEMV or
//   inner-product cases) except a single output pixel, summed in order (its evalGemv). Measured
//   against tf.lite.Interpreter(num_threads=4). (That kernel's MatMul shortcut for a filter as
//   large as the input with no padding before also takes SAME convolutions with a 2-wide filter
//   on a 2-wide input, writes only the first output pixel and leaves the rest uninitialized: not
//   reproducible.)
// xnnpack: fused multiply-adds starting from the bias; taps in the reference order, except
//   depthwise with one output per input channel (XNNPACK's dwconv), which walks kx outer, ky inner.
// impl: kReference the loops below; kFast (same bits) runs the output channels' chains side by
// side in vector lanes (hybrid_fast.cpp), the reference for matrix-vector / tiny builtin products.
void fully_connected_f32(KernelPath path, const float* x, std::size_t batch, std::size_t in, const float* filter,
                         std::size_t out, const float* bias, float lo, float hi, float* y,
                         Path impl = Path::kReference);
// `depthwise` marks DEPTHWISE_CONV_2D (builtin: its own kernel, which starts each sum from the
// bias and adds the taps ky, kx in order).
void conv2d_f32(KernelPath path, const ConvGeometry& g, const float* x, const float* filter, const float* bias,
                bool depthwise, float lo, float hi, float* y, Path impl = Path::kReference);

// Float TANH / LOGISTIC as the reference kernels compute them: std::tanh; logistic
// 1 / (1 + exp(-x)) with TFLite's cut-offs (1 above 16.619047, exp(x) below -9).
void tanh_f32(const float* x, std::size_t n, float* y);
// The builtin (optimized) float TANH: Eigen's ptanh_float as pinned by the wheel, a [9/8] rational
// minimax fit in x^2 evaluated without FMA, input clamped to +-7.90738964 (where it reaches 1).
// Matched bit for bit against BUILTIN_WITHOUT_DEFAULT_DELEGATES (tests/python/test_dynamic_fp16.py).
void tanh_eigen_f32(const float* x, std::size_t n, float* y);
// XNNPACK's float tanh on an AVX-512 / FMA3 machine (f32-vtanh rational_9_8_div): its own [9/8]
// rational fit, evaluated with fused multiply-adds, input clamped to +-7.9807181 (matched bit for
// bit against the default interpreter).
void tanh_xnnpack_f32(const float* x, std::size_t n, float* y);
void logistic_f32(const float* x, std::size_t n, float* y);
// The builtin float LOGISTIC: Eigen's scalar_logistic_op<float>. Whole packets of 4 (SSE, no FMA)
// compute exp(x/2) by a Cephes-style range reduction and a degree-5 polynomial, square it, and
// return e / (1 + e) (0 below -104, x capped at 16.6355324); the n mod 4 tail uses std::exp.
void logistic_eigen_f32(const float* x, std::size_t n, float* y);
// The tensorflow wheel's builtin LOGISTIC: the packet formula above for every element, no scalar
// tail (measured against tf.lite.Interpreter for n = 1..37).
void logistic_eigen_tf_f32(const float* x, std::size_t n, float* y);
// XNNPACK's float sigmoid on AVX-512 (f32-vsigmoid rr2_lut32_p2_perm2_scalef_div): e = exp(-|x|)
// from a 32-entry table of 2^(k/32), a two-step ln2 range reduction and a degree-2 polynomial, all
// with FMA; y = e / (1 + e), mirrored to 1 - y for x >= 0.
void logistic_xnnpack_f32(const float* x, std::size_t n, float* y);

}  // namespace qdrift
