// SPDX-License-Identifier: Apache-2.0
// Hybrid (float activations, int8 weights) and float32 FC / CONV_2D / DEPTHWISE_CONV_2D kernels,
// each path's input quantization and float epilogue written out step by step. The build uses
// -ffp-contract=off, so every `a * b + c` below rounds twice; std::fma marks the one place
// (XNNPACK's epilogue) where the real kernel fuses.
#include "qdrift/ops/hybrid.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "conv_index.h"
#include "hybrid_fast.h"
#include "qdrift/core/check.h"
#include "qdrift/core/rounding.h"

namespace qdrift {
namespace {

// NEON's RoundToNearest before ARMv8, as NEON_2_SSE runs it: add ±0.5 in float, truncate.
std::int32_t neon_round(float v) {
  const float half = v < 0.0f ? -0.5f : 0.5f;
  return static_cast<std::int32_t>(v + half);   // conversion truncates toward zero
}

using detail::clampf;

// rmin = min(0, x...), rmax = max(0, x...) as one sequential pass of std::min / std::max computes
// them: NaNs never replace (comparisons with NaN are false) and -0.0 never replaces the starting
// +0.0. Eight running minima / maxima give the same values (with those two rules, min and max are
// associative and commutative on the values that can enter), and the loop vectorizes.
void min_max_with_zero(const float* x, std::size_t n, float* rmin, float* rmax) {
  constexpr std::size_t kLanes = 8;
  float lo[kLanes] = {}, hi[kLanes] = {};
  const std::size_t end = n / kLanes * kLanes;
#if defined(__SSE2__)
  // Lane by lane, _mm_min_ps(v, lo) is (v < lo ? v : lo) = std::min(lo, v) and _mm_max_ps(v, hi)
  // is (v > hi ? v : hi) = std::max(hi, v), NaN and signed zeros included (GCC keeps the scalar
  // selects scalar).
  __m128 lo0 = _mm_setzero_ps(), lo1 = lo0, hi0 = lo0, hi1 = lo0;
  for (std::size_t i = 0; i < end; i += kLanes) {
    const __m128 v0 = _mm_loadu_ps(x + i), v1 = _mm_loadu_ps(x + i + 4);
    lo0 = _mm_min_ps(v0, lo0);
    lo1 = _mm_min_ps(v1, lo1);
    hi0 = _mm_max_ps(v0, hi0);
    hi1 = _mm_max_ps(v1, hi1);
  }
  _mm_storeu_ps(lo, lo0);
  _mm_storeu_ps(lo + 4, lo1);
  _mm_storeu_ps(hi, hi0);
  _mm_storeu_ps(hi + 4, hi1);
#else
  for (std::size_t i = 0; i < end; i += kLanes)
    for (std::size_t l = 0; l < kLanes; ++l) {
      lo[l] = std::min(lo[l], x[i + l]);
      hi[l] = std::max(hi[l], x[i + l]);
    }
#endif
  float a = 0.0f, b = 0.0f;
  for (std::size_t l = 0; l < kLanes; ++l) {
    a = std::min(a, lo[l]);
    b = std::max(b, hi[l]);
  }
  for (std::size_t i = end; i < n; ++i) {
    a = std::min(a, x[i]);
    b = std::max(b, x[i]);
  }
  *rmin = a;
  *rmax = b;
}

bool all_zero(const float* x, std::size_t n) {
  return std::all_of(x, x + n, [](float v) { return v == 0.0f; });
}

float filter_scale_of(const float* s, std::size_t n_scales, std::size_t o) { return s[n_scales == 1 ? 0 : o]; }

void check_scales(std::size_t n_scales, std::size_t out, const char* op) {
  QDRIFT_CHECK(n_scales == 1 || n_scales == out, ShapeError, op, ": ", n_scales, " filter scales for ", out,
               " output channels");
}

}  // namespace

namespace detail {

QuantizedRows quantize_rows(InputRule rule, const float* x, std::size_t rows, std::size_t n) {
  QuantizedRows r;
  r.q.resize(rows * n);
  r.scale.resize(rows);
  r.zero_point.assign(rows, 0);
  for (std::size_t b = 0; b < rows; ++b) {
    const float* row = x + b * n;
    std::int8_t* q = r.q.data() + b * n;
    switch (rule) {
      case InputRule::kTfliteSymmetric: quantize_row_symmetric_tflite(row, n, q, &r.scale[b]); break;
      case InputRule::kTfliteAsymmetric:
        quantize_row_asymmetric_tflite(row, n, q, &r.scale[b], &r.zero_point[b]);
        break;
      case InputRule::kXnnpack: quantize_row_xnnpack(row, n, q, &r.scale[b], &r.zero_point[b]); break;
    }
  }
  return r;
}

HybridConvPlan hybrid_conv_plan(KernelPath path, const ConvGeometry& g, const float* filter_scale,
                                std::size_t n_scales, bool depthwise) {
  bool equal_scales = true;   // conv.cc: is_hybrid_per_channel only if some scale differs from channel 0
  for (std::size_t c = 1; c < n_scales; ++c) equal_scales = equal_scales && filter_scale[c] == filter_scale[0];
  HybridConvPlan p;
  const bool xnnpack = path == KernelPath::kXnnpack && !depthwise;   // XNNPACK takes hybrid conv, not depthwise
  p.symmetric = !xnnpack && !depthwise && equal_scales && g.groups == 1;   // conv.cc EvalHybrid
  p.rule = xnnpack ? InputRule::kXnnpack : p.symmetric ? InputRule::kTfliteSymmetric : InputRule::kTfliteAsymmetric;
  // XNNPACK runs a 1x1, stride-1 convolution as a fully connected layer: one quantization per
  // pixel instead of per image (measured).
  p.per_pixel = xnnpack && g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.groups == 1;
  p.tail_start = g.o;
  if (xnnpack) {
    p.head = ConvEpilogue::kFma;
  } else if (p.symmetric) {
    p.head = ConvEpilogue::kScaleProduct;   // HybridConv: sf[b] *= s_w, out = 0 + acc * sf, then + bias
  } else if (depthwise) {
    if (path == KernelPath::kReference) {
      p.head = ConvEpilogue::kScaleProduct;
    } else {   // optimized depthwise: channel blocks of 4, then a tail
      p.head = ConvEpilogue::kPcsThenSf;
      p.tail = ConvEpilogue::kSfThenPcs;
      p.tail_start = g.o / 4 * 4;
    }
  } else if (path == KernelPath::kReference || g.groups != 1) {
    p.head = ConvEpilogue::kPcsThenSf;   // reference HybridConvPerChannel (grouped conv always runs it)
  } else {
    p.head = ConvEpilogue::kScaleProduct;   // optimized HybridConvPerChannel (im2col + GEMM, Eigen epilogue)
  }
  return p;
}

}  // namespace detail

using detail::InputRule;
using detail::QuantizedRows;

KernelPath parse_kernel_path(std::string_view name) {
  if (name == "reference") return KernelPath::kReference;
  if (name == "builtin") return KernelPath::kBuiltin;
  if (name == "xnnpack") return KernelPath::kXnnpack;
  if (name == "tf_builtin") return KernelPath::kTfBuiltin;
  throw ConfigError("kernels: unknown path '" + std::string(name) +
                    "'; expected one of reference, builtin, xnnpack, tf_builtin");
}

void quantize_row_symmetric_tflite(const float* x, std::size_t n, std::int8_t* q, float* scale) {
  float range = 0.0f;
  if (n > 0) {
    const auto mm = std::minmax_element(x, x + n);
    range = std::max(std::abs(*mm.first), std::abs(*mm.second));
  }
  if (range == 0.0f) {
    std::fill(q, q + n, std::int8_t{0});
    *scale = 1.0f;
    return;
  }
  *scale = range / 127.0f;
  const float inv = 127.0f / range;   // not 1 / scale
  const std::size_t block_end = n / 8 * 8;   // two loops (blocks of 8, tail), so the first vectorizes
  for (std::size_t i = 0; i < block_end; ++i)
    q[i] = static_cast<std::int8_t>(std::clamp(neon_round(x[i] * inv), -127, 127));
  for (std::size_t i = block_end; i < n; ++i)
    q[i] = static_cast<std::int8_t>(std::clamp(static_cast<std::int32_t>(std::round(x[i] * inv)), -127, 127));
}

void quantize_row_asymmetric_tflite(const float* x, std::size_t n, std::int8_t* q, float* scale,
                                    std::int32_t* zero_point) {
  float rmin = 0.0f, rmax = 0.0f;   // NeonMinMax caps both at zero
  min_max_with_zero(x, n, &rmin, &rmax);
  if (rmin == rmax) {
    std::fill(q, q + n, std::int8_t{0});
    *scale = 1.0f;
    *zero_point = 0;
    return;
  }
  const double qmin = -128.0, qmax = 127.0;
  const double s = static_cast<double>(rmax - rmin) / (qmax - qmin);   // float subtraction, double division
  const double zp_from_min = qmin - rmin / s, zp_from_max = qmax - rmax / s;
  const double err_min = std::abs(qmin) + std::abs(rmin / s), err_max = std::abs(qmax) + std::abs(rmax / s);
  const double zp_d = err_min < err_max ? zp_from_min : zp_from_max;
  const std::int32_t zp = zp_d <= qmin ? -128 : zp_d >= qmax ? 127 : static_cast<std::int32_t>(std::round(zp_d));
  *scale = static_cast<float>(s);
  *zero_point = zp;
  const auto inv = static_cast<float>(1.0 / static_cast<double>(*scale));
  const std::size_t block_end = n / 8 * 8;   // two loops (blocks of 8, tail), so the first vectorizes
  for (std::size_t i = 0; i < block_end; ++i)
    q[i] = static_cast<std::int8_t>(std::clamp(zp + neon_round(x[i] * inv), -128, 127));
  for (std::size_t i = block_end; i < n; ++i)
    q[i] = static_cast<std::int8_t>(std::clamp(zp + static_cast<std::int32_t>(std::round(x[i] * inv)), -128, 127));
}

void quantize_row_xnnpack(const float* x, std::size_t n, std::int8_t* q, float* scale, std::int32_t* zero_point) {
  float rmin = 0.0f, rmax = 0.0f;
  min_max_with_zero(x, n, &rmin, &rmax);
  const float k = rmin == rmax ? 1.0f : 255.0f / (rmax - rmin);
  const float rmin_k = rmin * k, rmax_k = rmax * k;
  float zf = (-128.0f + rmin_k) + (127.0f + rmax_k) > 0.0f ? -128.0f - rmin_k : 127.0f - rmax_k;
  zf = std::min(std::max(zf, -128.0f), 127.0f);
  const auto zp = static_cast<std::int32_t>(std::nearbyint(zf));
  *zero_point = zp;
  *scale = 1.0f / k;
  const float lo = static_cast<float>(-128 - zp), hi = static_cast<float>(127 - zp);
  // round_half_even: nearbyint's result in the default rounding mode, without libm (vectorizes).
  for (std::size_t i = 0; i < n; ++i)
    q[i] = static_cast<std::int8_t>(static_cast<std::int32_t>(round_half_even(clampf(x[i] * k, lo, hi))) + zp);
}

void fully_connected_hybrid(KernelPath path, const float* x, std::size_t batch, std::size_t in,
                            const std::int8_t* filter, std::size_t out, const float* filter_scale,
                            std::size_t n_scales, const float* bias, bool asymmetric_inputs, float lo, float hi,
                            float* y, Path impl) {
  check_scales(n_scales, out, "fully_connected_hybrid");
  if (impl == Path::kFast &&
      fast::fully_connected_hybrid(detail::available_int8_kernels().back(), detail::available_float_kernels().back(), path, x, batch, in, filter, out,
                                   filter_scale, n_scales, bias, asymmetric_inputs, lo, hi, y))
    return;
  std::vector<std::int32_t> row_sum(out, 0);
  for (std::size_t o = 0; o < out; ++o)
    for (std::size_t i = 0; i < in; ++i) row_sum[o] += filter[o * in + i];
  if (path == KernelPath::kXnnpack) {
    const QuantizedRows r = quantize_rows(InputRule::kXnnpack, x, batch, in);
    for (std::size_t b = 0; b < batch; ++b)
      for (std::size_t o = 0; o < out; ++o) {
        std::int32_t dot = 0;
        for (std::size_t i = 0; i < in; ++i) dot += filter[o * in + i] * r.q[b * in + i];
        dot -= row_sum[o] * r.zero_point[b];
        const float scaled = static_cast<float>(dot) * r.scale[b];
        y[b * out + o] = clampf(std::fma(scaled, filter_scale_of(filter_scale, n_scales, o), bias ? bias[o] : 0.0f),
                                lo, hi);
      }
    return;
  }
  // TFLite EvalHybrid: the output starts as the bias; an all-zero input skips the matmul.
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t o = 0; o < out; ++o) y[b * out + o] = bias ? bias[o] : 0.0f;
  if (!all_zero(x, batch * in)) {
    const QuantizedRows r =
        quantize_rows(asymmetric_inputs ? InputRule::kTfliteAsymmetric : InputRule::kTfliteSymmetric, x, batch, in);
    for (std::size_t b = 0; b < batch; ++b)
      for (std::size_t o = 0; o < out; ++o) {
        std::int32_t dot = 0;
        for (std::size_t i = 0; i < in; ++i) dot += filter[o * in + i] * r.q[b * in + i];
        dot -= row_sum[o] * r.zero_point[b];
        const float s = filter_scale_of(filter_scale, n_scales, o) * r.scale[b];
        y[b * out + o] += static_cast<float>(dot) * s;
      }
  }
  for (std::size_t k = 0; k < batch * out; ++k) y[k] = clampf(y[k], lo, hi);
}

