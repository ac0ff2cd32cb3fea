// SPDX-License-Identifier: Apache-2.0
// Float formats: the fast array kernels against the scalar reference, bit for bit (NaN bits
// included), over a stride sweep of all float32 patterns and every rounding boundary of each
// format; the reference against values pinned from numpy / ml_dtypes.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "qdrift/core/error.h"
#include "qdrift/quantizers/float_format.h"

using qdrift::Format;

namespace {

constexpr Format kFormats[] = {Format::kFp16, Format::kBf16, Format::kFp8E4M3, Format::kFp8E5M2};

std::uint32_t u32_of(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

float f32_of(std::uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

std::string hex(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

std::uint32_t code_count(Format f) { return 1u << qdrift::format_bits(f); }

// The reference decoding of every code: the expected output of cast for a given reference code.
std::vector<float> decode_table(Format f) {
  std::vector<float> t(code_count(f));
  for (std::uint32_t c = 0; c < t.size(); ++c) t[c] = qdrift::bits_to_float(static_cast<std::uint16_t>(c), f);
  return t;
}

// Runs the fast cast and to_bits on x and compares every output with the reference encoder
// (float_to_bits) and decoder (bits_to_float). Tolerance: none, on any bit, NaNs included:
// both paths implement one rounding rule, so "SIMD must make absolutely no difference".
// Returns the number of mismatches and reports the first few with every parameter.
std::size_t count_fast_vs_reference_mismatches(Format f, const std::vector<float>& x, const std::vector<float>& table) {
  const std::size_t n = x.size();
  std::vector<float> y(n);
  std::vector<std::uint16_t> bits(n);
  std::vector<std::uint8_t> bits8(qdrift::format_bits(f) == 8 ? n : 0);
  qdrift::cast(f, x.data(), n, y.data());
  qdrift::to_bits(f, x.data(), n, bits.data());
  if (!bits8.empty()) qdrift::to_bits(f, x.data(), n, bits8.data());
  std::size_t bad = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint16_t want = qdrift::float_to_bits(x[i], f);
    const bool ok = bits[i] == want && u32_of(y[i]) == u32_of(table[want]) && (bits8.empty() || bits8[i] == want);
    if (!ok && ++bad <= 5) {
      MESSAGE("format ", qdrift::format_name(f), " x=", hex(u32_of(x[i])), " (", x[i], "): to_bits fast=", hex(bits[i]),
              " ref=", hex(want), "; cast fast=", hex(u32_of(y[i])), " ref=", hex(u32_of(table[want])));
    }
  }
  return bad;
}

// Inputs where rounding changes its mind: every code's value and its float32 neighbours, the
// midpoint (an exact tie) to the next code and the midpoint's neighbours, including the tie
// between the largest finite value and the first value past it (the overflow threshold);
// every power of two of float32 and its neighbours; and specials. Both signs.
std::vector<float> boundary_inputs(Format f) {
  std::vector<float> x;
  const auto add_with_neighbours = [&x](float v) {
    for (float s : {v, -v}) {
      x.push_back(s);
      x.push_back(std::nextafter(s, INFINITY));
      x.push_back(std::nextafter(s, -INFINITY));
    }
  };
  const std::uint32_t half_codes = code_count(f) / 2;   // the non-negative codes
  const double max = qdrift::format_max(f);
  for (std::uint32_t c = 0; c < half_codes; ++c) {
    const float v = qdrift::bits_to_float(static_cast<std::uint16_t>(c), f);
    if (!std::isfinite(v)) continue;
    add_with_neighbours(v);
    // The next value up: the next code, or, past the largest finite value, where the next code
    // would be with an unbounded exponent (one ulp of max further).
    double next = qdrift::bits_to_float(static_cast<std::uint16_t>(c + 1), f);
    if (static_cast<double>(v) == max) {
      const double ulp = max - static_cast<double>(qdrift::bits_to_float(static_cast<std::uint16_t>(c - 1), f));
      next = max + ulp;
    }
    if (std::isfinite(next)) add_with_neighbours(static_cast<float>((static_cast<double>(v) + next) / 2));   // exact
  }
  for (int k = -149; k <= 127; ++k) add_with_neighbours(std::ldexp(1.0f, k));
  add_with_neighbours(std::numeric_limits<float>::max());
  for (std::uint32_t special : {0x7f800000u, 0x7f800001u, 0x7fc00000u, 0x7fa00000u, 0x7fbfffffu, 0x7fffffffu,
                                0x7f801fffu, 0x7f802000u, 0x7f810000u, 0x7f800100u}) {
    x.push_back(f32_of(special));
    x.push_back(f32_of(special | 0x80000000u));
  }
  return x;
}

}  // namespace

TEST_CASE("float_format: fast kernels equal the reference on every rounding boundary") {
  for (Format f : kFormats) {
    CAPTURE(qdrift::format_name(f));
    const std::vector<float> x = boundary_inputs(f);
    CHECK(count_fast_vs_reference_mismatches(f, x, decode_table(f)) == 0);
  }
}

TEST_CASE("float_format: fast kernels equal the reference on every 97th float32 pattern") {
  // 2^32 / 97 ~ 44M inputs per format (97 is odd, so every low-bit pattern, i.e. every rounding
  // remainder, is visited). Offsets differ per format so the formats see different inputs.
  constexpr std::uint64_t kStride = 97;
  constexpr std::size_t kChunk = std::size_t{1} << 20;
  std::uint64_t offset = 0;
  for (Format f : kFormats) {
    CAPTURE(qdrift::format_name(f));
    const std::vector<float> table = decode_table(f);
    std::vector<float> x;
    x.reserve(kChunk);
    std::size_t bad = 0;
    for (std::uint64_t u = offset++; u < (std::uint64_t{1} << 32); u += kStride) {
      x.push_back(f32_of(static_cast<std::uint32_t>(u)));
      if (x.size() == kChunk) {
        bad += count_fast_vs_reference_mismatches(f, x, table);
        x.clear();
      }
    }
    bad += count_fast_vs_reference_mismatches(f, x, table);
    CHECK(bad == 0);
  }
}

TEST_CASE("float_format: from_bits equals the reference on every code, and codes round-trip") {
  for (Format f : kFormats) {
    CAPTURE(qdrift::format_name(f));
    const std::uint32_t n = code_count(f);
    std::vector<std::uint16_t> codes(n);
    for (std::uint32_t c = 0; c < n; ++c) codes[c] = static_cast<std::uint16_t>(c);
    std::vector<float> y(n);
    qdrift::from_bits(f, codes.data(), n, y.data());
    std::vector<std::uint16_t> back(n);
    qdrift::to_bits(f, y.data(), n, back.data());
    std::size_t bad = 0;
    for (std::uint32_t c = 0; c < n; ++c) {
      const float want = qdrift::bits_to_float(codes[c], f);
      // Every code round-trips except NaNs whose payload the format's encoder drops (bf16, fp8
      // e5m2 NaNs other than the canonical one); those must still come back as a NaN of the
      // same sign.
      const bool round_trips = back[c] == c || (std::isnan(want) && qdrift::float_to_bits(want, f) == back[c] &&
                                                ((back[c] ^ c) >> (qdrift::format_bits(f) - 1)) == 0);
      if ((u32_of(y[c]) != u32_of(want) || !round_trips) && ++bad <= 5) {
        MESSAGE("format ", qdrift::format_name(f), " code ", hex(c), ": from_bits fast=", hex(u32_of(y[c])),
                " ref=", hex(u32_of(want)), "; to_bits of it=", hex(back[c]));
      }
    }
    CHECK(bad == 0);
    if (n == 256) {   // the uint8 overloads, and uint16 codes with junk above the format's bits
      std::vector<std::uint8_t> codes8(codes.begin(), codes.end());
      std::vector<float> y8(n), y_junk(n);
      qdrift::from_bits(f, codes8.data(), n, y8.data());
      for (auto& c : codes) c = static_cast<std::uint16_t>(c | 0xa500u);
      qdrift::from_bits(f, codes.data(), n, y_junk.data());
      CHECK(std::memcmp(y8.data(), y.data(), n * sizeof(float)) == 0);
      CHECK(std::memcmp(y_junk.data(), y.data(), n * sizeof(float)) == 0);
      CHECK(u32_of(qdrift::bits_to_float(0xa57e, f)) == u32_of(qdrift::bits_to_float(0x7e, f)));
    }
  }
}

// Values pinned from the oracles (numpy 2.4 for fp16, ml_dtypes 0.6 for the rest), e.g.
//   np.array([0x477ff000], np.uint32).view(np.float32).astype(np.float16).view(np.uint16)
TEST_CASE("float_format: the reference encoder matches values pinned from numpy and ml_dtypes") {
  struct Case {
    Format format;
    std::uint32_t x;     // float32 bits
    std::uint16_t code;
  };
  const Case cases[] = {
      {Format::kFp16, 0x477fe000u, 0x7bff},  // 65504: max
      {Format::kFp16, 0x477fefffu, 0x7bff},  // 65519.996: just below the overflow tie
      {Format::kFp16, 0x477ff000u, 0x7c00},  // 65520: the tie rounds to even, i.e. up to inf
      {Format::kFp16, 0xc77ff000u, 0xfc00},  // -65520: -inf
      {Format::kFp16, 0x322bcc77u, 0x0000},  // 1e-8 < 2^-25: zero
      {Format::kFp16, 0x3300d959u, 0x0001},  // 3e-8 > 2^-25: the smallest subnormal 2^-24
      {Format::kFp16, 0x33000000u, 0x0000},  // 2^-25: tie between 0 and 2^-24, to even
      {Format::kFp16, 0x33400000u, 0x0001},  // 1.5 * 2^-25
      {Format::kFp16, 0x34200000u, 0x0002},  // 2.5 * 2^-24: subnormal tie, to even
      {Format::kFp16, 0x38800000u, 0x0400},  // 2^-14: the smallest normal
      {Format::kFp16, 0x3f801000u, 0x3c00},  // 1 + 2^-11: tie, to even (down)
      {Format::kFp16, 0x3f803000u, 0x3c02},  // 1 + 3 * 2^-11: tie, to even (up)
      {Format::kFp16, 0x80000000u, 0x8000},  // -0
      {Format::kFp16, 0x7f800001u, 0x7c01},  // signalling NaN, payload truncates to 0: payload 1
      {Format::kFp16, 0x7fc00000u, 0x7e00},  // quiet NaN
      {Format::kFp16, 0xffc00000u, 0xfe00},  // -NaN keeps its sign
      {Format::kFp16, 0x7fa00000u, 0x7d00},  // signalling NaN stays signalling (numpy)
      {Format::kFp16, 0x7f801fffu, 0x7c01},
      {Format::kBf16, 0x3f808000u, 0x3f80},  // 1 + 2^-8: tie, to even (down)
      {Format::kBf16, 0x3f818000u, 0x3f82},  // 1 + 3 * 2^-8: tie, to even (up)
      {Format::kBf16, 0x7f7f0000u, 0x7f7f},  // max
      {Format::kBf16, 0x7f7f7fffu, 0x7f7f},  // just below the overflow tie
      {Format::kBf16, 0x7f7f8000u, 0x7f80},  // the overflow tie: inf
      {Format::kBf16, 0x00008000u, 0x0000},  // float32 subnormal tie: to even (0)
      {Format::kBf16, 0x00018000u, 0x0002},  // float32 subnormal tie: to even (up)
      {Format::kBf16, 0x00000001u, 0x0000},  // smallest float32 subnormal
      {Format::kBf16, 0x7f800000u, 0x7f80},  // inf
      {Format::kBf16, 0x7fc00000u, 0x7fc0},  // NaN
      {Format::kBf16, 0xff800001u, 0xffc0},  // -sNaN: the quiet NaN, sign kept (ml_dtypes)
      {Format::kBf16, 0x7fbfffffu, 0x7fc0},  // the payload is dropped (ml_dtypes)
      {Format::kFp8E4M3, 0x43e00000u, 0x7e},  // 448: max
      {Format::kFp8E4M3, 0x43e80000u, 0x7e},  // 464: tie between 448 and (NaN-coded) 480, to even
      {Format::kFp8E4M3, 0x43e80001u, 0x7f},  // just above: NaN, as e4m3fn has no inf
      {Format::kFp8E4M3, 0xf149f2cau, 0xff},  // -1e30: NaN with the sign
      {Format::kFp8E4M3, 0x7f800000u, 0x7f},  // inf: NaN
      {Format::kFp8E4M3, 0xff800000u, 0xff},  // -inf: -NaN
      {Format::kFp8E4M3, 0x3b000000u, 0x01},  // 2^-9: the smallest subnormal
      {Format::kFp8E4M3, 0x3a800000u, 0x00},  // 2^-10: tie, to even (0)
      {Format::kFp8E4M3, 0x3ac00000u, 0x01},  // 1.5 * 2^-10
      {Format::kFp8E4M3, 0x3c800000u, 0x08},  // 2^-6: the smallest normal
      {Format::kFp8E4M3, 0x00000000u, 0x00},
      {Format::kFp8E4M3, 0xaedbe6ffu, 0x80},  // -1e-10: -0
      {Format::kFp8E4M3, 0x41880000u, 0x58},  // 17: tie between 16 and 18, to even (16)
      {Format::kFp8E4M3, 0x7fc00000u, 0x7f},
      {Format::kFp8E4M3, 0xff800001u, 0xff},
      {Format::kFp8E5M2, 0x47600000u, 0x7b},  // 57344: max
      {Format::kFp8E5M2, 0x476fffffu, 0x7b},  // just below the overflow tie
      {Format::kFp8E5M2, 0x47700000u, 0x7c},  // 61440: the overflow tie, to inf
      {Format::kFp8E5M2, 0xff800000u, 0xfc},  // -inf
      {Format::kFp8E5M2, 0x37800000u, 0x01},  // 2^-16: the smallest subnormal
      {Format::kFp8E5M2, 0x37000000u, 0x00},  // 2^-17: tie, to even (0)
      {Format::kFp8E5M2, 0x37c00000u, 0x02},  // 3 * 2^-17: tie, to even (up)
      {Format::kFp8E5M2, 0x38800000u, 0x04},  // 2^-14: the smallest normal
      {Format::kFp8E5M2, 0x40a00000u, 0x45},  // 5: exact
      {Format::kFp8E5M2, 0x7fc00000u, 0x7e},  // NaN: the quiet NaN
      {Format::kFp8E5M2, 0xff800001u, 0xfe},  // -sNaN: -quiet NaN
  };
  for (const Case& c : cases) {
    CAPTURE(qdrift::format_name(c.format));
    CAPTURE(hex(c.x));
    CHECK(qdrift::float_to_bits(f32_of(c.x), c.format) == c.code);
  }

  struct Decoded {
    Format format;
    std::uint16_t code;
    std::uint32_t y;     // float32 bits
  };
  const Decoded decoded[] = {
      {Format::kFp16, 0x7c00, 0x7f800000u},  // inf
      {Format::kFp16, 0xfc01, 0xff802000u},  // NaN payload kept, not quieted (numpy)
      {Format::kFp16, 0x7e00, 0x7fc00000u},
      {Format::kFp16, 0x0001, 0x33800000u},  // 2^-24
      {Format::kFp16, 0x7bff, 0x477fe000u},  // 65504
      {Format::kFp16, 0x8000, 0x80000000u},  // -0
      {Format::kBf16, 0x7f81, 0x7f810000u},  // NaN payload kept (ml_dtypes)
      {Format::kBf16, 0x0001, 0x00010000u},  // 2^-133, a float32 subnormal
      {Format::kBf16, 0x7f7f, 0x7f7f0000u},
      {Format::kFp8E4M3, 0x7f, 0x7fc00000u},  // the NaN
      {Format::kFp8E4M3, 0xff, 0xffc00000u},
      {Format::kFp8E4M3, 0x7e, 0x43e00000u},  // 448
      {Format::kFp8E4M3, 0x01, 0x3b000000u},  // 2^-9
      {Format::kFp8E4M3, 0x80, 0x80000000u},
      {Format::kFp8E5M2, 0x7c, 0x7f800000u},  // inf
      {Format::kFp8E5M2, 0x7d, 0x7fc00000u},  // NaN payload dropped (ml_dtypes)
      {Format::kFp8E5M2, 0xfe, 0xffc00000u},
      {Format::kFp8E5M2, 0x7b, 0x47600000u},  // 57344
  };
  for (const Decoded& d : decoded) {
    CAPTURE(qdrift::format_name(d.format));
    CAPTURE(d.code);
    CHECK(u32_of(qdrift::bits_to_float(d.code, d.format)) == d.y);
  }

  CHECK(qdrift::format_max(Format::kFp16) == 65504.0);
  CHECK(qdrift::format_max(Format::kBf16) == 0x1.fep127);
  CHECK(qdrift::format_max(Format::kFp8E4M3) == 448.0);
  CHECK(qdrift::format_max(Format::kFp8E5M2) == 57344.0);
  CHECK(qdrift::format_bits(Format::kBf16) == 16);
  CHECK(qdrift::format_bits(Format::kFp8E4M3) == 8);
  CHECK(std::isinf(qdrift::round_to_format(65520.0f, Format::kFp16)));
  CHECK(std::isnan(qdrift::round_to_format(465.0f, Format::kFp8E4M3)));
  CHECK(std::signbit(qdrift::round_to_format(-1e-30f, Format::kFp8E5M2)));
}

TEST_CASE("float_format: int is not a float format, and fp16 codes do not fit uint8") {
  float x = 1.0f, y = 0.0f;
  std::uint16_t b16 = 0;
  std::uint8_t b8 = 0;
  CHECK_THROWS_AS(qdrift::cast(Format::kInt, &x, 1, &y), qdrift::ConfigError);
  CHECK_THROWS_AS(qdrift::to_bits(Format::kInt, &x, 1, &b16), qdrift::ConfigError);
  CHECK_THROWS_AS(qdrift::float_to_bits(x, Format::kInt), qdrift::ConfigError);
  CHECK_THROWS_AS(qdrift::format_bits(Format::kInt), qdrift::ConfigError);
  CHECK_THROWS_AS(qdrift::to_bits(Format::kFp16, &x, 1, &b8), qdrift::ConfigError);
  CHECK_THROWS_AS(qdrift::from_bits(Format::kBf16, &b8, 1, &y), qdrift::ConfigError);
}
