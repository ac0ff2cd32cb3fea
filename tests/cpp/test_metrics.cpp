// SPDX-License-Identifier: Apache-2.0
// Error metrics: hand-computed values, per-group layout, edge cases and named errors.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "qdrift/analysis/metrics.h"
#include "qdrift/core/error.h"

using qdrift::grouped_error_metrics;

TEST_CASE("error metrics: hand-computed values") {
  const std::vector<float> ref{3.0f, 4.0f};
  const std::vector<float> cand{3.0f, 5.0f};   // e = (0, 1)
  const auto m = grouped_error_metrics(ref.data(), cand.data(), 1, 1, 2, "t").at(0);
  CHECK(m.count == 2);
  CHECK(m.mse == 0.5);
  CHECK(m.rmse == doctest::Approx(std::sqrt(0.5)));
  CHECK(m.max_abs == 1.0);
  CHECK(m.mean_abs == 0.5);
  CHECK(m.sqnr_db == doctest::Approx(10.0 * std::log10(25.0)));
  CHECK(m.rel_l2 == doctest::Approx(0.2));
  CHECK(m.cosine == doctest::Approx(29.0 / (5.0 * std::sqrt(34.0))));
}

TEST_CASE("error metrics: groups along the middle axis") {
  // (outer 2, groups 3, inner 1): group g holds elements g and 3 + g.
  const std::vector<float> ref{0, 0, 0, 0, 0, 0};
  const std::vector<float> cand{1, 2, 0, 3, 4, 0};
  const auto m = grouped_error_metrics(ref.data(), cand.data(), 2, 3, 1, "t");
  REQUIRE(m.size() == 3);
  CHECK(m[0].mse == 5.0);
  CHECK(m[1].mse == 10.0);
  CHECK(m[2].mse == 0.0);
  CHECK(m[2].sqnr_db == std::numeric_limits<double>::infinity());
  CHECK(m[2].cosine == 1.0);     // both zero: identical
  CHECK(m[0].sqnr_db == -std::numeric_limits<double>::infinity());
  CHECK(m[0].cosine == 0.0);
}

TEST_CASE("error metrics: NaN, Inf and empty inputs are named errors") {
  const std::vector<float> ref{1, 2, 3};
  std::vector<float> cand{1, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()};
  CHECK_THROWS_WITH_AS(grouped_error_metrics(ref.data(), cand.data(), 1, 1, 3, "dense_1"),
                       "dense_1: the candidate has 1 NaN and 1 Inf values (first at flat index 1); metrics need "
                       "finite values",
                       qdrift::DataError);
  CHECK_THROWS_AS(grouped_error_metrics(ref.data(), ref.data(), 0, 1, 3, "t"), qdrift::ShapeError);
}

TEST_CASE("argmax agreement, LSB histogram, out-of-range counts") {
  const std::vector<float> a{1, 3, 3, 0, 0, 5};   // rows (1, 3, 3) and (0, 0, 5)
  const std::vector<float> b{1, 3, 2, 0, 6, 5};
  CHECK(qdrift::argmax_agreement(a.data(), b.data(), 2, 3, "t") == 0.5);
  const std::vector<std::int32_t> r{0, 0, 0, 0};
  const std::vector<std::int32_t> c{-5, -1, 0, 100};
  CHECK(qdrift::lsb_histogram(r.data(), c.data(), 4, 2) == std::vector<std::int64_t>{1, 1, 1, 0, 1});
  const std::vector<float> x{-2, 0, 2, 0.5f};
  CHECK(qdrift::count_outside(x.data(), 1, 2, 2, {-1.0f, 0.0f}, {1.0f, 1.0f}, "t") ==
        std::vector<std::int64_t>{1, 1});
}