void conv2d_hybrid(KernelPath path, const ConvGeometry& g, const float* x, const std::int8_t* filter,
                   const float* filter_scale, std::size_t n_scales, const float* bias, bool depthwise, float lo,
                   float hi, float* y, Path impl) {
  check_scales(n_scales, g.o, "conv2d_hybrid");
  if (g.h * g.w == 0) return;   // an empty image (SAME padding): an empty output, nothing to quantize
  if (impl == Path::kFast && fast::conv2d_hybrid(detail::available_int8_kernels().back(), detail::available_float_kernels().back(), path, g, x, filter,
                                                 filter_scale, n_scales, bias, depthwise, lo, hi, y))
    return;
  const std::size_t image = g.h * g.w * g.c;
  const detail::HybridConvPlan plan = detail::hybrid_conv_plan(path, g, filter_scale, n_scales, depthwise);
  const std::size_t row = plan.per_pixel ? g.c : image;
  const QuantizedRows r = quantize_rows(plan.rule, x, g.n * image / row, row);
  for (std::size_t n = 0; n < g.n; ++n)
    for (std::size_t oy = 0; oy < g.oh; ++oy)
      for (std::size_t ox = 0; ox < g.ow; ++ox)
        for (std::size_t oc = 0; oc < g.o; ++oc) {
          const std::size_t group = oc / g.og();
          const std::size_t qrow = plan.per_pixel ? (n * g.h + oy) * g.w + ox : n;   // 1x1 stride 1: pixel = output
          const std::int32_t zp = r.zero_point[qrow];
          std::int32_t acc = 0;   // sum w * (q - zp); padded taps equal zp and add nothing
          for (std::size_t ky = 0; ky < g.kh; ++ky) {
            const std::ptrdiff_t iy = detail::conv_input_index(oy, ky, g.sh, g.dh, g.pad_top, g.h);
            if (iy < 0) continue;
            for (std::size_t kx = 0; kx < g.kw; ++kx) {
              const std::ptrdiff_t ix = detail::conv_input_index(ox, kx, g.sw, g.dw, g.pad_left, g.w);
              if (ix < 0) continue;
              const std::int8_t* qp = r.q.data() + n * image +
                                      (static_cast<std::size_t>(iy) * g.w + static_cast<std::size_t>(ix)) * g.c +
                                      group * g.cg();
              for (std::size_t ic = 0; ic < g.cg(); ++ic)
                acc += filter[((ky * g.kw + kx) * g.cg() + ic) * g.o + oc] * (qp[ic] - zp);
            }
          }
          const float pcs = plan.symmetric ? filter_scale[0] : filter_scale_of(filter_scale, n_scales, oc);
          const detail::ConvEpilogue e = oc < plan.tail_start ? plan.head : plan.tail;
          const float v = detail::conv_epilogue(e, static_cast<float>(acc), r.scale[qrow], pcs, bias ? bias[oc] : 0.0f);
          y[((n * g.oh + oy) * g.ow + ox) * g.o + oc] = clampf(v, lo, hi);
        }
}

