// SPDX-License-Identifier: Apache-2.0
// Range observers: accumulate per-slot statistics over calibration batches, then give the
// range [min, max] per slot from which params_from_ranges() makes scale and zero point.
//
//   minmax          running min / max (float32).
//   moving_average  torch MovingAverageMinMaxObserver: first batch sets the range, then
//                   min += c * (batch_min - min) in float32 (c = f32(averaging_constant)).
//   percentile      per batch, numpy.percentile(x, [100 - p, p]) (linear interpolation, in
//                   double); the range is the mean over batches.
//   mse             per batch, the clipping ratio r = k / mse_grid (k = 1..mse_grid) of the
//                   batch's [min, max] that minimizes mean((fake_quant(x) - x)^2) (double,
//                   first minimum wins); the range is the mean over batches.
//   entropy         TensorRT-style KL calibration over a histogram of |x| (see observers.cpp);
//                   range [max(min, -t), min(max, t)] for the chosen threshold t.
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
