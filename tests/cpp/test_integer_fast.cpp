// SPDX-License-Identifier: Apache-2.0
// Every instruction-set variant of the fast int8 kernels against the reference loops, bit for
// bit: FC and conv (groups, depthwise multipliers, stride, dilation, padding) over tile-edge
// sizes, every requantization method, zero points -128/0/127; and the modelled accumulator.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "integer_fast.h"
#include "qdrift/core/error.h"
#include "qdrift/ops/integer.h"
#include "testing/random.h"

using qdrift::OutputStage;
using qdrift::RequantMethod;

namespace {

std::vector<std::int8_t> random_int8(std::size_t n, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> d(-128, 127);
  std::vector<std::int8_t> v(n);
  for (auto& x : v) x = static_cast<std::int8_t>(d(rng));
  return v;
}

OutputStage random_stage(RequantMethod method, std::size_t channels, std::size_t depth, std::mt19937_64& rng) {
  OutputStage s;
  s.method = method;
  const std::size_t n = std::uniform_int_distribution<int>(0, 1)(rng) ? channels : 1;
  const double typical = 127.0 / (128.0 * 128.0 * std::sqrt(static_cast<double>(std::max<std::size_t>(depth, 1))));
  std::uniform_real_distribution<double> factor(std::log(0.05), std::log(30.0));   // up to saturation
  for (std::size_t c = 0; c < n; ++c) {
    const double real = std::min(typical * std::exp(factor(rng)), 100.0);
    s.scale.push_back(real);
    const qdrift::QuantizedMultiplier q = qdrift::quantize_multiplier(real);
    s.multiplier.push_back(q.multiplier);
    s.shift.push_back(q.shift);
  }
  s.zero_point = std::uniform_int_distribution<int>(-128, 127)(rng);
  if (std::uniform_int_distribution<int>(0, 2)(rng) == 0) {   // a tail of channels under another rule
    s.tail_from = std::uniform_int_distribution<std::size_t>(0, channels)(rng);
    s.tail_method = qdrift::requant_method_uses_real_scale(method)
                        ? (method == RequantMethod::kXnnpack ? RequantMethod::kDoubleRha : RequantMethod::kXnnpack)
                        : (method == RequantMethod::kGemmlowp ? RequantMethod::kRuy : RequantMethod::kGemmlowp);
  }
  return s;
}

const RequantMethod kMethods[] = {RequantMethod::kGemmlowp, RequantMethod::kSingle, RequantMethod::kRuy,
                                  RequantMethod::kInt64, RequantMethod::kXnnpack, RequantMethod::kDoubleRha};
const std::size_t kEdges[] = {0, 1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 129};

}  // namespace

TEST_CASE("integer fast: every instruction-set variant equals the reference (FULLY_CONNECTED)") {
  for (const auto& isa : qdrift::detail::available_int8_kernels()) MESSAGE("int8 kernels runnable: ", std::string(isa.name));
  auto rng = qdrift::testing::make_rng(11);
  CAPTURE(qdrift::testing::test_seed());
  std::uniform_int_distribution<std::size_t> pick(0, std::size(kEdges) - 1);
  for (RequantMethod method : kMethods)
    for (int trial = 0; trial < 25; ++trial) {
      const std::size_t batch = kEdges[pick(rng)] % 70, in = kEdges[pick(rng)], out = kEdges[pick(rng)];
      const std::int32_t zp = trial % 3 == 0 ? -128 : (trial % 3 == 1 ? 0 : 127);
      CAPTURE(qdrift::requant_method_name(method));
      CAPTURE(batch);
      CAPTURE(in);
      CAPTURE(out);
      CAPTURE(zp);
      const auto x = random_int8(batch * in, rng), w = random_int8(out * in, rng);
      std::vector<std::int32_t> bias(out);
      for (auto& b : bias) b = std::uniform_int_distribution<std::int32_t>(-50000, 50000)(rng);
      const OutputStage stage = random_stage(method, out, in, rng);
      std::vector<std::int8_t> ref(batch * out), fast(batch * out);
      qdrift::fully_connected_int8(x.data(), batch, in, zp, w.data(), out, bias.data(), stage, ref.data());
      for (const auto& isa : qdrift::detail::available_int8_kernels()) {
        CAPTURE(isa.name);
        std::fill(fast.begin(), fast.end(), std::int8_t{0});
        REQUIRE(qdrift::fast::fully_connected_int8_with(isa, x.data(), batch, in, zp, w.data(), out, bias.data(),
                                                        stage, fast.data()));
        REQUIRE(fast == ref);
      }
    }
}