namespace detail {

// How Eigen evaluates (out x depth) * (depth x cols): a matrix-vector product when either side is
// a vector, a coefficient-based ("lazy") product for tiny sizes (rows + depth + cols < 20), else
// the blocked GEMM, which sums each output sequentially over depth (for depth below its k block).
EigenSum eigen_sum_order(std::size_t out, std::size_t depth, std::size_t cols) {
  // A 1 x 1 output is Eigen's inner product (inner_product_dot).
  if (cols == 1 && out == 1) return EigenSum::kInnerProduct;
  if (cols == 1 || out == 1) return EigenSum::kGemv;
  if (out + depth + cols < 20) return EigenSum::kRedux;
  return EigenSum::kSequential;
}

// Within the blocked GEMM (SSE: 4-float packets, micro-tiles of 8 or 4 filter rows by 4 columns),
// the order depends on where output (row, col) falls: rows in 8-row tiles and columns outside
// whole groups of 4 sum sequentially; rows of the last 4-row tile alternate two accumulators over
// whole 8-steps of depth; the leftover rows (out mod 4) run a "swapped" kernel with 4
// accumulators (depth mod 4), merged as (c0 + c1) + (c2 + c3).
// With AVX (8-float packets) the sequential tiles are 16 rows, the 8-row tile and the 4-row
// half-packet tile after them alternate two accumulators, and the leftover rows run the swapped
// kernel in its AVX form (kGebpSwappedAvx).
EigenSum gebp_order(std::size_t row, std::size_t col, std::size_t out, std::size_t cols, bool avx) {
  if (col >= cols / 4 * 4 || row < out / (avx ? 16 : 8) * (avx ? 16 : 8)) return EigenSum::kSequential;
  if (row < out / 4 * 4) return EigenSum::kGebpPairs;
  return avx ? EigenSum::kGebpSwappedAvx : EigenSum::kGebpSwapped;
}

// With AVX, Eigen's row-major matrix-vector product runs rows in blocks of 8, 4 and 2 (whole
// packets of 8 only); the one row left when there is an odd number of them also takes a half
// packet of 4 (kGemvHalf). The product's rows are the outputs, or the columns when out == 1
// (a row vector times a matrix runs transposed).
EigenSum tf_gemv_order(std::size_t row, std::size_t col, std::size_t out, std::size_t cols) {
  const std::size_t rows = cols == 1 ? out : cols, r = cols == 1 ? row : col;
  return rows % 2 == 1 && r == rows - 1 ? EigenSum::kGemvHalf : EigenSum::kGemv;
}

// The AVX swapped kernel: a packet holds 2 depth steps x 4 columns, so each output has 4
// accumulators of 2 lanes (k = 8t + 2m + p), merged as (c0 + c1) + (c2 + c3); whole pairs of
// steps after the last 8 go into that sum, the two lanes are added, then the odd last step.
float gebp_swapped_avx_dot(const float* x, const float* w, std::size_t depth) {
  float acc[4][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}, {0.0f, 0.0f}, {0.0f, 0.0f}};
  const std::size_t end8 = depth / 8 * 8, end2 = depth / 2 * 2;
  for (std::size_t i = 0; i < end8; ++i) acc[i % 8 / 2][i % 2] += x[i] * w[i];
  float s[2];
  for (std::size_t p = 0; p < 2; ++p) s[p] = (acc[0][p] + acc[1][p]) + (acc[2][p] + acc[3][p]);
  for (std::size_t i = end8; i < end2; ++i) s[i % 2] += x[i] * w[i];
  float t = s[0] + s[1];
  if (end2 < depth) t += x[end2] * w[end2];
  return t;
}

