// SPDX-License-Identifier: Apache-2.0
// Affine quantization: the fast element kernels against the reference, bit for bit, over
// random shapes and layouts, ties at .5, saturation, NaN/Inf, empty and size-1 dims; and
// the parameter formulas' invariants.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "qdrift/core/error.h"
#include "fake_quant_isa.h"
#include "qdrift/quantizers/affine.h"
#include "testing/random.h"

namespace {

using qdrift::Granularity;
using qdrift::QuantParams;
using qdrift::Rounding;
using qdrift::Shape;

struct Case {
  Shape shape;
  Granularity granularity;
  int axis;
  int group_size;
};

std::vector<Case> layout_cases() {
  return {
      {{}, Granularity::kPerTensor, -1, 0},          {{0}, Granularity::kPerTensor, -1, 0},
      {{1}, Granularity::kPerTensor, -1, 0},         {{33}, Granularity::kPerTensor, -1, 0},
      {{4, 0, 3}, Granularity::kPerChannel, 2, 0},   {{1}, Granularity::kPerChannel, 0, 0},
      {{17, 5}, Granularity::kPerChannel, -1, 0},    {{5, 17}, Granularity::kPerChannel, 0, 0},
      {{2, 3, 4, 5}, Granularity::kPerChannel, 1, 0}, {{3, 16, 2}, Granularity::kPerChannel, 2, 0},
      {{6, 12}, Granularity::kPerGroup, 1, 4},       {{12, 5}, Granularity::kPerGroup, 0, 3},
      {{2, 8, 3}, Granularity::kPerGroup, 1, 8},     {{2, 9, 1}, Granularity::kPerGroup, 1, 1},
  };
}

// Inputs that exercise every branch: normal values, exact .5 ties of x * inv (the scales are
// powers of two in half the slots, so the products are exact), saturation, zeros, NaN, Inf.
std::vector<float> make_inputs(std::size_t n, std::mt19937_64& rng, float spread) {
  std::normal_distribution<float> normal(0.0f, spread);
  std::uniform_int_distribution<int> pick(0, 9), tie(-300, 300);
  std::vector<float> x(n);
  for (auto& v : x) {
    switch (pick(rng)) {
      case 0: v = (static_cast<float>(tie(rng)) + 0.5f) * 0.25f; break;   // tie when inv = 4
      case 1: v = (static_cast<float>(tie(rng)) + 0.5f) * 0.125f; break;  // tie when inv = 8
      case 2: v = normal(rng) * 1000.0f; break;                            // saturates
      case 3: v = (pick(rng) == 0) ? std::nanf("") : (pick(rng) < 5 ? INFINITY : -INFINITY); break;
      case 4: v = (pick(rng) < 5) ? 0.0f : -0.0f; break;
      default: v = normal(rng);
    }
  }
  return x;
}

QuantParams random_params(const Case& c, std::mt19937_64& rng, int bits, bool is_signed) {
  const qdrift::SliceLayout l = qdrift::make_layout(c.shape, c.granularity, c.axis, c.group_size, "test");
  const std::int32_t qmin = is_signed ? -(1 << (bits - 1)) : 0;
  const std::int32_t qmax = is_signed ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
  std::uniform_int_distribution<std::int32_t> zp(qmin, qmax);
  std::uniform_real_distribution<float> sc(0.001f, 0.5f);
  std::vector<float> scale(l.num_slots());
  std::vector<std::int32_t> zero(l.num_slots());
  for (std::size_t s = 0; s < scale.size(); ++s) {
    scale[s] = (s % 2 == 0) ? (s % 4 == 0 ? 0.25f : 0.125f) : sc(rng);
    zero[s] = zp(rng);
  }
  return qdrift::make_params(scale, zero, qmin, qmax, c.granularity, c.axis, c.group_size, c.shape);
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

}  // namespace

TEST_CASE("affine: every instruction-set variant of the fast kernels equals the reference bit for bit") {
  for (const auto& isa : qdrift::detail::available_isa_kernels()) MESSAGE("fast kernels compiled and runnable: ", std::string(isa.name));
  auto rng = qdrift::testing::make_rng(2);
  CAPTURE(qdrift::testing::test_seed());
  const Rounding rules[] = {Rounding::kHalfEven, Rounding::kHalfAway, Rounding::kHalfUp, Rounding::kFloor,
                            Rounding::kStochastic};
  for (const Case& c : layout_cases()) {
    for (int bits : {2, 4, 8, 16}) {
      for (bool is_signed : {true, false}) {
        for (Rounding r : rules) {
          CAPTURE(qdrift::shape_to_string(c.shape));
          CAPTURE(qdrift::granularity_name(c.granularity));
          CAPTURE(c.axis);
          CAPTURE(bits);
          CAPTURE(is_signed);
          CAPTURE(qdrift::rounding_name(r));
          const qdrift::SliceLayout l = qdrift::make_layout(c.shape, c.granularity, c.axis, c.group_size, "test");
          const QuantParams p = random_params(c, rng, bits, is_signed);
          const std::vector<float> x = make_inputs(l.num_elements(), rng, 2.0f);
          qdrift::ElementwiseArgs a{&l, &p, r, 42};
          const std::size_t n = x.size();
          std::vector<float> y_fast(n), y_plain(n), y_ref(n);
          std::vector<std::uint8_t> m_fast(n), m_ref(n);
          std::vector<std::int32_t> q_fast(n), q_ref(n);
          qdrift::ref::fake_quant(a, x.data(), y_ref.data(), m_ref.data());
          qdrift::ref::quantize(a, x.data(), q_ref.data());
          for (const auto& isa : qdrift::detail::available_isa_kernels()) {
            CAPTURE(isa.name);
            qdrift::detail::fake_quant_with(isa, a, x.data(), y_fast.data(), m_fast.data());
            qdrift::detail::fake_quant_with(isa, a, x.data(), y_plain.data(), nullptr);
            qdrift::detail::quantize_with(isa, a, x.data(), q_fast.data());
            for (std::size_t i = 0; i < n; ++i) {
              CAPTURE(i);
              CAPTURE(x[i]);
              REQUIRE(same_bits(y_fast[i], y_ref[i]));
              REQUIRE(same_bits(y_plain[i], y_ref[i]));
              REQUIRE(m_fast[i] == m_ref[i]);
              REQUIRE(q_fast[i] == q_ref[i]);
              REQUIRE(q_ref[i] >= p.qmin);
              REQUIRE(q_ref[i] <= p.qmax);
            }
          }
        }
      }
    }
  }
}

TEST_CASE("affine: invariants of fake quantization") {
  auto rng = qdrift::testing::make_rng(3);
  const Case c{{8, 64}, Granularity::kPerChannel, 0, 0};
  const qdrift::SliceLayout l = qdrift::make_layout(c.shape, c.granularity, c.axis, 0, "test");
  const QuantParams p = random_params(c, rng, 8, true);
  std::vector<float> x = make_inputs(l.num_elements(), rng, 3.0f);
  for (auto& v : x)
    if (!std::isfinite(v)) v = 1.0f;
  const qdrift::ElementwiseArgs a{&l, &p, Rounding::kHalfEven, 0};
  std::vector<float> y(x.size()), yy(x.size());
  std::vector<std::uint8_t> mask(x.size());
  qdrift::fake_quant(a, x.data(), y.data(), mask.data());
  qdrift::fake_quant(a, y.data(), yy.data(), nullptr);
  for (std::size_t i = 0; i < x.size(); ++i) {
    const std::size_t ch = i / 64;
    CAPTURE(i);
    CHECK(same_bits(y[i], yy[i]));                                   // fq(fq(x)) == fq(x)
    if (mask[i]) CHECK(std::fabs(x[i] - y[i]) <= 0.5f * p.scale[ch] * (1 + 1e-6f));  // |x - fq(x)| <= s/2 inside
  }
  // Real zero is exactly representable: fq(0) == 0 for every channel.
  std::vector<float> zeros(x.size(), 0.0f), out(x.size());
  qdrift::fake_quant(a, zeros.data(), out.data(), nullptr);
  for (float v : out) CHECK(v == 0.0f);
}

TEST_CASE("affine: torch-formula params from ranges") {
  qdrift::QuantSpec spec;   // int8 signed asymmetric
  const qdrift::SliceLayout l = qdrift::make_layout({10}, Granularity::kPerTensor, -1, 0, "test");
  auto p = qdrift::params_from_ranges(spec, {-1.0f}, {2.0f}, l, {10});
  CHECK(p.scale[0] == 3.0f / 255.0f);
  CHECK(p.zero_point[0] == -128 + 85);          // -128 - round(-1 / (3/255)) = -128 + 85
  p = qdrift::params_from_ranges(spec, {0.5f}, {2.0f}, l, {10});   // range widened to include 0
  CHECK(p.scale[0] == 2.0f / 255.0f);
  CHECK(p.zero_point[0] == -128);
  p = qdrift::params_from_ranges(spec, {0.0f}, {0.0f}, l, {10});   // all zero: torch's eps
  CHECK(p.scale[0] == std::numeric_limits<float>::epsilon());
  spec.symmetric = true;
  p = qdrift::params_from_ranges(spec, {-3.0f}, {1.0f}, l, {10});
  CHECK(p.scale[0] == 3.0f / 127.5f);
  CHECK(p.zero_point[0] == 0);
  spec.narrow_range = true;
  p = qdrift::params_from_ranges(spec, {-3.0f}, {1.0f}, l, {10});
  CHECK(p.scale[0] == 3.0f / 127.0f);
  spec.is_signed = false;
  spec.narrow_range = false;
  p = qdrift::params_from_ranges(spec, {-3.0f}, {1.0f}, l, {10});
  CHECK(p.zero_point[0] == 128);
  CHECK_THROWS_AS(qdrift::params_from_ranges(spec, {NAN}, {1.0f}, l, {10}), qdrift::DataError);
}

TEST_CASE("affine: bad explicit params are named errors") {
  using qdrift::make_params;
  CHECK_THROWS_WITH_AS(make_params({0.0f}, {0}, -128, 127, Granularity::kPerTensor, -1, 0, {4}),
                       doctest::Contains("scale[0] must be finite and > 0"), qdrift::ConfigError);
  CHECK_THROWS_WITH_AS(make_params({NAN}, {0}, -128, 127, Granularity::kPerTensor, -1, 0, {4}),
                       doctest::Contains("scale[0]"), qdrift::ConfigError);
  CHECK_THROWS_WITH_AS(make_params({1e-40f}, {0}, -128, 127, Granularity::kPerTensor, -1, 0, {4}),
                       doctest::Contains("too small"), qdrift::ConfigError);
  CHECK_THROWS_WITH_AS(make_params({1.0f}, {200}, -128, 127, Granularity::kPerTensor, -1, 0, {4}),
                       doctest::Contains("zero_point[0] = 200 is outside"), qdrift::ConfigError);
  CHECK_THROWS_WITH_AS(make_params({1.0f, 1.0f}, {0}, -128, 127, Granularity::kPerChannel, 0, 0, {3, 2}),
                       doctest::Contains("axis 0 of the input (3, 2) has 3"), qdrift::ShapeError);
  CHECK_THROWS_WITH_AS(make_params({1.0f}, {0}, -128, 127, Granularity::kPerChannel, 2, 0, {3, 2}),
                       doctest::Contains("axis 2 is out of range"), qdrift::ShapeError);
  CHECK_THROWS_WITH_AS(make_params({1.0f}, {0}, -128, 127, Granularity::kPerGroup, 1, 4, {3, 6}),
                       doctest::Contains("group_size 4 does not divide"), qdrift::ShapeError);
  CHECK_THROWS_WITH_AS(make_params({1.0f}, {0}, 5, 5, Granularity::kPerTensor, -1, 0, {3}),
                       doctest::Contains("qmin (5) must be less than qmax (5)"), qdrift::ConfigError);
}
