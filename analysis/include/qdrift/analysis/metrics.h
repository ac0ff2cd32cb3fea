// SPDX-License-Identifier: Apache-2.0
// Error metrics of a candidate tensor against a reference, in one pass with double sums:
// whole tensors, or one set per group along an axis (per time step, per channel).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace qdrift {

// With e = candidate - reference over the n elements of a group:
//   mse = sum e^2 / n, rmse = sqrt(mse), mean_abs = sum |e| / n, max_abs = max |e|,
//   sqnr_db = 10 log10(sum ref^2 / sum e^2)   (+inf when e == 0; -inf when ref == 0 != e),
//   cosine  = <ref, cand> / (|ref| |cand|)     (1 when both are zero; 0 when only one is),
//   rel_l2  = |e| / |ref|                      (0 when e == 0; +inf when ref == 0 != e).
struct ErrorMetrics {
  std::size_t count = 0;
  double mse = 0, rmse = 0, sqnr_db = 0, max_abs = 0, mean_abs = 0, cosine = 0, rel_l2 = 0;
  double ref_energy = 0;    // sum ref^2
  double noise_energy = 0;  // sum e^2
};

// Metrics of each group of a row-major (outer, groups, inner) buffer: element (o, g, i) is in
// group g. (1, 1, n) gives one set for the whole tensor; (batch, steps, units) one per step.
// Throws ShapeError if a group is empty, DataError naming `what`, the side (reference or
// candidate), the NaN and Inf counts and the first flat index if any value is not finite.
std::vector<ErrorMetrics> grouped_error_metrics(const float* reference, const float* candidate, std::size_t outer,
                                                std::size_t groups, std::size_t inner, const std::string& what);

// Fraction of the `rows` rows of (rows, cols) buffers whose argmax (first maximal index, as
// numpy.argmax) agrees. Throws ShapeError for rows == 0 or cols == 0, DataError for NaN/Inf.
double argmax_agreement(const float* reference, const float* candidate, std::size_t rows, std::size_t cols,
                        const std::string& what);

// Histogram of integer code differences d = candidate - reference: bin d + max_diff for
// |d| <= max_diff; differences beyond collect in the end bins (2 * max_diff + 1 bins).
std::vector<std::int64_t> lsb_histogram(const std::int32_t* reference, const std::int32_t* candidate, std::size_t n,
                                        std::int32_t max_diff);

// Per group of an (outer, groups, inner) buffer: how many values lie outside [lo, hi].
// lo and hi hold 1 value or one per channel, where element (o, g, i) is in channel
// i % lo.size(). Throws ShapeError if lo/hi sizes differ or do not divide inner.
std::vector<std::int64_t> count_outside(const float* x, std::size_t outer, std::size_t groups, std::size_t inner,
                                        const std::vector<float>& lo, const std::vector<float>& hi,
                                        const std::string& what);

}  // namespace qdrift
