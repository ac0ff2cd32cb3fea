// SPDX-License-Identifier: Apache-2.0
// Observers on small cases computed by hand, across slot layouts and batches.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "qdrift/core/error.h"
#include "qdrift/quantizers/observers.h"

using qdrift::Granularity;
using qdrift::ObserverKind;

namespace {
std::pair<std::vector<float>, std::vector<float>> run(qdrift::QuantSpec spec, const std::vector<std::vector<float>>& batches,
                                                      const qdrift::Shape& shape) {
  auto obs = qdrift::make_observer(spec);
  const auto l = qdrift::make_layout(shape, spec.granularity, spec.axis, spec.group_size, "test");
  for (const auto& b : batches) obs->observe(b.data(), l);
  std::vector<float> mn, mx;
  obs->ranges(&mn, &mx);
  return {mn, mx};
}
}  // namespace

TEST_CASE("observers: minmax per tensor, per channel and per group over batches") {
  qdrift::QuantSpec s;
  const std::vector<std::vector<float>> batches{{1, -2, 3, 4, 5, -6}, {0, 7, -1, 0, 0, 0}};
  auto [mn, mx] = run(s, batches, {2, 3});
  CHECK(mn == std::vector<float>{-6});
  CHECK(mx == std::vector<float>{7});
  s.granularity = Granularity::kPerChannel;
  s.axis = 1;   // columns: (1, 4, 0, 0), (-2, 5, 7, 0), (3, -6, -1, 0)
  std::tie(mn, mx) = run(s, batches, {2, 3});
  CHECK(mn == std::vector<float>{0, -2, -6});
  CHECK(mx == std::vector<float>{4, 7, 3});
  s.granularity = Granularity::kPerGroup;
  s.axis = 0;
  s.group_size = 2;   // one group of both rows per column
  std::tie(mn, mx) = run(s, batches, {2, 3});
  CHECK(mn == std::vector<float>{0, -2, -6});
}

TEST_CASE("observers: moving average and percentile") {
  qdrift::QuantSpec s;
  s.observer = ObserverKind::kMovingAverage;
  s.averaging_constant = 0.5;
  auto [mn, mx] = run(s, {{-1, 1}, {-3, 5}}, {2});
  CHECK(mn[0] == -2.0f);
  CHECK(mx[0] == 3.0f);
  s.observer = ObserverKind::kPercentile;
  s.percentile = 75.0;   // numpy.percentile([0, 1, 2, 3, 4], 75) = 3, 25th = 1
  std::tie(mn, mx) = run(s, {{4, 0, 3, 1, 2}}, {5});
  CHECK(mn[0] == 1.0f);
  CHECK(mx[0] == 3.0f);
}

TEST_CASE("observers: mse clips an outlier; entropy keeps the bulk") {
  std::vector<float> x(1000);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::sin(static_cast<float>(i));
  x[0] = 50.0f;
  qdrift::QuantSpec s;
  s.bits = 4;
  s.observer = ObserverKind::kMse;
  auto [mn, mx] = run(s, {x}, {1000});
  CHECK(mx[0] < 50.0f);
  s.observer = ObserverKind::kEntropy;
  s.bins = 512;
  std::tie(mn, mx) = run(s, {x}, {1000});
  CHECK(mx[0] < 50.0f);
  CHECK(mx[0] > 0.5f);
}

TEST_CASE("observers: errors") {
  qdrift::QuantSpec s;
  auto obs = qdrift::make_observer(s);
  std::vector<float> mn, mx;
  CHECK_THROWS_AS(obs->ranges(&mn, &mx), qdrift::ConfigError);
  const std::vector<float> bad{1.0f, NAN};
  const auto l = qdrift::make_layout({2}, Granularity::kPerTensor, -1, 0, "test");
  CHECK_THROWS_WITH_AS(obs->observe(bad.data(), l), doctest::Contains("at flat index 1"), qdrift::DataError);
  CHECK(obs->empty());   // a rejected batch changes nothing
  s.granularity = Granularity::kPerChannel;
  s.axis = 0;
  auto pc = qdrift::make_observer(s);
  const std::vector<float> three{1, 2, 3};
  pc->observe(three.data(), qdrift::make_layout({3}, Granularity::kPerChannel, 0, 0, "test"));
  CHECK_THROWS_AS(pc->observe(three.data(), qdrift::make_layout({2}, Granularity::kPerChannel, 0, 0, "test")),
                  qdrift::ShapeError);
}
