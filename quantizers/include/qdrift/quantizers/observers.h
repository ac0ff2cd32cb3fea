// SPDX-License-Identifier: Apache-2.0
// Range observers: accumulate per-slot statistics over calibration batches, then give the
// range [min, max] per slot from which params_from_ranges() makes scale and zero point. A slot
// is a parameter slot of the SliceLayout (layout.h): one per tensor, channel or group.
//
//   minmax          running min / max (float32).
//   moving_average  torch MovingAverage(PerChannel)MinMaxObserver: the first batch sets the
//                   range, then min = min + c * (batch_min - min) in float32 with
//                   c = f32(averaging_constant) (likewise max).
//   percentile      per batch, numpy.percentile(x, [100 - p, p]) (default "linear" method, in
//                   double); the range is the mean over batches (summed in double in batch
//                   order, divided by the count, then rounded to float32).
//   mse             per batch, the candidates [f32(r * min), f32(r * max)] of the batch's
//                   min / max, r = k / mse_grid in double (k = 1..mse_grid), with params from
//                   slot_params() (what params_from_ranges() uses); each scored by
//                   mean((fake_quant(x) - x)^2) in double under ref::fake_quant's element rule
//                   with the spec's rounding (stochastic: its seed and the flat index). The first
//                   (smallest r) minimum wins; the range is the mean over batches, as above.
//   entropy         TensorRT-style KL calibration (NVIDIA pytorch-quantization's
//                   HistogramCalibrator, torch_hist=True, + _compute_amax_entropy):
//                   * histogram of |x| per slot, bin j = [j w, (j + 1) w), j = floor(|x| / w) in
//                     double, the last bin also takes its upper edge. w = (max |x| of the first
//                     batch with a nonzero value) / bins; zeros seen before that go to bin 0.
//                     A batch whose max |x| exceeds the last edge (n w) appends bins up to
//                     ceil(max |x| / w).
//                   * for i = min(L, n) .. n (L = 2^(bits-1) signed, 2^bits unsigned; n bins):
//                     P = hist[:i] with sum(hist[i:]) added to P[i-1]; Q: bin j < i joins
//                     group floor(j L / i) (NVIDIA's digitize over linspace(0, i, L + 1)), and
//                     each group's count is spread evenly over its nonzero bins (zero bins stay
//                     0). KL(P || Q) of the normalized P and Q; +Inf if P has mass where Q has
//                     none (the tail lands on an empty bin).
//                   * t = i w for the first i with the smallest KL; range
//                     [max(min, -t), min(max, t)] of the observed signed min / max.
//                   Differences from NVIDIA's code, on purpose: the search starts at L rather
//                   than a fixed 128 (the same for signed 8-bit), the first minimum wins rather
//                   than the last, and bin 0 keeps its own count (NVIDIA overwrites it with
//                   bin 1's).
//
// Errors: observe() throws ShapeError for an empty batch or a slot count that differs from
// the first batch's (naming the observer and both counts), DataError naming the first NaN or
// Inf and its flat index (before any state changes); ranges() throws ConfigError before the
// first batch.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "qdrift/quantizers/layout.h"
#include "qdrift/quantizers/quant_spec.h"

namespace qdrift {

class Observer {
 public:
  virtual ~Observer() = default;
  // x is row-major with `layout`; throws DataError on NaN/Inf.
  virtual void observe(const float* x, const SliceLayout& layout) = 0;
  virtual bool empty() const = 0;
  // Per-slot ranges; throws ConfigError if nothing was observed.
  virtual void ranges(std::vector<float>* min, std::vector<float>* max) const = 0;
};

std::unique_ptr<Observer> make_observer(const QuantSpec& spec);

}  // namespace qdrift
