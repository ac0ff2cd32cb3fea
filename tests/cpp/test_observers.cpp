// SPDX-License-Identifier: Apache-2.0
// Observers on small cases computed by hand: slot layouts, batches, and the error contract.
// (Each observer against an independent NumPy / torch computation: tests/python/test_observers.py.)
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "qdrift/core/error.h"
#include "qdrift/quantizers/observers.h"

using qdrift::Granularity;
using qdrift::ObserverKind;
using qdrift::QuantSpec;
using qdrift::Shape;

namespace {

using Batches = std::vector<std::vector<float>>;

struct Range {
  std::vector<float> min, max;
};

QuantSpec spec_with(ObserverKind kind, Granularity g = Granularity::kPerTensor, int axis = -1, int group_size = 0) {
  QuantSpec s;
  s.observer = kind;
  s.granularity = g;
  s.axis = axis;
  s.group_size = group_size;
  return s;
}

qdrift::SliceLayout layout_of(const QuantSpec& s, const Shape& shape) {
  return qdrift::make_layout(shape, s.granularity, s.axis, s.group_size, "test");
}

Range run(const QuantSpec& s, const Batches& batches, const Shape& shape) {
  auto obs = qdrift::make_observer(s);
  const auto l = layout_of(s, shape);
  for (const auto& b : batches) {
    REQUIRE(b.size() == l.num_elements());   // every batch has `shape`
    obs->observe(b.data(), l);
  }
  Range r;
  obs->ranges(&r.min, &r.max);
  return r;
}

std::vector<float> iota(std::size_t n) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<float>(i);
  return v;
}

constexpr ObserverKind kAllKinds[] = {ObserverKind::kMinMax, ObserverKind::kMovingAverage, ObserverKind::kPercentile,
                                      ObserverKind::kMse, ObserverKind::kEntropy};

}  // namespace

// x[i] = i on shape (2, 3, 2): flat index (o * 3 + c) * 2 + k. With one batch, every observer
// configured not to clip (percentile 100, a single mse ratio r = 1) reports each slot's own
// [min, max], so one table of expected slots checks the slot mapping of all of them.
TEST_CASE("observers: slot layouts, per tensor / per channel (axis 0, 1, last) / per group") {
  struct LayoutCase {
    const char* name;
    Granularity g;
    int axis;
    int group_size;
    std::vector<float> min, max;
  };
  const std::vector<LayoutCase> cases{
      {"per tensor", Granularity::kPerTensor, -1, 0, {0}, {11}},
      {"per channel axis 0", Granularity::kPerChannel, 0, 0, {0, 6}, {5, 11}},
      {"per channel axis 1", Granularity::kPerChannel, 1, 0, {0, 2, 4}, {7, 9, 11}},
      {"per channel axis -1", Granularity::kPerChannel, -1, 0, {0, 1}, {10, 11}},
      // groups of 3 along axis 1: one group per (o, k) -> slots (0,0) (0,1) (1,0) (1,1)
      {"per group axis 1", Granularity::kPerGroup, 1, 3, {0, 1, 6, 7}, {4, 5, 10, 11}},
      // groups of 2 along the last axis: one slot per consecutive pair
      {"per group axis -1", Granularity::kPerGroup, -1, 2, {0, 2, 4, 6, 8, 10}, {1, 3, 5, 7, 9, 11}},
  };
  const std::vector<float> x = iota(12);
  for (const auto& c : cases) {
    for (ObserverKind kind : {ObserverKind::kMinMax, ObserverKind::kMovingAverage, ObserverKind::kPercentile,
                              ObserverKind::kMse}) {
      QuantSpec s = spec_with(kind, c.g, c.axis, c.group_size);
      s.percentile = 100.0;
      s.mse_grid = 1;
      CAPTURE(c.name);
      CAPTURE(qdrift::observer_name(kind));
      const Range r = run(s, {x}, {2, 3, 2});
      CHECK(r.min == c.min);
      CHECK(r.max == c.max);
    }
  }
}

