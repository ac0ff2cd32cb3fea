// SPDX-License-Identifier: Apache-2.0
// What a quantizer does (QuantSpec, plain data with the defaults) and what calibration found
// (QuantParams). No behaviour here beyond validation and (de)serialization.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "qdrift/core/rounding.h"
#include "qdrift/core/tensor.h"

namespace qdrift {

enum class Format : std::uint8_t { kInt, kFp16, kBf16, kFp8E4M3, kFp8E5M2 };
enum class Granularity : std::uint8_t { kPerTensor, kPerChannel, kPerGroup };
enum class CalibrationMode : std::uint8_t { kStatic, kDynamic };
enum class ObserverKind : std::uint8_t { kMinMax, kMovingAverage, kPercentile, kMse, kEntropy };
// How scale and zero point follow from an observed range.
//  kTorch:  torch.ao.quantization observers, in float32 (the default).
//  kTflite: the TFLite converter (shared/reference/tflite-semantics.md §2.3, §2.4, §2.6).
enum class ParamFormula : std::uint8_t { kTorch, kTflite };

struct QuantSpec {
  Format format = Format::kInt;  // "format": int | fp16 | bf16 | fp8_e4m3 | fp8_e5m2
  int bits = 8;                  // int only: 2..16
  bool is_signed = true;         // "signed"
  bool symmetric = false;
  bool narrow_range = false;     // drop the most negative code: [-127, 127] for int8
  Granularity granularity = Granularity::kPerTensor;
  int axis = -1;                 // per_channel / per_group: the channel or grouped axis
  int group_size = 0;            // per_group: elements per group along `axis`
  CalibrationMode mode = CalibrationMode::kStatic;
  ObserverKind observer = ObserverKind::kMinMax;
  Rounding rounding = Rounding::kHalfEven;
  ParamFormula formula = ParamFormula::kTorch;
  double averaging_constant = 0.01;  // moving_average: min += c * (batch_min - min)
  double percentile = 99.99;         // percentile: keep [p_low, p_high] = [100 - p, p]
  int bins = 2048;                   // entropy: histogram bins of |x|
  int mse_grid = 100;                // mse: candidate clipping ratios k/mse_grid, k = 1..mse_grid
  std::uint64_t seed = 0;            // stochastic rounding

  std::int32_t qmin() const;  // int format only
  std::int32_t qmax() const;
};

// Throws ConfigError naming the field (prefixed with `where`, e.g. a JSON pointer).
void validate(const QuantSpec& spec, std::string_view where = "");

// Strict JSON reader: unknown keys, wrong types and bad values raise ConfigError whose message
// starts with the JSON pointer (`pointer` is the object's own pointer, "" for the root).
QuantSpec parse_quant_spec(std::string_view json, std::string_view pointer = "");
std::string to_json(const QuantSpec& spec);
bool operator==(const QuantSpec& a, const QuantSpec& b);

std::string_view format_name(Format f);
std::string_view granularity_name(Granularity g);
std::string_view observer_name(ObserverKind o);

// Calibrated parameters: one (scale, zero_point) per parameter slot. The slots form a tensor
// of shape `param_shape`: () per tensor, (C,) per channel, and the input shape with `axis`
// divided by `group_size` per group.
struct QuantParams {
  std::vector<float> scale;
  std::vector<std::int32_t> zero_point;
  // The multiplier quantize() applies: q = round(f32(x * inv_scale[i])) + zp. f32(1/scale) for
  // torch; the TFLite converter's own inverse (§2.4) under ParamFormula::kTflite.
  std::vector<float> inv_scale;
  std::int32_t qmin = -128;
  std::int32_t qmax = 127;
  Granularity granularity = Granularity::kPerTensor;
  int axis = -1;        // normalized, >= 0, unless per tensor
  int group_size = 0;
  Shape param_shape;    // () per tensor
};

// Validates params against an input shape: sizes, positive finite scales, zero points inside
// [qmin, qmax]. Throws ConfigError / ShapeError naming the argument.
void validate(const QuantParams& p, const Shape& input_shape);

}  // namespace qdrift
