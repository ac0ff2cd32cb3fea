// SPDX-License-Identifier: Apache-2.0
// Narrow float formats from float32: round half to even, subnormals, overflow and NaN as
// numpy (fp16) and ml_dtypes (bf16, fp8) define them. The bit-level encoder is the readable
// reference; cast() is a float-domain fast path that tests check against it bit for bit.
#include "qdrift/quantizers/float_format.h"

#include <cmath>
#include <cstring>

#include "qdrift/core/check.h"

namespace qdrift {
namespace {

struct FormatInfo {
  int exponent_bits;
  int mantissa_bits;
  int bias;
  bool has_inf;      // IEEE-like (fp16, bf16, e5m2); e4m3fn has no infinity
  float max_finite;  // largest finite value
};

FormatInfo info(Format f) {
  switch (f) {
    case Format::kFp16: return {5, 10, 15, true, 65504.0f};
    case Format::kBf16: return {8, 7, 127, true, 3.38953139e38f};
    case Format::kFp8E4M3: return {4, 3, 7, false, 448.0f};
    case Format::kFp8E5M2: return {5, 2, 15, true, 57344.0f};
    case Format::kInt: break;
  }
  throw ConfigError("float format: 'int' is not a float format");
}

std::uint32_t bits_of(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

float float_of(std::uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

// Round a finite, non-negative float32 to the format's grid (unbounded exponent above), RNE.
float round_magnitude(float a, const FormatInfo& fi) {
  const int emin = 1 - fi.bias;   // exponent of the smallest normal
  if (a < std::ldexp(1.0f, emin)) {
    // Subnormal range: the grid step is 2^(emin - m). Adding C = step * 2^23 makes the float
    // adder round to that step (ulp(C) == step), half to even, exactly once.
    const float c = std::ldexp(1.0f, emin - fi.mantissa_bits + 23);
    return (a + c) - c;
  }
  // Normal range: drop 23 - m mantissa bits with round half to even on the bit pattern;
  // a carry out of the mantissa correctly bumps the exponent.
  const int drop = 23 - fi.mantissa_bits;
  const std::uint32_t u = bits_of(a);
  const std::uint32_t lsb = (u >> drop) & 1u;
  const std::uint32_t rounded = (u + ((1u << (drop - 1)) - 1u) + lsb) & ~((1u << drop) - 1u);
  return float_of(rounded);
}

}  // namespace

int format_bits(Format f) {
  const FormatInfo fi = info(f);
  return 1 + fi.exponent_bits + fi.mantissa_bits;
}

double format_max(Format f) { return info(f).max_finite; }

float round_to_format(float x, Format f) { return bits_to_float(float_to_bits(x, f), f); }

std::uint16_t float_to_bits(float x, Format f) {
  const FormatInfo fi = info(f);
  const std::uint32_t u = bits_of(x);
  const auto sign = static_cast<std::uint16_t>((u >> 31) << (fi.exponent_bits + fi.mantissa_bits));
  const std::uint16_t exp_all_ones = static_cast<std::uint16_t>(((1u << fi.exponent_bits) - 1u) << fi.mantissa_bits);
  const std::uint16_t nan = fi.has_inf ? static_cast<std::uint16_t>(exp_all_ones | (1u << (fi.mantissa_bits - 1)))
                                       : static_cast<std::uint16_t>(exp_all_ones | ((1u << fi.mantissa_bits) - 1u));
  if (std::isnan(x)) {
    if (f == Format::kFp16) {
      // numpy keeps the top payload bits (and keeps the value a NaN if they are all zero).
      auto h = static_cast<std::uint16_t>(0x7c00u + ((u & 0x7fffffu) >> 13));
      if (h == 0x7c00u) ++h;
      return static_cast<std::uint16_t>(sign | h);
    }
    return static_cast<std::uint16_t>(sign | nan);   // ml_dtypes: the canonical quiet NaN, sign kept
  }
  const float a = std::fabs(x);
  const float r = std::isinf(a) ? a : round_magnitude(a, fi);
  if (r > fi.max_finite) return static_cast<std::uint16_t>(sign | (fi.has_inf ? exp_all_ones : nan));
  const int emin = 1 - fi.bias;
  if (r < std::ldexp(1.0f, emin)) {   // subnormal or zero: the code counts grid steps
    return static_cast<std::uint16_t>(sign | static_cast<std::uint16_t>(std::ldexp(r, fi.mantissa_bits - emin)));
  }
  const std::uint32_t ru = bits_of(r);
  const int exponent = static_cast<int>(ru >> 23) - 127 + fi.bias;
  const std::uint32_t mantissa = (ru & 0x7fffffu) >> (23 - fi.mantissa_bits);
  return static_cast<std::uint16_t>(sign | (static_cast<std::uint32_t>(exponent) << fi.mantissa_bits) | mantissa);
}

float bits_to_float(std::uint16_t bits, Format f) {
  const FormatInfo fi = info(f);
  const int width = fi.exponent_bits + fi.mantissa_bits;
  const std::uint32_t b = bits & ((1u << (width + 1)) - 1u);
  const std::uint32_t sign = (b >> width) & 1u;
  const std::uint32_t exponent = (b >> fi.mantissa_bits) & ((1u << fi.exponent_bits) - 1u);
  const std::uint32_t mantissa = b & ((1u << fi.mantissa_bits) - 1u);
  const std::uint32_t exp_max = (1u << fi.exponent_bits) - 1u;
  float magnitude;
  if (fi.has_inf && exponent == exp_max) {
    if (mantissa == 0) {
      magnitude = INFINITY;
    } else {   // keep the payload bits, as numpy (half) and ml_dtypes (bf16) do
      return float_of((sign << 31) | 0x7f800000u | (mantissa << (23 - fi.mantissa_bits)));
    }
  } else if (!fi.has_inf && exponent == exp_max && mantissa == (1u << fi.mantissa_bits) - 1u) {
    return float_of((sign << 31) | 0x7fc00000u);
  } else if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), 1 - fi.bias - fi.mantissa_bits);
  } else {
    magnitude = float_of(((exponent - static_cast<std::uint32_t>(fi.bias) + 127u) << 23) |
                         (mantissa << (23 - fi.mantissa_bits)));
  }
  return sign ? -magnitude : magnitude;
}

void cast(Format f, const float* x, std::size_t n, float* y) {
  // Float-domain fast path: round the magnitude, then overflow and sign. NaN inputs go through
  // the reference so their payload rule is the encoder's.
  const FormatInfo fi = info(f);
  const float overflow = fi.has_inf ? INFINITY : NAN;
  for (std::size_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (!(a <= fi.max_finite * 2.0f)) {   // NaN, Inf or far beyond the range
      y[i] = std::isnan(x[i]) ? bits_to_float(float_to_bits(x[i], f), f) : std::copysign(overflow, x[i]);
      continue;
    }
    const float r = round_magnitude(a, fi);
    y[i] = std::copysign(r > fi.max_finite ? overflow : r, x[i]);
  }
}

void to_bits(Format f, const float* x, std::size_t n, std::uint16_t* bits) {
  for (std::size_t i = 0; i < n; ++i) bits[i] = float_to_bits(x[i], f);
}

void from_bits(Format f, const std::uint16_t* bits, std::size_t n, float* y) {
  for (std::size_t i = 0; i < n; ++i) y[i] = bits_to_float(bits[i], f);
}

}  // namespace qdrift
