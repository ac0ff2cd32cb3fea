// SPDX-License-Identifier: Apache-2.0
// Quantizer: a QuantSpec plus its calibration state. Static quantizers observe batches and
// then use (or freeze) the parameters; dynamic ones take parameters from each input.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "qdrift/quantizers/affine.h"
#include "qdrift/quantizers/observers.h"
#include "qdrift/quantizers/quant_spec.h"

namespace qdrift {

class Quantizer {
 public:
  explicit Quantizer(const QuantSpec& spec);  // validates; throws ConfigError

  const QuantSpec& spec() const { return spec_; }
  bool is_float_format() const { return spec_.format != Format::kInt; }

  // Static calibration. Throws ConfigError once frozen or in dynamic mode.
  void observe(const float* x, const Shape& shape);
  // Fix the parameters from what was observed; later observe() calls are errors.
  void freeze();
  bool frozen() const { return frozen_; }
  // Replace the parameters (e.g. loaded from a file); freezes the quantizer.
  void set_params(QuantParams p);

  // Parameters used for input x: dynamic mode computes them from x; static mode returns the
  // current (frozen or observed-so-far) parameters after checking x's shape against them.
  QuantParams params_for(const float* x, const Shape& shape) const;
  // Static parameters; throws ConfigError if nothing was observed.
  QuantParams params() const;
  // The per-slot ranges the observer has found so far (static int quantizers).
  void observed_range(std::vector<float>* min, std::vector<float>* max) const;

  // Element operations on a row-major tensor; outputs have the same number of elements.
  void quantize(const float* x, const Shape& shape, std::int32_t* q) const;
  void dequantize(const std::int32_t* q, const Shape& shape, const QuantParams& p, float* y) const;
  void fake_quant(const float* x, const Shape& shape, float* y, std::uint8_t* mask) const;
  void fake_quant_backward(const float* x, const float* dy, const Shape& shape, float* dx) const;
  // LSQ gradients (torch._fake_quantize_learnable_*): dx, and per-slot d(scale), d(zero_point).
  void fake_quant_lsq_backward(const float* x, const float* dy, const Shape& shape, float grad_factor,
                               float* dx, std::vector<float>* dscale, std::vector<float>* dzero_point) const;

 private:
  ElementwiseArgs args(const SliceLayout& layout, const QuantParams& p) const;
  SliceLayout layout_for(const Shape& shape) const;

  QuantSpec spec_;
  std::unique_ptr<Observer> observer_;   // static int quantizers
  Shape observed_shape_;                 // shape of the first observed batch
  std::optional<QuantParams> frozen_params_;
  // Static parameters from the observations so far; recomputed only after the next observe()
  // (the entropy and MSE observers' searches are not cheap).
  mutable std::optional<QuantParams> observed_params_;
  bool frozen_ = false;
};

}  // namespace qdrift
