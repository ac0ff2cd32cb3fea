// SPDX-License-Identifier: Apache-2.0
// Hybrid input quantizers: tie rules at block and tail positions, all-zero rows, the asymmetric
// zero point and its add order, XNNPACK's half-to-even rule; hybrid FC against a plain-integer
// restatement; the float kernels' summation orders on cases where they give different bits.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "qdrift/core/error.h"
#include "qdrift/ops/hybrid.h"

namespace {

const float kNearHalf = 0.5f - 0x1p-25f;   // 0.49999997: v + 0.5f rounds up to 1.0f

std::vector<int> symmetric(const std::vector<float>& x, float* scale) {
  std::vector<std::int8_t> q(x.size());
  qdrift::quantize_row_symmetric_tflite(x.data(), x.size(), q.data(), scale);
  return {q.begin(), q.end()};
}

std::vector<int> asymmetric(const std::vector<float>& x, float* scale, std::int32_t* zp) {
  std::vector<std::int8_t> q(x.size());
  qdrift::quantize_row_asymmetric_tflite(x.data(), x.size(), q.data(), scale, zp);
  return {q.begin(), q.end()};
}

}  // namespace

TEST_CASE("symmetric row quantization: ties away from zero; 0.49999997 splits blocks of 8 from the tail") {
  // range 254 -> inv = 127 / 254 = 0.5 exactly; x = 1 is the tie 0.5, x = 2 * kNearHalf is 0.49999997.
  std::vector<float> x(9, 0.0f);
  x[0] = 254.0f;
  x[1] = 1.0f;                // block: 0.5 -> 1 (not 0, as half-to-even would give)
  x[2] = -1.0f;               // block: -0.5 -> -1
  x[3] = 2.0f * kNearHalf;    // block: trunc(0.49999997 + 0.5f) = trunc(1.0f) = 1
  x[8] = 2.0f * kNearHalf;    // tail (9 mod 8): std::round(0.49999997) = 0
  float scale = 0.0f;
  const std::vector<int> q = symmetric(x, &scale);
  CHECK(scale == 2.0f);
  CHECK(q == std::vector<int>{127, 1, -1, 1, 0, 0, 0, 0, 0});
  x[8] = 3.0f;                // tail tie 1.5 -> 2
  CHECK(symmetric(x, &scale)[8] == 2);
  x[8] = -1.0f;               // tail tie -0.5 -> -1
  CHECK(symmetric(x, &scale)[8] == -1);
}

TEST_CASE("symmetric row quantization: all-zero and empty rows give q = 0 and scale 1") {
  float scale = 0.0f;
  CHECK(symmetric(std::vector<float>(5, 0.0f), &scale) == std::vector<int>(5, 0));
  CHECK(scale == 1.0f);
  scale = 0.0f;
  CHECK(symmetric({}, &scale).empty());
  CHECK(scale == 1.0f);
  CHECK(symmetric({-0.0f, 0.0f}, &scale) == std::vector<int>{0, 0});
}

TEST_CASE("asymmetric row quantization: zero point, rounding before the zero point is added") {
  // [0, 255]: scale 1, zp -128 (from the min side), inv 1. x = 0.5 gives zp + round(0.5) = -127;
  // the portable kernel's round(zp + 0.5) = round(-127.5) would give -128.
  std::vector<float> x(10, 0.0f);
  x[0] = 255.0f;
  x[1] = 0.5f;
  x[2] = 2.5f;
  x[3] = kNearHalf;   // block: trunc(0.49999997 + 0.5f) = 1 -> -127
  x[9] = kNearHalf;   // tail: std::round -> 0 -> -128
  float scale = 0.0f;
  std::int32_t zp = 0;
  const std::vector<int> q = asymmetric(x, &scale, &zp);
  CHECK(scale == 1.0f);
  CHECK(zp == -128);
  CHECK(q[0] == 127);
  CHECK(q[1] == -127);
  CHECK(q[2] == -125);
  CHECK(q[3] == -127);
  CHECK(q[9] == -128);
  CHECK(q[4] == -128);   // zeros map to the zero point
}

