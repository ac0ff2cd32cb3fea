// SPDX-License-Identifier: Apache-2.0
// Fast hybrid and float32 FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D, bit-identical to hybrid.cpp's loops.
//
// The inputs are quantized by the same row quantizers. The int32 sums sum_i w * (q - zp) are
// formed as sum_i w * q - zp * sum_i w by the int8 GEMM of integer_kernels.inc (convs gather
// their taps into rows first, im2col, in chunks of kChunkRows output pixels; padding taps hold
// zp, so they add w * (zp - zp) = 0), or tap by tap across channels for one input channel per
// group (depthwise). Integer sums are exact, so they equal the reference's whenever no partial
// sum leaves int32: |w| <= 128 and |q - zp|, |q + 128| <= 255 bound every partial sum by
// 255 * 128 * depth, below 2^31 for depth <= kMaxDepth (deeper layers run the reference).
// The float epilogue then applies, per output, the same operations in the same order
// (conv_epilogue, hybrid_fast.h), one loop per operation order so it vectorizes.
#include "hybrid_fast.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "conv_index.h"

namespace qdrift::fast {
namespace {

constexpr std::size_t kChunkRows = 64;       // output rows per GEMM call: keeps the im2col block in L2
constexpr std::size_t kMaxDepth = 65793;     // 255 * 128 * 65793 < 2^31

using detail::ConvEpilogue;

// y[o] = clamp(epilogue(f32(c[o] - zp * wsum[o]), sf, pcs[o], b[o])) for o in [begin, end).
template <ConvEpilogue E>
inline __attribute__((always_inline)) void epilogue_run(const std::int32_t* __restrict c,
                                                        const std::int32_t* __restrict wsum, std::int32_t zp,
                                                        float sf, const float* __restrict pcs,
                                                        const float* __restrict b, std::size_t begin,
                                                        std::size_t end, float lo, float hi, float* __restrict y) {
  for (std::size_t o = begin; o < end; ++o) {
    const auto acc = static_cast<float>(c[o] - zp * wsum[o]);
    y[o] = detail::clampf(detail::conv_epilogue(E, acc, sf, pcs[o], b[o]), lo, hi);
  }
}

void epilogue_run(const detail::FloatKernels& fk, ConvEpilogue e, const std::int32_t* c, const std::int32_t* wsum,
                  std::int32_t zp, float sf, const float* pcs, const float* b, std::size_t begin, std::size_t end,
                  float lo, float hi, float* y) {
  switch (e) {
    case ConvEpilogue::kFma: fk.fma_epilogue(c, wsum, zp, sf, pcs, b, begin, end, lo, hi, y); break;
    case ConvEpilogue::kScaleProduct:
      epilogue_run<ConvEpilogue::kScaleProduct>(c, wsum, zp, sf, pcs, b, begin, end, lo, hi, y);
      break;
    case ConvEpilogue::kPcsThenSf:
      epilogue_run<ConvEpilogue::kPcsThenSf>(c, wsum, zp, sf, pcs, b, begin, end, lo, hi, y);
      break;
    case ConvEpilogue::kSfThenPcs:
      epilogue_run<ConvEpilogue::kSfThenPcs>(c, wsum, zp, sf, pcs, b, begin, end, lo, hi, y);
      break;
  }
}

// One output row under the plan's head / tail split.
void epilogue_row(const detail::FloatKernels& fk, const detail::HybridConvPlan& p, const std::int32_t* c,
                  const std::int32_t* wsum, std::int32_t zp, float sf, const float* pcs, const float* b, std::size_t n,
                  float lo, float hi, float* y) {
  const std::size_t split = std::min(p.tail_start, n);
  epilogue_run(fk, p.head, c, wsum, zp, sf, pcs, b, 0, split, lo, hi, y);
  epilogue_run(fk, p.tail, c, wsum, zp, sf, pcs, b, split, n, lo, hi, y);
}

std::vector<float> per_channel(const float* v, std::size_t n_values, std::size_t n) {
  std::vector<float> out(n, 0.0f);   // no bias: + 0.0f, as the reference adds
  for (std::size_t o = 0; v && o < n; ++o) out[o] = v[n_values == 1 ? 0 : o];
  return out;
}

bool all_zero(const float* x, std::size_t n) {
  return std::all_of(x, x + n, [](float v) { return v == 0.0f; });
}

}  // namespace

bool fully_connected_hybrid(const detail::Int8Kernels& k, const detail::FloatKernels& fk, KernelPath path, const float* x, std::size_t batch,
                            std::size_t in, const std::int8_t* filter, std::size_t out, const float* filter_scale,
                            std::size_t n_scales, const float* bias, bool asymmetric_inputs, float lo, float hi,
                            float* y) {
  if (in > kMaxDepth) return false;
  const std::vector<float> b = per_channel(bias, out, out), pcs = per_channel(filter_scale, n_scales, out);
  const bool xnnpack = path == KernelPath::kXnnpack;
  if (!xnnpack && all_zero(x, batch * in)) {   // TFLite EvalHybrid skips the matmul: y = clamp(bias)
    for (std::size_t r = 0; r < batch; ++r)
      for (std::size_t o = 0; o < out; ++o) y[r * out + o] = detail::clampf(b[o], lo, hi);
    return true;
  }
  const detail::InputRule rule = xnnpack             ? detail::InputRule::kXnnpack
                                 : asymmetric_inputs ? detail::InputRule::kTfliteAsymmetric
                                                     : detail::InputRule::kTfliteSymmetric;
  const detail::QuantizedRows r = detail::quantize_rows(rule, x, batch, in);
  std::vector<std::int32_t> wsum(out);
  k.row_sums(filter, out, in, wsum.data(), nullptr);
  // XNNPACK: fma(f32(dot * s_row), s_w, bias); TFLite: bias + f32(dot * f32(s_w * s_row)).
  detail::HybridConvPlan plan;
  plan.head = xnnpack ? ConvEpilogue::kFma : ConvEpilogue::kScaleProduct;
  plan.tail_start = out;
  std::vector<std::int32_t> c(std::min(batch, kChunkRows) * out);
  for (std::size_t n0 = 0; n0 < batch; n0 += kChunkRows) {
    const std::size_t rows = std::min(kChunkRows, batch - n0);
    k.gemm(r.q.data() + n0 * in, rows, in, filter, out, in, wsum.data(), c.data(), out);
    for (std::size_t i = 0; i < rows; ++i)
      epilogue_row(fk, plan, c.data() + i * out, wsum.data(), r.zero_point[n0 + i], r.scale[n0 + i], pcs.data(),
                   b.data(), out, lo, hi, y + (n0 + i) * out);
  }
  return true;
}

bool conv2d_hybrid(const detail::Int8Kernels& k, const detail::FloatKernels& fk, KernelPath path, const ConvGeometry& g, const float* x,
                   const std::int8_t* filter, const float* filter_scale, std::size_t n_scales, const float* bias,
                   bool depthwise, float lo, float hi, float* y) {
  const std::size_t cg = g.cg(), og = g.og(), depth = g.kh * g.kw * cg, image = g.h * g.w * g.c;
  if (depth > kMaxDepth || image == 0) return false;
  const detail::HybridConvPlan plan = detail::hybrid_conv_plan(path, g, filter_scale, n_scales, depthwise);
  const std::size_t row = plan.per_pixel ? g.c : image;
  const detail::QuantizedRows r = detail::quantize_rows(plan.rule, x, g.n * image / row, row);
  const std::vector<float> b = per_channel(bias, g.o, g.o);
  const std::vector<float> pcs = per_channel(filter_scale, plan.symmetric ? 1 : n_scales, g.o);
  const std::size_t pixels = g.n * g.oh * g.ow, per_image = g.oh * g.ow;
  // The quantization row of output pixel m (per_pixel implies OH x OW = H x W).
  const auto qrow_of = [&](std::size_t m) { return plan.per_pixel ? m : m / per_image; };

  if (cg == 1) {   // one input channel per group: taps accumulate across channels
    std::vector<std::int32_t> acc(g.o), none(g.o, 0);
    for (std::size_t m = 0; m < pixels; ++m) {
      const std::size_t ox = m % g.ow, oy = (m / g.ow) % g.oh, n = m / per_image, qrow = qrow_of(m);
      const std::int32_t zp = r.zero_point[qrow];
      std::fill(acc.begin(), acc.end(), 0);
      for (std::size_t ky = 0; ky < g.kh; ++ky) {
        const std::ptrdiff_t iy = detail::conv_input_index(oy, ky, g.sh, g.dh, g.pad_top, g.h);
        if (iy < 0) continue;
        for (std::size_t kx = 0; kx < g.kw; ++kx) {
          const std::ptrdiff_t ix = detail::conv_input_index(ox, kx, g.sw, g.dw, g.pad_left, g.w);
          if (ix < 0) continue;
          const std::int8_t* qp =
              r.q.data() + n * image + (static_cast<std::size_t>(iy) * g.w + static_cast<std::size_t>(ix)) * g.c;
          k.depthwise_tap(acc.data(), filter + (ky * g.kw + kx) * g.o, qp, g.o, og, zp);
        }
      }
      epilogue_row(fk, plan, acc.data(), none.data(), 0, r.scale[qrow], pcs.data(), b.data(), g.o, lo, hi, y + m * g.o);
    }
    return true;
  }

  // filter (KH, KW, C/groups, O) -> rows (O, KH * KW * C/groups): output channel oc's taps.
  std::vector<std::int8_t> rows_w(g.o * depth);
  for (std::size_t i = 0; i < depth; ++i)
    for (std::size_t oc = 0; oc < g.o; ++oc) rows_w[oc * depth + i] = filter[i * g.o + oc];
  std::vector<std::int32_t> wsum(g.o);
  k.row_sums(rows_w.data(), g.o, depth, wsum.data(), nullptr);
  // A 1x1, stride-1, unpadded, ungrouped conv reads its rows straight from q.
  const bool direct = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.pad_top == 0 && g.pad_left == 0 &&
                      g.groups == 1 && g.oh == g.h && g.ow == g.w;
  std::vector<std::int8_t> cols(direct ? 0 : std::min(pixels, kChunkRows) * depth);
  std::vector<std::int32_t> c(std::min(pixels, kChunkRows) * g.o);
  for (std::size_t m0 = 0; m0 < pixels; m0 += kChunkRows) {
    const std::size_t rows = std::min(kChunkRows, pixels - m0);
    for (std::size_t grp = 0; grp < g.groups; ++grp) {
      const std::int8_t* a = r.q.data() + m0 * g.c;
      if (!direct) {
        for (std::size_t i = 0; i < rows; ++i) {   // im2col: row i holds pixel m0 + i's taps (ky, kx, ic)
          const std::size_t m = m0 + i, ox = m % g.ow, oy = (m / g.ow) % g.oh, n = m / per_image;
          const auto zp8 = static_cast<std::int8_t>(r.zero_point[qrow_of(m)]);   // int8 by construction
          std::int8_t* dst = cols.data() + i * depth;
          for (std::size_t ky = 0; ky < g.kh; ++ky) {
            const std::ptrdiff_t iy = detail::conv_input_index(oy, ky, g.sh, g.dh, g.pad_top, g.h);
            if (iy >= 0 && g.groups == 1 && g.dw == 1) {   // the valid taps of this kernel row are one run of x
              const auto x0 = static_cast<std::ptrdiff_t>(ox * g.sw) - static_cast<std::ptrdiff_t>(g.pad_left);
              const auto kw = static_cast<std::ptrdiff_t>(g.kw), w = static_cast<std::ptrdiff_t>(g.w);
              const auto k_lo = static_cast<std::size_t>(std::clamp<std::ptrdiff_t>(-x0, 0, kw));
              const auto k_hi = static_cast<std::size_t>(std::clamp<std::ptrdiff_t>(w - x0, static_cast<std::ptrdiff_t>(k_lo), kw));
              const std::int8_t* src = r.q.data() + n * image + static_cast<std::size_t>(iy) * g.w * g.c;
              std::fill(dst, dst + k_lo * cg, zp8);
              std::copy(src + static_cast<std::size_t>(x0 + static_cast<std::ptrdiff_t>(k_lo)) * g.c,
                        src + static_cast<std::size_t>(x0 + static_cast<std::ptrdiff_t>(k_hi)) * g.c, dst + k_lo * cg);
              std::fill(dst + k_hi * cg, dst + g.kw * cg, zp8);
              dst += g.kw * cg;
              continue;
            }
            for (std::size_t kx = 0; kx < g.kw; ++kx, dst += cg) {
              const std::ptrdiff_t ix = detail::conv_input_index(ox, kx, g.sw, g.dw, g.pad_left, g.w);
              if (iy < 0 || ix < 0) {
                std::fill(dst, dst + cg, zp8);
                continue;
              }
              const std::int8_t* src = r.q.data() + n * image +
                                       (static_cast<std::size_t>(iy) * g.w + static_cast<std::size_t>(ix)) * g.c +
                                       grp * cg;
              std::copy(src, src + cg, dst);
            }
          }
        }
        a = cols.data();
      }
      k.gemm(a, rows, direct ? g.c : depth, rows_w.data() + grp * og * depth, og, depth, wsum.data() + grp * og,
             c.data() + grp * og, g.o);
    }
    for (std::size_t i = 0; i < rows; ++i) {
      const std::size_t qrow = qrow_of(m0 + i);
      epilogue_row(fk, plan, c.data() + i * g.o, wsum.data(), r.zero_point[qrow], r.scale[qrow], pcs.data(), b.data(),
                   g.o, lo, hi, y + (m0 + i) * g.o);
    }
  }
  return true;
}

}  // namespace qdrift::fast

