// SPDX-License-Identifier: Apache-2.0
// Range observers (see observers.h for each one's definition). Statistics are per parameter
// slot; every batch is checked for NaN/Inf before it changes any state.
#include "qdrift/quantizers/observers.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "qdrift/core/check.h"
#include "qdrift/quantizers/affine.h"

namespace qdrift {
namespace {

// The values of each slot of one batch, gathered contiguously, after the NaN/Inf check.
std::vector<std::vector<float>> gather_slots(const float* x, const SliceLayout& l) {
  std::vector<std::vector<float>> slots(l.num_slots());
  const std::size_t per_slot = l.num_slots() ? l.num_elements() / l.num_slots() : 0;
  for (auto& s : slots) s.reserve(per_slot);
  std::size_t i = 0;
  for (std::size_t o = 0; o < l.outer; ++o)
    for (std::size_t c = 0; c < l.channels; ++c)
      for (std::size_t k = 0; k < l.inner; ++k, ++i) slots[l.slot(o, c, k)].push_back(x[i]);
  return slots;
}

void check_finite(const float* x, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    QDRIFT_CHECK(std::isfinite(x[i]), DataError, "observe: x contains ", x[i], " at flat index ", i,
                 "; a range cannot include NaN or Inf");
}

// Shared bookkeeping: slot count fixed by the first batch, empty slots refused.
class SlotObserver : public Observer {
 public:
  void observe(const float* x, const SliceLayout& l) final {
    check_finite(x, l.num_elements());
    QDRIFT_CHECK(l.num_elements() > 0, ShapeError, "observe: the batch is empty");
    QDRIFT_CHECK(batches_ == 0 || l.num_slots() == slots_, ShapeError, "observe: the batch has ", l.num_slots(),
                 " parameter slots but earlier batches had ", slots_);
    slots_ = l.num_slots();
    observe_batch(x, l);
    ++batches_;
  }
  bool empty() const final { return batches_ == 0; }
  void ranges(std::vector<float>* min, std::vector<float>* max) const final {
    QDRIFT_CHECK(batches_ > 0, ConfigError, "observer: no data observed yet");
    compute_ranges(min, max);
  }

 protected:
  virtual void observe_batch(const float* x, const SliceLayout& l) = 0;
  virtual void compute_ranges(std::vector<float>* min, std::vector<float>* max) const = 0;

  std::size_t slots_ = 0;
  std::size_t batches_ = 0;
};

void batch_min_max(const float* x, const SliceLayout& l, std::vector<float>* mn, std::vector<float>* mx) {
  mn->assign(l.num_slots(), std::numeric_limits<float>::infinity());
  mx->assign(l.num_slots(), -std::numeric_limits<float>::infinity());
  std::size_t i = 0;
  for (std::size_t o = 0; o < l.outer; ++o)
    for (std::size_t c = 0; c < l.channels; ++c)
      for (std::size_t k = 0; k < l.inner; ++k, ++i) {
        const std::size_t s = l.slot(o, c, k);
        (*mn)[s] = std::min((*mn)[s], x[i]);
        (*mx)[s] = std::max((*mx)[s], x[i]);
      }
}

class MinMaxObserver final : public SlotObserver {
  void observe_batch(const float* x, const SliceLayout& l) override {
    std::vector<float> bmin, bmax;
    batch_min_max(x, l, &bmin, &bmax);
    if (batches_ == 0) {
      min_ = bmin;
      max_ = bmax;
      return;
    }
    for (std::size_t s = 0; s < slots_; ++s) {
      min_[s] = std::min(min_[s], bmin[s]);
      max_[s] = std::max(max_[s], bmax[s]);
    }
  }
  void compute_ranges(std::vector<float>* mn, std::vector<float>* mx) const override {
    *mn = min_;
    *mx = max_;
  }
  std::vector<float> min_, max_;
};

// torch MovingAverageMinMaxObserver: float32 arithmetic, c narrowed to float once.
class MovingAverageObserver final : public SlotObserver {
 public:
  explicit MovingAverageObserver(double c) : c_(static_cast<float>(c)) {}

 private:
  void observe_batch(const float* x, const SliceLayout& l) override {
    std::vector<float> bmin, bmax;
    batch_min_max(x, l, &bmin, &bmax);
    if (batches_ == 0) {
      min_ = bmin;
      max_ = bmax;
      return;
    }
    for (std::size_t s = 0; s < slots_; ++s) {
      min_[s] = min_[s] + c_ * (bmin[s] - min_[s]);
      max_[s] = max_[s] + c_ * (bmax[s] - max_[s]);
    }
  }
  void compute_ranges(std::vector<float>* mn, std::vector<float>* mx) const override {
    *mn = min_;
    *mx = max_;
  }
  float c_;
  std::vector<float> min_, max_;
};

// Observers whose range is the mean over batches of a per-batch estimate (in double).
class MeanOfBatchesObserver : public SlotObserver {
 protected:
  virtual void batch_range(std::vector<float>& values, double* lo, double* hi) const = 0;