// A 1 x 1 output: Eigen's inner product (Eigen/src/Core/InnerProduct.h, inner_product_impl; the
// GEMV product falls back to it when lhs.rows() == 1 and rhs.cols() == 1). Four packet
// accumulators take packets 0..3 and then every fourth packet; the 1-3 packets after the last
// group of four go to accumulators 0, 1, 2; they merge as a0 + (a1 + (a2 + a3)), the lanes reduce
// pairwise ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)) (SSE: (l0 + l2) + (l1 + l3)), then
// the depth mod P products are added in order. Fewer than P products sum in order from the first.
// No alignment peeling: the order depends only on depth (measured bit-exact for depths 1..79 and
// up to 333 on both wheels: P = 8 in tensorflow's, P = 4 in ai-edge-litert's).
float inner_product_dot(const float* x, const float* w, std::size_t depth, std::size_t P) {
  if (depth < P) {
    float t = depth ? x[0] * w[0] : 0.0f;
    for (std::size_t i = 1; i < depth; ++i) t += x[i] * w[i];
    return t;
  }
  const std::size_t packets = depth / P, end = packets * P;
  float acc[4][8] = {};
  for (std::size_t k = 0; k < packets && k < 4; ++k)
    for (std::size_t l = 0; l < P; ++l) acc[k][l] = x[k * P + l] * w[k * P + l];
  if (packets >= 4) {
    for (std::size_t i = 4 * P; i < end; i += P)   // later groups of four, then the 1-3 left over
      for (std::size_t l = 0; l < P; ++l) acc[i / P % 4][l] += x[i + l] * w[i + l];
    for (std::size_t l = 0; l < P; ++l) acc[2][l] += acc[3][l];
  }
  if (packets >= 3)
    for (std::size_t l = 0; l < P; ++l) acc[1][l] += acc[2][l];
  if (packets >= 2)
    for (std::size_t l = 0; l < P; ++l) acc[0][l] += acc[1][l];
  float* a = acc[0];
  if (P == 8)   // AVX predux: the two halves added lane by lane, then the SSE predux
    for (std::size_t l = 0; l < 4; ++l) a[l] += a[l + 4];
  float t = (a[0] + a[2]) + (a[1] + a[3]);
  for (std::size_t i = end; i < depth; ++i) t += x[i] * w[i];
  return t;
}