TEST_CASE("observers: minmax accumulates over batches per slot") {
  // Shape (2, 3), per channel on axis 1: columns are (o=0, o=1) pairs.
  const Batches batches{{1, -2, 3, 4, 5, -6}, {0, 7, -1, 0, 0, 0}, {-9, 0, 0, 0, 0, 8}};
  Range r = run(spec_with(ObserverKind::kMinMax), batches, {2, 3});
  CHECK(r.min == std::vector<float>{-9});
  CHECK(r.max == std::vector<float>{8});
  r = run(spec_with(ObserverKind::kMinMax, Granularity::kPerChannel, 1), batches, {2, 3});
  CHECK(r.min == std::vector<float>{-9, -2, -6});
  CHECK(r.max == std::vector<float>{4, 7, 8});
}

TEST_CASE("observers: moving average, first batch sets, then min += c * (batch_min - min)") {
  QuantSpec s = spec_with(ObserverKind::kMovingAverage, Granularity::kPerChannel, 0);
  s.averaging_constant = 0.5;   // every step exact in float32
  // Shape (2, 2): channel 0 = row 0, channel 1 = row 1.
  const Batches batches{{-1, 1, 0, 2}, {-3, 5, -4, 2}, {-3, 5, 0, 0}};
  const Range r = run(s, batches, {2, 2});
  // channel 0: min -1 -> -1 + .5(-3 + 1) = -2 -> -2 + .5(-3 + 2) = -2.5; max 1 -> 3 -> 4
  // channel 1: min  0 -> -2 -> -1;                                        max 2 -> 2 -> 1
  CHECK(r.min == std::vector<float>{-2.5f, -1.0f});
  CHECK(r.max == std::vector<float>{4.0f, 1.0f});
}

TEST_CASE("observers: percentile is numpy's linear interpolation, averaged over batches") {
  QuantSpec s = spec_with(ObserverKind::kPercentile);
  s.percentile = 75.0;   // numpy.percentile([0, 1, 2, 3, 4], [25, 75]) = [1, 3], no interpolation
  Range r = run(s, {{4, 0, 3, 1, 2}}, {5});
  CHECK(r.min == std::vector<float>{1.0f});
  CHECK(r.max == std::vector<float>{3.0f});
  // [0, 1, 2, 3] at 10 / 90: index 0.3 / 2.7 -> 0.3 / 2.7; [0, 10, 20, 30] -> 3 / 27.
  // Means: 1.65 and 14.85.
  s.percentile = 90.0;
  r = run(s, {{3, 1, 0, 2}, {30, 0, 20, 10}}, {4});
  CHECK(r.min == std::vector<float>{1.65f});
  CHECK(r.max == std::vector<float>{14.85f});
  // Per channel (axis 1 of (4, 2)): column 0 = {0, 1, 2, 3}, column 1 = {0, -10, -20, -30}.
  s.granularity = Granularity::kPerChannel;
  s.axis = 1;
  r = run(s, {{0, 0, 1, -10, 2, -20, 3, -30}}, {4, 2});
  CHECK(r.min == std::vector<float>{0.3f, -27.0f});
  CHECK(r.max == std::vector<float>{2.7f, -3.0f});
}