 private:
  void observe_batch(const float* x, const SliceLayout& l) override {
    auto slots = gather_slots(x, l);
    if (batches_ == 0) {
      sum_lo_.assign(slots_, 0.0);
      sum_hi_.assign(slots_, 0.0);
    }
    for (std::size_t s = 0; s < slots_; ++s) {
      double lo = 0, hi = 0;
      batch_range(slots[s], &lo, &hi);
      sum_lo_[s] += lo;
      sum_hi_[s] += hi;
    }
  }
  void compute_ranges(std::vector<float>* mn, std::vector<float>* mx) const override {
    mn->resize(slots_);
    mx->resize(slots_);
    for (std::size_t s = 0; s < slots_; ++s) {
      (*mn)[s] = static_cast<float>(sum_lo_[s] / static_cast<double>(batches_));
      (*mx)[s] = static_cast<float>(sum_hi_[s] / static_cast<double>(batches_));
    }
  }
  std::vector<double> sum_lo_, sum_hi_;
};

// numpy.percentile's default ("linear") method, in double: virtual index q * (n - 1), and
// numpy's two-sided lerp (from below for gamma < 0.5, from above otherwise).
double numpy_percentile(std::vector<float>& v, double percent) {
  const std::size_t n = v.size();
  const double q = percent / 100.0;
  const double index = q * static_cast<double>(n - 1);
  const auto lo = static_cast<std::size_t>(std::floor(index));
  const std::size_t hi = std::min(lo + 1, n - 1);
  const double gamma = index - static_cast<double>(lo);
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(lo), v.end());
  const double a = v[lo];
  const double b = hi == lo ? a : *std::min_element(v.begin() + static_cast<std::ptrdiff_t>(lo) + 1, v.end());
  const double diff = b - a;
  return gamma >= 0.5 ? b - diff * (1.0 - gamma) : a + diff * gamma;
}

class PercentileObserver final : public MeanOfBatchesObserver {
 public:
  explicit PercentileObserver(double p) : p_(p) {}

 private:
  void batch_range(std::vector<float>& v, double* lo, double* hi) const override {
    *lo = numpy_percentile(v, 100.0 - p_);
    *hi = numpy_percentile(v, p_);
  }
  double p_;
};

// The clipping ratio of the batch's [min, max] with the smallest fake-quantization MSE.
class MseObserver final : public MeanOfBatchesObserver {
 public:
  explicit MseObserver(const QuantSpec& spec) : spec_(spec) {}

 private:
  void batch_range(std::vector<float>& v, double* lo, double* hi) const override {
    const float mn = *std::min_element(v.begin(), v.end());
    const float mx = *std::max_element(v.begin(), v.end());
    const bool per_channel = spec_.granularity != Granularity::kPerTensor;
    double best = std::numeric_limits<double>::infinity();
    for (int k = 1; k <= spec_.mse_grid; ++k) {
      const double r = static_cast<double>(k) / spec_.mse_grid;
      const auto cmin = static_cast<float>(r * mn);
      const auto cmax = static_cast<float>(r * mx);
      const SlotParams p = slot_params(spec_, per_channel, cmin, cmax);
      const auto lo_code = static_cast<float>(spec_.qmin() - p.zero_point);
      const auto hi_code = static_cast<float>(spec_.qmax() - p.zero_point);
      double err = 0.0;
      for (float x : v) {   // the element rule of ref::fake_quant, half to even
        const float code = std::clamp(round_half_even(x * p.inv_scale), lo_code, hi_code);
        const double d = static_cast<double>(code * p.scale) - x;
        err += d * d;
      }
      if (err < best) {   // strict: the first (smallest) ratio wins ties
        best = err;
        *lo = cmin;
        *hi = cmax;
      }
    }
  }
  QuantSpec spec_;
};

// KL-divergence calibration over a histogram of |x| (TensorRT's method, stated in our words):
// for each candidate number of bins i (from the number of quantization levels up), the
// reference P is hist[:i] with the clipped tail added to its last bin, and the candidate Q
// merges hist[:i] into `levels` equal groups, spreading each group's count evenly over the
// group's nonempty bins. The threshold is the upper edge of the i with the smallest KL(P||Q)
// (the first one on ties). The histogram's bin width is fixed by the first batch's max |x|;
// later batches append bins of the same width.
class EntropyObserver final : public SlotObserver {
 public:
  explicit EntropyObserver(const QuantSpec& spec)
      : bins_(static_cast<std::size_t>(spec.bins)),
        levels_(spec.is_signed ? (std::size_t{1} << (spec.bits - 1)) : (std::size_t{1} << spec.bits)) {}

