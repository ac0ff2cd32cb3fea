// SPDX-License-Identifier: Apache-2.0
// Error metrics in one pass with double accumulation (see metrics.h for the definitions).
#include "qdrift/analysis/metrics.h"

#include <cmath>
#include <limits>

#include "qdrift/core/check.h"

namespace qdrift {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// NaN / Inf census of one side, so the error names what is wrong and where.
struct NonFinite {
  std::size_t nans = 0, infs = 0, first = 0;
  void see(float v, std::size_t index) {
    if (std::isfinite(v)) return;
    if (nans + infs == 0) first = index;
    if (std::isnan(v)) ++nans; else ++infs;
  }
  void check(const std::string& what, const char* side) const {
    QDRIFT_CHECK(nans + infs == 0, DataError, what, ": the ", side, " has ", nans, " NaN and ", infs,
                 " Inf values (first at flat index ", first, "); metrics need finite values");
  }
};

void check_finite(const float* reference, const float* candidate, std::size_t n, const std::string& what) {
  NonFinite r, c;
  for (std::size_t k = 0; k < n; ++k) {
    r.see(reference[k], k);
    c.see(candidate[k], k);
  }
  r.check(what, "reference");
  c.check(what, "candidate");
}

struct Sums {
  std::size_t count = 0;
  double ee = 0, rr = 0, cc = 0, rc = 0, abs_e = 0, max_e = 0;
};

ErrorMetrics finish(const Sums& s) {
  ErrorMetrics m;
  m.count = s.count;
  const double n = static_cast<double>(s.count);
  m.mse = s.ee / n;
  m.rmse = std::sqrt(m.mse);
  m.mean_abs = s.abs_e / n;
  m.max_abs = s.max_e;
  m.ref_energy = s.rr;
  m.noise_energy = s.ee;
  if (s.ee == 0) {
    m.sqnr_db = kInf;
    m.rel_l2 = 0;
  } else if (s.rr == 0) {
    m.sqnr_db = -kInf;
    m.rel_l2 = kInf;
  } else {
    m.sqnr_db = 10.0 * std::log10(s.rr / s.ee);
    m.rel_l2 = std::sqrt(s.ee / s.rr);
  }
  if (s.rr == 0 && s.cc == 0) {
    m.cosine = 1;
  } else if (s.rr == 0 || s.cc == 0) {
    m.cosine = 0;
  } else {
    m.cosine = s.rc / (std::sqrt(s.rr) * std::sqrt(s.cc));
  }
  return m;
}

}  // namespace

std::vector<ErrorMetrics> grouped_error_metrics(const float* reference, const float* candidate, std::size_t outer,
                                                std::size_t groups, std::size_t inner, const std::string& what) {
  QDRIFT_CHECK(outer * inner > 0 && groups > 0, ShapeError, what, ": cannot compute metrics of an empty tensor (",
               outer, " x ", groups, " x ", inner, " elements)");
  check_finite(reference, candidate, outer * groups * inner, what);
  std::vector<Sums> sums(groups);
  for (std::size_t o = 0; o < outer; ++o) {
    for (std::size_t g = 0; g < groups; ++g) {
      Sums& s = sums[g];
      const std::size_t base = (o * groups + g) * inner;
      for (std::size_t i = 0; i < inner; ++i) {
        const double r = reference[base + i], c = candidate[base + i];
        const double e = c - r;   // exact: the difference of two floats fits a double
        s.ee += e * e;
        s.rr += r * r;
        s.cc += c * c;
        s.rc += r * c;
        s.abs_e += std::fabs(e);
        if (std::fabs(e) > s.max_e) s.max_e = std::fabs(e);
      }
      s.count += inner;
    }
  }
  std::vector<ErrorMetrics> out;
  out.reserve(groups);
  for (const Sums& s : sums) out.push_back(finish(s));
  return out;
}

double argmax_agreement(const float* reference, const float* candidate, std::size_t rows, std::size_t cols,
                        const std::string& what) {
  QDRIFT_CHECK(rows > 0 && cols > 0, ShapeError, what, ": argmax agreement needs rows and columns, got ", rows,
               " x ", cols);
  check_finite(reference, candidate, rows * cols, what);
  auto argmax = [cols](const float* row) {
    std::size_t best = 0;
    for (std::size_t j = 1; j < cols; ++j) {
      if (row[j] > row[best]) best = j;   // strict: the first maximum wins, as numpy.argmax
    }
    return best;
  };
  std::size_t agree = 0;
  for (std::size_t r = 0; r < rows; ++r) {
    if (argmax(reference + r * cols) == argmax(candidate + r * cols)) ++agree;
  }
  return static_cast<double>(agree) / static_cast<double>(rows);
}

std::vector<std::int64_t> lsb_histogram(const std::int32_t* reference, const std::int32_t* candidate, std::size_t n,
                                        std::int32_t max_diff) {
  QDRIFT_CHECK(max_diff >= 0 && max_diff <= (1 << 20), ConfigError,
               "lsb_histogram: max_diff must be in [0, 1048576] (one bin per difference), got ", max_diff);
  const std::int64_t m = max_diff;
  std::vector<std::int64_t> bins(static_cast<std::size_t>(2 * m + 1), 0);
  for (std::size_t k = 0; k < n; ++k) {
    std::int64_t d = static_cast<std::int64_t>(candidate[k]) - static_cast<std::int64_t>(reference[k]);
    if (d > m) d = m;
    if (d < -m) d = -m;
    ++bins[static_cast<std::size_t>(d + m)];
  }
  return bins;
}

std::vector<std::int64_t> count_outside(const float* x, std::size_t outer, std::size_t groups, std::size_t inner,
                                        const std::vector<float>& lo, const std::vector<float>& hi,
                                        const std::string& what) {
  QDRIFT_CHECK(!lo.empty() && lo.size() == hi.size() && inner % lo.size() == 0, ShapeError, what,
               ": the range bounds have ", lo.size(), " and ", hi.size(),
               " values; expected the same count, dividing the inner size ", inner);
  std::vector<std::int64_t> counts(groups, 0);
  const std::size_t channels = lo.size();
  for (std::size_t o = 0; o < outer; ++o) {
    for (std::size_t g = 0; g < groups; ++g) {
      const float* row = x + (o * groups + g) * inner;
      std::int64_t c = 0;
      for (std::size_t i = 0; i < inner; ++i) {
        const std::size_t ch = i % channels;
        if (row[i] < lo[ch] || row[i] > hi[ch]) ++c;   // NaN compares false: never counted
      }
      counts[g] += c;
    }
  }
  return counts;
}

}  // namespace qdrift
