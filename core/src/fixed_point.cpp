// SPDX-License-Identifier: Apache-2.0
// Fixed-point requantization: TFLite's QuantizeMultiplier and the output stages of the gemmlowp
// (reference), ruy (x86 builtin), int64 (int16x8), XNNPACK and double (reference FC) paths.
// Each function restates one kernel's arithmetic; overflow wraps where the kernel's integer
// arithmetic wraps, computed through unsigned types so it is defined behaviour here.
//
// Sources read: LiteRT tflite/kernels/internal/{common.cc, quantization_util.cc,
// reference/integer_ops/fully_connected.h}; gemmlowp fixedpoint/fixedpoint.h; ruy
// kernel_avx2_fma.cc, kernel_avx512.cc, apply_multiplier.cc; XNNPACK qs8 fp32 kernels.
// Corrections to shared/reference/tflite-semantics.md found there:
//  - §3.5 calls the AVX-512 kernel UNVERIFIED. It matches AVX2 for every multiplier >= 0: it
//    keeps 64-bit lanes through both steps (vpsravq) and truncates to 32 bits only at the end,
//    where AVX2 truncates after the high multiply, but that value always fits in int32 then.
//  - §3.4 says |x| < 2^47; the int64 overload's contract is -2^47 <= x < 2^47.
#include "qdrift/core/fixed_point.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "qdrift/core/check.h"
#include "qdrift/core/rounding.h"

namespace qdrift {
namespace {

constexpr std::array<std::pair<RequantMethod, std::string_view>, 6> kMethodNames{{
    {RequantMethod::kGemmlowp, "gemmlowp"},
    {RequantMethod::kSingle, "single"},
    {RequantMethod::kRuy, "ruy"},
    {RequantMethod::kInt64, "int64"},
    {RequantMethod::kXnnpack, "xnnpack"},
    {RequantMethod::kDoubleRha, "double_rha"},
}};

// Two's-complement wrap of an int64 to int32 (what a cast or a 32-bit lane does).
std::int32_t wrap32(std::int64_t v) {
  return static_cast<std::int32_t>(static_cast<std::uint32_t>(static_cast<std::uint64_t>(v)));
}

// x * 2^left in 32-bit arithmetic, wrapping like the kernels' `x * (1 << left)` / vpsllvd.
std::int32_t shift_left_wrapping(std::int32_t x, int left) {
  return static_cast<std::int32_t>(static_cast<std::uint32_t>(x) << left);
}

}  // namespace

QuantizedMultiplier quantize_multiplier(double real_multiplier) {
  QDRIFT_CHECK(std::isfinite(real_multiplier) && real_multiplier >= 0.0, ConfigError,
               "quantize_multiplier: the multiplier must be finite and >= 0, got ", real_multiplier);
  if (real_multiplier == 0.0) return {0, 0};
  int shift = 0;
  const double q = std::frexp(real_multiplier, &shift);   // q in [0.5, 1)
  auto q_fixed = static_cast<std::int64_t>(std::round(q * 2147483648.0));   // RHA(q * 2^31)
  if (q_fixed == (std::int64_t{1} << 31)) {   // q rounded up to 1.0: renormalize
    q_fixed /= 2;
    ++shift;
  }
  if (shift < -31) return {0, 0};   // below ~2^-32 the multiplier flushes to zero
  return {static_cast<std::int32_t>(q_fixed), shift};
}

std::int32_t saturating_rounding_doubling_high_mul(std::int32_t a, std::int32_t b) {
  if (a == std::numeric_limits<std::int32_t>::min() && b == std::numeric_limits<std::int32_t>::min())
    return std::numeric_limits<std::int32_t>::max();
  const std::int64_t ab = static_cast<std::int64_t>(a) * b;
  const std::int64_t nudge = ab >= 0 ? (std::int64_t{1} << 30) : (1 - (std::int64_t{1} << 30));
  // C++ division truncates toward zero; with the sign-dependent nudge this rounds half up.
  return static_cast<std::int32_t>((ab + nudge) / (std::int64_t{1} << 31));
}

std::int32_t rounding_divide_by_pot(std::int32_t x, int exponent) {
  QDRIFT_DCHECK(exponent >= 0 && exponent <= 31);
  const std::int64_t mask = (std::int64_t{1} << exponent) - 1;
  const std::int64_t remainder = x & mask;
  const std::int64_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);   // rounds half away from zero
}

std::int32_t requantize_gemmlowp(std::int32_t acc, std::int32_t multiplier, int shift) {
  const int left = shift > 0 ? shift : 0;
  const int right = shift > 0 ? 0 : -shift;
  return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shift_left_wrapping(acc, left), multiplier),
                                right);
}

std::int32_t requantize_single(std::int32_t acc, std::int32_t multiplier, int shift) {
  const int total = 31 - shift;   // 1..62 for shift in [-31, 30]
  const std::int64_t round = std::int64_t{1} << (total - 1);
  return wrap32((static_cast<std::int64_t>(acc) * multiplier + round) >> total);
}

std::int32_t requantize_ruy(std::int32_t acc, std::int32_t multiplier, int shift) {
  // ruy's x86 kernels: the 64-bit product (after a wrapping 32-bit left shift, vpsllvd) is
  // rounded half up by 2^31 and truncated to 32 bits (no saturation; AVX2 adds 2^30 + 2^63 and
  // shifts logically, AVX-512 shifts arithmetically, same bits), then a second rounding right
  // shift, also half up, whose overflow guard (result 2^(31 - right)) makes it exact.
  const int left = shift > 0 ? shift : 0;
  const int right = shift > 0 ? 0 : -shift;
  const std::int64_t product = static_cast<std::int64_t>(shift_left_wrapping(acc, left)) * multiplier;
  const std::int32_t high = wrap32((product + (std::int64_t{1} << 30)) >> 31);
  if (right == 0) return high;
  const std::int64_t nudge = std::int64_t{1} << (right - 1);
  return static_cast<std::int32_t>((static_cast<std::int64_t>(high) + nudge) >> right);
}