TEST_CASE("observers: mse picks the clipping ratio with the least squared error") {
  // Unsigned 2-bit asymmetric (codes 0..3), ten copies of {0, 1, 2, 3} and one 12. Candidates
  // r * [0, 12] for r = 1/4 .. 1 (scale 1, 2, 3, 4, zero point 0), squared errors by hand:
  //   r = 1/4: only 12 -> 3 is off:            81
  //   r = 1/2: 1 -> 0, 3 -> 4, 12 -> 6:        10 * 2 + 36 = 56
  //   r = 3/4: 1 -> 0, 2 -> 3, 12 -> 9:        10 * 2 + 9  = 29   <- least
  //   r = 1:   1 -> 0, 2 -> 0, 3 -> 4:         10 * 6      = 60
  QuantSpec s = spec_with(ObserverKind::kMse);
  s.bits = 2;
  s.is_signed = false;
  s.mse_grid = 4;
  std::vector<float> x;
  for (int copy = 0; copy < 10; ++copy)
    for (float v : {0.0f, 1.0f, 2.0f, 3.0f}) x.push_back(v);
  x.push_back(12.0f);
  const Shape shape{x.size()};
  Range r = run(s, {x}, shape);
  CHECK(r.min == std::vector<float>{0.0f});
  CHECK(r.max == std::vector<float>{9.0f});
  // A second batch without the outlier (12 -> 3) keeps r = 1 ([0, 3], error 0): the range is
  // the mean of [0, 9] and [0, 3].
  std::vector<float> tame = x;
  tame.back() = 3.0f;
  r = run(s, {x, tame}, shape);
  CHECK(r.max == std::vector<float>{6.0f});
  // The spec's rounding is part of the score. Under floor rounding:
  //   r = 1/4: 81;  r = 1/2: 1 -> 0, 3 -> 2, 12 -> 6: 56 (least);  r = 3/4: 1 -> 0, 2 -> 0,
  //   12 -> 9: 10 * 5 + 9 = 59;  r = 1: 1, 2, 3 -> 0: 140.
  s.rounding = qdrift::Rounding::kFloor;
  r = run(s, {x}, shape);
  CHECK(r.max == std::vector<float>{6.0f});
  // Stochastic rounding is scored with the quantizer's own (seed, flat index) draws:
  // repeatable, and the range is one of the four candidates.
  s.rounding = qdrift::Rounding::kStochastic;
  s.seed = 7;
  const Range a = run(s, {x}, shape), b = run(s, {x}, shape);
  CHECK(a.max == b.max);
  CHECK((a.max[0] == 3.0f || a.max[0] == 6.0f || a.max[0] == 9.0f || a.max[0] == 12.0f));
}

TEST_CASE("observers: entropy, KL over the |x| histogram, by hand") {
  // bits 2 signed: L = 2 groups; 16 bins. x = {0.5, -0.25, 0, -1.5, 16}: width 16 / 16 = 1,
  // hist = [3, 1, 0 x 13, 1] (16 lands on the last bin's upper edge). Candidates i whose last
  // bin is empty while the tail is not have KL = inf, leaving i = 2 and i = 16:
  //   i = 2:  P = [3, 1 + 1] / 5, Q = [3, 1] / 4 (one bin per group)
  //           KL = .6 ln(.6 / .75) + .4 ln(.4 / .25) = 0.05412
  //   i = 16: groups bins 0..7 (nonzero 0, 1 -> 2 each) and 8..15 (bin 15 -> 1)
  //           KL = .6 ln(3 / 2) + .2 ln(1 / 2) = 0.10465
  // t = 2 * width = 2: range [max(-1.5, -2), min(16, 2)] = [-1.5, 2].
  QuantSpec s = spec_with(ObserverKind::kEntropy);
  s.bits = 2;
  s.bins = 16;
  const Batches first{{0.5f, -0.25f, 0.0f, -1.5f, 16.0f}};
  Range r = run(s, first, {5});
  CHECK(r.min == std::vector<float>{-1.5f});
  CHECK(r.max == std::vector<float>{2.0f});

  // A second batch {-20} extends the histogram to ceil(20 / 1) = 20 bins (same width), with 20
  // in bin 19: hist = [3, 1, 0.., bin 15: 1, 0.., bin 19: 1], 6 values. Finite candidates:
  //   i = 2:  P = [3, 3] / 6, Q = [3, 1] / 4:               KL = .5 ln(2/3) + .5 ln 2 = 0.14384
  //   i = 16: P = [3, 1, .., 2] / 6, Q = [2, 2, .., 1] / 5: KL = 0.13594
  //   i = 20: P = hist / 6, Q = [2, 2, .., 1, .., 1] / 6:   KL = .5 ln 1.5 + (1/6) ln .5 = 0.08721
  // t = 20: range [max(-20, -20), min(16, 20)] = [-20, 16]. (Had the 20 been clamped into the
  // old last bin instead, the answer would be t = 16.)
  auto obs = qdrift::make_observer(s);
  obs->observe(first[0].data(), layout_of(s, {5}));
  const float second = -20.0f;
  obs->observe(&second, layout_of(s, {1}));   // per tensor: any batch shape has one slot
  obs->ranges(&r.min, &r.max);
  CHECK(r.min == std::vector<float>{-20.0f});
  CHECK(r.max == std::vector<float>{16.0f});
}