// ---- float32 FC / conv in each path's summation order ----------------------------------------
// Every output is a chain of float operations over its taps in a fixed order (sequential from 0,
// then + bias; or fused multiply-adds from the bias). The chains of different output channels are
// independent, so they run side by side in vector lanes, each lane doing exactly its output's
// chain; outputs the builtin GEMM sums in another order (its edge micro-tiles, matrix-vector
// products) run the reference's eigen_dot.
namespace qdrift::fast {
namespace {

// acc[o] = chain over k of (x[k], w[k * ldw + o]) for o < n: acc + x * w (two roundings) or fma.
template <bool kFused>
inline __attribute__((always_inline)) void chain_block(float* __restrict acc, const float* __restrict x,
                                                       const float* __restrict w, std::size_t ldw,
                                                       std::size_t depth, std::size_t n) {
  constexpr std::size_t kBlock = 32;   // accumulators held in registers across the depth loop
  std::size_t o0 = 0;
  for (; o0 + kBlock <= n; o0 += kBlock) {
    float a[kBlock];
    for (std::size_t j = 0; j < kBlock; ++j) a[j] = acc[o0 + j];
    for (std::size_t k = 0; k < depth; ++k) {
      const float xk = x[k];
      const float* wr = w + k * ldw + o0;
      for (std::size_t j = 0; j < kBlock; ++j) a[j] = kFused ? std::fma(xk, wr[j], a[j]) : a[j] + xk * wr[j];
    }
    for (std::size_t j = 0; j < kBlock; ++j) acc[o0 + j] = a[j];
  }
  for (std::size_t k = 0; o0 < n && k < depth; ++k) {
    const float xk = x[k];
    const float* wr = w + k * ldw;
    for (std::size_t o = o0; o < n; ++o) acc[o] = kFused ? std::fma(xk, wr[o], acc[o]) : acc[o] + xk * wr[o];
  }
}

// The same chains with w in rows (w[o * ldw + k]): eight outputs' chains interleaved, for few
// batch rows, where transposing the filter would cost more than the products.
template <bool kFused>
inline __attribute__((always_inline)) void chain_rows(float* __restrict acc, const float* __restrict x,
                                                      const float* __restrict w, std::size_t ldw,
                                                      std::size_t depth, std::size_t n) {
  constexpr std::size_t kBlock = 8;
  std::size_t o0 = 0;
  for (; o0 + kBlock <= n; o0 += kBlock) {
    float a[kBlock];
    for (std::size_t j = 0; j < kBlock; ++j) a[j] = acc[o0 + j];
    for (std::size_t k = 0; k < depth; ++k)
      for (std::size_t j = 0; j < kBlock; ++j) {
        const float wk = w[(o0 + j) * ldw + k];
        a[j] = kFused ? std::fma(x[k], wk, a[j]) : a[j] + x[k] * wk;
      }
    for (std::size_t j = 0; j < kBlock; ++j) acc[o0 + j] = a[j];
  }
  for (std::size_t o = o0; o < n; ++o)
    for (std::size_t k = 0; k < depth; ++k)
      acc[o] = kFused ? std::fma(x[k], w[o * ldw + k], acc[o]) : acc[o] + x[k] * w[o * ldw + k];
}

// acc[o] = chain over taps of (x[o / multiplier], w[o]) for one tap of a one-input-channel-per-
// group conv (depthwise): the tap's weights are contiguous over output channels.
template <bool kFused>
inline __attribute__((always_inline)) void depthwise_chain(float* __restrict acc, const float* __restrict x,
                                                           const float* __restrict w, std::size_t n,
                                                           std::size_t multiplier) {
  if (multiplier == 1) {
    for (std::size_t o = 0; o < n; ++o) acc[o] = kFused ? std::fma(x[o], w[o], acc[o]) : acc[o] + x[o] * w[o];
    return;
  }
  for (std::size_t o = 0; o < n; ++o) {
    const float xo = x[o / multiplier];
    acc[o] = kFused ? std::fma(xo, w[o], acc[o]) : acc[o] + xo * w[o];
  }
}

template <bool kFused>
void chain_portable(float* acc, const float* x, const float* w, std::size_t ldw, std::size_t depth, std::size_t n) {
  chain_block<kFused>(acc, x, w, ldw, depth, n);
}
template <bool kFused>
void rows_portable(float* acc, const float* x, const float* w, std::size_t ldw, std::size_t depth, std::size_t n) {
  chain_rows<kFused>(acc, x, w, ldw, depth, n);
}
template <bool kFused>
void depthwise_portable(float* acc, const float* x, const float* w, std::size_t n, std::size_t multiplier) {
  depthwise_chain<kFused>(acc, x, w, n, multiplier);
}
void fma_epilogue_portable(const std::int32_t* c, const std::int32_t* wsum, std::int32_t zp, float sf,
                           const float* pcs, const float* b, std::size_t begin, std::size_t end, float lo, float hi,
                           float* y) {
  epilogue_run<ConvEpilogue::kFma>(c, wsum, zp, sf, pcs, b, begin, end, lo, hi, y);
}
#if defined(__x86_64__)
// The same loops with AVX2 + FMA3: 8 lanes, and std::fma as one instruction (exactly rounded, so
// the same bits as libm's fmaf, which the portable build calls).
#define QDRIFT_AVX2_FMA __attribute__((target("avx2,fma")))
template <bool kFused>
QDRIFT_AVX2_FMA void chain_avx2(float* acc, const float* x, const float* w, std::size_t ldw, std::size_t depth,
                                std::size_t n) {
  chain_block<kFused>(acc, x, w, ldw, depth, n);
}
template <bool kFused>
QDRIFT_AVX2_FMA void rows_avx2(float* acc, const float* x, const float* w, std::size_t ldw, std::size_t depth,
                               std::size_t n) {
  chain_rows<kFused>(acc, x, w, ldw, depth, n);
}
template <bool kFused>
QDRIFT_AVX2_FMA void depthwise_avx2(float* acc, const float* x, const float* w, std::size_t n, std::size_t multiplier) {
  depthwise_chain<kFused>(acc, x, w, n, multiplier);
}
QDRIFT_AVX2_FMA void fma_epilogue_avx2(const std::int32_t* c, const std::int32_t* wsum, std::int32_t zp, float sf,
                                       const float* pcs, const float* b, std::size_t begin, std::size_t end, float lo,
                                       float hi, float* y) {
  epilogue_run<ConvEpilogue::kFma>(c, wsum, zp, sf, pcs, b, begin, end, lo, hi, y);
}
#undef QDRIFT_AVX2_FMA
#endif

}  // namespace
}  // namespace qdrift::fast

