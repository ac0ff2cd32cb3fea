// SPDX-License-Identifier: Apache-2.0
// Narrow float formats from float32, bit-exact with the oracles: numpy (fp16), ml_dtypes (bf16, fp8).
//
// Two paths, as in ruy's kStandardCpp vs optimized paths:
//  - qdrift::ref: one generic, readable integer rounding driven by a FloatSpec (exponent and
//    mantissa widths, how the top exponent code is spent, what NaNs keep). The scalar API
//    (float_to_bits, bits_to_float, round_to_format) calls it; it is the spec.
//  - qdrift::fast: branch-free loops, one instantiation per format, that GCC and Clang vectorize.
//    The array API (cast, to_bits, from_bits) calls them. tests/cpp/test_float_format.cpp checks
//    them against the reference bit for bit, NaN bits included.
//
// Oracle behaviours pinned here (numpy 2.4, ml_dtypes 0.6; tests/python/test_float_formats.py):
//  - rounding is half to even on the exact float32 value, subnormals included; nothing flushes.
//  - beyond the largest finite value (after rounding): +-inf for fp16, bf16 and e5m2; NaN with
//    the input's sign for e4m3fn (0x7F / 0xFF), which has no infinity. +-inf inputs follow the
//    same rule, so inf -> e4m3fn is NaN.
//  - NaN in: always NaN out with the input's sign. fp16 (numpy) keeps the top 10 payload bits
//    and never quiets (a payload that truncates to 0 becomes 1, so it stays NaN); bf16 gives
//    the quiet NaN 0x7FC0, e4m3fn 0x7F and e5m2 0x7E (sign ORed in).
//  - NaN decoded: fp16 and bf16 keep the payload bits unchanged (no quieting); fp8 NaNs decode
//    to the float32 quiet NaN 0x7FC00000 with the sign.
#include "qdrift/quantizers/float_format.h"

#include <cmath>
#include <cstring>
#include <type_traits>

#include "qdrift/core/check.h"

namespace qdrift {
namespace {

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

}  // namespace

// ---------------------------------------------------------------------------------------------
// Reference: the spec. Scalar, integer-only rounding; no tricks, no early exits for speed.
namespace ref {

// What the all-ones exponent code means.
enum class Specials : std::uint8_t {
  kIeee,  // mantissa 0 is +-inf, anything else NaN (fp16, bf16, e5m2)
  kFn,    // "finite, NaN": no inf; only exponent and mantissa all ones is NaN (e4m3fn)
};

// Whether a NaN's payload survives a conversion (the oracles differ, and we match each one).
enum class NanPayload : std::uint8_t {
  kKeep,  // as many payload bits as fit, never quieted (numpy's float16 both ways, bf16 decode)
  kDrop,  // the format's one quiet NaN, sign kept (ml_dtypes' encoders, fp8 decoders)
};

struct FloatSpec {
  int exponent_bits;
  int mantissa_bits;
  Specials specials;
  NanPayload nan_encode;  // float32 NaN -> format
  NanPayload nan_decode;  // format NaN -> float32

