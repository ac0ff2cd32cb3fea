// SPDX-License-Identifier: Apache-2.0
// Float formats: the fast cast against the bit-level reference encoder over a stride sweep of
// all float32 patterns and around every format's boundaries, plus hand-checked values.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "qdrift/quantizers/float_format.h"

using qdrift::Format;

namespace {
float from_u32(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }
}  // namespace

TEST_CASE("float_format: fast cast equals the reference encoder") {
  for (Format f : {Format::kFp16, Format::kBf16, Format::kFp8E4M3, Format::kFp8E5M2}) {
    CAPTURE(qdrift::format_name(f));
    std::vector<float> x;
    for (std::uint64_t u = 0; u < (std::uint64_t{1} << 32); u += 4099) x.push_back(from_u32(static_cast<std::uint32_t>(u)));
    // Every code of the format, its neighbours in float32 and the midpoints between codes.
    const std::uint32_t codes = 1u << qdrift::format_bits(f);
    for (std::uint32_t c = 0; c + 1 < codes; ++c) {
      const float a = qdrift::bits_to_float(static_cast<std::uint16_t>(c), f);
      const float b = qdrift::bits_to_float(static_cast<std::uint16_t>(c + 1), f);
      if (!std::isfinite(a) || !std::isfinite(b)) continue;
      x.push_back(a);
      x.push_back(std::nextafter(a, INFINITY));
      x.push_back(std::nextafter(a, -INFINITY));
      x.push_back(static_cast<float>((static_cast<double>(a) + b) / 2));
    }
    std::vector<float> fast(x.size());
    qdrift::cast(f, x.data(), x.size(), fast.data());
    for (std::size_t i = 0; i < x.size(); ++i) {
      CAPTURE(x[i]);
      const float ref = qdrift::round_to_format(x[i], f);
      if (std::isnan(ref)) {
        REQUIRE(std::isnan(fast[i]));
      } else {
        REQUIRE(same_bits(fast[i], ref));
      }
    }
  }
}

TEST_CASE("float_format: hand-checked values") {
  CHECK(qdrift::round_to_format(65504.0f, Format::kFp16) == 65504.0f);
  CHECK(std::isinf(qdrift::round_to_format(65520.0f, Format::kFp16)));         // the tie rounds up to inf
  CHECK(qdrift::round_to_format(65519.99f, Format::kFp16) == 65504.0f);
  CHECK(qdrift::round_to_format(448.0f, Format::kFp8E4M3) == 448.0f);
  CHECK(qdrift::round_to_format(464.0f, Format::kFp8E4M3) == 448.0f);          // tie to even (448)
  CHECK(std::isnan(qdrift::round_to_format(465.0f, Format::kFp8E4M3)));        // e4m3fn has no inf
  CHECK(std::isnan(qdrift::round_to_format(INFINITY, Format::kFp8E4M3)));
  CHECK(qdrift::round_to_format(57344.0f, Format::kFp8E5M2) == 57344.0f);
  CHECK(std::isinf(qdrift::round_to_format(61440.0f, Format::kFp8E5M2)));
  CHECK(qdrift::round_to_format(0x1p-24f, Format::kFp16) == 0x1p-24f);         // smallest subnormal
  CHECK(qdrift::round_to_format(0x1p-25f, Format::kFp16) == 0.0f);             // tie to even: 0
  CHECK(qdrift::round_to_format(0x1.8p-25f, Format::kFp16) == 0x1p-24f);
  CHECK(qdrift::round_to_format(1.0f + 0x1p-8f, Format::kBf16) == 1.0f);       // tie to even
  CHECK(qdrift::round_to_format(1.0f + 0x1.8p-8f, Format::kBf16) == 1.0f + 0x1p-7f);
  CHECK(qdrift::float_to_bits(-0.0f, Format::kFp8E4M3) == 0x80);
  CHECK(qdrift::float_to_bits(std::nanf(""), Format::kBf16) == 0x7fc0);
  CHECK(qdrift::format_bits(Format::kFp8E5M2) == 8);
}