TEST_CASE("asymmetric row quantization: all-zero row, negative-only row, the min/max zero-point choice") {
  float scale = 0.0f;
  std::int32_t zp = 7;
  CHECK(asymmetric(std::vector<float>(3, 0.0f), &scale, &zp) == std::vector<int>{0, 0, 0});
  CHECK(scale == 1.0f);
  CHECK(zp == 0);
  // [-255, 0]: rmax = 0 gives zp from the max side: 127 - 0 = 127 (>= 127 clamps).
  const std::vector<int> q = asymmetric({-255.0f, 0.0f, -1.0f}, &scale, &zp);
  CHECK(scale == 1.0f);
  CHECK(zp == 127);
  CHECK(q == std::vector<int>{-128, 127, 126});
  // [-1, 2]: scale_d = 3 / 255; zp_from_min = -128 + 85 = -43 (error 128 + 85 < 127 + 170).
  asymmetric({-1.0f, 2.0f}, &scale, &zp);
  CHECK(zp == -43);
  CHECK(scale == static_cast<float>(3.0 / 255.0));
}

TEST_CASE("xnnpack row quantization: half to even, zero point nudged in float") {
  std::vector<float> x = {0.0f, 255.0f, 0.5f, 1.5f, 2.5f, -0.0f};
  std::vector<std::int8_t> q(x.size());
  float scale = 0.0f;
  std::int32_t zp = 0;
  qdrift::quantize_row_xnnpack(x.data(), x.size(), q.data(), &scale, &zp);
  CHECK(scale == 1.0f);
  CHECK(zp == -128);
  CHECK(std::vector<int>(q.begin(), q.end()) == std::vector<int>{-128, 127, -128, -126, -126, -128});
  std::vector<float> zeros(4, 0.0f);
  qdrift::quantize_row_xnnpack(zeros.data(), zeros.size(), q.data(), &scale, &zp);
  CHECK(scale == 1.0f);
  CHECK(zp == 127);        // k = 1: (-128 + 0) + (127 + 0) > 0 is false, so zp = 127 - 0
  CHECK(q[0] - zp == 0);   // the row still dequantizes to exact zeros
}

TEST_CASE("hybrid FC equals an integer restatement, and an all-zero input returns the bias") {
  // 2 rows x 3 inputs, filter 2 x 3 per-channel scales. Row 0 = [0, 255, 1] -> scale 1, zp -128,
  // q = [-128, 127, -127]; row_sum = [3, -1]; dot_o = sum w q - row_sum zp.
  const std::vector<float> x = {0.0f, 255.0f, 1.0f, 0.0f, 0.0f, 0.0f};
  const std::vector<std::int8_t> w = {1, 1, 1, -1, 2, -2};
  const std::vector<float> s_w = {0.5f, 0.25f}, bias = {10.0f, -10.0f};
  std::vector<float> y(4, 0.0f);
  qdrift::fully_connected_hybrid(qdrift::KernelPath::kReference, x.data(), 2, 3, w.data(), 2, s_w.data(), 2,
                                 bias.data(), true, -INFINITY, INFINITY, y.data());
  const int dot0 = (-128 + 127 - 127) - 3 * -128, dot1 = (128 + 254 + 254) - (-1) * -128;
  CHECK(y[0] == 10.0f + static_cast<float>(dot0) * 0.5f);
  CHECK(y[1] == -10.0f + static_cast<float>(dot1) * 0.25f);
  CHECK(y[2] == 10.0f);    // the zero row: q = 0, scale 1, zp 0
  CHECK(y[3] == -10.0f);
  const std::vector<float> zeros(6, 0.0f);
  qdrift::fully_connected_hybrid(qdrift::KernelPath::kBuiltin, zeros.data(), 2, 3, w.data(), 2, s_w.data(), 2,
                                 bias.data(), true, 0.0f, 6.0f, y.data());
  CHECK(y == std::vector<float>{6.0f, 0.0f, 6.0f, 0.0f});   // bias, then the RELU6 clamp
  CHECK_THROWS_AS(qdrift::fully_connected_hybrid(qdrift::KernelPath::kBuiltin, x.data(), 2, 3, w.data(), 2,
                                                 s_w.data(), 3, nullptr, true, -INFINITY, INFINITY, y.data()),
                  qdrift::ShapeError);
  CHECK_THROWS_AS(qdrift::parse_kernel_path("gpu"), qdrift::ConfigError);
}