std::int32_t requantize_int64(std::int64_t acc, std::int32_t multiplier, int shift) {
  // The multiplier is first reduced to 16 bits (rounded), then one rounding shift: RHU.
  const std::int64_t reduced =
      multiplier < 0x7FFF0000 ? (static_cast<std::int64_t>(multiplier) + (1 << 15)) >> 16 : 0x7FFF;
  const int total = 15 - shift;
  const std::int64_t round = std::int64_t{1} << (total - 1);
  return wrap32((acc * reduced + round) >> total);
}

std::string_view requant_method_name(RequantMethod m) {
  for (const auto& [value, name] : kMethodNames)
    if (value == m) return name;
  return "?";
}

RequantMethod parse_requant_method(std::string_view name) {
  for (const auto& [value, n] : kMethodNames)
    if (n == name) return value;
  throw ConfigError("requantize: unknown method '" + std::string(name) +
                    "'; expected one of gemmlowp, single, ruy, int64, xnnpack, double_rha");
}

bool requant_method_uses_real_scale(RequantMethod m) {
  return m == RequantMethod::kXnnpack || m == RequantMethod::kDoubleRha;
}

void validate(const RequantParams& p) {
  const std::string_view name = requant_method_name(p.method);
  QDRIFT_CHECK(p.qmin <= p.qmax, ConfigError, "requantize: qmin (", p.qmin, ") must be <= qmax (", p.qmax, ")");
  if (requant_method_uses_real_scale(p.method)) {
    // XNNPACK stores the scale as a float, so it must stay finite after narrowing.
    const bool finite = p.method == RequantMethod::kXnnpack ? std::isfinite(static_cast<float>(p.scale))
                                                            : std::isfinite(p.scale);
    QDRIFT_CHECK(finite && p.scale >= 0.0, ConfigError, "requantize: method ", name,
                 " needs a finite scale >= 0, got ", p.scale);
    return;
  }
  QDRIFT_CHECK(p.multiplier >= 0, ConfigError, "requantize: multiplier must be >= 0, got ", p.multiplier);
  const int max_shift = p.method == RequantMethod::kInt64 ? 7 : 30;
  QDRIFT_CHECK(p.shift >= -31 && p.shift <= max_shift, ConfigError, "requantize: method ", name,
               " needs shift in [-31, ", max_shift, "], got ", p.shift);
}

std::int32_t requantize(std::int64_t acc, const RequantParams& p) {
  const auto acc32 = [&] {
    QDRIFT_CHECK(acc >= std::numeric_limits<std::int32_t>::min() && acc <= std::numeric_limits<std::int32_t>::max(),
                 DataError, "requantize: method ", requant_method_name(p.method),
                 " takes int32 accumulators; got ", acc);
    return static_cast<std::int32_t>(acc);
  };
  // The kernels add the zero point in int32; it cannot overflow for 8/16-bit outputs, and for
  // wider ranges we saturate (clamp) instead of wrapping.
  const auto clamp_code = [&](std::int64_t v) {
    return static_cast<std::int32_t>(v < p.qmin ? p.qmin : (v > p.qmax ? p.qmax : v));
  };
  switch (p.method) {
    case RequantMethod::kGemmlowp:
      return clamp_code(std::int64_t{requantize_gemmlowp(acc32(), p.multiplier, p.shift)} + p.zero_point);
    case RequantMethod::kSingle:
      return clamp_code(std::int64_t{requantize_single(acc32(), p.multiplier, p.shift)} + p.zero_point);
    case RequantMethod::kRuy:
      return clamp_code(std::int64_t{requantize_ruy(acc32(), p.multiplier, p.shift)} + p.zero_point);
    case RequantMethod::kInt64:
      QDRIFT_CHECK(acc >= -(std::int64_t{1} << 47) && acc < (std::int64_t{1} << 47), DataError,
                   "requantize: the int64 path needs -2^47 <= acc < 2^47, got ", acc);
      return clamp_code(std::int64_t{requantize_int64(acc, p.multiplier, p.shift)} + p.zero_point);
    case RequantMethod::kXnnpack: {
      // fp32: y = f32(f32(acc) * f32(scale)); clamp in float to the code range shifted by the
      // zero point; round half to even; add the zero point.
      const float scaled = static_cast<float>(acc) * static_cast<float>(p.scale);
      const float lo = static_cast<float>(static_cast<std::int64_t>(p.qmin) - p.zero_point);
      const float hi = static_cast<float>(static_cast<std::int64_t>(p.qmax) - p.zero_point);
      const float clamped = scaled < lo ? lo : (scaled > hi ? hi : scaled);
      return clamp_code(static_cast<std::int64_t>(round_half_even(clamped)) + p.zero_point);
    }
    case RequantMethod::kDoubleRha: {
      // static_cast<int32_t>(round((double)acc * scale)). Where that cast is out of range, x86's
      // cvttsd2si gives INT32_MIN (the "integer indefinite"), and LiteRT's kernel clamps that to
      // the bottom code: measured (an int16x8 FC whose output scale is subnormal gives -32768
      // for a huge positive product), tests/python/test_int16x8.py.
      return clamp_code(std::int64_t{truncate_to_int32_x86(round_half_away(static_cast<double>(acc) * p.scale))} +
                        p.zero_point);
    }
  }
  return 0;
}

}  // namespace qdrift