  constexpr int width() const { return exponent_bits + mantissa_bits; }  // without the sign bit
  constexpr int bias() const { return (1 << (exponent_bits - 1)) - 1; }
  constexpr int emin() const { return 1 - bias(); }                      // smallest normal: 2^emin
  constexpr std::uint32_t exp_all_ones() const { return (1u << exponent_bits) - 1u; }
  constexpr std::uint32_t mantissa_mask() const { return (1u << mantissa_bits) - 1u; }
  // Magnitude codes are ordered like the values they encode; this is the largest finite one.
  constexpr std::uint32_t max_finite_code() const {
    return specials == Specials::kIeee ? (exp_all_ones() << mantissa_bits) - 1u   // 0 11110 11..1
                                       : (exp_all_ones() << mantissa_bits) | (mantissa_mask() - 1u);
  }
  // The magnitude code of a NaN without payload: the quiet NaN (IEEE) or the one NaN (fn).
  constexpr std::uint32_t canonical_nan_code() const {
    return specials == Specials::kIeee ? (exp_all_ones() << mantissa_bits) | (1u << (mantissa_bits - 1))
                                       : (exp_all_ones() << mantissa_bits) | mantissa_mask();
  }
  // What values beyond the largest finite one become.
  constexpr std::uint32_t overflow_code() const {
    return specials == Specials::kIeee ? exp_all_ones() << mantissa_bits : canonical_nan_code();
  }
};

constexpr FloatSpec spec_of(Format f) {
  switch (f) {
    case Format::kFp16: return {5, 10, Specials::kIeee, NanPayload::kKeep, NanPayload::kKeep};
    case Format::kBf16: return {8, 7, Specials::kIeee, NanPayload::kDrop, NanPayload::kKeep};
    case Format::kFp8E4M3: return {4, 3, Specials::kFn, NanPayload::kDrop, NanPayload::kDrop};
    case Format::kFp8E5M2: return {5, 2, Specials::kIeee, NanPayload::kDrop, NanPayload::kDrop};
    case Format::kInt: break;
  }
  return {0, 0, Specials::kIeee, NanPayload::kDrop, NanPayload::kDrop};   // callers check first
}

int bit_width(std::uint32_t v) {
  int w = 0;
  for (; v != 0; v >>= 1) ++w;
  return w;
}

// m / 2^shift rounded half to even, for shift >= 1.
std::uint32_t shift_right_half_even(std::uint32_t m, int shift) {
  if (shift >= 32) return 0;   // callers pass m < 2^24, far below half: rounds to 0
  const std::uint32_t q = m >> shift;
  const std::uint32_t rest = m & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1);
  return (rest > half || (rest == half && (q & 1u) != 0)) ? q + 1u : q;
}

// float32 -> code (sign in bit width()).
std::uint16_t encode(float x, const FloatSpec& s) {
  const int m_bits = s.mantissa_bits;
  const std::uint32_t u = bits_of(x);
  const std::uint32_t sign = (u >> 31) << s.width();
  const std::uint32_t e32 = (u >> 23) & 0xffu;
  const std::uint32_t f32 = u & 0x7fffffu;

  if (e32 == 0xffu && f32 != 0) {   // NaN
    std::uint32_t code = s.canonical_nan_code();
    if (s.nan_encode == NanPayload::kKeep) {
      // The payload's top bits; if they are all zero, payload 1 keeps the code a NaN, not inf.
      const std::uint32_t payload = f32 >> (23 - m_bits);
      code = (s.exp_all_ones() << m_bits) | (payload != 0 ? payload : 1u);
    }
    return static_cast<std::uint16_t>(sign | code);
  }
  if (e32 == 0xffu) return static_cast<std::uint16_t>(sign | s.overflow_code());   // +-inf

  // |x| = m * 2^e exactly, with the implicit bit made explicit (float32 subnormals have none).
  const std::uint32_t m = e32 == 0 ? f32 : (f32 | 0x800000u);
  const int e = (e32 == 0 ? 1 : static_cast<int>(e32)) - 150;
  if (m == 0) return static_cast<std::uint16_t>(sign);   // signed zero

  // The format's spacing at |x| is 2^q_exp: M bits below the leading bit, but never below the
  // subnormal spacing 2^(emin - M). Round m * 2^e to a multiple of it, once, half to even.
  // q_exp - e >= 1 here: every format has M < 23 and emin >= -126.
  const int lead = e32 != 0 ? static_cast<int>(e32) - 127 : e + bit_width(m) - 1;   // floor(log2 |x|)
  int q_exp = (lead > s.emin() ? lead : s.emin()) - m_bits;
  std::uint32_t q = shift_right_half_even(m, q_exp - e);
  // |x| ~ q * 2^q_exp. A carry out of the top (q == 2^(M+1)) moves to the next binade; a
  // subnormal that rounds up to q == 2^M is the smallest normal, which the formula below handles.
  if (q == (2u << m_bits)) {
    q >>= 1;
    ++q_exp;
  }
  const bool is_normal = q >= (1u << m_bits);
  const std::uint32_t biased_exp = is_normal ? static_cast<std::uint32_t>(q_exp + m_bits + s.bias()) : 0u;
  const std::uint32_t code = (biased_exp << m_bits) | (q & s.mantissa_mask());
  if (code > s.max_finite_code()) return static_cast<std::uint16_t>(sign | s.overflow_code());
  return static_cast<std::uint16_t>(sign | code);
}

// code -> float32 (bits above the sign bit are ignored).
float decode(std::uint16_t bits, const FloatSpec& s) {
  const int m_bits = s.mantissa_bits;
  const std::uint32_t b = bits;
  const bool negative = ((b >> s.width()) & 1u) != 0;
  const std::uint32_t exp = (b >> m_bits) & s.exp_all_ones();
  const std::uint32_t mantissa = b & s.mantissa_mask();
  const std::uint32_t sign32 = negative ? 0x80000000u : 0u;

  const bool ieee_special = s.specials == Specials::kIeee && exp == s.exp_all_ones();
  const bool fn_nan = s.specials == Specials::kFn && exp == s.exp_all_ones() && mantissa == s.mantissa_mask();
  if (ieee_special && mantissa == 0) return negative ? -INFINITY : INFINITY;
  if (ieee_special || fn_nan) {
    if (s.nan_decode == NanPayload::kKeep) {
      return float_of(sign32 | 0x7f800000u | (mantissa << (23 - m_bits)));   // payload as is
    }
    return float_of(sign32 | 0x7fc00000u);
  }
  // Subnormal: mantissa * 2^(emin - M); normal: (2^M + mantissa) * 2^(exp - bias - M). Exact in
  // the default FP environment (bf16 subnormals are float32 subnormals: no flush-to-zero).
  const float magnitude =
      exp == 0 ? std::ldexp(static_cast<float>(mantissa), s.emin() - m_bits)
               : std::ldexp(static_cast<float>((1u << m_bits) | mantissa), static_cast<int>(exp) - s.bias() - m_bits);
  return negative ? -magnitude : magnitude;
}

}  // namespace ref