// One output: x . w over `depth` in the chosen order (no FMA: the wheel's Eigen is built without it).
float eigen_dot(EigenSum order, const float* x, const float* w, std::size_t depth, bool avx) {
  if (order == EigenSum::kGebpSwappedAvx) return gebp_swapped_avx_dot(x, w, depth);
  if (order == EigenSum::kGemvHalf) {   // whole packets of 8, then one of 4, then the rest
    const std::size_t end8 = depth / 8 * 8, end4 = depth / 4 * 4;
    float t = end8 > 0 ? eigen_dot(EigenSum::kGemv, x, w, end8, true) : 0.0f;
    if (end4 > end8) t += eigen_dot(EigenSum::kGemv, x + end8, w + end8, 4, false);
    for (std::size_t i = end4; i < depth; ++i) t += x[i] * w[i];
    return t;
  }
  if (order == EigenSum::kInnerProduct) return inner_product_dot(x, w, depth, avx ? 8 : 4);
  if (order == EigenSum::kGebpPairs || order == EigenSum::kGebpSwapped) {
    const std::size_t ways = order == EigenSum::kGebpPairs ? 2 : 4;
    const std::size_t end = order == EigenSum::kGebpPairs ? depth / 8 * 8 : depth / 4 * 4;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (std::size_t i = 0; i < end; ++i) acc[i % ways] += x[i] * w[i];
    float t = ways == 2 ? acc[0] + acc[1] : (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (std::size_t i = end; i < depth; ++i) t += x[i] * w[i];
    return t;
  }
  const std::size_t P = avx ? 8 : 4;   // floats per packet
  if (order == EigenSum::kSequential || depth < P) {
    float t = 0.0f;
    if (order == EigenSum::kRedux && depth > 0) {   // redux starts from the first product, not 0
      t = x[0] * w[0];
      for (std::size_t i = 1; i < depth; ++i) t += x[i] * w[i];
      return t;
    }
    for (std::size_t i = 0; i < depth; ++i) t += x[i] * w[i];
    return t;
  }
  float lane[8], lane1[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  const std::size_t end = depth / P * P;
  for (std::size_t l = 0; l < P; ++l) lane[l] = order == EigenSum::kGemv ? 0.0f + x[l] * w[l] : x[l] * w[l];
  if (order == EigenSum::kGemv) {   // one accumulator per row: c += x * w packet by packet
    for (std::size_t i = P; i < end; i += P)
      for (std::size_t l = 0; l < P; ++l) lane[l] += x[i + l] * w[i + l];
  } else {                          // redux: two accumulators over pairs of packets, then merged
    const std::size_t end2 = depth / (2 * P) * (2 * P);
    if (end > P) {
      for (std::size_t l = 0; l < P; ++l) lane1[l] = x[P + l] * w[P + l];
      for (std::size_t i = 2 * P; i < end2; i += 2 * P)
        for (std::size_t l = 0; l < P; ++l) {
          lane[l] += x[i + l] * w[i + l];
          lane1[l] += x[i + P + l] * w[i + P + l];
        }
      for (std::size_t l = 0; l < P; ++l) lane[l] += lane1[l];
      if (end > end2)
        for (std::size_t l = 0; l < P; ++l) lane[l] += x[end2 + l] * w[end2 + l];
    }
  }
  if (avx)   // AVX predux: the two halves added lane by lane, then the SSE predux
    for (std::size_t l = 0; l < 4; ++l) lane[l] += lane[l + 4];
  float t = (lane[0] + lane[2]) + (lane[1] + lane[3]);   // SSE predux: (a0 + a2) + (a1 + a3)
  for (std::size_t i = end; i < depth; ++i) t += x[i] * w[i];
  return t;
}

}  // namespace detail

using detail::EigenSum;
using detail::eigen_dot;
using detail::eigen_sum_order;
using detail::gebp_order;
using detail::tf_gemv_order;

void fully_connected_f32(KernelPath path, const float* x, std::size_t batch, std::size_t in, const float* filter,
                         std::size_t out, const float* bias, float lo, float hi, float* y, Path impl) {
  if (impl == Path::kFast && fast::fully_connected_f32(detail::available_float_kernels().back(), path, x, batch, in, filter, out, bias, lo, hi, y)) return;
  const EigenSum order = eigen_sum_order(out, in, batch);
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t o = 0; o < out; ++o) {
      const float* xr = x + b * in;
      const float* wr = filter + o * in;
      const float bo = bias ? bias[o] : 0.0f;
      float v = 0.0f;
      if (path == KernelPath::kBuiltin || path == KernelPath::kTfBuiltin) {
        const bool avx = path == KernelPath::kTfBuiltin;
        EigenSum o_order = order == EigenSum::kSequential ? gebp_order(o, b, out, batch, avx) : order;
        if (avx && order == EigenSum::kGemv) o_order = tf_gemv_order(o, b, out, batch);
        v = eigen_dot(o_order, xr, wr, in, avx) + bo;
      } else if (path == KernelPath::kXnnpack) {
        v = bo;
        for (std::size_t i = 0; i < in; ++i) v = std::fma(xr[i], wr[i], v);
      } else {
        for (std::size_t i = 0; i < in; ++i) v += xr[i] * wr[i];
        v += bo;
      }
      y[b * out + o] = clampf(v, lo, hi);
    }
}

