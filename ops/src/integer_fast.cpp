// SPDX-License-Identifier: Apache-2.0
// Fast int8 FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D, bit-identical to integer.cpp's loops.
//
// acc[o] = bias[o] + sum_i w[o, i] * (x[i] - zp) is computed as (bias[o] - zp * sum_i w[o, i]) +
// sum_i w[o, i] * x[i]: an int8 GEMM (dot form, weights as TFLite stores them, K contiguous),
// then a vectorized output stage per row. Convs gather their taps into rows first (im2col, in
// chunks of kChunkRows output pixels; padding taps hold zp, so they add w * (zp - zp) = 0);
// one-input-channel-per-group convs (depthwise) accumulate taps across channels instead.
// Every sum is exact in int32 when |bias| + max|x - zp| * sum|w| <= INT32_MAX for each output
// channel (checked here); otherwise the caller runs the reference, whose order defines overflow.
#include "integer_fast.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <vector>

#include "conv_index.h"

namespace qdrift {
namespace detail {
namespace baseline {
void gemm(const std::int8_t*, std::size_t, std::size_t, const std::int8_t*, std::size_t, std::size_t,
          const std::int32_t*, std::int32_t*, std::size_t);
void depthwise_tap(std::int32_t*, const std::int8_t*, const std::int8_t*, std::size_t, std::size_t, std::int32_t);
void requantize_row(const std::int32_t*, std::size_t, const StageArrays&, std::int8_t*);
void row_sums(const std::int8_t*, std::size_t, std::size_t, std::int32_t*, std::int32_t*);
}  // namespace baseline
#if QDRIFT_X86_ISAS
namespace avx2 {
void gemm(const std::int8_t*, std::size_t, std::size_t, const std::int8_t*, std::size_t, std::size_t,
          const std::int32_t*, std::int32_t*, std::size_t);
void depthwise_tap(std::int32_t*, const std::int8_t*, const std::int8_t*, std::size_t, std::size_t, std::int32_t);
void requantize_row(const std::int32_t*, std::size_t, const StageArrays&, std::int8_t*);
void row_sums(const std::int8_t*, std::size_t, std::size_t, std::int32_t*, std::int32_t*);
}  // namespace avx2
namespace avx512 {
void gemm(const std::int8_t*, std::size_t, std::size_t, const std::int8_t*, std::size_t, std::size_t,
          const std::int32_t*, std::int32_t*, std::size_t);
void depthwise_tap(std::int32_t*, const std::int8_t*, const std::int8_t*, std::size_t, std::size_t, std::int32_t);
void requantize_row(const std::int32_t*, std::size_t, const StageArrays&, std::int8_t*);
void row_sums(const std::int8_t*, std::size_t, std::size_t, std::int32_t*, std::int32_t*);
}  // namespace avx512
#endif

const std::vector<Int8Kernels>& available_int8_kernels() {
  static const std::vector<Int8Kernels> kernels = [] {
    std::vector<Int8Kernels> k{{"baseline", &baseline::gemm, &baseline::depthwise_tap, &baseline::requantize_row, &baseline::row_sums}};
#if QDRIFT_X86_ISAS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) k.push_back({"avx2", &avx2::gemm, &avx2::depthwise_tap, &avx2::requantize_row, &avx2::row_sums});
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vnni"))
      k.push_back({"avx512_vnni", &avx512::gemm, &avx512::depthwise_tap, &avx512::requantize_row, &avx512::row_sums});
#endif
    return k;
  }();
  return kernels;
}
}  // namespace detail

namespace fast {
namespace {

constexpr std::size_t kChunkRows = 64;   // output rows per GEMM call: keeps the im2col block in L2

const detail::Int8Kernels& best_kernels() {
  static const detail::Int8Kernels& best = detail::available_int8_kernels().back();
  return best;
}

// The output stage's parameters as per-channel arrays (validated by OutputStage::per_channel).
struct Stage {
  std::vector<RequantParams> params;
  std::vector<std::int32_t> base, multiplier, left, right, total, mask;
  std::vector<std::int64_t> round;
  std::vector<float> scale_f;
  std::vector<double> scale_d;

