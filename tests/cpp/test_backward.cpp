// SPDX-License-Identifier: Apache-2.0
// Backward passes: the fast paths against the double-accumulating reference over random
// geometries (groups, depthwise, stride, dilation, SAME/VALID, batch 1), and BPTT's fast path
// against its reference with and without a state mask and go_backwards.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "qdrift/ops/backward.h"
#include "testing/random.h"

using qdrift::Activation;
using qdrift::Path;

namespace {

std::vector<float> normal(std::size_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// float32 sums of `terms` products against a double reference: relative to the largest
// magnitude in the tensor (a dropped or misplaced tap is of the order of the values themselves).
void check_close(const std::vector<float>& fast, const std::vector<float>& ref, std::size_t terms) {
  REQUIRE(fast.size() == ref.size());
  double scale = 1e-30;
  for (float v : ref) scale = std::max(scale, static_cast<double>(std::fabs(v)));
  const double tol = static_cast<double>(terms + 2) * 0x1p-24 * scale * 4.0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    CAPTURE(i);
    REQUIRE(std::fabs(static_cast<double>(fast[i]) - ref[i]) <= tol);
  }
}

}  // namespace

TEST_CASE("backward: conv2d fast paths match the reference on random geometries") {
  auto rng = qdrift::testing::make_rng(21);
  CAPTURE(qdrift::testing::test_seed());
  std::uniform_int_distribution<std::size_t> small(1, 3), size(1, 7), chan(1, 5);
  for (int trial = 0; trial < 200; ++trial) {
    const std::size_t groups = trial % 3 == 0 ? chan(rng) : (trial % 3 == 1 ? 1 : 2);
    const std::size_t cg = trial % 4 == 0 ? 1 : chan(rng), og = chan(rng);
    const std::size_t n = small(rng), kh = small(rng), kw = small(rng), sh = small(rng), sw = small(rng);
    const std::size_t dh = trial % 5 == 0 ? 2 : 1, dw = trial % 7 == 0 ? 2 : 1;
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
    const auto g = qdrift::make_conv_geometry(xs, ks, sh, sw, dh, dw, padding, groups, "test");
    const auto x = normal(qdrift::num_elements(xs), rng), k = normal(qdrift::num_elements(ks), rng),
               dy = normal(g.n * g.oh * g.ow * g.o, rng);
    std::vector<float> dx[2], dk[2], db[2];
    for (int p = 0; p < 2; ++p) {
      dx[p].resize(x.size());
      dk[p].resize(k.size());
      db[p].resize(g.o);
      qdrift::conv2d_backward(g, x.data(), k.data(), dy.data(), dx[p].data(), dk[p].data(), db[p].data(),
                              p ? Path::kFast : Path::kReference);
    }
    check_close(dx[1], dx[0], kh * kw * og);
    check_close(dk[1], dk[0], n * g.oh * g.ow);
    check_close(db[1], db[0], n * g.oh * g.ow);
  }
}

TEST_CASE("backward: dense fast matches reference, including batch 1 and size-1 dims") {
  auto rng = qdrift::testing::make_rng(22);
  for (const auto& [n, in, out] : std::vector<std::array<std::size_t, 3>>{{1, 1, 1}, {3, 17, 5}, {64, 33, 65}, {1, 40, 1}}) {
    CAPTURE(n);
    CAPTURE(in);
    CAPTURE(out);
    const qdrift::DenseShape s{n, in, out};
    const auto x = normal(n * in, rng), w = normal(in * out, rng), dy = normal(n * out, rng);
    std::vector<float> dx[2], dw[2], db[2];
    for (int p = 0; p < 2; ++p) {
      dx[p].resize(n * in);
      dw[p].resize(in * out);
      db[p].resize(out);
      qdrift::dense_backward(s, x.data(), w.data(), dy.data(), dx[p].data(), dw[p].data(), db[p].data(),
                             p ? Path::kFast : Path::kReference);
    }
    check_close(dx[1], dx[0], out);
    check_close(dw[1], dw[0], n);
    check_close(db[1], db[0], n);
  }
}

TEST_CASE("backward: simple RNN BPTT fast matches reference (masks, go_backwards, h0)") {
  auto rng = qdrift::testing::make_rng(23);
  for (int trial = 0; trial < 8; ++trial) {
    const std::size_t n = 1 + static_cast<std::size_t>(trial % 3), t = 1 + static_cast<std::size_t>(trial * 2),
                      f = 3 + static_cast<std::size_t>(trial), u = 2 + static_cast<std::size_t>(trial % 4);
    const bool backwards = trial % 2 == 1, masked = trial % 3 == 2;
    CAPTURE(trial);
    const auto s = qdrift::make_rnn_shape({n, t, f}, {f, u}, {u, u}, u, "t");
    const auto x = normal(n * t * f, rng), k = normal(f * u, rng), r = normal(u * u, rng), b = normal(u, rng),
               h0 = normal(n * u, rng), ds = normal(n * t * u, rng);
    std::vector<float> states(n * t * u), mask(n * t * u);
    qdrift::simple_rnn(s, x.data(), k.data(), r.data(), b.data(), h0.data(), Activation::kTanh, backwards,
                       states.data(), Path::kReference);
    for (std::size_t i = 0; i < mask.size(); ++i) mask[i] = (i % 5 == 0) ? 0.0f : 1.0f;
    std::vector<float> dx[2], dk[2], dr[2], db[2], dh0[2];
    for (int p = 0; p < 2; ++p) {
      dx[p].resize(x.size());
      dk[p].resize(k.size());
      dr[p].resize(r.size());
      db[p].resize(u);
      dh0[p].resize(n * u);
      qdrift::simple_rnn_backward(s, x.data(), k.data(), r.data(), h0.data(), states.data(), nullptr,
                                  masked ? mask.data() : nullptr, ds.data(), Activation::kTanh, backwards,
                                  dx[p].data(), dk[p].data(), dr[p].data(), db[p].data(), dh0[p].data(),
                                  p ? Path::kFast : Path::kReference);
    }
    // Errors compound over t steps of the recurrence (each a u-term sum).
    check_close(dx[1], dx[0], t * u);
    check_close(dk[1], dk[0], t * u * n);
    check_close(dr[1], dr[0], t * u * n);
    check_close(db[1], db[0], t * u * n);
    check_close(dh0[1], dh0[0], t * u);
  }
}
