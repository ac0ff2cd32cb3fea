// SPDX-License-Identifier: Apache-2.0
// Named rounding rules. Each function rounds a real value to an integral value of the same
// type, exactly (no intermediate rounding) for every finite input; NaN and +-Inf pass through.
// They are inline and branch-light so element loops vectorize.
#pragma once

#include <cmath>
#include <limits>
#include <cstdint>
#include <string_view>

namespace qdrift {

enum class Rounding : std::uint8_t {
  kHalfEven,    // "half_even": ties to even (IEEE default, torch, XNNPACK, numpy.rint)
  kHalfAway,    // "half_away": ties away from zero (std::round; TFLite converter, QUANTIZE ref)
  kHalfUp,      // "half_up":   ties toward +inf (TF FakeQuant, gemmlowp/ruy high-mul)
  kFloor,       // "floor":     toward -inf
  kStochastic,  // "stochastic": floor(v) + Bernoulli(v - floor(v)), counter-based on (seed, index)
};

std::string_view rounding_name(Rounding r);
// Throws ConfigError listing the accepted names.
Rounding parse_rounding(std::string_view name);

namespace detail {
template <class T> struct MagicOf;                  // 2^(mantissa bits): from here on all values are integers
template <> struct MagicOf<float>  { static constexpr float  value = 8388608.0f; };          // 2^23
template <> struct MagicOf<double> { static constexpr double value = 4503599627370496.0; };  // 2^52
}  // namespace detail

// Ties to even. (a + 2^p) - 2^p rounds once, in the default (nearest-even) FP mode, and is
// exact for a < 2^p; values at or beyond 2^p are already integral.
template <class T>
inline T round_half_even(T v) {
  constexpr T kMagic = detail::MagicOf<T>::value;
  const T a = std::fabs(v);
  const T r = (a + kMagic) - kMagic;
  return a < kMagic ? std::copysign(r, v) : v;
}

// floor without libm (vectorizes on SSE2): round to nearest, then step down if we went up.
template <class T>
inline T round_floor(T v) {
  const T r = round_half_even(v);
  return r > v ? r - T(1) : r;
}

// Ties away from zero, exactly like std::round.
template <class T>
inline T round_half_away(T v) {
  const T a = std::fabs(v);
  const T f = round_floor(a);
  const T r = (a - f) >= T(0.5) ? f + T(1) : f;   // a - f is exact: same binade or f == 0
  return std::copysign(r, v);
}

// static_cast<int32_t>(v) as x86 executes it (cvttss2si / cvttsd2si): NaN and out-of-range
// values become INT32_MIN, the "integer indefinite". LiteRT's kernels (and the converter) rely on
// this where the C++ cast is undefined; every emulation of such a cast goes through here.
template <class F>
inline std::int32_t truncate_to_int32_x86(F v) {
  if (!(v >= F(-2147483648.0) && v < F(2147483648.0))) return std::numeric_limits<std::int32_t>::min();
  return static_cast<std::int32_t>(v);
}

// Ties toward +inf: floor(v) + (v - floor(v) >= 1/2), with the difference computed exactly
// (unlike floor(v + 0.5), which misrounds 0.49999997f).
template <class T>
inline T round_half_up(T v) {
  const T f = round_floor(v);
  return (v - f) >= T(0.5) ? f + T(1) : f;
}

// A counter-based 24-bit uniform in [0, 1): the same (seed, index) always gives the same
// number, so stochastic rounding is reproducible at any thread count and chunking.
inline float uniform_from_counter(std::uint64_t seed, std::uint64_t index) {
  std::uint64_t z = seed + (index + 1) * 0x9E3779B97F4A7C15ull;   // splitmix64 finalizer
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * 0x1p-24f;
}

// Stochastic rounding: rounds up with probability equal to the fractional part.
template <class T>
inline T round_stochastic(T v, std::uint64_t seed, std::uint64_t index) {
  const T f = round_floor(v);
  return static_cast<T>(uniform_from_counter(seed, index)) < (v - f) ? f + T(1) : f;
}

// Dispatch on a run-time rule (for scalar code; element loops hoist the switch).
template <class T>
inline T round_with(Rounding r, T v, std::uint64_t seed = 0, std::uint64_t index = 0) {
  switch (r) {
    case Rounding::kHalfEven: return round_half_even(v);
    case Rounding::kHalfAway: return round_half_away(v);
    case Rounding::kHalfUp: return round_half_up(v);
    case Rounding::kFloor: return round_floor(v);
    case Rounding::kStochastic: return round_stochastic(v, seed, index);
  }
  return v;
}

}  // namespace qdrift