// ---------------------------------------------------------------------------------------------
// Fast path: the same rounding on the float32 bit pattern, branch-free so loops vectorize.
namespace fast {

// Everything a kernel needs, as compile-time constants derived from the reference spec. Bit
// patterns below are of |x| as float32 (sign cleared), so int32 order is value order.
template <Format F>
struct Traits {
  static constexpr ref::FloatSpec kSpec = ref::spec_of(F);
  static constexpr int kM = kSpec.mantissa_bits;
  static constexpr int kWidth = kSpec.width();
  static constexpr int kDrop = 23 - kM;                          // float32 mantissa bits dropped
  static constexpr std::uint32_t kHalfMinusOne = (1u << (kDrop - 1)) - 1u;
  static constexpr std::uint32_t kKeepMask = ~((1u << kDrop) - 1u);
  // float32 exponent field minus the format's exponent field, for normal numbers.
  static constexpr std::uint32_t kRebias = static_cast<std::uint32_t>(127 - kSpec.bias());
  static constexpr std::uint32_t kMinNormalBits = static_cast<std::uint32_t>(kSpec.emin() + 127) << 23;
  // Largest finite value: its code with the exponent rebiased.
  static constexpr std::uint32_t kMaxBits = (((kSpec.max_finite_code() >> kM) + kRebias) << 23) |
                                            ((kSpec.max_finite_code() & kSpec.mantissa_mask()) << kDrop);
  // The smallest |x| that rounds past the largest finite value: the tie above it if ties round
  // up (max has an odd mantissa: fp16, bf16, e5m2), else just above the tie (e4m3fn's 448).
  // Comparing the input, not the rounded value, also catches +-inf and NaN inputs.
  static constexpr std::uint32_t kOverflowFrom = kMaxBits + (1u << (kDrop - 1)) + ((kMaxBits >> kDrop) & 1u ? 0u : 1u);
  // Below the smallest normal the spacing is 2^(emin - M). When that is a normal float32, as for
  // every format but bf16, adding kMagic = 2^(emin - M + 23) (whose ulp is that spacing) rounds
  // once, half to even, and leaves the step count in the low mantissa bits. bf16's subnormals
  // are float32's subnormals with 16 bits dropped, so the bit rounding covers them instead.
  // FTZ/DAZ cannot change the magic path: its results are normal or zero, and the float32
  // subnormals it might see as zero round to zero anyway.
  static constexpr bool kMagicSubnormals = kSpec.emin() - kM > -126;
  static constexpr std::uint32_t kMagicBits = static_cast<std::uint32_t>(kSpec.emin() - kM + 23 + 127) << 23;
  // Results as float32 bits (cast) and as magnitude codes (to_bits).
  static constexpr std::uint32_t kOverflowBits = kSpec.specials == ref::Specials::kIeee ? 0x7f800000u : 0x7fc00000u;
  static constexpr std::uint32_t kExpField = kSpec.exp_all_ones() << kM;
  static constexpr bool kNanKeepsPayload =   // through both directions, as cast does
      kSpec.nan_encode == ref::NanPayload::kKeep && kSpec.nan_decode == ref::NanPayload::kKeep;