  Stage(const OutputStage& stage, std::size_t channels) : params(stage.per_channel(channels)), base(channels) {
    for (const RequantParams& p : params) {
      multiplier.push_back(p.multiplier);
      left.push_back(p.shift > 0 ? p.shift : 0);
      right.push_back(p.shift > 0 ? 0 : -p.shift);
      total.push_back(31 - p.shift);
      mask.push_back(static_cast<std::int32_t>((std::int64_t{1} << right.back()) - 1));
      round.push_back(p.method == RequantMethod::kSingle ? std::int64_t{1} << (total.back() - 1)
                                                         : (std::int64_t{1} << right.back()) >> 1);
      scale_f.push_back(static_cast<float>(p.scale));
      scale_d.push_back(p.scale);
    }
  }
  // y = output stage of one row; channels from stage.tail_from on take stage.tail_method.
  void requantize_row(const detail::Int8Kernels& k, const detail::StageArrays& a, const OutputStage& stage,
                      const std::int32_t* sums, std::int8_t* y) const {
    const std::size_t n = base.size(), split = std::min(stage.tail_from, n);
    k.requantize_row(sums, split, a, y);
    if (split == n) return;
    detail::StageArrays t = a;
    t.method = stage.tail_method;
    t.base += split;
    t.multiplier += split;
    t.left += split;
    t.right += split;
    t.total += split;
    t.mask += split;
    t.round += split;
    t.scale_f += split;
    t.scale_d += split;
    t.params += split;
    k.requantize_row(sums + split, n - split, t, y + split);
  }
  detail::StageArrays arrays(const OutputStage& stage) const {
    detail::StageArrays a;
    a.method = stage.method;
    a.base = base.data();
    a.multiplier = multiplier.data();
    a.left = left.data();
    a.right = right.data();
    a.total = total.data();
    a.mask = mask.data();
    a.round = round.data();
    a.scale_f = scale_f.data();
    a.scale_d = scale_d.data();
    a.params = params.data();
    a.zero_point = stage.zero_point;
    a.act_min = stage.act_min;
    a.act_max = stage.act_max;
    return a;
  }
};

// Row sums of the (rows, k) weights, and whether every partial sum of every channel stays
// within int32: |bias| + d * sum|w| <= INT32_MAX with d = max |x - zp| over int8 x. The bound
// with sum|w| <= 128 * depth is tried first; the absolute sums are only computed when it fails.
bool weight_sums(const detail::Int8Kernels& k, const std::int8_t* w, std::size_t rows, std::size_t depth,
                 const std::int32_t* bias, std::int32_t zp, std::vector<std::int32_t>* wsum) {
  wsum->assign(rows, 0);
  const std::int64_t d = std::max(std::abs(-128 - std::int64_t{zp}), std::abs(127 - std::int64_t{zp}));
  std::int64_t max_bias = 0;
  for (std::size_t o = 0; bias && o < rows; ++o) max_bias = std::max(max_bias, std::abs(std::int64_t{bias[o]}));
  constexpr std::int64_t kMax = std::numeric_limits<std::int32_t>::max();
  if (depth < (std::size_t{1} << 24) && 128 * static_cast<std::int64_t>(depth) <= (kMax - max_bias) / d) {
    k.row_sums(w, rows, depth, wsum->data(), nullptr);
    return true;
  }
  if (depth >= (std::size_t{1} << 24)) return false;   // int32 row sums would not be exact
  std::vector<std::int32_t> abs_sum(rows);
  k.row_sums(w, rows, depth, wsum->data(), abs_sum.data());
  for (std::size_t o = 0; o < rows; ++o) {
    const std::int64_t b = bias ? std::abs(std::int64_t{bias[o]}) : 0;
    if (abs_sum[o] > (kMax - b) / d) return false;
  }
  return true;
}

// base[o] = bias[o] - zp * wsum[o]; fits int32 whenever weight_sums returned true.
void set_base(Stage* st, const std::int32_t* bias, std::int32_t zp, const std::vector<std::int32_t>& wsum) {
  for (std::size_t o = 0; o < st->base.size(); ++o)
    st->base[o] = static_cast<std::int32_t>((bias ? std::int64_t{bias[o]} : 0) - std::int64_t{zp} * wsum[o]);
}

bool depthwise(const detail::Int8Kernels& k, const ConvGeometry& g, const std::int8_t* x, std::int32_t zp,
               const std::int8_t* filter, const std::int32_t* bias, const OutputStage& stage, std::int8_t* y) {
  // filter (KH, KW, 1, O): tap t's weights are the contiguous row filter[t * O : (t + 1) * O].
  const std::int64_t d = std::max(std::abs(-128 - std::int64_t{zp}), std::abs(127 - std::int64_t{zp}));
  std::vector<std::int64_t> abs_sum(g.o, 0);
  for (std::size_t t = 0; t < g.kh * g.kw; ++t)
    for (std::size_t oc = 0; oc < g.o; ++oc) abs_sum[oc] += std::abs(filter[t * g.o + oc]);
  for (std::size_t oc = 0; oc < g.o; ++oc)
    if (abs_sum[oc] > (std::numeric_limits<std::int32_t>::max() - (bias ? std::abs(std::int64_t{bias[oc]}) : 0)) / d)
      return false;
  Stage st(stage, g.o);
  for (std::size_t oc = 0; oc < g.o; ++oc) st.base[oc] = bias ? bias[oc] : 0;
  const detail::StageArrays arrays = st.arrays(stage);
  std::vector<std::int32_t> acc(g.o);
  for (std::size_t n = 0; n < g.n; ++n)
    for (std::size_t oy = 0; oy < g.oh; ++oy)
      for (std::size_t ox = 0; ox < g.ow; ++ox) {
        std::fill(acc.begin(), acc.end(), 0);
        for (std::size_t ky = 0; ky < g.kh; ++ky) {
          const std::ptrdiff_t iy = detail::conv_input_index(oy, ky, g.sh, g.dh, g.pad_top, g.h);
          if (iy < 0) continue;
          for (std::size_t kx = 0; kx < g.kw; ++kx) {
            const std::ptrdiff_t ix = detail::conv_input_index(ox, kx, g.sw, g.dw, g.pad_left, g.w);
            if (ix < 0) continue;
            const std::int8_t* xp =
                x + ((n * g.h + static_cast<std::size_t>(iy)) * g.w + static_cast<std::size_t>(ix)) * g.c;
            k.depthwise_tap(acc.data(), filter + (ky * g.kw + kx) * g.o, xp, g.o, g.og(), zp);
          }
        }
        st.requantize_row(k, arrays, stage, acc.data(), y + ((n * g.oh + oy) * g.ow + ox) * g.o);
      }
  return true;
}

}  // namespace

bool fully_connected_int8_with(const detail::Int8Kernels& k, const std::int8_t* x, std::size_t batch, std::size_t in,
                               std::int32_t x_zero_point, const std::int8_t* filter, std::size_t out,
                               const std::int32_t* bias, const OutputStage& stage, std::int8_t* y) {
  Stage st(stage, out);
  std::vector<std::int32_t> wsum;
  if (!weight_sums(k, filter, out, in, bias, x_zero_point, &wsum)) return false;
  set_base(&st, bias, x_zero_point, wsum);
  const detail::StageArrays arrays = st.arrays(stage);
  std::vector<std::int32_t> c(std::min(batch, kChunkRows) * out);
  for (std::size_t n0 = 0; n0 < batch; n0 += kChunkRows) {
    const std::size_t rows = std::min(kChunkRows, batch - n0);
    k.gemm(x + n0 * in, rows, in, filter, out, in, wsum.data(), c.data(), out);
    for (std::size_t r = 0; r < rows; ++r) st.requantize_row(k, arrays, stage, c.data() + r * out, y + (n0 + r) * out);
  }
  return true;
}

bool conv2d_int8_with(const detail::Int8Kernels& k, const ConvGeometry& g, const std::int8_t* x,
                      std::int32_t x_zero_point, const std::int8_t* filter, const std::int32_t* bias,
                      const OutputStage& stage, std::int8_t* y) {
  // Padding taps are gathered as the int8 value zp, so zp must be one.
  if (x_zero_point < -128 || x_zero_point > 127) return false;
  if (g.cg() == 1) return depthwise(k, g, x, x_zero_point, filter, bias, stage, y);
  const std::size_t cg = g.cg(), og = g.og(), depth = g.kh * g.kw * cg;
  // filter (KH, KW, C/groups, O) -> rows (O, KH * KW * C/groups): output channel oc's taps.
  std::vector<std::int8_t> rows_w(g.o * depth);
  for (std::size_t i = 0; i < depth; ++i)
    for (std::size_t oc = 0; oc < g.o; ++oc) rows_w[oc * depth + i] = filter[i * g.o + oc];
  std::vector<std::int32_t> wsum;
  if (!weight_sums(k, rows_w.data(), g.o, depth, bias, x_zero_point, &wsum)) return false;
  Stage st(stage, g.o);
  set_base(&st, bias, x_zero_point, wsum);
  const detail::StageArrays arrays = st.arrays(stage);

  const std::size_t pixels = g.n * g.oh * g.ow;
  // A 1x1, stride-1, unpadded, ungrouped conv reads its rows straight from x.
  const bool direct = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.pad_top == 0 && g.pad_left == 0 &&
                      g.groups == 1 && g.oh == g.h && g.ow == g.w;
  std::vector<std::int8_t> cols(direct ? 0 : std::min(pixels, kChunkRows) * depth);
  std::vector<std::int32_t> c(std::min(pixels, kChunkRows) * g.o);
  const auto zp8 = static_cast<std::int8_t>(x_zero_point);
  for (std::size_t m0 = 0; m0 < pixels; m0 += kChunkRows) {
    const std::size_t rows = std::min(kChunkRows, pixels - m0);
    for (std::size_t grp = 0; grp < g.groups; ++grp) {
      const std::int8_t* a = x + m0 * g.c;
      if (!direct) {
        for (std::size_t r = 0; r < rows; ++r) {   // im2col: row r holds pixel m0 + r's taps (ky, kx, ic)
          const std::size_t m = m0 + r, ox = m % g.ow, oy = (m / g.ow) % g.oh, n = m / (g.ow * g.oh);
          std::int8_t* dst = cols.data() + r * depth;
          for (std::size_t ky = 0; ky < g.kh; ++ky) {
            const std::ptrdiff_t iy = detail::conv_input_index(oy, ky, g.sh, g.dh, g.pad_top, g.h);
            for (std::size_t kx = 0; kx < g.kw; ++kx, dst += cg) {
              const std::ptrdiff_t ix = detail::conv_input_index(ox, kx, g.sw, g.dw, g.pad_left, g.w);
              if (iy < 0 || ix < 0) {
                std::fill(dst, dst + cg, zp8);
                continue;
              }
              const std::int8_t* src =
                  x + ((n * g.h + static_cast<std::size_t>(iy)) * g.w + static_cast<std::size_t>(ix)) * g.c + grp * cg;
              std::copy(src, src + cg, dst);
            }
          }
        }
        a = cols.data();
      }
      k.gemm(a, rows, direct ? g.c : depth, rows_w.data() + grp * og * depth, og, depth, wsum.data() + grp * og,
             c.data() + grp * og, g.o);
    }
    for (std::size_t r = 0; r < rows; ++r) st.requantize_row(k, arrays, stage, c.data() + r * g.o, y + (m0 + r) * g.o);
  }
  return true;
}

bool fully_connected_int8(const std::int8_t* x, std::size_t batch, std::size_t in, std::int32_t x_zero_point,
                          const std::int8_t* filter, std::size_t out, const std::int32_t* bias,
                          const OutputStage& stage, std::int8_t* y) {
  return fully_connected_int8_with(best_kernels(), x, batch, in, x_zero_point, filter, out, bias, stage, y);
}

bool conv2d_int8(const ConvGeometry& g, const std::int8_t* x, std::int32_t x_zero_point, const std::int8_t* filter,
                 const std::int32_t* bias, const OutputStage& stage, std::int8_t* y) {
  return conv2d_int8_with(best_kernels(), g, x, x_zero_point, filter, bias, stage, y);
}

}  // namespace fast
}  // namespace qdrift
