// SPDX-License-Identifier: Apache-2.0
// Every instruction-set variant of the int8 and float loops under the fast hybrid and float32 FC /
// conv against the reference loops, bit for bit, on each LiteRT path's rules
// (tests/python/test_hybrid_fast.py covers the default variants over more shapes and input kinds).
#include <doctest/doctest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "hybrid_fast.h"

using qdrift::KernelPath;

namespace {

const KernelPath kPaths[] = {KernelPath::kReference, KernelPath::kBuiltin, KernelPath::kXnnpack,
                             KernelPath::kTfBuiltin};

std::vector<float> random_floats(std::size_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  const bool positive = std::uniform_int_distribution<int>(0, 3)(rng) == 0;   // asymmetric zero point at -128
  std::vector<float> v(n);
  for (auto& x : v) x = positive ? 2.0f + std::abs(d(rng)) : d(rng);
  return v;
}

std::vector<std::int8_t> random_int8(std::size_t n, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> d(-128, 127);
  std::vector<std::int8_t> v(n);
  for (auto& x : v) x = static_cast<std::int8_t>(d(rng));
  return v;
}

std::vector<float> random_scales(std::size_t n, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> d(1e-4f, 1e-2f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

const std::size_t kEdges[] = {1, 2, 3, 4, 5, 8, 15, 16, 17, 63, 64, 65, 129};

}  // namespace

TEST_CASE("hybrid fast: every instruction-set variant equals the reference (FULLY_CONNECTED)") {
  std::mt19937_64 rng(7);
  auto pick = [&](std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng); };
  for (const auto& isa : qdrift::detail::available_int8_kernels())
    for (const auto& fk : qdrift::detail::available_float_kernels())
    for (KernelPath path : kPaths)
      for (int trial = 0; trial < 12; ++trial) {
        const std::size_t batch = kEdges[pick(8)], in = kEdges[pick(13)], out = kEdges[pick(13)];
        const std::vector<float> x = random_floats(batch * in, rng), bias = random_floats(out, rng);
        const std::vector<std::int8_t> w = random_int8(out * in, rng);
        const std::vector<float> scale = random_scales(trial % 2 ? out : 1, rng);
        const bool asym = trial % 3 != 0;
        std::vector<float> ref(batch * out), fast(batch * out, -1.0f);
        qdrift::fully_connected_hybrid(path, x.data(), batch, in, w.data(), out, scale.data(), scale.size(),
                                       bias.data(), asym, -INFINITY, INFINITY, ref.data(), qdrift::Path::kReference);
        REQUIRE(qdrift::fast::fully_connected_hybrid(isa, fk, path, x.data(), batch, in, w.data(), out, scale.data(),
                                                     scale.size(), bias.data(), asym, -INFINITY, INFINITY,
                                                     fast.data()));
        CHECK_MESSAGE(same_bits(fast, ref), std::string(isa.name), " ", std::string(fk.name), " path ", static_cast<int>(path), " batch ",
                      batch, " in ", in, " out ", out, " asym ", asym);
      }
}

TEST_CASE("hybrid fast: every instruction-set variant equals the reference (CONV_2D, DEPTHWISE_CONV_2D)") {
  std::mt19937_64 rng(11);
  struct Case {
    std::size_t c, o, k, groups, stride;
    bool depthwise;
    qdrift::Padding padding;
  };
  const Case cases[] = {{3, 5, 3, 1, 1, false, qdrift::Padding::kSame},   {17, 9, 3, 1, 2, false, qdrift::Padding::kValid},
                        {65, 4, 1, 1, 1, false, qdrift::Padding::kValid}, {8, 8, 3, 8, 1, true, qdrift::Padding::kSame},
                        {5, 15, 3, 5, 2, true, qdrift::Padding::kSame},    {6, 4, 2, 2, 1, false, qdrift::Padding::kSame}};
  for (const auto& isa : qdrift::detail::available_int8_kernels())
    for (const auto& fk : qdrift::detail::available_float_kernels())
    for (KernelPath path : kPaths)
      for (const Case& cs : cases) {
        const qdrift::ConvGeometry g = qdrift::make_conv_geometry({2, 7, 6, cs.c}, {cs.k, cs.k, cs.c / cs.groups, cs.o},
                                                                  cs.stride, cs.stride, 1, 1, cs.padding, cs.groups,
                                                                  "test");
        const std::vector<float> x = random_floats(g.n * g.h * g.w * g.c, rng), bias = random_floats(g.o, rng);
        const std::vector<std::int8_t> f = random_int8(cs.k * cs.k * g.cg() * g.o, rng);
        const std::vector<float> scale = random_scales(g.o, rng);
        const std::size_t size = g.n * g.oh * g.ow * g.o;
        std::vector<float> ref(size), fast(size, -1.0f);
        qdrift::conv2d_hybrid(path, g, x.data(), f.data(), scale.data(), scale.size(), bias.data(), cs.depthwise,
                              -INFINITY, INFINITY, ref.data(), qdrift::Path::kReference);
        REQUIRE(qdrift::fast::conv2d_hybrid(isa, fk, path, g, x.data(), f.data(), scale.data(), scale.size(), bias.data(),
                                            cs.depthwise, -INFINITY, INFINITY, fast.data()));
        CHECK_MESSAGE(same_bits(fast, ref), std::string(isa.name), " ", std::string(fk.name), " path ", static_cast<int>(path), " c ", cs.c,
                      " o ", cs.o, " k ", cs.k, " groups ", cs.groups, " depthwise ", cs.depthwise);
      }
}

TEST_CASE("float32 fast: every instruction-set variant equals the reference (FC, CONV_2D, DEPTHWISE_CONV_2D)") {
  std::mt19937_64 rng(13);
  auto pick = [&](std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng); };
  for (const auto& fk : qdrift::detail::available_float_kernels())
    for (KernelPath path : kPaths) {
      for (int trial = 0; trial < 12; ++trial) {   // batch 1-3: row chains; 4 and more: transposed filter
        const std::size_t batch = kEdges[pick(13)], in = kEdges[pick(13)], out = kEdges[pick(13)] + 40;
        const std::vector<float> x = random_floats(batch * in, rng), w = random_floats(out * in, rng);
        const std::vector<float> bias = random_floats(out, rng);
        std::vector<float> ref(batch * out), fast(batch * out, -1.0f);
        qdrift::fully_connected_f32(path, x.data(), batch, in, w.data(), out, bias.data(), -INFINITY, INFINITY,
                                    ref.data(), qdrift::Path::kReference);
        if (!qdrift::fast::fully_connected_f32(fk, path, x.data(), batch, in, w.data(), out, bias.data(), -INFINITY,
                                               INFINITY, fast.data()))
          continue;   // a matrix-vector product on the builtin path: the reference runs it
        CHECK_MESSAGE(same_bits(fast, ref), std::string(fk.name), " path ", static_cast<int>(path), " batch ", batch,
                      " in ", in, " out ", out);
      }
      const std::size_t convs[][4] = {{3, 37, 1, 0}, {16, 16, 16, 1}, {4, 12, 4, 1}, {6, 40, 2, 0}};   // c, o, groups, dw
      for (const auto& cv : convs) {
        const qdrift::ConvGeometry g = qdrift::make_conv_geometry({2, 6, 7, cv[0]}, {3, 3, cv[0] / cv[2], cv[1]}, 1, 1, 1,
                                                                  1, qdrift::Padding::kSame, cv[2], "test");
        const std::vector<float> x = random_floats(g.n * g.h * g.w * g.c, rng), bias = random_floats(g.o, rng);
        const std::vector<float> f = random_floats(9 * g.cg() * g.o, rng);
        const std::size_t size = g.n * g.oh * g.ow * g.o;
        std::vector<float> ref(size), fast(size, -1.0f);
        qdrift::conv2d_f32(path, g, x.data(), f.data(), bias.data(), cv[3] == 1, -INFINITY, INFINITY, ref.data(),
                           qdrift::Path::kReference);
        REQUIRE(qdrift::fast::conv2d_f32(fk, path, g, x.data(), f.data(), bias.data(), cv[3] == 1, -INFINITY, INFINITY,
                                         fast.data()));
        CHECK_MESSAGE(same_bits(fast, ref), std::string(fk.name), " path ", static_cast<int>(path), " c ", cv[0], " o ",
                      cv[1], " groups ", cv[2]);
      }
    }
}
