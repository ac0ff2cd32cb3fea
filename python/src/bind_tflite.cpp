// SPDX-License-Identifier: Apache-2.0
// Bindings: the TFLite converter's formulas (qdrift.tflite.*).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "numpy_interop.h"
#include "qdrift/quantizers/tflite_formulas.h"

namespace py = pybind11;
using namespace pybind11::literals;
using qdrift::py_interop::array_in;
using qdrift::py_interop::array_out;

namespace {

qdrift::tflite::WeightScheme parse_scheme(const std::string& s) {
  if (s == "ptq") return qdrift::tflite::WeightScheme::kPtq;
  if (s == "int16x8") return qdrift::tflite::WeightScheme::kInt16x8;
  if (s == "dynamic") return qdrift::tflite::WeightScheme::kDynamicRange;
  throw qdrift::ConfigError("quantize_weights: unknown scheme '" + s + "'; expected one of ptq, int16x8, dynamic");
}

// weight_scales: a number or a 1-D array of numbers, read as float32 (the flatbuffer's type).
std::vector<float> scales_from(const py::handle& obj, const char* fn) {
  const py::array a = py::array::ensure(obj);
  const char kind = a ? a.dtype().kind() : '?';
  QDRIFT_CHECK(a && a.ndim() <= 1 && (kind == 'f' || kind == 'i' || kind == 'u'), qdrift::ConfigError, fn,
               ": weight_scales must be a number or a 1-D array of numbers");
  const auto f = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(a);
  return std::vector<float>(f.data(), f.data() + f.size());
}

template <class Int, class Fn>
py::array_t<Int> quantize_bias(const py::handle& b, float input_scale, const py::handle& weight_scales,
                               const char* fn, Fn quantize) {
  const auto in = array_in<float>(b, fn, "b");
  const std::vector<float> scales = scales_from(weight_scales, fn);
  std::vector<Int> q;
  {
    py::gil_scoped_release nogil;
    q = quantize(in.data, in.size(), input_scale, scales);
  }
  auto out = array_out<Int>(in.shape);
  std::copy(q.begin(), q.end(), out.mutable_data());
  return out;
}

}  // namespace

void bind_tflite(py::module_& m) {
  m.def(
      "tflite_activation_params_int8",
      [](float min, float max) {
        const auto p = qdrift::tflite::activation_params_int8(min, max);
        return py::make_tuple(p.scale, p.zero_point);
      },
      "min"_a, "max"_a,
      "(scale, zero_point) the MLIR converter writes for a calibrated int8 activation range (§2.3).");
  m.def(
      "tflite_activation_params_int16",
      [](float min, float max) {
        const auto p = qdrift::tflite::activation_params_int16(min, max);
        return py::make_tuple(p.scale, p.zero_point);
      },
      "min"_a, "max"_a, "(scale, 0) of an int16 activation in the int16x8 mode (§2.6); [0, 0] gives scale 0.");
  m.def(
      "tflite_quantize_weights",
      [](const py::handle& w, bool per_channel, int axis, const std::string& scheme) {
        const auto in = array_in<float>(w, "quantize_weights", "w");
        const auto s = parse_scheme(scheme);
        qdrift::tflite::QuantizedWeights q;
        {
          py::gil_scoped_release nogil;
          q = qdrift::tflite::quantize_weights(in.data, in.shape, per_channel, axis, s);
        }
        auto scales = array_out<float>({q.scale.size()});
        std::copy(q.scale.begin(), q.scale.end(), scales.mutable_data());
        auto values = array_out<std::int8_t>(in.shape);
        std::copy(q.values.begin(), q.values.end(), values.mutable_data());
        return py::make_tuple(scales, values);
      },
      "w"_a, "per_channel"_a, "axis"_a, "scheme"_a = "ptq",
      "Symmetric int8 weights as the converter writes them -> (float32 scales, int8 values).\n\n"
      "scheme: ptq (full-integer, §2.4), int16x8 (§2.6), dynamic (dynamic-range, §2.7).");
  m.def(
      "tflite_quantize_bias_int32",
      [](const py::handle& b, float input_scale, const py::handle& weight_scales) {
        return quantize_bias<std::int32_t>(b, input_scale, weight_scales, "quantize_bias_int32",
                                           qdrift::tflite::quantize_bias_int32);
      },
      "b"_a, "input_scale"_a, "weight_scales"_a,
      "int32 bias with scale f32(s_in * s_w[c]), clamped to +-INT32_MAX (§2.5).");
  m.def(
      "tflite_quantize_bias_int64",
      [](const py::handle& b, float input_scale, const py::handle& weight_scales) {
        return quantize_bias<std::int64_t>(b, input_scale, weight_scales, "quantize_bias_int64",
                                           qdrift::tflite::quantize_bias_int64);
      },
      "b"_a, "input_scale"_a, "weight_scales"_a,
      "int64 bias of the int16x8 mode, clamped to +-INT64_MAX (§2.6).");
}
