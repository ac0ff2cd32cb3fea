// SPDX-License-Identifier: Apache-2.0
// Quantizer: spec + observer + parameters, for int and float formats.
#include "qdrift/quantizers/quantizer.h"

#include <cmath>
#include <vector>

#include "qdrift/core/check.h"
#include "qdrift/quantizers/float_format.h"

namespace qdrift {

Quantizer::Quantizer(const QuantSpec& spec) : spec_(spec) {
  validate(spec_);
  if (!is_float_format() && spec_.mode == CalibrationMode::kStatic) observer_ = make_observer(spec_);
}

SliceLayout Quantizer::layout_for(const Shape& shape) const {
  return make_layout(shape, spec_.granularity, spec_.axis, spec_.group_size, "Quantizer");
}

ElementwiseArgs Quantizer::args(const SliceLayout& layout, const QuantParams& p) const {
  ElementwiseArgs a;
  a.layout = &layout;
  a.params = &p;
  a.rounding = spec_.rounding;
  a.seed = spec_.seed;
  return a;
}

void Quantizer::observe(const float* x, const Shape& shape) {
  QDRIFT_CHECK(!is_float_format(), ConfigError, "observe: format ", format_name(spec_.format),
               " has nothing to calibrate");
  QDRIFT_CHECK(spec_.mode == CalibrationMode::kStatic, ConfigError,
               "observe: a dynamic quantizer takes its parameters from each input; it does not observe");
  QDRIFT_CHECK(!frozen_, ConfigError, "observe: the quantizer is frozen; its parameters no longer change");
  const SliceLayout layout = layout_for(shape);
  const bool first_batch = observer_->empty();
  if (!first_batch) {
    const SliceLayout first = layout_for(observed_shape_);
    QDRIFT_CHECK(first.num_slots() == layout.num_slots(), ShapeError, "observe: a batch of shape ",
                 shape_to_string(shape), " has ", layout.num_slots(), " parameter slots, but earlier batches (",
                 shape_to_string(observed_shape_), ") had ", first.num_slots());
  }
  observer_->observe(x, layout);   // throws before changing anything on bad data
  if (first_batch) observed_shape_ = shape;
  observed_params_.reset();
}

void Quantizer::freeze() {
  if (frozen_) return;
  frozen_params_ = params();
  frozen_ = true;
}

void Quantizer::set_params(QuantParams p) {
  QDRIFT_CHECK(!is_float_format(), ConfigError, "set_params: format ", format_name(spec_.format),
               " has no parameters");
  QDRIFT_CHECK(p.qmin == spec_.qmin() && p.qmax == spec_.qmax(), ConfigError, "set_params: params are for codes [",
               p.qmin, ", ", p.qmax, "] but the spec has [", spec_.qmin(), ", ", spec_.qmax(), "]");
  frozen_params_ = std::move(p);
  frozen_ = true;
}

QuantParams Quantizer::params() const {
  QDRIFT_CHECK(!is_float_format(), ConfigError, "params: format ", format_name(spec_.format),
               " has no scale or zero point");
  if (frozen_params_) return *frozen_params_;
  QDRIFT_CHECK(spec_.mode == CalibrationMode::kStatic, ConfigError,
               "params: a dynamic quantizer has no fixed parameters; they come from each input");
  QDRIFT_CHECK(observer_ && !observer_->empty(), ConfigError,
               "params: the static quantizer has observed no data yet; call observe(x) first");
  if (!observed_params_) {
    std::vector<float> mn, mx;
    observer_->ranges(&mn, &mx);
    observed_params_ = params_from_ranges(spec_, mn, mx, layout_for(observed_shape_), observed_shape_);
  }
  return *observed_params_;
}

void Quantizer::observed_range(std::vector<float>* min, std::vector<float>* max) const {
  QDRIFT_CHECK(observer_ != nullptr, ConfigError,
               "observed_range: only static int quantizers observe data");
  observer_->ranges(min, max);
}

QuantParams Quantizer::params_for(const float* x, const Shape& shape) const {
  if (frozen_params_ || spec_.mode == CalibrationMode::kStatic) {
    QuantParams p = params();
    validate(p, shape);   // the input must fit the calibrated layout
    return p;
  }
  // Dynamic: observe this input alone.
  auto observer = make_observer(spec_);
  const SliceLayout layout = layout_for(shape);
  observer->observe(x, layout);
  std::vector<float> mn, mx;
  observer->ranges(&mn, &mx);
  return params_from_ranges(spec_, mn, mx, layout, shape);
}

void Quantizer::quantize(const float* x, const Shape& shape, std::int32_t* q) const {
  const std::size_t n = num_elements(shape);
  if (is_float_format()) {
    std::vector<std::uint16_t> bits(n);
    to_bits(spec_.format, x, n, bits.data());
    for (std::size_t i = 0; i < n; ++i) q[i] = bits[i];
    return;
  }
  const QuantParams p = params_for(x, shape);
  const SliceLayout layout = layout_for(shape);
  qdrift::quantize(args(layout, p), x, q);
}

void Quantizer::dequantize(const std::int32_t* q, const Shape& shape, const QuantParams& p, float* y) const {
  const std::size_t n = num_elements(shape);
  if (is_float_format()) {
    for (std::size_t i = 0; i < n; ++i) {
      QDRIFT_CHECK(q[i] >= 0 && q[i] < (1 << format_bits(spec_.format)), ConfigError, "dequantize: code ", q[i],
                   " at index ", i, " is not a ", format_name(spec_.format), " bit pattern");
      y[i] = bits_to_float(static_cast<std::uint16_t>(q[i]), spec_.format);
    }
    return;
  }
  validate(p, shape);
  const SliceLayout layout = layout_for(shape);
  qdrift::dequantize(args(layout, p), q, y);
}

void Quantizer::fake_quant(const float* x, const Shape& shape, float* y, std::uint8_t* mask) const {
  const std::size_t n = num_elements(shape);
  if (is_float_format()) {
    cast(spec_.format, x, n, y);
    // Gradient passes where the value stayed finite (overflow to Inf or NaN blocks it).
    if (mask)
      for (std::size_t i = 0; i < n; ++i) mask[i] = static_cast<std::uint8_t>(std::isfinite(y[i]));
    return;
  }
  const QuantParams p = params_for(x, shape);
  const SliceLayout layout = layout_for(shape);
  qdrift::fake_quant(args(layout, p), x, y, mask);
}

void Quantizer::fake_quant_backward(const float* x, const float* dy, const Shape& shape, float* dx) const {
  const std::size_t n = num_elements(shape);
  std::vector<float> y(n);
  std::vector<std::uint8_t> mask(n);
  fake_quant(x, shape, y.data(), mask.data());
  apply_ste_mask(mask.data(), dy, n, dx);
}

void Quantizer::fake_quant_lsq_backward(const float* x, const float* dy, const Shape& shape, float grad_factor,
                                        float* dx, std::vector<float>* dscale,
                                        std::vector<float>* dzero_point) const {
  QDRIFT_CHECK(!is_float_format(), ConfigError, "fake_quant_lsq_backward: format ", format_name(spec_.format),
               " has no scale or zero point to learn");
  const QuantParams p = params_for(x, shape);
  const SliceLayout layout = layout_for(shape);
  dscale->assign(p.scale.size(), 0.0f);
  dzero_point->assign(p.scale.size(), 0.0f);
  qdrift::fake_quant_lsq_backward(args(layout, p), x, dy, grad_factor, dx, dscale->data(), dzero_point->data());
}

}  // namespace qdrift