namespace qdrift::detail {

const std::vector<FloatKernels>& available_float_kernels() {
  static const std::vector<FloatKernels> kernels = [] {
    using namespace fast;
    std::vector<FloatKernels> k{{"portable",
                                 {&chain_portable<false>, &chain_portable<true>},
                                 {&rows_portable<false>, &rows_portable<true>},
                                 {&depthwise_portable<false>, &depthwise_portable<true>},
                                 &fma_epilogue_portable}};
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      k.push_back({"avx2_fma",
                   {&chain_avx2<false>, &chain_avx2<true>},
                   {&rows_avx2<false>, &rows_avx2<true>},
                   {&depthwise_avx2<false>, &depthwise_avx2<true>},
                   &fma_epilogue_avx2});
#endif
    return k;
  }();
  return kernels;
}

}  // namespace qdrift::detail

namespace qdrift::fast {

bool fully_connected_f32(const detail::FloatKernels& fk, KernelPath path, const float* x, std::size_t batch, std::size_t in, const float* filter,
                         std::size_t out, const float* bias, float lo, float hi, float* y) {
  const bool builtin = path == KernelPath::kBuiltin || path == KernelPath::kTfBuiltin;
  const bool avx = path == KernelPath::kTfBuiltin;
  // Matrix-vector and tiny products sum each output in lanes of its own: the reference runs them.
  if (builtin && detail::eigen_sum_order(out, in, batch) != detail::EigenSum::kSequential) return false;
  const bool fused = path == KernelPath::kXnnpack;
  // filter (out, in) -> (in, out), in tiles (a plain strided transpose thrashes the cache): each
  // tap's weights contiguous over outputs. Worth it from a few batch rows on.
  const bool transpose = batch >= 4;
  constexpr std::size_t kTile = 16;
  std::vector<float> wt(transpose ? in * out : 0);
  for (std::size_t o0 = 0; transpose && o0 < out; o0 += kTile)
    for (std::size_t i0 = 0; i0 < in; i0 += kTile)
      for (std::size_t o = o0; o < std::min(out, o0 + kTile); ++o)
        for (std::size_t i = i0; i < std::min(in, i0 + kTile); ++i) wt[i * out + o] = filter[o * in + i];
  // Blocks of outputs outer, batch rows inner: a block's weights stay in cache across the rows.
  constexpr std::size_t kOutBlock = 64;
  float acc[kOutBlock];
  for (std::size_t o0 = 0; o0 < out; o0 += kOutBlock) {
    const std::size_t nb = std::min(kOutBlock, out - o0);
    for (std::size_t b = 0; b < batch; ++b) {
      for (std::size_t j = 0; j < nb; ++j) acc[j] = fused && bias ? bias[o0 + j] : 0.0f;
      if (transpose) {
        fk.chain[fused](acc, x + b * in, wt.data() + o0, out, in, nb);
      } else {
        fk.rows[fused](acc, x + b * in, filter + o0 * in, in, in, nb);
      }
      float* yr = y + b * out;
      for (std::size_t j = 0; j < nb; ++j) {
        const std::size_t o = o0 + j;
        float v = acc[j];
        if (!fused) {   // reference and the builtin GEMM's sequential tiles: the sum, then + bias
          const detail::EigenSum order =
              builtin ? detail::gebp_order(o, b, out, batch, avx) : detail::EigenSum::kSequential;
          if (order != detail::EigenSum::kSequential) v = detail::eigen_dot(order, x + b * in, filter + o * in, in, avx);
          v += bias ? bias[o] : 0.0f;
        }
        yr[o] = detail::clampf(v, lo, hi);
      }
    }
  }
  return true;
}

bool conv2d_f32(const detail::FloatKernels& fk, KernelPath path, const ConvGeometry& g, const float* x, const float* filter, const float* bias,
                bool depthwise, float lo, float hi, float* y) {
  const bool builtin = path == KernelPath::kBuiltin || path == KernelPath::kTfBuiltin;
  const std::size_t pixels = g.n * g.oh * g.ow, per_image = g.oh * g.ow;
  if (builtin && g.groups == 1 && !depthwise) {   // im2col, then the builtin float GEMM's orders
    const bool avx = path == KernelPath::kTfBuiltin;
    const std::size_t depth = g.kh * g.kw * g.c;
    if (detail::eigen_sum_order(g.o, depth, pixels) != detail::EigenSum::kSequential) return false;
    const std::size_t tile = avx ? 16 : 8;   // gebp_order: rows in whole tiles of `tile`, or columns
    std::vector<float> patch(depth), acc(g.o), rows;   // past the last whole group of 4, sum in order
    for (std::size_t m = 0; m < pixels; ++m) {
      const std::size_t ox = m % g.ow, oy = (m / g.ow) % g.oh, n = m / per_image;
      for (std::size_t ky = 0; ky < g.kh; ++ky)
        for (std::size_t kx = 0; kx < g.kw; ++kx) {
          const std::ptrdiff_t iy = detail::conv_input_index(oy, ky, g.sh, g.dh, g.pad_top, g.h);
          const std::ptrdiff_t ix = detail::conv_input_index(ox, kx, g.sw, g.dw, g.pad_left, g.w);
          float* dst = patch.data() + (ky * g.kw + kx) * g.c;
          if (iy < 0 || ix < 0) {
            std::fill(dst, dst + g.c, 0.0f);   // padding as zeros, summed like any tap
          } else {
            const float* src = x + ((n * g.h + static_cast<std::size_t>(iy)) * g.w + static_cast<std::size_t>(ix)) * g.c;
            std::copy(src, src + g.c, dst);
          }
        }
      const std::size_t sequential = m >= pixels / 4 * 4 ? g.o : g.o / tile * tile;
      std::fill(acc.begin(), acc.end(), 0.0f);
      fk.chain[0](acc.data(), patch.data(), filter, g.o, depth, sequential);   // filter (depth, O) as stored
      if (sequential < g.o && rows.empty()) {   // filter rows (O, depth) for the other tiles' orders
        rows.resize(g.o * depth);
        for (std::size_t oc = 0; oc < g.o; ++oc)
          for (std::size_t k = 0; k < depth; ++k) rows[oc * depth + k] = filter[k * g.o + oc];
      }
      for (std::size_t oc = sequential; oc < g.o; ++oc)
        acc[oc] = detail::eigen_dot(detail::gebp_order(oc, m, g.o, pixels, avx), patch.data(),
                                    rows.data() + oc * depth, depth, avx);
      for (std::size_t oc = 0; oc < g.o; ++oc) y[m * g.o + oc] = detail::clampf(acc[oc] + (bias ? bias[oc] : 0.0f), lo, hi);
    }
    return true;
  }
  const bool fused = path == KernelPath::kXnnpack;
  const bool from_bias = fused || (builtin && depthwise);
  const bool columns_first = fused && g.cg() == 1 && g.og() == 1;   // XNNPACK's dwconv: kx outer, ky inner
  const std::size_t cg = g.cg(), og = g.og();
  std::vector<float> acc(g.o);
  for (std::size_t m = 0; m < pixels; ++m) {
    const std::size_t ox = m % g.ow, oy = (m / g.ow) % g.oh, n = m / per_image;
    for (std::size_t oc = 0; oc < g.o; ++oc) acc[oc] = from_bias && bias ? bias[oc] : 0.0f;
    for (std::size_t t = 0; t < g.kh * g.kw; ++t) {
      const std::size_t ky = columns_first ? t % g.kh : t / g.kw, kx = columns_first ? t / g.kh : t % g.kw;
      const std::ptrdiff_t iy = detail::conv_input_index(oy, ky, g.sh, g.dh, g.pad_top, g.h);
      const std::ptrdiff_t ix = detail::conv_input_index(ox, kx, g.sw, g.dw, g.pad_left, g.w);
      if (iy < 0 || ix < 0) continue;   // padding adds nothing
      const float* xp = x + ((n * g.h + static_cast<std::size_t>(iy)) * g.w + static_cast<std::size_t>(ix)) * g.c;
      const float* wp = filter + (ky * g.kw + kx) * cg * g.o;
      if (cg == 1) {
        fk.depthwise[fused](acc.data(), xp, wp, g.o, og);
      } else {
        for (std::size_t grp = 0; grp < g.groups; ++grp)
          fk.chain[fused](acc.data() + grp * og, xp + grp * cg, wp + grp * og, g.o, cg, og);
      }
    }
    for (std::size_t oc = 0; oc < g.o; ++oc) {
      const float v = from_bias ? acc[oc] : acc[oc] + (bias ? bias[oc] : 0.0f);
      y[m * g.o + oc] = detail::clampf(v, lo, hi);
    }
  }
  return true;
}

}  // namespace qdrift::fast
