// SPDX-License-Identifier: Apache-2.0
// Integer FULLY_CONNECTED and CONV_2D: the readable reference loops, summing into a modelled
// accumulator (int32 with wrap by default, as the int8 kernels use; see AccumulatorSpec), and the
// dispatch to the fast path (integer_fast.cpp), which gives the same bits.
#include "qdrift/ops/integer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "conv_index.h"
#include "integer_fast.h"
#include "qdrift/core/check.h"
#include "qdrift/core/rounding.h"

namespace qdrift {

std::vector<RequantParams> OutputStage::per_channel(std::size_t channels) const {
  const bool real = requant_method_uses_real_scale(method);
  const std::size_t given = real ? scale.size() : multiplier.size();
  QDRIFT_CHECK(given == 1 || given == channels, ConfigError, "output stage: ", given,
               " requantization parameters for ", channels, " output channels");
  QDRIFT_CHECK(real || shift.size() == multiplier.size(), ConfigError, "output stage: ", multiplier.size(),
               " multipliers but ", shift.size(), " shifts");
  QDRIFT_CHECK(act_min <= act_max, ConfigError, "output stage: act_min ", act_min, " > act_max ", act_max);
  QDRIFT_CHECK(tail_from >= channels || requant_method_uses_real_scale(tail_method) == real, ConfigError,
               "output stage: tail_method ", requant_method_name(tail_method), " and method ",
               requant_method_name(method), " must both be fixed-point or both real-scale");
  std::vector<RequantParams> out(channels);
  for (std::size_t c = 0; c < channels; ++c) {
    RequantParams& p = out[c];
    const std::size_t i = given == 1 ? 0 : c;
    p.method = c >= tail_from ? tail_method : method;
    if (real) {
      p.scale = scale[i];
    } else {
      p.multiplier = multiplier[i];
      p.shift = shift[i];
    }
    p.zero_point = zero_point;
    p.qmin = act_min;
    p.qmax = act_max;
    validate(p);
  }
  return out;
}

void validate(const AccumulatorSpec& a) {
  QDRIFT_CHECK(a.bits >= 2 && a.bits <= 64, ConfigError, "accumulator: bits must be in [2, 64], got ", a.bits);
}

OverflowRule parse_overflow_rule(std::string_view name) {
  if (name == "wrap") return OverflowRule::kWrap;
  if (name == "saturate") return OverflowRule::kSaturate;
  throw ConfigError("accumulator: unknown overflow rule '" + std::string(name) + "'; expected wrap or saturate");
}

namespace {

// A `bits`-wide signed accumulator that counts every step whose exact result leaves its range
// (see AccumulatorSpec). Values are held in int64; the 64-bit case detects overflow with the
// compiler's checked addition and wraps through uint64.
class ModelledAccumulator {
 public:
  ModelledAccumulator(const AccumulatorSpec& spec, std::uint64_t* overflows)
      : bits_(spec.bits), saturate_(spec.on_overflow == OverflowRule::kSaturate), overflows_(overflows) {
    validate(spec);
    max_ = bits_ == 64 ? INT64_MAX : (std::int64_t{1} << (bits_ - 1)) - 1;
    min_ = -max_ - 1;
  }
  void start(std::int64_t bias) {
    value_ = 0;
    add(bias);
  }
  void add(std::int64_t v) {
    std::int64_t exact = 0;
    bool out = false;
    if (bits_ == 64) {
      out = __builtin_add_overflow(value_, v, &exact);   // exact then holds the wrapped sum
      if (out && saturate_) exact = v > 0 ? max_ : min_;
    } else {
      exact = value_ + v;   // |value_| < 2^62 and |v| < 2^32: no int64 overflow
      out = exact < min_ || exact > max_;
      if (out) exact = saturate_ ? (exact < min_ ? min_ : max_) : wrap(exact);
    }
    if (out) ++*overflows_;
    value_ = exact;
  }
  std::int64_t value() const { return value_; }

