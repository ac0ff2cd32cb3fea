// SPDX-License-Identifier: Apache-2.0
// QuantSpec: names, validation and the strict JSON reader (unknown keys, wrong types and bad
// values are ConfigErrors that start with the JSON pointer of the offending field).
#include "qdrift/quantizers/quant_spec.h"

#include <array>
#include <limits>
#include <type_traits>
#include <cmath>
#include <string>
#include <utility>

#include "qdrift/core/check.h"
#include "qdrift/core/json_reader.h"

namespace qdrift {
namespace {

using json::Json;
using json::NameTable;
using json::ObjectReader;
using json::expected_names;
using json::name_of;

constexpr NameTable<Format, 5> kFormats{{{Format::kInt, "int"},
                                         {Format::kFp16, "fp16"},
                                         {Format::kBf16, "bf16"},
                                         {Format::kFp8E4M3, "fp8_e4m3"},
                                         {Format::kFp8E5M2, "fp8_e5m2"}}};
constexpr NameTable<Granularity, 3> kGranularities{{{Granularity::kPerTensor, "per_tensor"},
                                                    {Granularity::kPerChannel, "per_channel"},
                                                    {Granularity::kPerGroup, "per_group"}}};
constexpr NameTable<CalibrationMode, 2> kModes{{{CalibrationMode::kStatic, "static"},
                                                {CalibrationMode::kDynamic, "dynamic"}}};
constexpr NameTable<ObserverKind, 5> kObservers{{{ObserverKind::kMinMax, "minmax"},
                                                 {ObserverKind::kMovingAverage, "moving_average"},
                                                 {ObserverKind::kPercentile, "percentile"},
                                                 {ObserverKind::kMse, "mse"},
                                                 {ObserverKind::kEntropy, "entropy"}}};
constexpr NameTable<Rounding, 5> kRoundings{{{Rounding::kHalfEven, "half_even"},
                                             {Rounding::kHalfAway, "half_away"},
                                             {Rounding::kHalfUp, "half_up"},
                                             {Rounding::kFloor, "floor"},
                                             {Rounding::kStochastic, "stochastic"}}};
constexpr NameTable<ParamFormula, 2> kFormulas{{{ParamFormula::kTorch, "torch"},
                                                {ParamFormula::kTflite, "tflite"}}};

}  // namespace

std::string_view format_name(Format f) { return name_of(kFormats, f); }
std::string_view granularity_name(Granularity g) { return name_of(kGranularities, g); }
std::string_view observer_name(ObserverKind o) { return name_of(kObservers, o); }

std::int32_t QuantSpec::qmin() const {
  if (!is_signed) return narrow_range ? 1 : 0;
  const std::int32_t lo = -(std::int32_t{1} << (bits - 1));
  return narrow_range ? lo + 1 : lo;
}

std::int32_t QuantSpec::qmax() const {
  return is_signed ? (std::int32_t{1} << (bits - 1)) - 1 : (std::int32_t{1} << bits) - 1;
}

bool operator==(const QuantSpec& a, const QuantSpec& b) { return to_json(a) == to_json(b); }

void validate(const QuantSpec& s, std::string_view where) {
  const std::string w(where);
  auto field = [&](const char* key) { return w + "/" + key; };
  if (s.format == Format::kInt) {
    QDRIFT_CHECK(s.bits >= 2 && s.bits <= 16, ConfigError, field("bits"),
                 ": bits must be in [2, 16], got ", s.bits);
  }
  QDRIFT_CHECK(s.granularity != Granularity::kPerGroup || s.group_size > 0, ConfigError,
               field("group_size"), ": per_group quantization needs group_size > 0, got ", s.group_size);
  QDRIFT_CHECK(s.granularity == Granularity::kPerGroup || s.group_size == 0, ConfigError,
               field("group_size"), ": group_size is only meaningful with granularity per_group");
  QDRIFT_CHECK(s.averaging_constant > 0.0 && s.averaging_constant <= 1.0, ConfigError,
               field("averaging_constant"), ": must be in (0, 1], got ", s.averaging_constant);
  QDRIFT_CHECK(s.percentile > 50.0 && s.percentile <= 100.0, ConfigError, field("percentile"),
               ": must be in (50, 100], got ", s.percentile);
  QDRIFT_CHECK(s.bins >= 16 && s.bins <= (1 << 20), ConfigError, field("bins"),
               ": must be in [16, 2^20], got ", s.bins);
  QDRIFT_CHECK(s.mse_grid >= 1 && s.mse_grid <= 100000, ConfigError, field("mse_grid"),
               ": must be in [1, 100000], got ", s.mse_grid);
  if (s.format == Format::kInt && s.observer == ObserverKind::kEntropy) {
    const int quant_bins = s.is_signed ? (1 << (s.bits - 1)) : (1 << s.bits);
    QDRIFT_CHECK(s.bins >= quant_bins, ConfigError, field("bins"), ": the entropy observer needs at least ",
                 quant_bins, " histogram bins for ", s.bits, "-bit codes, got ", s.bins);
  }
  if (s.format != Format::kInt) {
    QDRIFT_CHECK(s.granularity == Granularity::kPerTensor, ConfigError, field("granularity"),
                 ": float format ", format_name(s.format), " has no scale; use per_tensor");
    QDRIFT_CHECK(s.formula == ParamFormula::kTorch, ConfigError, field("formula"),
                 ": formula applies to int formats only");
  }
  if (s.formula == ParamFormula::kTflite && s.format == Format::kInt) {
    // The converter has three int formulas; anything else would be an invented "TFLite" scheme.
    const bool int8_activation = s.bits == 8 && s.is_signed && !s.symmetric && !s.narrow_range;
    const bool int8_weight = s.bits == 8 && s.is_signed && s.symmetric && s.narrow_range;
    const bool int16_activation = s.bits == 16 && s.is_signed && s.symmetric && !s.narrow_range &&
                                  s.granularity == Granularity::kPerTensor;
    QDRIFT_CHECK(int8_activation || int8_weight || int16_activation, ConfigError, field("formula"),
                 ": the TFLite converter quantizes int8 asymmetric activations, int8 symmetric "
                 "narrow-range weights and int16 symmetric per-tensor activations; this spec is none of them");
    QDRIFT_CHECK(s.granularity != Granularity::kPerGroup, ConfigError, field("granularity"),
                 ": the TFLite converter has no per-group quantization");
  }
}

QuantSpec parse_quant_spec(std::string_view json, std::string_view pointer) {
  Json j;
  try {
    j = Json::parse(json.begin(), json.end());
  } catch (const Json::exception& e) {   // parse_error, and out_of_range for a number like 1e999
    throw ConfigError(std::string(pointer.empty() ? "/" : pointer) + ": invalid JSON: " + e.what());
  }
  QuantSpec s;
  ObjectReader r(j, std::string(pointer));
  r.read_enum("format", kFormats, &s.format);
  r.read("bits", &s.bits);
  r.read("signed", &s.is_signed);
  r.read("symmetric", &s.symmetric);
  r.read("narrow_range", &s.narrow_range);
  r.read_enum("granularity", kGranularities, &s.granularity);
  r.read("axis", &s.axis);
  r.read("group_size", &s.group_size);
  r.read_enum("mode", kModes, &s.mode);
  r.read_enum("observer", kObservers, &s.observer);
  r.read_enum("rounding", kRoundings, &s.rounding);
  r.read_enum("formula", kFormulas, &s.formula);
  r.read("averaging_constant", &s.averaging_constant);
  r.read("percentile", &s.percentile);
  r.read("bins", &s.bins);
  r.read("mse_grid", &s.mse_grid);
  r.read("seed", &s.seed);
  r.finish();
  // The converter rounds half away from zero (std::round); that is the default under its formula.
  if (s.formula == ParamFormula::kTflite && !j.contains("rounding")) s.rounding = Rounding::kHalfAway;
  validate(s, pointer);
  return s;
}

std::string to_json(const QuantSpec& s) {
  Json j;
  j["format"] = format_name(s.format);
  j["bits"] = s.bits;
  j["signed"] = s.is_signed;
  j["symmetric"] = s.symmetric;
  j["narrow_range"] = s.narrow_range;
  j["granularity"] = granularity_name(s.granularity);
  j["axis"] = s.axis;
  j["group_size"] = s.group_size;
  j["mode"] = name_of(kModes, s.mode);
  j["observer"] = observer_name(s.observer);
  j["rounding"] = name_of(kRoundings, s.rounding);
  j["formula"] = name_of(kFormulas, s.formula);
  j["averaging_constant"] = s.averaging_constant;
  j["percentile"] = s.percentile;
  j["bins"] = s.bins;
  j["mse_grid"] = s.mse_grid;
  j["seed"] = s.seed;
  return j.dump();
}

void validate(const QuantParams& p, const Shape& input_shape) {
  QDRIFT_CHECK(p.qmin < p.qmax, ConfigError, "qmin (", p.qmin, ") must be less than qmax (", p.qmax, ")");
  QDRIFT_CHECK(p.scale.size() == p.zero_point.size(), ShapeError, "scale has ", p.scale.size(),
               " entries but zero_point has ", p.zero_point.size());
  QDRIFT_CHECK(p.inv_scale.size() == p.scale.size(), ShapeError, "inv_scale has ", p.inv_scale.size(),
               " entries but scale has ", p.scale.size());
  for (std::size_t i = 0; i < p.scale.size(); ++i) {
    QDRIFT_CHECK(std::isfinite(p.scale[i]) && p.scale[i] > 0.0f, ConfigError, "scale[", i,
                 "] must be finite and > 0, got ", p.scale[i]);
    QDRIFT_CHECK(std::isfinite(p.inv_scale[i]) && p.inv_scale[i] > 0.0f, ConfigError, "scale[", i, "] = ",
                 p.scale[i], " is too small: its inverse is not a finite float32");
    QDRIFT_CHECK(p.zero_point[i] >= p.qmin && p.zero_point[i] <= p.qmax, ConfigError, "zero_point[", i,
                 "] = ", p.zero_point[i], " is outside [qmin, qmax] = [", p.qmin, ", ", p.qmax, "]");
  }
  if (p.granularity == Granularity::kPerTensor) {
    QDRIFT_CHECK(p.scale.size() == 1, ShapeError, "per-tensor parameters need one scale, got ", p.scale.size());
    return;
  }
  QDRIFT_CHECK(p.axis >= 0 && static_cast<std::size_t>(p.axis) < input_shape.size(), ShapeError, "axis ",
               p.axis, " is out of range for an input of shape ", shape_to_string(input_shape));
  const std::size_t channels = input_shape[static_cast<std::size_t>(p.axis)];
  if (p.granularity == Granularity::kPerChannel) {
    QDRIFT_CHECK(p.scale.size() == channels, ShapeError, "per-channel parameters have ", p.scale.size(),
                 " entries but axis ", p.axis, " of the input ", shape_to_string(input_shape), " has ",
                 channels);
    QDRIFT_CHECK(num_elements(p.param_shape) == p.scale.size(), ShapeError, "scale has ", p.scale.size(),
                 " entries but the parameter shape is ", shape_to_string(p.param_shape));
  } else {
    Shape expected = input_shape;
    QDRIFT_CHECK(p.group_size > 0 && channels % static_cast<std::size_t>(p.group_size) == 0, ShapeError,
                 "group_size ", p.group_size, " does not divide axis ", p.axis, " of length ", channels);
    expected[static_cast<std::size_t>(p.axis)] /= static_cast<std::size_t>(p.group_size);
    QDRIFT_CHECK(expected == p.param_shape && num_elements(expected) == p.scale.size(), ShapeError,
                 "per-group parameters of shape ",
                 shape_to_string(p.param_shape), " do not fit an input of shape ",
                 shape_to_string(input_shape), " (expected ", shape_to_string(expected), ")");
  }
}

}  // namespace qdrift
