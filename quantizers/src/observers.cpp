// SPDX-License-Identifier: Apache-2.0
// Range observers (definitions in observers.h): per-slot statistics over calibration batches.
#include "qdrift/quantizers/observers.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string_view>
#include <vector>

#include "qdrift/core/check.h"
#include "qdrift/core/rounding.h"
#include "qdrift/quantizers/affine.h"

namespace qdrift {
namespace {

constexpr float kInfF = std::numeric_limits<float>::infinity();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Every layout gives each slot the same number of elements (per tensor: all of them; per
// channel: outer * inner; per group: group_size).
std::size_t elements_per_slot(const SliceLayout& l) { return l.num_elements() / l.num_slots(); }

// Per-slot min and max of one batch.
void batch_min_max(const float* x, const SliceLayout& l, std::vector<float>* mn, std::vector<float>* mx) {
  mn->assign(l.num_slots(), kInfF);
  mx->assign(l.num_slots(), -kInfF);
  for_each_element(l, [&](std::size_t i, std::size_t s) {
    (*mn)[s] = std::min((*mn)[s], x[i]);
    (*mx)[s] = std::max((*mx)[s], x[i]);
  });
}

// Copies x into *out grouped by slot: slot s's values, in flat order, fill [s*m, (s+1)*m).
void gather_by_slot(const float* x, const SliceLayout& l, std::vector<float>* out) {
  const std::size_t m = elements_per_slot(l);
  out->resize(l.num_elements());
  std::vector<std::size_t> next(l.num_slots());
  for (std::size_t s = 0; s < next.size(); ++s) next[s] = s * m;
  for_each_element(l, [&](std::size_t i, std::size_t s) { (*out)[next[s]++] = x[i]; });
}

// Shared bookkeeping: input checks before any state changes, and the slot count, which the
// first batch fixes.
class SlotObserver : public Observer {
 public:
  explicit SlotObserver(ObserverKind kind) : name_(observer_name(kind)) {}

  void observe(const float* x, const SliceLayout& l) final {
    QDRIFT_CHECK(l.num_elements() > 0, ShapeError, name_, " observer: the batch is empty");
    QDRIFT_CHECK(batches_ == 0 || l.num_slots() == slots_, ShapeError, name_, " observer: this batch has ",
                 l.num_slots(), " parameter slots but earlier batches had ", slots_);
    for (std::size_t i = 0; i < l.num_elements(); ++i) {
      if (std::isfinite(x[i])) continue;
      throw DataError(detail::concat(name_, " observer: x contains ",
                                     std::isnan(x[i]) ? "NaN" : (x[i] > 0 ? "+Inf" : "-Inf"), " at flat index ",
                                     i, "; a range cannot include NaN or Inf"));
    }
    slots_ = l.num_slots();
    observe_batch(x, l);
    ++batches_;
  }
  bool empty() const final { return batches_ == 0; }
  void ranges(std::vector<float>* min, std::vector<float>* max) const final {
    QDRIFT_CHECK(batches_ > 0, ConfigError, name_, " observer: no data observed yet; call observe() first");
    min->resize(slots_);
    max->resize(slots_);
    compute_ranges(min->data(), max->data());
  }

 protected:
  // x is finite and has slots_ slots; batches_ counts the batches before this one.
  virtual void observe_batch(const float* x, const SliceLayout& l) = 0;
  // Writes slots_ entries to each of min and max.
  virtual void compute_ranges(float* min, float* max) const = 0;

  std::string_view name_;
  std::size_t slots_ = 0;
  std::size_t batches_ = 0;
};

// Running min and max, float32 (exact: min and max never round).
class MinMaxObserver final : public SlotObserver {
 public:
  MinMaxObserver() : SlotObserver(ObserverKind::kMinMax) {}

 private:
  void observe_batch(const float* x, const SliceLayout& l) override {
    if (batches_ == 0) {
      min_.assign(slots_, kInfF);
      max_.assign(slots_, -kInfF);
    }
    for_each_element(l, [&](std::size_t i, std::size_t s) {
      min_[s] = std::min(min_[s], x[i]);
      max_[s] = std::max(max_[s], x[i]);
    });
  }
  void compute_ranges(float* mn, float* mx) const override {
    std::copy(min_.begin(), min_.end(), mn);
    std::copy(max_.begin(), max_.end(), mx);
  }
  std::vector<float> min_, max_;
};

// torch.ao.quantization.MovingAverage(PerChannel)MinMaxObserver: the first batch sets the
// range, later ones move it by c * (batch value - running value), every step in float32 with
// c = f32(averaging_constant) (torch multiplies a float32 tensor by a Python float). The
// project builds with -ffp-contract=off, so no step is fused into an FMA.
class MovingAverageObserver final : public SlotObserver {
 public:
  explicit MovingAverageObserver(double c)
      : SlotObserver(ObserverKind::kMovingAverage), c_(static_cast<float>(c)) {}

 private:
  void observe_batch(const float* x, const SliceLayout& l) override {
    batch_min_max(x, l, &batch_min_, &batch_max_);
    if (batches_ == 0) {
      min_ = batch_min_;
      max_ = batch_max_;
      return;
    }
    for (std::size_t s = 0; s < slots_; ++s) {
      min_[s] = min_[s] + c_ * (batch_min_[s] - min_[s]);
      max_[s] = max_[s] + c_ * (batch_max_[s] - max_[s]);
    }
  }
  void compute_ranges(float* mn, float* mx) const override {
    std::copy(min_.begin(), min_.end(), mn);
    std::copy(max_.begin(), max_.end(), mx);
  }
  float c_;
  std::vector<float> min_, max_;
  std::vector<float> batch_min_, batch_max_;   // scratch, kept to reuse its memory
};

// Observers whose range is the mean over batches of a per-batch estimate [lo, hi]: the
// estimates are summed in double in batch order, divided by the batch count, then narrowed.
class MeanOverBatchesObserver : public SlotObserver {
 protected:
  using SlotObserver::SlotObserver;
  // Writes this batch's estimate for each of the slots_ slots.
  virtual void estimate(const float* x, const SliceLayout& l, double* lo, double* hi) = 0;

 private:
  void observe_batch(const float* x, const SliceLayout& l) final {
    if (batches_ == 0) {
      sum_lo_.assign(slots_, 0.0);
      sum_hi_.assign(slots_, 0.0);
    }
    lo_.assign(slots_, 0.0);
    hi_.assign(slots_, 0.0);
    estimate(x, l, lo_.data(), hi_.data());
    for (std::size_t s = 0; s < slots_; ++s) {
      sum_lo_[s] += lo_[s];
      sum_hi_[s] += hi_[s];
    }
  }
  void compute_ranges(float* mn, float* mx) const final {
    const auto n = static_cast<double>(batches_);
    for (std::size_t s = 0; s < slots_; ++s) {
      mn[s] = static_cast<float>(sum_lo_[s] / n);
      mx[s] = static_cast<float>(sum_hi_[s] / n);
    }
  }
  std::vector<double> sum_lo_, sum_hi_;
  std::vector<double> lo_, hi_;   // scratch
};

// numpy.percentile(v, percent) with the default method="linear", in double, as numpy 2.x
// computes it: virtual index (n - 1) * (percent / 100), its floor `lo` and lo + 1 (capped at
// n - 1), gamma = index - lo, and numpy's two-sided lerp (from the lower neighbour when
// gamma < 0.5, from the upper one otherwise). Reorders v (nth_element, no full sort).
double numpy_percentile(std::vector<float>::iterator first, std::vector<float>::iterator last,
                        double percent) {
  const auto n = static_cast<std::size_t>(last - first);
  const double index = static_cast<double>(n - 1) * (percent / 100.0);
  const auto lo = std::min(static_cast<std::size_t>(std::floor(index)), n - 1);
  const double gamma = index - static_cast<double>(lo);
  const auto lo_it = first + static_cast<std::ptrdiff_t>(lo);
  std::nth_element(first, lo_it, last);
  const double a = *lo_it;
  // After nth_element everything right of lo_it is >= it: the next order statistic is their min.
  const double b = lo + 1 < n ? *std::min_element(lo_it + 1, last) : a;
  const double diff = b - a;
  return gamma >= 0.5 ? b - diff * (1.0 - gamma) : a + diff * gamma;
}

class PercentileObserver final : public MeanOverBatchesObserver {
 public:
  explicit PercentileObserver(double p) : MeanOverBatchesObserver(ObserverKind::kPercentile), p_(p) {}

 private:
  void estimate(const float* x, const SliceLayout& l, double* lo, double* hi) override {
    gather_by_slot(x, l, &values_);
    const auto m = static_cast<std::ptrdiff_t>(elements_per_slot(l));
    for (std::size_t s = 0; s < slots_; ++s) {
      const auto first = values_.begin() + static_cast<std::ptrdiff_t>(s) * m;
      lo[s] = numpy_percentile(first, first + m, 100.0 - p_);
      hi[s] = numpy_percentile(first, first + m, p_);
    }
  }
  double p_;
  std::vector<float> values_;   // scratch: the batch grouped by slot
};

// One candidate range of a slot and its parameters.
struct MseCandidate {
  float lo, hi;
  SlotParams params;
};

// Adds (fake_quant(x) - x)^2 in double to sq_err[slot], under ref::fake_quant's element rule
// (affine.h): q = clamp(round(f32(x * inv_scale)) + zp, qmin, qmax), y = f32((q - zp) * scale).
// `round(v, flat index)` is one rounding rule, a template argument so that the loop holds no
// switch.
template <class Round>
void add_squared_errors(const float* x, const SliceLayout& l, const MseCandidate* candidate, float qmin,
                        float qmax, Round round, double* sq_err) {
  for_each_element(l, [&](std::size_t i, std::size_t s) {
    const SlotParams& p = candidate[s].params;
    const float code = round(x[i] * p.inv_scale, i) + static_cast<float>(p.zero_point);
    const auto q = static_cast<std::int32_t>(std::clamp(code, qmin, qmax));
    const float y = static_cast<float>(q - p.zero_point) * p.scale;
    const double d = static_cast<double>(y) - static_cast<double>(x[i]);
    sq_err[s] += d * d;
  });
}

// Per batch and slot, the candidate ranges r * [min, max] for r = k / mse_grid (k = 1..grid),
// each scored by the mean squared fake-quantization error; the first (smallest) best r wins.
class MseObserver final : public MeanOverBatchesObserver {
 public:
  explicit MseObserver(const QuantSpec& spec) : MeanOverBatchesObserver(ObserverKind::kMse), spec_(spec) {}

 private:
  void estimate(const float* x, const SliceLayout& l, double* lo, double* hi) override {
    batch_min_max(x, l, &batch_min_, &batch_max_);
    const bool per_channel = spec_.granularity != Granularity::kPerTensor;   // as params_from_ranges
    const auto m = static_cast<double>(elements_per_slot(l));
    best_err_.assign(slots_, kInf);
    for (int k = 1; k <= spec_.mse_grid; ++k) {
      const double r = static_cast<double>(k) / static_cast<double>(spec_.mse_grid);
      candidate_.resize(slots_);
      for (std::size_t s = 0; s < slots_; ++s) {
        const auto c_lo = static_cast<float>(r * static_cast<double>(batch_min_[s]));
        const auto c_hi = static_cast<float>(r * static_cast<double>(batch_max_[s]));
        candidate_[s] = {c_lo, c_hi, slot_params(spec_, per_channel, c_lo, c_hi)};
      }
      sq_err_.assign(slots_, 0.0);
      add_squared_errors_with_rounding(x, l);
      for (std::size_t s = 0; s < slots_; ++s) {
        const double mse = sq_err_[s] / m;
        if (mse < best_err_[s]) {   // strict: on a tie the smaller ratio stays
          best_err_[s] = mse;
          lo[s] = candidate_[s].lo;
          hi[s] = candidate_[s].hi;
        }
      }
    }
  }

  // The spec's rounding (stochastic: its seed and the flat index), so the score is the error
  // fake_quant will actually make.
  void add_squared_errors_with_rounding(const float* x, const SliceLayout& l) {
    const auto qmin = static_cast<float>(spec_.qmin());
    const auto qmax = static_cast<float>(spec_.qmax());
    const MseCandidate* c = candidate_.data();
    double* e = sq_err_.data();
    const std::uint64_t seed = spec_.seed;
    switch (spec_.rounding) {
      case Rounding::kHalfEven:
        return add_squared_errors(x, l, c, qmin, qmax, [](float v, std::size_t) { return round_half_even(v); }, e);
      case Rounding::kHalfAway:
        return add_squared_errors(x, l, c, qmin, qmax, [](float v, std::size_t) { return round_half_away(v); }, e);
      case Rounding::kHalfUp:
        return add_squared_errors(x, l, c, qmin, qmax, [](float v, std::size_t) { return round_half_up(v); }, e);
      case Rounding::kFloor:
        return add_squared_errors(x, l, c, qmin, qmax, [](float v, std::size_t) { return round_floor(v); }, e);
      case Rounding::kStochastic:
        return add_squared_errors(
            x, l, c, qmin, qmax, [seed](float v, std::size_t i) { return round_stochastic(v, seed, i); }, e);
    }
  }

  QuantSpec spec_;
  // Scratch, kept to reuse its memory across batches.
  std::vector<float> batch_min_, batch_max_;
  std::vector<double> best_err_, sq_err_;
  std::vector<MseCandidate> candidate_;
};

// A histogram of |x| with fixed-width bins [j * width, (j + 1) * width); the last bin also
// holds its upper edge (and, after rounding in the bin count, anything just above it).
struct AbsHistogram {
  double width = 0.0;           // 0 until a nonzero |x| fixes it
  double zeros_before = 0.0;    // zeros seen while width was 0; they land in bin 0
  std::vector<double> counts;   // integral counts, exact in double up to 2^53
  float min = kInfF;            // observed signed range, for the final clipping
  float max = -kInfF;
};

// What every candidate of the KL search reads, computed once per search. The prefix sums are
// of integers, hence exact: a group's count is a difference of two of them.
struct KlTables {
  std::vector<double> log_h;            // log(hist[j]), 0 for empty bins
  std::vector<double> prefix_count;     // sum of hist[:j], j = 0..n
  std::vector<double> prefix_nonzero;   // number of nonempty bins in hist[:j]

  explicit KlTables(const std::vector<double>& hist)
      : log_h(hist.size()), prefix_count(hist.size() + 1, 0.0), prefix_nonzero(hist.size() + 1, 0.0) {
    for (std::size_t j = 0; j < hist.size(); ++j) {
      log_h[j] = hist[j] > 0.0 ? std::log(hist[j]) : 0.0;
      prefix_count[j + 1] = prefix_count[j] + hist[j];
      prefix_nonzero[j + 1] = prefix_nonzero[j] + (hist[j] > 0.0 ? 1.0 : 0.0);
    }
  }
};

// KL(P || Q) of candidate i (see EntropyObserver), or +Inf where P has mass and Q has none.
//   KL = sum_j (p_j / Ps) log((p_j / Ps) / (q_j / Qs)) = sum_j p_j (log p_j - log q_j) / Ps + log(Qs / Ps)
// with Ps = sum p = the total count (the tail is folded into P) and Qs = sum q = sum hist[:i]
// (Q spreads each group's own count).
double kl_candidate(const std::vector<double>& hist, const KlTables& tables, std::size_t i, std::size_t levels) {
  const std::size_t n = hist.size();
  const double total = tables.prefix_count[n];
  const double tail = total - tables.prefix_count[i];
  double sum = 0.0;
  for (std::size_t g = 0; g < levels; ++g) {
    // Bin j < i belongs to group floor(j * levels / i): NVIDIA's np.digitize over
    // np.linspace(0, i, levels + 1), exact here because levels is a power of two.
    const std::size_t b0 = (g * i + levels - 1) / levels;
    const std::size_t b1 = ((g + 1) * i + levels - 1) / levels;
    const double nonzero = tables.prefix_nonzero[b1] - tables.prefix_nonzero[b0];
    if (nonzero == 0.0) {   // q = 0 on the group: finite unless the tail lands on its last bin
      if (b0 < b1 && b1 == i && tail > 0.0) return kInf;
      continue;
    }
    const double log_q = std::log((tables.prefix_count[b1] - tables.prefix_count[b0]) / nonzero);
    for (std::size_t j = b0; j < b1; ++j) {
      if (j + 1 == i && tail > 0.0) {   // P's last bin carries the tail
        if (hist[j] == 0.0) return kInf;
        const double p = hist[j] + tail;
        sum += p * (std::log(p) - log_q);
      } else if (hist[j] > 0.0) {
        sum += hist[j] * (tables.log_h[j] - log_q);
      }
    }
  }
  return sum / total + std::log(tables.prefix_count[i] / total);
}

// TensorRT-style KL calibration over a histogram of |x| per slot (NVIDIA pytorch-quantization's
// HistogramCalibrator with torch_hist=True, and _compute_amax_entropy; restated, see observers.h
// for the deliberate differences).
class EntropyObserver final : public SlotObserver {
 public:
  explicit EntropyObserver(const QuantSpec& spec)
      : SlotObserver(ObserverKind::kEntropy),
        bins_(static_cast<std::size_t>(spec.bins)),
        levels_(std::size_t{1} << (spec.is_signed ? spec.bits - 1 : spec.bits)) {}

 private:
  void observe_batch(const float* x, const SliceLayout& l) override {
    if (batches_ == 0) hist_.assign(slots_, AbsHistogram{});
    batch_min_max(x, l, &batch_min_, &batch_max_);
    for (std::size_t s = 0; s < slots_; ++s) prepare(&hist_[s], batch_min_[s], batch_max_[s], l);
    for_each_element(l, [&](std::size_t i, std::size_t s) {
      AbsHistogram& h = hist_[s];
      if (h.width == 0.0) return;   // this slot has seen only zeros (counted in prepare)
      const auto bin = static_cast<std::size_t>(static_cast<double>(std::fabs(x[i])) / h.width);
      h.counts[std::min(bin, h.counts.size() - 1)] += 1.0;
    });
  }

  // Updates the signed range, fixes the bin width on the first nonzero |x| (the first batch's
  // max |x| / bins), and appends bins of the same width while the batch's max |x| lies above
  // the last edge (counts.size() * width).
  void prepare(AbsHistogram* h, float bmin, float bmax, const SliceLayout& l) const {
    h->min = std::min(h->min, bmin);
    h->max = std::max(h->max, bmax);
    const auto amax = static_cast<double>(std::max(std::fabs(bmin), std::fabs(bmax)));
    if (h->width == 0.0) {
      if (amax == 0.0) {
        h->zeros_before += static_cast<double>(elements_per_slot(l));
        return;
      }
      h->width = amax / static_cast<double>(bins_);
      h->counts.assign(bins_, 0.0);
      h->counts[0] = h->zeros_before;
      return;
    }
    if (amax > static_cast<double>(h->counts.size()) * h->width) {
      const auto needed = static_cast<std::size_t>(std::ceil(amax / h->width));
      h->counts.resize(std::max(needed, h->counts.size()), 0.0);
    }
  }

  // The upper edge i * width of the candidate i in [min(levels, n), n] with the smallest
  // KL(P || Q), the first one on ties.
  double threshold(const AbsHistogram& h) const {
    const std::size_t n = h.counts.size();
    const KlTables tables(h.counts);
    double best_kl = kInf;
    std::size_t best_i = n;
    for (std::size_t i = std::min(levels_, n); i <= n; ++i) {
      const double kl = kl_candidate(h.counts, tables, i, levels_);
      if (kl < best_kl) {
        best_kl = kl;
        best_i = i;
      }
    }
    return static_cast<double>(best_i) * h.width;
  }

  void compute_ranges(float* mn, float* mx) const override {
    for (std::size_t s = 0; s < slots_; ++s) {
      const AbsHistogram& h = hist_[s];
      if (h.width == 0.0) {   // only zeros: nothing to clip
        mn[s] = h.min;
        mx[s] = h.max;
        continue;
      }
      const auto t = static_cast<float>(threshold(h));
      mn[s] = std::max(h.min, -t);
      mx[s] = std::min(h.max, t);
    }
  }

  std::size_t bins_;
  std::size_t levels_;
  std::vector<AbsHistogram> hist_;
  std::vector<float> batch_min_, batch_max_;   // scratch
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
  throw ConfigError("make_observer: unknown observer kind");
}

}  // namespace qdrift