 private:
  struct SlotHistogram {
    double width = 0.0;          // 0 until a nonzero |x| is seen
    double pending_zeros = 0.0;  // zeros seen before the width was known
    std::vector<double> counts;
    float min = std::numeric_limits<float>::infinity();
    float max = -std::numeric_limits<float>::infinity();
  };

  void observe_batch(const float* x, const SliceLayout& l) override {
    auto slots = gather_slots(x, l);
    if (batches_ == 0) hist_.assign(slots_, SlotHistogram{});
    for (std::size_t s = 0; s < slots_; ++s) add(hist_[s], slots[s]);
  }

  void add(SlotHistogram& h, const std::vector<float>& v) const {
    float amax = 0.0f;
    for (float x : v) {
      amax = std::max(amax, std::fabs(x));
      h.min = std::min(h.min, x);
      h.max = std::max(h.max, x);
    }
    if (h.width == 0.0) {
      if (amax == 0.0f) {   // all zeros so far: they go to bin 0 once the width is known
        h.pending_zeros += static_cast<double>(v.size());
        return;
      }
      h.width = static_cast<double>(amax) / static_cast<double>(bins_);
      h.counts.assign(bins_, 0.0);
      h.counts[0] = h.pending_zeros;
    }
    const auto needed = static_cast<std::size_t>(std::ceil(static_cast<double>(amax) / h.width));
    if (needed > h.counts.size()) h.counts.resize(needed, 0.0);
    const std::size_t last = h.counts.size() - 1;
    for (float x : v) {
      const auto bin = static_cast<std::size_t>(static_cast<double>(std::fabs(x)) / h.width);
      h.counts[std::min(bin, last)] += 1.0;
    }
  }

  // Threshold (in |x| units) with the smallest KL divergence.
  double threshold(const SlotHistogram& h) const {
    const std::vector<double>& hist = h.counts;
    const std::size_t n = hist.size();
    const std::size_t start = std::min(levels_, n);
    double best_kl = std::numeric_limits<double>::infinity();
    std::size_t best_i = n;
    std::vector<double> p, q;
    for (std::size_t i = start; i <= n; ++i) {
      p.assign(hist.begin(), hist.begin() + static_cast<std::ptrdiff_t>(i));
      for (std::size_t j = i; j < n; ++j) p[i - 1] += hist[j];
      q.assign(i, 0.0);
      for (std::size_t g = 0; g < levels_; ++g) {
        const std::size_t b0 = g * i / levels_, b1 = (g + 1) * i / levels_;
        double total = 0.0, nonempty = 0.0;
        for (std::size_t b = b0; b < b1; ++b) {
          total += hist[b];
          nonempty += hist[b] > 0.0 ? 1.0 : 0.0;
        }
        for (std::size_t b = b0; b < b1; ++b) q[b] = hist[b] > 0.0 ? total / nonempty : 0.0;
      }
      double p_sum = 0.0, q_sum = 0.0;
      for (std::size_t b = 0; b < i; ++b) {
        p_sum += p[b];
        q_sum += q[b];
      }
      double kl = 0.0;
      for (std::size_t b = 0; b < i && kl < std::numeric_limits<double>::infinity(); ++b) {
        if (p[b] == 0.0) continue;
        const double pn = p[b] / p_sum, qn = q[b] / q_sum;
        kl = qn == 0.0 ? std::numeric_limits<double>::infinity() : kl + pn * std::log(pn / qn);
      }
      if (kl < best_kl) {
        best_kl = kl;
        best_i = i;
      }
    }
    return static_cast<double>(best_i) * h.width;
  }

  void compute_ranges(std::vector<float>* mn, std::vector<float>* mx) const override {
    mn->resize(slots_);
    mx->resize(slots_);
    for (std::size_t s = 0; s < slots_; ++s) {
      const SlotHistogram& h = hist_[s];
      if (h.width == 0.0) {   // only zeros were seen
        (*mn)[s] = 0.0f;
        (*mx)[s] = 0.0f;
        continue;
      }
      const auto t = static_cast<float>(threshold(h));
      (*mn)[s] = std::max(h.min, -t);
      (*mx)[s] = std::min(h.max, t);
    }
  }

  std::size_t bins_;
  std::size_t levels_;
  std::vector<SlotHistogram> hist_;
};

}  // namespace

std::unique_ptr<Observer> make_observer(const QuantSpec& spec) {
  switch (spec.observer) {
    case ObserverKind::kMinMax: return std::make_unique<MinMaxObserver>();
    case ObserverKind::kMovingAverage: return std::make_unique<MovingAverageObserver>(spec.averaging_constant);
    case ObserverKind::kPercentile: return std::make_unique<PercentileObserver>(spec.percentile);
    case ObserverKind::kMse: return std::make_unique<MseObserver>(spec);
    case ObserverKind::kEntropy: return std::make_unique<EntropyObserver>(spec);
  }
  throw ConfigError("observer: unknown kind");
}

}  // namespace qdrift
