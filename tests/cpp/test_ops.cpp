// SPDX-License-Identifier: Apache-2.0
// Float layers: fast paths against the reference over random shapes (padding, stride,
// dilation, groups, depthwise, batch 1), invariants (1x1 conv == dense, depthwise == grouped
// conv, RNN with T = 1 == dense + tanh), and named errors.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <random>
#include <vector>

#include "qdrift/core/error.h"
#include "qdrift/ops/integer.h"
#include "qdrift/ops/ops.h"
#include "testing/random.h"

using qdrift::Activation;
using qdrift::Path;

namespace {

std::vector<float> random_vector(std::size_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

std::vector<float> abs_of(std::vector<float> v) {
  for (auto& x : v) x = std::fabs(x);
  return v;
}

// Tolerance for float32 sums of `depth` products (fast) vs a double-accumulated reference:
// the classical bound depth * 2^-24 * sum|x*w|, where sum|x*w| is the reference run on
// absolute values. A wrong index or padding error is of the order of |y| itself.
void check_close(const std::vector<float>& fast, const std::vector<float>& ref, const std::vector<float>& magnitude,
                 std::size_t depth) {
  REQUIRE(fast.size() == ref.size());
  for (std::size_t i = 0; i < ref.size(); ++i) {
    CAPTURE(i);
    const double tol = static_cast<double>(depth + 2) * 0x1p-24 * magnitude[i] + 1e-30;
    REQUIRE(std::fabs(static_cast<double>(fast[i]) - ref[i]) <= tol);
  }
}

}  // namespace

TEST_CASE("ops: conv2d fast paths match the reference on random geometries") {
  auto rng = qdrift::testing::make_rng(11);
  CAPTURE(qdrift::testing::test_seed());
  std::uniform_int_distribution<std::size_t> small(1, 4), size(1, 9), chan(1, 6);
  for (int trial = 0; trial < 300; ++trial) {
    const std::size_t groups = trial % 3 == 0 ? chan(rng) : (trial % 3 == 1 ? 1 : 2);
    const std::size_t cg = trial % 5 == 0 ? 1 : chan(rng);
    const std::size_t og = chan(rng);
    const std::size_t n = small(rng), kh = small(rng), kw = small(rng);
    const std::size_t sh = small(rng), sw = small(rng), dh = trial % 4 == 0 ? 2 : 1, dw = trial % 7 == 0 ? 3 : 1;
    const auto padding = trial % 2 ? qdrift::Padding::kSame : qdrift::Padding::kValid;
    const std::size_t h = (kh - 1) * dh + size(rng), w = (kw - 1) * dw + size(rng);
    const qdrift::Shape xs{n, h, w, cg * groups}, ks{kh, kw, cg, og * groups};
    CAPTURE(qdrift::shape_to_string(xs));
    CAPTURE(qdrift::shape_to_string(ks));
    CAPTURE(sh);
    CAPTURE(sw);
    CAPTURE(dh);
    CAPTURE(dw);
    CAPTURE(groups);
    CAPTURE(trial % 2 ? "same" : "valid");
    const auto g = qdrift::make_conv_geometry(xs, ks, sh, sw, dh, dw, padding, groups, "test");
    const auto x = random_vector(qdrift::num_elements(xs), rng), k = random_vector(qdrift::num_elements(ks), rng),
               b = random_vector(ks[3], rng);
    const std::size_t out = g.n * g.oh * g.ow * g.o;
    std::vector<float> fast(out), ref(out), mag(out);
    qdrift::conv2d(g, x.data(), k.data(), b.data(), Activation::kLinear, fast.data(), Path::kFast);
    qdrift::conv2d(g, x.data(), k.data(), b.data(), Activation::kLinear, ref.data(), Path::kReference);
    qdrift::conv2d(g, abs_of(x).data(), abs_of(k).data(), abs_of(b).data(), Activation::kLinear, mag.data(),
                   Path::kReference);
    check_close(fast, ref, mag, kh * kw * cg);
  }
}

TEST_CASE("ops: SAME padding follows TensorFlow (extra pixel after)") {
  // in 4, k 2, stride 1: total padding 1, all of it after.
  auto g = qdrift::make_conv_geometry({1, 4, 4, 1}, {2, 2, 1, 1}, 1, 1, 1, 1, qdrift::Padding::kSame, 1, "t");
  CHECK(g.oh == 4);
  CHECK(g.pad_top == 0);
  // in 5, k 3, stride 2, dilation 2: effective 5, out 3, total 4, before 2.
  g = qdrift::make_conv_geometry({1, 5, 5, 1}, {3, 3, 1, 1}, 2, 2, 2, 2, qdrift::Padding::kSame, 1, "t");
  CHECK(g.oh == 3);
  CHECK(g.pad_top == 2);
  // VALID with a stride that does not divide: in 6, k 3, s 2 -> 2.
  g = qdrift::make_conv_geometry({1, 6, 6, 1}, {3, 3, 1, 1}, 2, 2, 1, 1, qdrift::Padding::kValid, 1, "t");
  CHECK(g.oh == 2);
}

TEST_CASE("ops: dense fast matches reference; 1x1 conv equals dense") {
  auto rng = qdrift::testing::make_rng(12);
  for (const auto& [n, in, out] : std::vector<std::array<std::size_t, 3>>{{1, 1, 1}, {3, 17, 5}, {64, 33, 65}, {2, 0, 3}}) {
    CAPTURE(n);
    CAPTURE(in);
    CAPTURE(out);
    const qdrift::DenseShape s{n, in, out};
    const auto x = random_vector(n * in, rng), w = random_vector(in * out, rng), b = random_vector(out, rng);
    std::vector<float> fast(n * out), ref(n * out), mag(n * out);
    qdrift::dense(s, x.data(), w.data(), b.data(), Activation::kLinear, fast.data(), Path::kFast);
    qdrift::dense(s, x.data(), w.data(), b.data(), Activation::kLinear, ref.data(), Path::kReference);
    qdrift::dense(s, abs_of(x).data(), abs_of(w).data(), abs_of(b).data(), Activation::kLinear, mag.data(),
                  Path::kReference);
    check_close(fast, ref, mag, in);
    if (in == 0) continue;
    // The same numbers as a 1x1 convolution over an (n, 1, 1, in) image: identical references.
    const auto g = qdrift::make_conv_geometry({n, 1, 1, in}, {1, 1, in, out}, 1, 1, 1, 1, qdrift::Padding::kValid, 1, "t");
    std::vector<float> conv(n * out);
    qdrift::conv2d(g, x.data(), w.data(), b.data(), Activation::kLinear, conv.data(), Path::kReference);
    CHECK(conv == ref);
  }
}

TEST_CASE("ops: simple RNN with one step equals dense + tanh") {
  auto rng = qdrift::testing::make_rng(13);
  const std::size_t n = 3, f = 5, u = 4;
  const auto x = random_vector(n * f, rng), k = random_vector(f * u, rng), r = random_vector(u * u, rng),
             b = random_vector(u, rng);
  const auto s = qdrift::make_rnn_shape({n, 1, f}, {f, u}, {u, u}, u, "t");
  for (Path p : {Path::kReference, Path::kFast}) {
    std::vector<float> states(n * u), dense(n * u);
    qdrift::simple_rnn(s, x.data(), k.data(), r.data(), b.data(), nullptr, Activation::kTanh, false, states.data(), p);
    qdrift::dense({n, f, u}, x.data(), k.data(), b.data(), Activation::kTanh, dense.data(), p);
    CHECK(states == dense);   // h0 = 0 adds exactly 0.0 to each pre-activation
  }
}

TEST_CASE("ops: errors name the layer and the cause") {
  using qdrift::make_conv_geometry;
  using qdrift::Padding;
  CHECK_THROWS_WITH_AS(make_conv_geometry({1, 5, 5}, {3, 3, 1, 1}, 1, 1, 1, 1, Padding::kValid, 1, "conv2d 'c1'"),
                       doctest::Contains("conv2d 'c1': the input must be NHWC"), qdrift::ShapeError);
  CHECK_THROWS_WITH_AS(make_conv_geometry({1, 5, 5, 3}, {3, 3, 2, 1}, 1, 1, 1, 1, Padding::kValid, 1, "c"),
                       doctest::Contains("the input has 3 channels but the kernel"), qdrift::ShapeError);
  CHECK_THROWS_WITH_AS(make_conv_geometry({1, 2, 5, 1}, {3, 3, 1, 1}, 1, 1, 1, 1, Padding::kValid, 1, "c"),
                       doctest::Contains("input has only 2 under VALID"), qdrift::ShapeError);
  CHECK_THROWS_WITH_AS(make_conv_geometry({1, 5, 5, 1}, {3, 3, 1, 1}, 0, 1, 1, 1, Padding::kValid, 1, "c"),
                       doctest::Contains("strides must be positive"), qdrift::ConfigError);
  CHECK_THROWS_WITH_AS(make_conv_geometry({0, 5, 5, 1}, {3, 3, 1, 1}, 1, 1, 1, 1, Padding::kValid, 1, "c"),
                       doctest::Contains("the batch is empty"), qdrift::ShapeError);
  CHECK_THROWS_WITH_AS(qdrift::make_dense_shape({2, 3}, {4, 5}, nullptr, 0, "dense 'd'"),
                       doctest::Contains("dense 'd': the input's last axis has 3 features but the kernel expects 4"),
                       qdrift::ShapeError);
  CHECK_THROWS_AS(qdrift::parse_activation("gelu"), qdrift::ConfigError);
}

TEST_CASE("ops: integer kernels on hand-checked cases") {
  // FC: acc = bias + sum w * (x - zp_in) = 10 + (1*(5-3) + 2*(7-3)) = 20; requantized by 0.5 -> 10, + zp 1.
  const std::vector<std::int8_t> x{5, 7}, w{1, 2};
  const std::vector<std::int32_t> b{10};
  qdrift::OutputStage stage;
  stage.method = qdrift::RequantMethod::kDoubleRha;
  stage.scale = {0.5};
  stage.zero_point = 1;
  std::vector<std::int8_t> y(1);
  qdrift::fully_connected_int8(x.data(), 1, 2, 3, w.data(), 1, b.data(), stage, y.data());
  CHECK(y[0] == 11);
  // Conv SAME with zp_in = -128: an all-zero real image is all -128 codes; padded taps must add
  // exactly 0 too, so every output equals the bias alone.
  const auto g = qdrift::make_conv_geometry({1, 3, 3, 1}, {3, 3, 1, 1}, 1, 1, 1, 1, qdrift::Padding::kSame, 1, "t");
  const std::vector<std::int8_t> image(9, -128), ones(9, 1);
  const std::vector<std::int32_t> bias{6};
  stage.scale = {1.0};
  stage.zero_point = 0;
  std::vector<std::int8_t> out(9);
  qdrift::conv2d_int8(g, image.data(), -128, ones.data(), bias.data(), stage, out.data());
  for (auto v : out) CHECK(v == 6);
  stage.scale = {1.0, 2.0};   // two scales for one channel: a named error
  CHECK_THROWS_AS(qdrift::conv2d_int8(g, image.data(), -128, ones.data(), bias.data(), stage, out.data()),
                  qdrift::ConfigError);
}

TEST_CASE("ops: int8 MUL ties, zero points, saturation and clamps on both rules") {
  // s_a s_b / s_out = 0.5 exactly: acc = 3, 5, -3 give the ties 1.5, 2.5, -1.5. gemmlowp's
  // high multiply rounds half up (2, 3, -1); XNNPACK's fp32 rule rounds half to even (2, 2, -2).
  const std::vector<std::int8_t> a{3, 5, -3, 127, -128}, b{1, 1, 1, 127, -128};
  std::vector<std::int8_t> y(5);
  qdrift::mul_int8(qdrift::MulKernel::kTflite, a.data(), b.data(), 5, 0.5f, 0, 0.25f, 0, 0.25f, 0, -128, 127, y.data());
  CHECK(y == std::vector<std::int8_t>{2, 3, -1, 127, 127});
  qdrift::mul_int8(qdrift::MulKernel::kXnnpack, a.data(), b.data(), 5, 0.5f, 0, 0.25f, 0, 0.25f, 0, -128, 127,
                   y.data());
  CHECK(y == std::vector<std::int8_t>{2, 2, -2, 127, 127});
  // Zero points: 0.5 * (10 - 2) times 0.25 * (-4 - 0) is -4 = 0.1 * (-45 - (-5)); a fused clamp.
  const std::vector<std::int8_t> c{10}, d{-4};
  for (auto k : {qdrift::MulKernel::kTflite, qdrift::MulKernel::kXnnpack}) {
    qdrift::mul_int8(k, c.data(), d.data(), 1, 0.5f, 2, 0.25f, 0, 0.1f, -5, -128, 127, y.data());
    CHECK(y[0] == -45);
    qdrift::mul_int8(k, c.data(), d.data(), 1, 0.5f, 2, 0.25f, 0, 0.1f, -5, -5, 127, y.data());
    CHECK(y[0] == -5);
    qdrift::mul_int8(k, c.data(), d.data(), 0, 0.5f, 2, 0.25f, 0, 0.1f, -5, -128, 127, y.data());   // empty
    CHECK_THROWS_AS(qdrift::mul_int8(k, c.data(), d.data(), 1, 0.5f, 2, -0.25f, 0, 0.1f, -5, -128, 127, y.data()),
                    qdrift::ConfigError);
  }
}

TEST_CASE("ops: int8 ADD and TANH/LOGISTIC tables on hand-checked values") {
  // Real values a = 0.5 * (10 - 2) = 4 and b = 0.25 * (-4 - 0) = -1 add to 3 = 0.1 * (25 - (-5)).
  const std::vector<std::int8_t> a{10}, b{-4};
  std::vector<std::int8_t> y(1);
  for (auto k : {qdrift::AddKernel::kTflite, qdrift::AddKernel::kXnnpack}) {
    qdrift::add_int8(k, a.data(), b.data(), 1, 0.5f, 2, 0.25f, 0, 0.1f, -5, -128, 127, y.data());
    CHECK(y[0] == 25);
  }
  const auto tanh = qdrift::lut_int8(qdrift::LutFunction::kTanh, 1.0f / 16, 0, 1.0f / 128, 0, false);
  CHECK(tanh[128] == 0);                      // tanh(0) = 0
  CHECK(tanh[255] == 127);                    // tanh(127/16) rounds to 128/128, clamped to 127
  CHECK(tanh[0] == -128);
  for (std::size_t i = 1; i < 256; ++i) CHECK(tanh[i] >= tanh[i - 1]);   // monotone
  const auto sigmoid = qdrift::lut_int8(qdrift::LutFunction::kLogistic, 1.0f / 16, 0, 1.0f / 256, -128, false);
  CHECK(sigmoid[128] == 0);                   // 0.5 * 256 - 128
}