  static_assert(kM >= 1 && kM < 23 && kSpec.emin() >= -126, "the rounding assumes a format narrower than float32");
  static_assert(kSpec.nan_encode == ref::NanPayload::kDrop || kSpec.specials == ref::Specials::kIeee,
                "a kept NaN payload needs IEEE specials");
};

// The kernels are built twice, for AVX2 and for the x86-64 baseline (SSE2), and the loader
// picks one per CPU (GCC/Clang ifunc). About 2x on cast in cache; the code is the same.
// -DQDRIFT_NO_TARGET_CLONES builds only the portable version, e.g. to test it on an AVX2 host.
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__) && !defined(QDRIFT_NO_TARGET_CLONES)
#define QDRIFT_KERNEL_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define QDRIFT_KERNEL_CLONES
#endif

// Lane masks and selects written out, so the vectorizer emits one compare and one blend each
// instead of if-converting a chain of conditionals. Operands are below 2^31 or, for NaN lanes,
// don't matter: int32 compares are single vector instructions, unsigned ones are not.
inline std::uint32_t mask_greater(std::uint32_t a, std::uint32_t b) {
  return static_cast<std::int32_t>(a) > static_cast<std::int32_t>(b) ? ~0u : 0u;
}
inline std::uint32_t select(std::uint32_t mask, std::uint32_t if_set, std::uint32_t if_clear) {
  return (if_set & mask) | (if_clear & ~mask);
}

// |x| (as bits) rounded to M mantissa bits, half to even, with an unbounded exponent. A carry
// out of the mantissa correctly bumps the exponent. Exact for normal float32 results only.
template <class T>
inline std::uint32_t round_bits(std::uint32_t a) {
  return (a + T::kHalfMinusOne + ((a >> T::kDrop) & 1u)) & T::kKeepMask;
}

