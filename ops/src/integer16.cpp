// SPDX-License-Identifier: Apache-2.0
// int16x8 kernels: the readable reference loops of LiteRT's int16-activation FULLY_CONNECTED,
// CONV_2D, ADD, TANH, LOGISTIC, QUANTIZE and DEQUANTIZE (restated from tflite/kernels/
// {fully_connected,conv,depthwise_conv,add,activations,quantize}.cc and internal/reference/
// integer_ops/{fully_connected,conv,depthwise_conv,tanh,logistic}.h, checked against the
// ai-edge-litert 2.3 interpreter by tests/python/test_int16x8.py).
#include "qdrift/ops/integer16.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "conv_index.h"
#include "qdrift/core/check.h"
#include "qdrift/core/rounding.h"

namespace qdrift {
namespace {

// The accumulator of the bias's width: the exact int64 sum of w * x (at most 2^23 per term) plus
// the bias, reduced modulo 2^32 for int32 accumulators and modulo 2^64 for int64 ones. That is
// exactly what a wrapping register accumulating term by term ends with.
template <class Bias>
std::int64_t finish_sum(std::int64_t sum, const Bias* bias, std::size_t channel) {
  const std::uint64_t b = bias ? static_cast<std::uint64_t>(static_cast<std::int64_t>(bias[channel])) : 0;
  const std::uint64_t total = static_cast<std::uint64_t>(sum) + b;   // wraps modulo 2^64
  if constexpr (sizeof(Bias) == 4) return static_cast<std::int32_t>(static_cast<std::uint32_t>(total));
  return static_cast<std::int64_t>(total);
}

std::int16_t clamp_int16(std::int64_t v) {
  return static_cast<std::int16_t>(std::clamp<std::int64_t>(v, -32768, 32767));
}

// LiteRT's CheckedLog2: log2 via float logs, rounded half away; "a power of two" when the
// fractional part is below 1e-3.
bool checked_log2(float x, int* log2_rounded) {
  const float x_log2 = std::log(x) * (1.0f / std::log(2.0f));
  const float rounded = round_half_away(x_log2);
  *log2_rounded = static_cast<int>(rounded);
  return std::fabs(x_log2 - rounded) < 1e-3f;
}

// sigmoid(i / 24) in 0.16 fixed point, LiteRT's sigmoid_table_uint16 (internal/common.h): tuned
// constants within 1.2 of 65536 / (1 + exp(-i / 24)), not reproducible by one rounding rule.
constexpr std::uint16_t kSigmoidTable[256] = {
    32768, 33451, 34133, 34813, 35493, 36169, 36843, 37513, 38180, 38841, 39498, 40149, 40794, 41432, 42064, 42688,
    43304, 43912, 44511, 45102, 45683, 46255, 46817, 47369, 47911, 48443, 48964, 49475, 49975, 50464, 50942, 51409,
    51865, 52311, 52745, 53169, 53581, 53983, 54374, 54755, 55125, 55485, 55834, 56174, 56503, 56823, 57133, 57433,
    57724, 58007, 58280, 58544, 58800, 59048, 59288, 59519, 59743, 59959, 60168, 60370, 60565, 60753, 60935, 61110,
    61279, 61441, 61599, 61750, 61896, 62036, 62172, 62302, 62428, 62549, 62666, 62778, 62886, 62990, 63090, 63186,
    63279, 63368, 63454, 63536, 63615, 63691, 63765, 63835, 63903, 63968, 64030, 64090, 64148, 64204, 64257, 64308,
    64357, 64405, 64450, 64494, 64536, 64576, 64614, 64652, 64687, 64721, 64754, 64786, 64816, 64845, 64873, 64900,
    64926, 64950, 64974, 64997, 65019, 65039, 65060, 65079, 65097, 65115, 65132, 65149, 65164, 65179, 65194, 65208,
    65221, 65234, 65246, 65258, 65269, 65280, 65291, 65301, 65310, 65319, 65328, 65337, 65345, 65352, 65360, 65367,
    65374, 65381, 65387, 65393, 65399, 65404, 65410, 65415, 65420, 65425, 65429, 65433, 65438, 65442, 65445, 65449,
    65453, 65456, 65459, 65462, 65465, 65468, 65471, 65474, 65476, 65479, 65481, 65483, 65485, 65488, 65489, 65491,
    65493, 65495, 65497, 65498, 65500, 65501, 65503, 65504, 65505, 65507, 65508, 65509, 65510, 65511, 65512, 65513,
    65514, 65515, 65516, 65517, 65517, 65518, 65519, 65520, 65520, 65521, 65522, 65522, 65523, 65523, 65524, 65524,
    65525, 65525, 65526, 65526, 65526, 65527, 65527, 65528, 65528, 65528, 65529, 65529, 65529, 65529, 65530, 65530,
    65530, 65530, 65531, 65531, 65531, 65531, 65531, 65532, 65532, 65532, 65532, 65532, 65532, 65533, 65533, 65533,
    65533, 65533, 65533, 65533, 65533, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65535};

// The kernels' input rescaling (x * multiplier + round) >> left_shift, in wrapping int32.
std::int32_t rescale_input(std::int16_t x, const Int16TableInput& p) {
  const std::int64_t multiplier = p.multiplier == 0 ? (std::int64_t{3} << p.left_shift) : p.multiplier;
  const int shift = p.multiplier == 0 ? 0 : p.left_shift;
  const std::int64_t round = shift > 0 ? (std::int64_t{1} << (shift - 1)) : 0;
  const auto product = static_cast<std::int32_t>(static_cast<std::uint32_t>(x * multiplier + round));
  return product >> shift;   // arithmetic shift (floor), as the kernel's int32 shift
}

// Linear interpolation of the table at |v| with `fraction_bits` fractional bits; saturates at
// index 255 to `saturated`.
std::uint32_t interpolate(std::uint32_t magnitude, int fraction_bits, std::uint32_t saturated) {
  const std::uint32_t index = magnitude >> fraction_bits;
  if (index >= 255) return saturated;
  const std::uint32_t lo = kSigmoidTable[index], hi = kSigmoidTable[index + 1];
  const std::uint32_t fraction = magnitude & ((1u << fraction_bits) - 1);
  return (lo << fraction_bits) + fraction * (hi - lo);
}

std::uint32_t magnitude_of(std::int32_t v) {
  return v < 0 ? 0u - static_cast<std::uint32_t>(v) : static_cast<std::uint32_t>(v);
}


// ---- gemmlowp's 16-bit fixed-point arithmetic (fixedpoint/fixedpoint.h, scalar int16 raw values).
// A Qm value with m integer bits holds raw / 2^(15 - m). Additions wrap like int16 stores; a
// product of Qa and Qb is Q(a+b) via the rounding doubling high multiply.
namespace fixed16 {

using Raw = std::int16_t;

Raw wrap(int v) { return static_cast<Raw>(static_cast<std::uint16_t>(static_cast<unsigned>(v))); }
Raw add(Raw a, Raw b) { return wrap(a + b); }
Raw sub(Raw a, Raw b) { return wrap(a - b); }
Raw neg(Raw a) { return wrap(-a); }

// SaturatingRoundingDoublingHighMul: RHU(a * b / 2^15), saturating (-1) * (-1).
Raw mul(Raw a, Raw b) {
  if (a == b && a == std::numeric_limits<Raw>::min()) return std::numeric_limits<Raw>::max();
  const std::int32_t ab = a * b;
  const std::int32_t nudge = ab >= 0 ? (1 << 14) : (1 - (1 << 14));
  return static_cast<Raw>((ab + nudge) / (1 << 15));   // truncating division: half up overall
}

// RoundingDivideByPOT: RHA(x / 2^e).
Raw divide_by_pot(Raw x, int e) {
  const int mask = (1 << e) - 1;
  const int threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return static_cast<Raw>((x >> e) + ((x & mask) > threshold ? 1 : 0));
}

// SaturatingRoundingMultiplyByPOT: saturating left shift for e > 0, RHA right shift for e < 0.
Raw multiply_by_pot(Raw x, int e) {
  if (e < 0) return divide_by_pot(x, -e);
  const int threshold = (1 << (15 - e)) - 1;
  if (x > threshold) return std::numeric_limits<Raw>::max();
  if (x < -threshold) return std::numeric_limits<Raw>::min();
  return wrap(x * (1 << e));
}

Raw saturating_add(Raw a, Raw b) { return static_cast<Raw>(std::clamp(a + b, -32768, 32767)); }
Raw rounding_half_sum(Raw a, Raw b) {
  const int sum = a + b;
  return static_cast<Raw>((sum + (sum >= 0 ? 1 : -1)) / 2);
}
// gemmlowp writes constants as Q0.31 (or Qm.31-m) int32 values; int16 keeps RHA(v / 2^16).
Raw constant(std::int32_t v) { return static_cast<Raw>(rounding_divide_by_pot(v, 16)); }
Raw one(int integer_bits) { return integer_bits == 0 ? Raw{32767} : static_cast<Raw>(1 << (15 - integer_bits)); }

// exp(a) for a in [-1/4, 0), Q0 -> Q0: Taylor expansion around -1/8.
Raw exp_on_quarter_interval(Raw a) {
  const Raw exp_minus_eighth = constant(1895147668), one_third = constant(715827883);
  const Raw x = add(a, Raw{1 << 12});   // a + 1/8
  const Raw x2 = mul(x, x), x3 = mul(x2, x), x4 = mul(x2, x2);
  const Raw series = multiply_by_pot(add(mul(add(multiply_by_pot(x4, -2), x3), one_third), x2), -1);
  return saturating_add(exp_minus_eighth, mul(exp_minus_eighth, add(x, series)));
}

// exp(a) for a <= 0 in Q`integer_bits` -> Q0: the quarter-interval part times exp(-2^k) for each
// set bit k of the remainder (the "barrel shifter").
Raw exp_on_negative_values(Raw a, int integer_bits) {
  const int fractional_bits = 15 - integer_bits;
  const Raw quarter = static_cast<Raw>(1 << (fractional_bits - 2));
  const Raw a_mod_quarter_minus_quarter = sub(static_cast<Raw>(a & sub(quarter, 1)), quarter);
  Raw result = exp_on_quarter_interval(multiply_by_pot(a_mod_quarter_minus_quarter, integer_bits));
  const Raw remainder = sub(a_mod_quarter_minus_quarter, a);
  constexpr std::pair<int, std::int32_t> kExpOfMinusPowersOfTwo[] = {
      {-2, 1672461947}, {-1, 1302514674}, {0, 790015084}, {1, 290630308}, {2, 39332535}, {3, 720401}, {4, 242}};
  for (const auto& [exponent, multiplier] : kExpOfMinusPowersOfTwo)
    if (integer_bits > exponent && (remainder & (1 << (fractional_bits + exponent))) != 0)
      result = mul(result, constant(multiplier));
  return a == 0 ? one(0) : result;
}

// Newton-Raphson for 1 / (1 + a), a in (0, 1): x approximates 1 / half_denominator in Q2.
Raw reciprocal_of_half_denominator(Raw half_denominator) {
  Raw x = add(constant(1515870810), mul(half_denominator, constant(-1010580540)));   // 48/17 - 32/17 d
  for (int i = 0; i < 3; ++i) x = add(x, multiply_by_pot(mul(x, sub(one(2), mul(half_denominator, x))), 2));
  return x;
}

Raw tanh_q3(Raw a) {   // Q3 -> Q0: (1 - exp(-2|a|)) / (1 + exp(-2|a|)), signed
  const Raw n = a < 0 ? a : neg(a);
  const Raw e = exp_on_negative_values(n, 4);   // exp(2n): the same raw read as Q4
  const Raw t = multiply_by_pot(sub(reciprocal_of_half_denominator(rounding_half_sum(e, one(0))), one(2)), 2);
  return a == 0 ? Raw{0} : (a < 0 ? neg(t) : t);
}

Raw logistic_q3(Raw a) {   // Q3 -> Q0: 1 / (1 + exp(-|a|)), mirrored for a < 0
  const Raw magnitude = a > 0 ? a : neg(a);
  const Raw e = exp_on_negative_values(neg(magnitude), 3);
  const Raw positive = multiply_by_pot(reciprocal_of_half_denominator(rounding_half_sum(e, one(0))), 1);
  return a == 0 ? constant(1 << 30) : (a > 0 ? positive : sub(one(0), positive));
}

}  // namespace fixed16

}  // namespace

template <class Bias>
void fully_connected_int16(const std::int16_t* x, std::size_t batch, std::size_t in, const std::int8_t* filter,
                           std::size_t out, const Bias* bias, const OutputStage& stage, std::int16_t* y) {
  const std::vector<RequantParams> rq = stage.per_channel(out);
  for (std::size_t n = 0; n < batch; ++n)
    for (std::size_t o = 0; o < out; ++o) {
      // acc = bias[o] + sum_i filter[o, i] * x[n, i]   (zero points are 0 in int16x8)
      std::int64_t sum = 0;
      for (std::size_t i = 0; i < in; ++i) sum += filter[o * in + i] * x[n * in + i];
      y[n * out + o] = static_cast<std::int16_t>(requantize(finish_sum(sum, bias, o), rq[o]));
    }
}

template <class Bias>
void conv2d_int16(const ConvGeometry& g, const std::int16_t* x, const std::int8_t* filter, const Bias* bias,
                  const OutputStage& stage, std::int16_t* y) {
  const std::vector<RequantParams> rq = stage.per_channel(g.o);
  for (std::size_t n = 0; n < g.n; ++n)
    for (std::size_t oy = 0; oy < g.oh; ++oy)
      for (std::size_t ox = 0; ox < g.ow; ++ox)
        for (std::size_t oc = 0; oc < g.o; ++oc) {
          const std::size_t group = oc / g.og();
          std::int64_t sum = 0;
          for (std::size_t ky = 0; ky < g.kh; ++ky) {
            const std::ptrdiff_t iy = detail::conv_input_index(oy, ky, g.sh, g.dh, g.pad_top, g.h);
            if (iy < 0) continue;   // padding adds 0
            for (std::size_t kx = 0; kx < g.kw; ++kx) {
              const std::ptrdiff_t ix = detail::conv_input_index(ox, kx, g.sw, g.dw, g.pad_left, g.w);
              if (ix < 0) continue;
              const std::int16_t* xp = x + ((n * g.h + static_cast<std::size_t>(iy)) * g.w +
                                            static_cast<std::size_t>(ix)) * g.c + group * g.cg();
              for (std::size_t ic = 0; ic < g.cg(); ++ic)
                sum += filter[((ky * g.kw + kx) * g.cg() + ic) * g.o + oc] * xp[ic];
            }
          }
          y[((n * g.oh + oy) * g.ow + ox) * g.o + oc] =
              static_cast<std::int16_t>(requantize(finish_sum(sum, bias, oc), rq[oc]));
        }
}

template void fully_connected_int16<std::int64_t>(const std::int16_t*, std::size_t, std::size_t, const std::int8_t*,
                                                  std::size_t, const std::int64_t*, const OutputStage&, std::int16_t*);
template void fully_connected_int16<std::int32_t>(const std::int16_t*, std::size_t, std::size_t, const std::int8_t*,
                                                  std::size_t, const std::int32_t*, const OutputStage&, std::int16_t*);
template void conv2d_int16<std::int64_t>(const ConvGeometry&, const std::int16_t*, const std::int8_t*,
                                         const std::int64_t*, const OutputStage&, std::int16_t*);
template void conv2d_int16<std::int32_t>(const ConvGeometry&, const std::int16_t*, const std::int8_t*,
                                         const std::int32_t*, const OutputStage&, std::int16_t*);

void add_int16(const std::int16_t* a, const std::int16_t* b, std::size_t n, float a_scale, float b_scale,
               float out_scale, std::int32_t act_min, std::int32_t act_max, std::int16_t* y) {
  QDRIFT_CHECK(a_scale > 0.0f && b_scale > 0.0f && out_scale > 0.0f && std::isfinite(a_scale) &&
                   std::isfinite(b_scale) && std::isfinite(out_scale),
               ConfigError, "add_int16: scales must be finite and positive");
  QDRIFT_CHECK(act_min <= act_max, ConfigError, "add_int16: act_min ", act_min, " > act_max ", act_max);
  // add.cc Prepare: the float 2 * max(s_a, s_b), then double ratios; 15 bits of headroom (65535 << 15 < 2^31).
  constexpr int kLeftShift = 15;
  const float twice_max = 2 * std::max(a_scale, b_scale);
  const QuantizedMultiplier ma = quantize_multiplier(a_scale / static_cast<double>(twice_max));
  const QuantizedMultiplier mb = quantize_multiplier(b_scale / static_cast<double>(twice_max));
  const double out_ratio = twice_max / static_cast<double>((1 << kLeftShift) * out_scale);
  QDRIFT_CHECK(out_ratio < 1.0, UnsupportedError, "add_int16: output multiplier ", out_ratio,
               " >= 1 (LiteRT's Prepare rejects it: the output scale is below 2^-14 of the larger input scale)");
  const QuantizedMultiplier mo = quantize_multiplier(out_ratio);
  for (std::size_t i = 0; i < n; ++i) {
    const std::int32_t sa = requantize_gemmlowp(a[i] * (1 << kLeftShift), ma.multiplier, ma.shift);
    const std::int32_t sb = requantize_gemmlowp(b[i] * (1 << kLeftShift), mb.multiplier, mb.shift);
    const std::int32_t raw = requantize_gemmlowp(sa + sb, mo.multiplier, mo.shift);
    y[i] = static_cast<std::int16_t>(std::clamp(raw, act_min, act_max));
  }
}

void mul_int16(const std::int16_t* a, const std::int16_t* b, std::size_t n, float a_scale, float b_scale,
               float out_scale, std::int32_t act_min, std::int32_t act_max, std::int16_t* y) {
  QDRIFT_CHECK(a_scale > 0.0f && b_scale > 0.0f && out_scale > 0.0f && std::isfinite(a_scale) &&
                   std::isfinite(b_scale) && std::isfinite(out_scale),
               ConfigError, "mul_int16: scales must be finite and positive");
  QDRIFT_CHECK(act_min <= act_max, ConfigError, "mul_int16: act_min ", act_min, " > act_max ", act_max);
  const QuantizedMultiplier m =
      quantize_multiplier(static_cast<double>(a_scale * b_scale / out_scale));
  for (std::size_t i = 0; i < n; ++i) {
    // The kernel's int32 product; |a * b| <= 2^30 fits.
    const std::int32_t acc = std::int32_t{a[i]} * std::int32_t{b[i]};
    const std::int32_t raw = requantize_gemmlowp(acc, m.multiplier, m.shift);
    y[i] = static_cast<std::int16_t>(std::clamp(raw, act_min, act_max));
  }
}

Int16TableInput int16_table_input(LutFunction f, float in_scale) {
  QDRIFT_CHECK(std::isfinite(in_scale) && in_scale > 0.0f, ConfigError,
               "int16 tanh/logistic: the input scale must be finite and positive, got ", in_scale);
  constexpr int kInputIntegerBits = 3;
  Int16TableInput p;
  int log2_rounded = 0;
  p.power_of_two = checked_log2(in_scale, &log2_rounded);
  p.left_shift = (15 - kInputIntegerBits) + log2_rounded;
  p.power_of_two = p.power_of_two && (f == LutFunction::kTanh ? (p.left_shift == 0 || p.left_shift == 1)
                                                              : p.left_shift == 0);
  if (p.power_of_two) return p;   // multiplier 0: the kernel multiplies by 3 << left_shift
  // Rescale to 1 / (3 * 4096) per unit: double the multiplier until it exceeds 32767 / 2.
  double multiplier = static_cast<double>(in_scale) * 4096.0 * 3.0;
  p.left_shift = 0;
  while (multiplier <= 32767.0 / 2.0 && p.left_shift <= 30) {
    ++p.left_shift;
    multiplier *= 2.0;
  }
  QDRIFT_CHECK(multiplier < 2147483648.0, UnsupportedError, "int16 tanh/logistic: input scale ", in_scale,
               " is too large for the kernel's int32 multiplier");
  p.multiplier = static_cast<std::int32_t>(multiplier);   // truncated, as the kernel's cast
  return p;
}

void tanh_int16(const Int16TableInput& p, const std::int16_t* x, std::size_t n, std::int16_t* y) {
  for (std::size_t i = 0; i < n; ++i) {
    const std::int32_t v = rescale_input(x[i], p);
    // sigmoid(|v|) in Q8.16 with 8 fractional bits of interpolation, then 2 sigmoid - 1 in Q0.15
    // with a rounding nudge (and one less for negative inputs).
    const auto s = static_cast<std::int32_t>(interpolate(magnitude_of(v), 8, 0xFFFFu << 8));
    const std::int32_t r = v >= 0 ? s - (1 << 23) + (1 << 7) : -s + (1 << 23) + (1 << 7) - 1;
    y[i] = static_cast<std::int16_t>(r >> 8);   // arithmetic shift, as the kernel's int32 >>
  }
}

void logistic_int16(const Int16TableInput& p, const std::int16_t* x, std::size_t n, std::int16_t* y) {
  for (std::size_t i = 0; i < n; ++i) {
    const std::int32_t v = rescale_input(x[i], p);
    // 9 fractional bits (the table covers 2|x|); sigmoid(-x) = 1 - sigmoid(x) in unsigned arithmetic.
    const std::uint32_t s = interpolate(magnitude_of(v), 9, 0x7FFFu << 10);
    const std::uint32_t r = v >= 0 ? s + (1u << 9) : (1u << 25) - s + (1u << 9) - 1;
    y[i] = static_cast<std::int16_t>(r >> 10);
  }
}

const std::uint16_t* sigmoid_table_uint16() { return kSigmoidTable; }

void tanh_int16_fixed_point(int input_left_shift, const std::int16_t* x, std::size_t n, std::int16_t* y) {
  QDRIFT_CHECK(input_left_shift == 0 || input_left_shift == 1, ConfigError,
               "tanh_int16_fixed_point: input_left_shift must be 0 or 1, got ", input_left_shift);
  for (std::size_t i = 0; i < n; ++i) y[i] = fixed16::tanh_q3(fixed16::multiply_by_pot(x[i], input_left_shift));
}

void logistic_int16_fixed_point(const std::int16_t* x, std::size_t n, std::int16_t* y) {
  for (std::size_t i = 0; i < n; ++i) y[i] = fixed16::logistic_q3(x[i]);
}

void quantize_int16(QuantizeRule rule, const float* x, std::size_t n, float scale, std::int32_t zero_point,
                    std::int16_t* y) {
  QDRIFT_CHECK(std::isfinite(scale) && scale > 0.0f, ConfigError, "quantize_int16: scale must be finite and > 0, got ",
               scale);
  const auto store = [&](std::size_t i, std::int32_t code) {
    // The kernels add the zero point in int32 (wrapping), then clamp.
    const auto shifted = static_cast<std::int32_t>(static_cast<std::uint32_t>(code) + static_cast<std::uint32_t>(zero_point));
    y[i] = clamp_int16(shifted);
  };
  const std::size_t blocked = rule == QuantizeRule::kNeonBlocks ? n - n % 8 : 0;
  const auto inverse = static_cast<float>(1.0 / static_cast<double>(scale));
  for (std::size_t i = 0; i < blocked; ++i) store(i, truncate_to_int32_x86(round_half_even(x[i] * inverse)));
  for (std::size_t i = blocked; i < n; ++i) {
    if (rule == QuantizeRule::kReference) store(i, truncate_to_int32_x86(round_half_away(x[i] / scale)));
    else store(i, truncate_to_int32_x86(round_half_away(static_cast<double>(x[i]) / static_cast<double>(scale))));
  }
}

void dequantize_int16(const std::int16_t* q, std::size_t n, float scale, std::int32_t zero_point, float* y) {
  for (std::size_t i = 0; i < n; ++i)
    y[i] = static_cast<float>(static_cast<double>(scale) * (static_cast<std::int32_t>(q[i]) - zero_point));
}

}  // namespace qdrift