TEST_CASE("float FC summation orders: the reference chain, the custom GEMV lanes, XNNPACK's FMA chain") {
  // x . w = 1 + 2^-24 * 4 spread so that the order of the float sums matters.
  const std::vector<float> x = {1.0f, 0x1p-24f, 0x1p-24f, 0x1p-24f, 0x1p-24f};
  const std::vector<float> w(20, 1.0f);   // 4 identical outputs (the GEMV needs >= 4)
  std::vector<float> y(4);
  qdrift::fully_connected_f32(qdrift::KernelPath::kReference, x.data(), 1, 5, w.data(), 4, nullptr, -INFINITY,
                              INFINITY, y.data());
  CHECK(y[0] == 1.0f);   // 1 + 2^-24 rounds back to 1, four times
  qdrift::fully_connected_f32(qdrift::KernelPath::kBuiltin, x.data(), 1, 5, w.data(), 4, nullptr, -INFINITY,
                              INFINITY, y.data());
  // Eigen's matrix-vector product: lanes [1, 2^-24, 2^-24, 2^-24] -> (1 + 2^-24) + (2^-24 + 2^-24)
  // = 1 + 2^-23 (the first sum rounds back to 1), then the tail: + 2^-24 is a tie -> 1 + 2^-22 (even)
  CHECK(y[0] == 1.0f + 0x1p-22f);
  const std::vector<float> bias = {0x1p-24f, 0.0f, 0.0f, 0.0f};
  const std::vector<float> x2 = {1.0f, 0x1p-25f};
  const std::vector<float> w2(8, 1.0f);
  qdrift::fully_connected_f32(qdrift::KernelPath::kXnnpack, x2.data(), 1, 2, w2.data(), 4, bias.data(), -INFINITY,
                              INFINITY, y.data());
  CHECK(y[0] == 1.0f);   // fma(1, 1, 2^-24) = 1 + 2^-24 -> 1; + 2^-25 -> 1
  qdrift::fully_connected_f32(qdrift::KernelPath::kReference, x2.data(), 1, 2, w2.data(), 4, bias.data(), -INFINITY,
                              INFINITY, y.data());
  CHECK(y[0] == 1.0f);
}

TEST_CASE("float activations: Eigen's logistic splits packets of 4 from a std::exp tail; cut-offs") {
  const std::vector<float> x = {-200.0f, 0.25f, 20.0f, -3.0f, 0.25f};
  std::vector<float> y(x.size());
  qdrift::logistic_eigen_f32(x.data(), x.size(), y.data());
  CHECK(y[0] == 0.0f);                       // below -104: exactly 0 in the packet path
  CHECK(y[2] == 1.0f);                       // capped at 16.6355324, where it reaches 1
  const float e = std::exp(0.25f);
  CHECK(y[4] == e / (1.0f + e));             // the tail element: the scalar formula
  CHECK(std::abs(y[1] - y[4]) <= 1e-7f);     // the same input through the packet path: within an ulp
  std::vector<float> t(2);
  const std::vector<float> big = {100.0f, -100.0f};
  qdrift::tanh_xnnpack_f32(big.data(), 2, t.data());
  CHECK(t[0] == 1.0f);   // clamped to +-7.9807181, where the fit evaluates to 1
  CHECK(t[1] == -1.0f);
  qdrift::tanh_eigen_f32(big.data(), 2, t.data());
  CHECK(t[0] == 1.0f);
  qdrift::logistic_xnnpack_f32(big.data(), 2, t.data());
  CHECK(t[0] == 1.0f);
  CHECK(t[1] == 0.0f);   // e = 2^-144 flushes to zero
}