template <Format F>
QDRIFT_KERNEL_CLONES void cast_kernel(const float* x, std::size_t n, float* y) {
  using T = Traits<F>;
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t u = bits_of(x[i]);
    const std::uint32_t sign = u & 0x80000000u;
    const std::uint32_t a = u ^ sign;
    std::uint32_t r = round_bits<T>(a);
    if constexpr (T::kMagicSubnormals) {
      const float magic = float_of(T::kMagicBits);
      r = select(mask_greater(T::kMinNormalBits, a), bits_of((float_of(a) + magic) - magic), r);
    }
    r = select(mask_greater(a, T::kOverflowFrom - 1u), T::kOverflowBits, r);
    if constexpr (T::kNanKeepsPayload) {
      // The truncated payload; if it is all zero, the lowest kept payload bit (see ref::encode).
      const std::uint32_t kept = a & T::kKeepMask;
      r = select(mask_greater(a, 0x7f800000u), kept | (kept == 0x7f800000u ? 1u << T::kDrop : 0u), r);
    } else if constexpr (T::kOverflowBits != 0x7fc00000u) {   // else NaNs already overflowed to it
      r = select(mask_greater(a, 0x7f800000u), 0x7fc00000u, r);
    }
    y[i] = float_of(r | sign);
  }
}

template <Format F, class Code>
QDRIFT_KERNEL_CLONES void to_bits_kernel(const float* x, std::size_t n, Code* bits) {
  using T = Traits<F>;
  constexpr std::uint32_t kOverflowCode = T::kSpec.overflow_code();
  constexpr std::uint32_t kCanonicalNan = T::kSpec.canonical_nan_code();
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t u = bits_of(x[i]);
    const std::uint32_t a = u & 0x7fffffffu;
    std::uint32_t code = (round_bits<T>(a) >> T::kDrop) - (T::kRebias << T::kM);   // normals
    if constexpr (T::kMagicSubnormals) {
      const float magic = float_of(T::kMagicBits);
      code = select(mask_greater(T::kMinNormalBits, a), bits_of(float_of(a) + magic) - T::kMagicBits, code);
    }
    code = select(mask_greater(a, T::kOverflowFrom - 1u), kOverflowCode, code);
    if constexpr (T::kSpec.nan_encode == ref::NanPayload::kKeep) {
      // Exponent all ones and the top payload bits; payload 1 if those are all zero.
      const std::uint32_t payload = (a >> T::kDrop) & T::kSpec.mantissa_mask();
      const std::uint32_t nan = T::kExpField | payload | (payload == 0 ? 1u : 0u);
      code = select(mask_greater(a, 0x7f800000u), nan, code);
    } else if constexpr (kOverflowCode != kCanonicalNan) {
      code = select(mask_greater(a, 0x7f800000u), kCanonicalNan, code);
    }
    bits[i] = static_cast<Code>(code | ((u >> 31) << T::kWidth));
  }
}

template <Format F, class Code>
QDRIFT_KERNEL_CLONES void from_bits_kernel(const Code* bits, std::size_t n, float* y) {
  using T = Traits<F>;
  if constexpr (F == Format::kBf16) {   // bf16 is the top half of float32, specials included
    for (std::size_t i = 0; i < n; ++i) y[i] = float_of(static_cast<std::uint32_t>(bits[i]) << 16);
  } else {
    constexpr std::uint32_t kMagMask = (1u << T::kWidth) - 1u;
    // Subnormals are mantissa * 2^(emin - M), a normal float32 here: the int -> float
    // conversion and the power-of-two product are exact.
    constexpr std::uint32_t kStepBits = static_cast<std::uint32_t>(T::kSpec.emin() - T::kM + 127) << 23;
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint32_t b = bits[i];
      const std::uint32_t sign = ((b >> T::kWidth) & 1u) << 31;
      const std::uint32_t mag = b & kMagMask;
      const float sub = static_cast<float>(static_cast<std::int32_t>(mag)) * float_of(kStepBits);
      std::uint32_t r = select(mask_greater(1u << T::kM, mag), bits_of(sub), (mag << T::kDrop) + (T::kRebias << 23));
      if constexpr (T::kSpec.specials == ref::Specials::kFn) {
        r = select(mask_greater(mag, T::kSpec.max_finite_code()), 0x7fc00000u, r);
      } else if constexpr (T::kSpec.nan_decode == ref::NanPayload::kKeep) {
        r = select(mask_greater(mag, T::kExpField - 1u), 0x7f800000u | (mag << T::kDrop), r);   // inf or NaN
      } else {
        r = select(mask_greater(mag, T::kExpField - 1u), 0x7f800000u, r);
        r = select(mask_greater(mag, T::kExpField), 0x7fc00000u, r);
      }
      y[i] = float_of(r | sign);
    }
  }
}

}  // namespace fast