namespace {

// The builtin conv: each output pixel's patch (ky, kx, c; padding as zeros) is a column of the
// im2col matrix, multiplied by the filter rows (O, KH*KW*C) in the builtin GEMM's order.
void conv2d_f32_im2col(const ConvGeometry& g, const float* x, const float* filter, const float* bias, bool avx,
                       float lo, float hi, float* y) {
  const std::size_t depth = g.kh * g.kw * g.c, pixels = g.n * g.oh * g.ow;
  // The tensorflow wheel's calibrator runs the multithreaded kernel (an Eigen tensor
  // contraction): no coefficient-based, GEMV or inner-product special cases except one column
  // (one output pixel), which its evalGemv sums in order.
  const EigenSum order = !avx ? eigen_sum_order(g.o, depth, pixels) : pixels == 1 ? EigenSum::kPlain
                                                                                  : EigenSum::kSequential;
  std::vector<float> rows(g.o * depth), patch(depth);
  for (std::size_t oc = 0; oc < g.o; ++oc)   // (KH, KW, C, O) -> filter rows (O, KH*KW*C)
    for (std::size_t k = 0; k < depth; ++k) rows[oc * depth + k] = filter[k * g.o + oc];
  for (std::size_t n = 0; n < g.n; ++n)
    for (std::size_t oy = 0; oy < g.oh; ++oy)
      for (std::size_t ox = 0; ox < g.ow; ++ox) {
        for (std::size_t ky = 0; ky < g.kh; ++ky)
          for (std::size_t kx = 0; kx < g.kw; ++kx) {
            const std::ptrdiff_t iy = detail::conv_input_index(oy, ky, g.sh, g.dh, g.pad_top, g.h);
            const std::ptrdiff_t ix = detail::conv_input_index(ox, kx, g.sw, g.dw, g.pad_left, g.w);
            float* dst = patch.data() + (ky * g.kw + kx) * g.c;
            if (iy < 0 || ix < 0) {
              std::fill(dst, dst + g.c, 0.0f);
            } else {
              const float* src =
                  x + ((n * g.h + static_cast<std::size_t>(iy)) * g.w + static_cast<std::size_t>(ix)) * g.c;
              std::copy(src, src + g.c, dst);
            }
          }
        const std::size_t col = (n * g.oh + oy) * g.ow + ox;
        float* out = y + col * g.o;
        for (std::size_t oc = 0; oc < g.o; ++oc) {
          EigenSum o_order = order == EigenSum::kSequential ? gebp_order(oc, col, g.o, pixels, avx) : order;
          if (avx && order == EigenSum::kPlain) o_order = EigenSum::kSequential;
          out[oc] = clampf(eigen_dot(o_order, patch.data(), rows.data() + oc * depth, depth, avx) + (bias ? bias[oc] : 0.0f),
                           lo, hi);
        }
      }
}

}  // namespace