TEST_CASE("integer fast: every instruction-set variant equals the reference (CONV_2D, depthwise)") {
  auto rng = qdrift::testing::make_rng(12);
  CAPTURE(qdrift::testing::test_seed());
  std::uniform_int_distribution<int> u(0, 1 << 20);
  for (RequantMethod method : kMethods)
    for (int trial = 0; trial < 20; ++trial) {
      const bool depthwise = trial % 3 == 0;
      const std::size_t groups = depthwise ? 1 + u(rng) % 20 : 1 + (u(rng) % 3 == 0 ? u(rng) % 4 : 0);
      const std::size_t cg = depthwise ? 1 : 1 + u(rng) % 20, og = depthwise ? 1 + u(rng) % 3 : 1 + u(rng) % 20;
      const std::size_t kh = 1 + u(rng) % 3, kw = 1 + u(rng) % 3, s = 1 + u(rng) % 2, d = 1 + u(rng) % 2;
      const qdrift::Padding pad = u(rng) % 2 ? qdrift::Padding::kSame : qdrift::Padding::kValid;
      const qdrift::Shape xs{1 + static_cast<std::size_t>(u(rng) % 2), (kh - 1) * d + 1 + u(rng) % 8,
                             (kw - 1) * d + 1 + u(rng) % 8, groups * cg};
      const qdrift::Shape ks{kh, kw, cg, groups * og};
      const qdrift::ConvGeometry g = qdrift::make_conv_geometry(xs, ks, s, s, d, d, pad, groups, "test");
      const std::int32_t zp = trial % 3 == 0 ? 127 : (trial % 3 == 1 ? -128 : 0);
      CAPTURE(qdrift::requant_method_name(method));
      CAPTURE(qdrift::shape_to_string(xs));
      CAPTURE(qdrift::shape_to_string(ks));
      CAPTURE(groups);
      CAPTURE(s);
      CAPTURE(d);
      CAPTURE(zp);
      const auto x = random_int8(qdrift::num_elements(xs), rng), f = random_int8(qdrift::num_elements(ks), rng);
      const OutputStage stage = random_stage(method, g.o, kh * kw * cg, rng);
      const std::size_t n_out = g.n * g.oh * g.ow * g.o;
      std::vector<std::int8_t> ref(n_out), fast(n_out);
      qdrift::conv2d_int8(g, x.data(), zp, f.data(), nullptr, stage, ref.data());
      for (const auto& isa : qdrift::detail::available_int8_kernels()) {
        CAPTURE(isa.name);
        std::fill(fast.begin(), fast.end(), std::int8_t{0});
        REQUIRE(qdrift::fast::conv2d_int8_with(isa, g, x.data(), zp, f.data(), nullptr, stage, fast.data()));
        REQUIRE(fast == ref);
      }
    }
}

TEST_CASE("integer: a 16-bit accumulator wraps or saturates, and counts each overflowing step") {
  // Products 127 * (127 + 128) = 32385: wrap 32385, -766 (overflow), 31619, -1532 (overflow);
  // saturate 32385, then 32767 three times (three overflows). Exact sum 129540.
  const std::vector<std::int8_t> x(4, 127), w(4, 127);
  OutputStage stage;
  stage.method = RequantMethod::kDoubleRha;
  stage.scale = {1.0 / 1024};
  std::int8_t y = 0;
  std::uint64_t n = 0;
  qdrift::fully_connected_int8(x.data(), 1, 4, -128, w.data(), 1, nullptr, stage, &y, qdrift::Path::kFast,
                               {16, qdrift::OverflowRule::kWrap}, &n);
  CHECK(n == 2);
  CHECK(y == -1);   // RHA(-1532 / 1024)
  qdrift::fully_connected_int8(x.data(), 1, 4, -128, w.data(), 1, nullptr, stage, &y, qdrift::Path::kReference,
                               {16, qdrift::OverflowRule::kSaturate}, &n);
  CHECK(n == 3);
  CHECK(y == 32);   // RHA(32767 / 1024)
  qdrift::fully_connected_int8(x.data(), 1, 4, -128, w.data(), 1, nullptr, stage, &y, qdrift::Path::kFast, {}, &n);
  CHECK(n == 0);
  CHECK(y == 127);
  CHECK_THROWS_AS(qdrift::validate(qdrift::AccumulatorSpec{65, qdrift::OverflowRule::kWrap}), qdrift::ConfigError);
}