 private:
  std::int64_t wrap(std::int64_t v) const {   // two's complement, modulo 2^bits
    const std::uint64_t mask = (std::uint64_t{1} << bits_) - 1;
    const std::uint64_t u = static_cast<std::uint64_t>(v) & mask;
    return static_cast<std::int64_t>((u >> (bits_ - 1)) & 1 ? u | ~mask : u);
  }
  int bits_;
  bool saturate_;
  std::uint64_t* overflows_;
  std::int64_t min_ = 0, max_ = 0, value_ = 0;
};

void fully_connected_int8_ref(const std::int8_t* x, std::size_t batch, std::size_t in, std::int32_t x_zero_point,
                              const std::int8_t* filter, std::size_t out, const std::int32_t* bias,
                              const OutputStage& stage, std::int8_t* y, const AccumulatorSpec& spec,
                              std::uint64_t* overflows) {
  const std::vector<RequantParams> rq = stage.per_channel(out);
  ModelledAccumulator acc(spec, overflows);
  for (std::size_t n = 0; n < batch; ++n)
    for (std::size_t o = 0; o < out; ++o) {
      // acc = bias[o] + sum_i filter[o, i] * (x[n, i] - zp_in)
      acc.start(bias ? bias[o] : 0);
      for (std::size_t i = 0; i < in; ++i)
        acc.add(std::int64_t{filter[o * in + i]} * (x[n * in + i] - std::int64_t{x_zero_point}));
      y[n * out + o] = static_cast<std::int8_t>(requantize(acc.value(), rq[o]));
    }
}

void conv2d_int8_ref(const ConvGeometry& g, const std::int8_t* x, std::int32_t x_zero_point, const std::int8_t* filter,
                     const std::int32_t* bias, const OutputStage& stage, std::int8_t* y, const AccumulatorSpec& spec,
                     std::uint64_t* overflows) {
  const std::vector<RequantParams> rq = stage.per_channel(g.o);
  ModelledAccumulator acc(spec, overflows);
  for (std::size_t n = 0; n < g.n; ++n)
    for (std::size_t oy = 0; oy < g.oh; ++oy)
      for (std::size_t ox = 0; ox < g.ow; ++ox)
        for (std::size_t oc = 0; oc < g.o; ++oc) {
          const std::size_t group = oc / g.og();
          acc.start(bias ? bias[oc] : 0);
          for (std::size_t ky = 0; ky < g.kh; ++ky) {
            const std::ptrdiff_t iy = detail::conv_input_index(oy, ky, g.sh, g.dh, g.pad_top, g.h);
            if (iy < 0) continue;   // padding: x == zp_in, adds 0
            for (std::size_t kx = 0; kx < g.kw; ++kx) {
              const std::ptrdiff_t ix = detail::conv_input_index(ox, kx, g.sw, g.dw, g.pad_left, g.w);
              if (ix < 0) continue;
              const std::int8_t* xp =
                  x + ((n * g.h + static_cast<std::size_t>(iy)) * g.w + static_cast<std::size_t>(ix)) * g.c + group * g.cg();
              for (std::size_t ic = 0; ic < g.cg(); ++ic)
                acc.add(std::int64_t{filter[((ky * g.kw + kx) * g.cg() + ic) * g.o + oc]} *
                        (xp[ic] - std::int64_t{x_zero_point}));
            }
          }
          y[((n * g.oh + oy) * g.ow + ox) * g.o + oc] = static_cast<std::int8_t>(requantize(acc.value(), rq[oc]));
        }
}

}  // namespace

void fully_connected_int8(const std::int8_t* x, std::size_t batch, std::size_t in, std::int32_t x_zero_point,
                          const std::int8_t* filter, std::size_t out, const std::int32_t* bias,
                          const OutputStage& stage, std::int8_t* y, Path path, const AccumulatorSpec& accumulator,
                          std::uint64_t* overflows) {
  std::uint64_t count = 0;
  validate(accumulator);
  const bool done = path == Path::kFast && accumulator.is_default() &&
                    fast::fully_connected_int8(x, batch, in, x_zero_point, filter, out, bias, stage, y);
  if (!done) fully_connected_int8_ref(x, batch, in, x_zero_point, filter, out, bias, stage, y, accumulator, &count);
  if (overflows) *overflows = count;
}

void conv2d_int8(const ConvGeometry& g, const std::int8_t* x, std::int32_t x_zero_point, const std::int8_t* filter,
                 const std::int32_t* bias, const OutputStage& stage, std::int8_t* y, Path path,
                 const AccumulatorSpec& accumulator, std::uint64_t* overflows) {
  std::uint64_t count = 0;
  validate(accumulator);
  const bool done = path == Path::kFast && accumulator.is_default() &&
                    fast::conv2d_int8(g, x, x_zero_point, filter, bias, stage, y);
  if (!done) conv2d_int8_ref(g, x, x_zero_point, filter, bias, stage, y, accumulator, &count);
  if (overflows) *overflows = count;
}

void add_int8(AddKernel kernel, const std::int8_t* a, const std::int8_t* b, std::size_t n, float a_scale,
              std::int32_t a_zero_point, float b_scale, std::int32_t b_zero_point, float out_scale,
              std::int32_t out_zero_point, std::int32_t act_min, std::int32_t act_max, std::int8_t* y) {
  QDRIFT_CHECK(a_scale > 0.0f && b_scale > 0.0f && out_scale > 0.0f, ConfigError, "add_int8: scales must be positive");
  const auto clamp = [&](std::int64_t v) { return static_cast<std::int8_t>(std::clamp<std::int64_t>(v, act_min, act_max)); };
  if (kernel == AddKernel::kTflite) {
    // add.cc Prepare: multipliers relative to twice the larger input scale (a float product).
    constexpr int kLeftShift = 20;
    const double twice_max = 2 * std::max(a_scale, b_scale);
    const QuantizedMultiplier ma = quantize_multiplier(a_scale / twice_max);
    const QuantizedMultiplier mb = quantize_multiplier(b_scale / twice_max);
    const QuantizedMultiplier mo = quantize_multiplier(twice_max / ((1 << kLeftShift) * static_cast<double>(out_scale)));
    for (std::size_t i = 0; i < n; ++i) {
      const std::int32_t sa = requantize_gemmlowp((a[i] - a_zero_point) * (1 << kLeftShift), ma.multiplier, ma.shift);
      const std::int32_t sb = requantize_gemmlowp((b[i] - b_zero_point) * (1 << kLeftShift), mb.multiplier, mb.shift);
      y[i] = clamp(std::int64_t{requantize_gemmlowp(sa + sb, mo.multiplier, mo.shift)} + out_zero_point);
    }
    return;
  }
  // XNNPACK qs8 vadd: both ratios share a shift chosen so the larger multiplier has ~20 bits.
  const float a_ratio = a_scale / out_scale, b_ratio = b_scale / out_scale;
  std::uint32_t ab, bb;
  std::memcpy(&ab, &a_ratio, sizeof ab);
  std::memcpy(&bb, &b_ratio, sizeof bb);
  const int max_exponent = static_cast<int>(std::max(ab >> 23, bb >> 23)) - 127;
  const int shift = 20 - max_exponent;
  const auto am = static_cast<std::int32_t>(round_half_even(std::ldexp(a_ratio, shift)));
  const auto bm = static_cast<std::int32_t>(round_half_even(std::ldexp(b_ratio, shift)));
  const std::int64_t bias = (std::int64_t{1} << (shift - 1)) - std::int64_t{am} * a_zero_point - std::int64_t{bm} * b_zero_point;
  for (std::size_t i = 0; i < n; ++i) {
    const std::int64_t acc = bias + std::int64_t{am} * a[i] + std::int64_t{bm} * b[i];
    y[i] = clamp((acc >> shift) + out_zero_point);
  }
}

void mul_int8(MulKernel kernel, const std::int8_t* a, const std::int8_t* b, std::size_t n, float a_scale,
              std::int32_t a_zero_point, float b_scale, std::int32_t b_zero_point, float out_scale,
              std::int32_t out_zero_point, std::int32_t act_min, std::int32_t act_max, std::int8_t* y) {
  QDRIFT_CHECK(a_scale > 0.0f && b_scale > 0.0f && out_scale > 0.0f && std::isfinite(a_scale) &&
                   std::isfinite(b_scale) && std::isfinite(out_scale),
               ConfigError, "mul_int8: scales must be finite and positive");
  RequantParams rq;
  if (kernel == MulKernel::kTflite) {
    // mul.cc Prepare: the real multiplier in float32 (scale * scale / scale on the float fields).
    const QuantizedMultiplier m =
        quantize_multiplier(static_cast<double>(a_scale * b_scale / out_scale));
    rq.method = RequantMethod::kGemmlowp;
    rq.multiplier = m.multiplier;
    rq.shift = m.shift;
  } else {
    // XNNPACK's create: both products in float32.
    rq.method = RequantMethod::kXnnpack;
    rq.scale = (a_scale * b_scale) / out_scale;
  }
  rq.zero_point = out_zero_point;
  rq.qmin = act_min;
  rq.qmax = act_max;
  validate(rq);
  for (std::size_t i = 0; i < n; ++i) {
    // (a - zp_a) * (b - zp_b): |factors| <= 255, so the product is exact in int32.
    const std::int32_t acc = (a[i] - a_zero_point) * (b[i] - b_zero_point);
    y[i] = static_cast<std::int8_t>(requantize(acc, rq));
  }
}

std::vector<std::int8_t> lut_int8(LutFunction f, float in_scale, std::int32_t in_zero_point, float out_scale,
                                  std::int32_t out_zero_point, bool round_half_even_rule) {
  std::vector<std::int8_t> lut(256);
  const float inverse = 1.0f / out_scale;
  for (int v = -128; v <= 127; ++v) {
    const float x = in_scale * static_cast<float>(v - in_zero_point);
    const float t = f == LutFunction::kTanh ? std::tanh(x) : 1.0f / (1.0f + std::exp(-x));
    const float scaled = t * inverse;
    const float r = round_half_even_rule ? round_half_even(scaled + static_cast<float>(out_zero_point))
                                         : round_half_away(scaled) + static_cast<float>(out_zero_point);
    lut[static_cast<std::size_t>(v + 128)] = static_cast<std::int8_t>(std::clamp(r, -128.0f, 127.0f));
  }
  return lut;
}

}  // namespace qdrift