void conv2d_f32(KernelPath path, const ConvGeometry& g, const float* x, const float* filter, const float* bias,
                bool depthwise, float lo, float hi, float* y, Path impl) {
  if (impl == Path::kFast && fast::conv2d_f32(detail::available_float_kernels().back(), path, g, x, filter, bias, depthwise, lo, hi, y)) return;
  const bool builtin = path == KernelPath::kBuiltin || path == KernelPath::kTfBuiltin;
  if (builtin && g.groups == 1 && !depthwise) {   // im2col, then the builtin float GEMM
    conv2d_f32_im2col(g, x, filter, bias, path == KernelPath::kTfBuiltin, lo, hi, y);
    return;
  }
  const bool fused = path == KernelPath::kXnnpack;
  const bool from_bias = fused || (builtin && depthwise);
  // XNNPACK's depthwise kernels (one input and one output channel per group; a depth multiplier
  // above 1 runs as a grouped GEMM instead) walk the taps column by column (kx outer, ky inner).
  const bool columns_first = fused && g.cg() == 1 && g.og() == 1;
  for (std::size_t n = 0; n < g.n; ++n)
    for (std::size_t oy = 0; oy < g.oh; ++oy)
      for (std::size_t ox = 0; ox < g.ow; ++ox)
        for (std::size_t oc = 0; oc < g.o; ++oc) {
          const std::size_t group = oc / g.og();
          const float b = bias ? bias[oc] : 0.0f;
          float total = from_bias ? b : 0.0f;
          for (std::size_t t = 0; t < g.kh * g.kw; ++t) {
            const std::size_t ky = columns_first ? t % g.kh : t / g.kw, kx = columns_first ? t / g.kh : t % g.kw;
            const std::ptrdiff_t iy = detail::conv_input_index(oy, ky, g.sh, g.dh, g.pad_top, g.h);
            const std::ptrdiff_t ix = detail::conv_input_index(ox, kx, g.sw, g.dw, g.pad_left, g.w);
            if (iy < 0 || ix < 0) continue;   // padding adds nothing
            const float* xp =
                x + ((n * g.h + static_cast<std::size_t>(iy)) * g.w + static_cast<std::size_t>(ix)) * g.c + group * g.cg();
            const float* wp = filter + (ky * g.kw + kx) * g.cg() * g.o + oc;
            for (std::size_t ic = 0; ic < g.cg(); ++ic)
              total = fused ? std::fma(xp[ic], wp[ic * g.o], total) : total + xp[ic] * wp[ic * g.o];
          }
          y[((n * g.oh + oy) * g.ow + ox) * g.o + oc] = clampf(from_bias ? total : total + b, lo, hi);
        }
}