// ---------------------------------------------------------------------------------------------
// Public API: scalar functions are the reference; array functions dispatch to the fast kernels.
namespace {

const char* kFloatFormats = "fp16, bf16, fp8_e4m3, fp8_e5m2";

ref::FloatSpec checked_spec(Format f, const char* fn) {
  QDRIFT_CHECK(f != Format::kInt && static_cast<int>(f) <= static_cast<int>(Format::kFp8E5M2), ConfigError, fn,
               ": format ", format_name(f), " is not a float format; expected one of ", kFloatFormats);
  return ref::spec_of(f);
}

// Calls kernel(std::integral_constant<Format, F>) for the runtime f: the one switch per call.
template <class Kernel>
void dispatch(Format f, const char* fn, Kernel&& kernel) {
  switch (f) {
    case Format::kFp16: return kernel(std::integral_constant<Format, Format::kFp16>{});
    case Format::kBf16: return kernel(std::integral_constant<Format, Format::kBf16>{});
    case Format::kFp8E4M3: return kernel(std::integral_constant<Format, Format::kFp8E4M3>{});
    case Format::kFp8E5M2: return kernel(std::integral_constant<Format, Format::kFp8E5M2>{});
    case Format::kInt: break;
  }
  checked_spec(f, fn);   // throws
}

}  // namespace

int format_bits(Format f) { return 1 + checked_spec(f, "format_bits").width(); }

double format_max(Format f) {
  const ref::FloatSpec s = checked_spec(f, "format_max");
  return static_cast<double>(ref::decode(static_cast<std::uint16_t>(s.max_finite_code()), s));
}

std::uint16_t float_to_bits(float x, Format f) { return ref::encode(x, checked_spec(f, "float_to_bits")); }

float bits_to_float(std::uint16_t bits, Format f) { return ref::decode(bits, checked_spec(f, "bits_to_float")); }

float round_to_format(float x, Format f) {
  const ref::FloatSpec s = checked_spec(f, "round_to_format");
  return ref::decode(ref::encode(x, s), s);
}

void cast(Format f, const float* x, std::size_t n, float* y) {
  dispatch(f, "cast", [&](auto fc) { fast::cast_kernel<decltype(fc)::value>(x, n, y); });
}

void to_bits(Format f, const float* x, std::size_t n, std::uint16_t* bits) {
  dispatch(f, "to_bits", [&](auto fc) { fast::to_bits_kernel<decltype(fc)::value>(x, n, bits); });
}

void to_bits(Format f, const float* x, std::size_t n, std::uint8_t* bits) {
  QDRIFT_CHECK(format_bits(f) == 8, ConfigError, "to_bits: ", format_name(f), " codes need 16 bits, not uint8");
  dispatch(f, "to_bits", [&](auto fc) { fast::to_bits_kernel<decltype(fc)::value>(x, n, bits); });
}

void from_bits(Format f, const std::uint16_t* bits, std::size_t n, float* y) {
  dispatch(f, "from_bits", [&](auto fc) { fast::from_bits_kernel<decltype(fc)::value>(bits, n, y); });
}

void from_bits(Format f, const std::uint8_t* bits, std::size_t n, float* y) {
  QDRIFT_CHECK(format_bits(f) == 8, ConfigError, "from_bits: ", format_name(f), " codes need 16 bits, not uint8");
  dispatch(f, "from_bits", [&](auto fc) { fast::from_bits_kernel<decltype(fc)::value>(bits, n, y); });
}

}  // namespace qdrift