TEST_CASE("observers: entropy, flat histograms are not clipped; zero-only slots") {
  // |x| = j + 0.5 for j = 0..15 with 16 bins: one value per bin. At i = 16 Q equals P (KL 0);
  // every i < 16 moves the tail into bin i - 1 (KL > 0). So t = 16 * width = max |x|.
  QuantSpec s = spec_with(ObserverKind::kEntropy);
  s.bits = 2;
  s.bins = 16;
  std::vector<float> x;
  for (int j = 0; j < 16; ++j) x.push_back((j % 2 ? -1.0f : 1.0f) * (static_cast<float>(j) + 0.5f));
  Range r = run(s, {x}, {16});
  CHECK(r.min == std::vector<float>{-15.5f});
  CHECK(r.max == std::vector<float>{14.5f});

  // Per channel on axis 1 of (2, 2): channel 0 sees only zeros ([0, 0]); channel 1 sees zeros
  // first, then {0, 4}: width 4 / 16, bin 0 holds all three zeros, bin 15 the 4; at i = 16 Q
  // equals P, so nothing is clipped: [0, 4].
  s.granularity = Granularity::kPerChannel;
  s.axis = 1;
  r = run(s, {{0, 0, 0, 0}, {0, 0, 0, 4}}, {2, 2});
  CHECK(r.min == std::vector<float>{0, 0});
  CHECK(r.max == std::vector<float>{0, 4});
}

TEST_CASE("observers: errors name the observer, and a rejected batch changes nothing") {
  const std::vector<float> good{1, -2, 3, 4, 5, -6};
  const std::vector<float> nan{1, 2, 3, 4, std::numeric_limits<float>::quiet_NaN(), 6};
  const std::vector<float> inf{1, 2, -std::numeric_limits<float>::infinity(), 4, 5, 6};
  for (ObserverKind kind : kAllKinds) {
    const QuantSpec s = spec_with(kind, Granularity::kPerChannel, 1);
    const std::string name(qdrift::observer_name(kind));
    CAPTURE(name);
    auto obs = qdrift::make_observer(s);
    std::vector<float> mn, mx;
    CHECK(obs->empty());
    const std::string no_data = name + " observer: no data observed yet; call observe() first";
    CHECK_THROWS_WITH_AS(obs->ranges(&mn, &mx), no_data.c_str(), qdrift::ConfigError);
    const auto l = layout_of(s, {2, 3});
    CHECK_THROWS_WITH_AS(obs->observe(nan.data(), l), doctest::Contains("x contains NaN at flat index 4"),
                         qdrift::DataError);
    CHECK_THROWS_WITH_AS(obs->observe(inf.data(), l), doctest::Contains("x contains -Inf at flat index 2"),
                         qdrift::DataError);
    CHECK(obs->empty());   // nothing was recorded
    obs->observe(good.data(), l);
    obs->ranges(&mn, &mx);
    CHECK_THROWS_AS(obs->observe(nan.data(), l), qdrift::DataError);
    std::vector<float> mn2, mx2;
    obs->ranges(&mn2, &mx2);
    CHECK(mn2 == mn);   // the rejected second batch left the state alone
    CHECK(mx2 == mx);
    // A batch with a different number of slots: (3, 2) on axis 1 has 2 channels, not 3.
    const std::string slots = name + " observer: this batch has 2 parameter slots but earlier batches had 3";
    CHECK_THROWS_WITH_AS(obs->observe(good.data(), layout_of(s, {3, 2})), slots.c_str(), qdrift::ShapeError);
    const std::string empty = name + " observer: the batch is empty";
    CHECK_THROWS_WITH_AS(obs->observe(good.data(), layout_of(s, {0, 3})), empty.c_str(), qdrift::ShapeError);
  }
}