void tanh_f32(const float* x, std::size_t n, float* y) {
  for (std::size_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
}

void tanh_eigen_f32(const float* x, std::size_t n, float* y) {
  // Coefficients of Eigen's ptanh_float (numerator odd, denominator even; highest power first).
  constexpr float alpha[] = {1.394553628e-8f, 2.102733560e-5f, 3.520756727e-3f, 1.340216100e-1f};
  constexpr float beta[] = {8.015776984e-7f, 3.326951409e-4f, 2.597254514e-2f, 4.673548340e-1f, 1.0f};
  const float clamp = 7.90738964080810547f;   // the non-FMA build's value
  for (std::size_t i = 0; i < n; ++i) {
    const float v = std::min(std::max(x[i], -clamp), clamp);
    const float v2 = v * v, v3 = v2 * v;
    float p = alpha[0], q = beta[0];
    for (std::size_t k = 1; k < 4; ++k) p = p * v2 + alpha[k];
    for (std::size_t k = 1; k < 5; ++k) q = q * v2 + beta[k];
    y[i] = (v3 * p + v) / q;   // x (1 + x^2 p(x^2)) / q(x^2)
  }
}

void tanh_xnnpack_f32(const float* x, std::size_t n, float* y) {
  constexpr float alpha[] = {1.4248920266e-08f, 2.1235626264e-05f, 3.5330520477e-03f, 1.3412411511e-01f, 1.0f};
  constexpr float beta[] = {8.1365948290e-07f, 3.3472978976e-04f, 2.6018999517e-02f, 4.6745735407e-01f, 1.0f};
  const float clamp = 7.9807181358e+00f;   // the FMA build's value
  for (std::size_t i = 0; i < n; ++i) {
    const float v = std::min(std::max(x[i], -clamp), clamp);
    const float v2 = v * v;
    float p = alpha[0], q = beta[0];
    for (std::size_t k = 1; k < 5; ++k) {
      p = std::fma(v2, p, alpha[k]);
      q = std::fma(v2, q, beta[k]);
    }
    y[i] = (v * p) / q;
  }
}

void logistic_f32(const float* x, std::size_t n, float* y) {
  const float upper = 16.619047164916992188f, lower = -9.0f;
  for (std::size_t i = 0; i < n; ++i)
    y[i] = x[i] > upper ? 1.0f : x[i] < lower ? std::exp(x[i]) : 1.0f / (1.0f + std::exp(-x[i]));
}

namespace {

// packets_end: where the scalar std::exp tail starts.
void logistic_eigen_packets(const float* x, std::size_t n, std::size_t packets_end, float* y) {
  const float hi = 16.6355324f, lo = -104.0f;
  for (std::size_t i = 0; i < n; ++i) {
    const float v = std::min(x[i], hi);
    if (i >= packets_end) {   // the scalar tail
      const float e = std::exp(v);
      y[i] = e / (1.0f + e);
      continue;
    }
    const float h = v * 0.5f;   // exp(x) = exp(x / 2)^2 keeps exp(x / 2) normal
    const float m = std::floor(h * 1.44269504088896341f + 0.5f);
    float r = m * -0.693359375f + h;   // ln 2 in two parts
    r = m * 2.12194440e-4f + r;
    const float r2 = r * r;
    const float p_even = r2 * 4.1898667812347412109375e-2f + 0.49999141693115234375f;
    const float p_odd = r2 * 8.33471305668354034423828125e-3f + 0.16666877269744873046875f;
    const float p_low = r + 1.0f;
    float p = r * p_odd + p_even;
    p = r2 * p + p_low;
    float e = p * std::ldexp(1.0f, static_cast<int>(m));   // 2^m is a normal float here
    e = e * e;
    y[i] = x[i] < lo ? 0.0f : e / (1.0f + e);
  }
}

}  // namespace

void logistic_eigen_f32(const float* x, std::size_t n, float* y) { logistic_eigen_packets(x, n, n / 4 * 4, y); }

void logistic_eigen_tf_f32(const float* x, std::size_t n, float* y) { logistic_eigen_packets(x, n, n, y); }

void logistic_xnnpack_f32(const float* x, std::size_t n, float* y) {
  static const float table[32] = {   // 2^(k/32), k = 0..31, as XNNPACK stores them
      0x1.000000p+0f, 0x1.059B0Ep+0f, 0x1.0B5586p+0f, 0x1.11301Ep+0f, 0x1.172B84p+0f, 0x1.1D4874p+0f,
      0x1.2387A6p+0f, 0x1.29E9E0p+0f, 0x1.306FE0p+0f, 0x1.371A74p+0f, 0x1.3DEA64p+0f, 0x1.44E086p+0f,
      0x1.4BFDAEp+0f, 0x1.5342B6p+0f, 0x1.5AB07Ep+0f, 0x1.6247ECp+0f, 0x1.6A09E6p+0f, 0x1.71F75Ep+0f,
      0x1.7A1148p+0f, 0x1.82589Ap+0f, 0x1.8ACE54p+0f, 0x1.93737Cp+0f, 0x1.9C4918p+0f, 0x1.A5503Cp+0f,
      0x1.AE89FAp+0f, 0x1.B7F770p+0f, 0x1.C199BEp+0f, 0x1.CB720Ep+0f, 0x1.D5818Ep+0f, 0x1.DFC974p+0f,
      0x1.EA4AFAp+0f, 0x1.F50766p+0f};
  const float magic = 0x1.800000p18f, log2e = 0x1.715476p0f, minus_ln2_hi = -0x1.62E430p-1f,
              minus_ln2_lo = 0x1.05C61p-29f, c2 = 0x1.000000p-1f, c1 = 0x1.0000F6p-0f;
  for (std::size_t i = 0; i < n; ++i) {
    const float z = -std::abs(x[i]);
    float k = std::fma(z, log2e, magic);   // z * log2(e) rounded to a multiple of 1/32
    std::uint32_t bits = 0;
    std::memcpy(&bits, &k, sizeof bits);
    const float l = table[bits & 31u];
    k -= magic;
    float t = std::fma(k, minus_ln2_hi, z);
    t = std::fma(k, minus_ln2_lo, t);
    float p = std::fma(t, c2, c1);
    t *= l;
    p = std::fma(t, p, l);
    float e = std::ldexp(p, static_cast<int>(std::floor(k)));   // scalef: p * 2^floor(k)
    if (std::abs(e) < std::numeric_limits<float>::min()) e = 0.0f;   // XNNPACK runs flush-to-zero (measured)
    const float f = e / (e + 1.0f);
    y[i] = std::signbit(x[i]) ? f : 1.0f - f;
  }
}

}  // namespace qdrift
