// SPDX-License-Identifier: Apache-2.0
// Bindings: integer FULLY_CONNECTED and CONV_2D with an explicit output stage.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "numpy_interop.h"
#include "qdrift/ops/integer.h"

namespace py = pybind11;
using namespace pybind11::literals;
using qdrift::py_interop::array_in;
using qdrift::py_interop::array_out;
using qdrift::py_interop::values_of;

namespace {

qdrift::OutputStage make_stage(const std::string& method, const py::object& m, const py::object& shift,
                               const py::object& scale, std::int32_t zero_point, std::int32_t act_min,
                               std::int32_t act_max, const py::object& tail_from, const std::string& tail_method) {
  qdrift::OutputStage s;
  if (!tail_from.is_none()) s.tail_from = py::cast<std::size_t>(tail_from);
  s.tail_method = qdrift::parse_requant_method(tail_method);
  s.method = qdrift::parse_requant_method(method);
  s.multiplier = values_of<std::int32_t>(m, "output stage parameters");
  s.shift = values_of<int>(shift, "output stage parameters");
  s.scale = values_of<double>(scale, "output stage parameters");
  s.zero_point = zero_point;
  s.act_min = act_min;
  s.act_max = act_max;
  return s;
}

const std::int32_t* optional_bias(const py::object& bias, py::array& keep, std::size_t channels, const char* fn) {
  if (bias.is_none()) return nullptr;
  auto b = array_in<std::int32_t>(bias, fn, "bias");
  QDRIFT_CHECK(b.size() == channels, qdrift::ShapeError, fn, ": bias has ", b.size(), " values for ", channels,
               " output channels");
  keep = b.array;
  return b.data;
}

// accumulator=None | dict(bits=..., overflow="wrap" | "saturate"); unknown keys are errors.
std::optional<qdrift::AccumulatorSpec> accumulator_spec(const py::object& obj, const char* fn) {
  if (obj.is_none()) return std::nullopt;
  QDRIFT_CHECK(py::isinstance<py::dict>(obj), qdrift::ConfigError, fn,
               ": accumulator must be a dict like dict(bits=16, overflow='wrap')");
  qdrift::AccumulatorSpec a;
  for (const auto& [key, value] : py::reinterpret_borrow<py::dict>(obj)) {
    const auto k = py::cast<std::string>(key);
    if (k == "bits") {
      a.bits = py::cast<int>(value);
    } else if (k == "overflow") {
      a.on_overflow = qdrift::parse_overflow_rule(py::cast<std::string>(value));
    } else {
      throw qdrift::ConfigError(std::string(fn) + ": unknown accumulator key '" + k + "'; expected bits, overflow");
    }
  }
  qdrift::validate(a);
  return a;
}

// y, or (y, overflow count) when an accumulator was given.
py::object result(py::array_t<std::int8_t> y, const std::optional<qdrift::AccumulatorSpec>& acc,
                  std::uint64_t overflows) {
  if (!acc) return std::move(y);
  return py::make_tuple(std::move(y), overflows);
}

}  // namespace

void bind_integer(py::module_& m) {
  m.def(
      "add_int8",
      [](const py::handle& a, const py::handle& b, float a_scale, std::int32_t a_zero_point, float b_scale,
         std::int32_t b_zero_point, float out_scale, std::int32_t out_zero_point, const std::string& kernel,
         std::int32_t act_min, std::int32_t act_max) {
        auto ai = array_in<std::int8_t>(a, "add_int8", "a");
        auto bi = array_in<std::int8_t>(b, "add_int8", "b");
        QDRIFT_CHECK(ai.shape == bi.shape, qdrift::ShapeError, "add_int8: a ", qdrift::shape_to_string(ai.shape),
                     " and b ", qdrift::shape_to_string(bi.shape), " differ (broadcasting is not supported)");
        QDRIFT_CHECK(kernel == "tflite" || kernel == "xnnpack", qdrift::ConfigError,
                     "add_int8: kernel must be tflite or xnnpack, got '", kernel, "'");
        auto y = array_out<std::int8_t>(ai.shape);
        qdrift::add_int8(kernel == "tflite" ? qdrift::AddKernel::kTflite : qdrift::AddKernel::kXnnpack, ai.data,
                         bi.data, ai.size(), a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point,
                         act_min, act_max, y.mutable_data());
        return y;
      },
      "a"_a, "b"_a, "a_scale"_a, "a_zero_point"_a, "b_scale"_a, "b_zero_point"_a, "out_scale"_a,
      "out_zero_point"_a, py::kw_only(), "kernel"_a = "tflite", "act_min"_a = -128, "act_max"_a = 127,
      "int8 ADD of equal shapes as the TFLite kernels (kernel='tflite') or XNNPACK compute it.");
  m.def(
      "mul_int8",
      [](const py::handle& a, const py::handle& b, float a_scale, std::int32_t a_zero_point, float b_scale,
         std::int32_t b_zero_point, float out_scale, std::int32_t out_zero_point, const std::string& kernel,
         std::int32_t act_min, std::int32_t act_max) {
        auto ai = array_in<std::int8_t>(a, "mul_int8", "a");
        auto bi = array_in<std::int8_t>(b, "mul_int8", "b");
        QDRIFT_CHECK(ai.shape == bi.shape, qdrift::ShapeError, "mul_int8: a ", qdrift::shape_to_string(ai.shape),
                     " and b ", qdrift::shape_to_string(bi.shape), " differ (broadcast b first)");
        QDRIFT_CHECK(kernel == "tflite" || kernel == "xnnpack", qdrift::ConfigError,
                     "mul_int8: kernel must be tflite or xnnpack, got '", kernel, "'");
        QDRIFT_CHECK(act_min <= act_max, qdrift::ConfigError, "mul_int8: act_min ", act_min, " > act_max ", act_max);
        auto y = array_out<std::int8_t>(ai.shape);
        qdrift::mul_int8(kernel == "tflite" ? qdrift::MulKernel::kTflite : qdrift::MulKernel::kXnnpack, ai.data,
                         bi.data, ai.size(), a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point,
                         act_min, act_max, y.mutable_data());
        return y;
      },
      "a"_a, "b"_a, "a_scale"_a, "a_zero_point"_a, "b_scale"_a, "b_zero_point"_a, "out_scale"_a,
      "out_zero_point"_a, py::kw_only(), "kernel"_a = "tflite", "act_min"_a = -128, "act_max"_a = 127,
      "int8 MUL of equal shapes as the TFLite kernels (kernel='tflite': reference and builtin) or XNNPACK compute it.");
  m.def(
      "lut_int8",
      [](const std::string& function, float in_scale, std::int32_t in_zero_point, float out_scale,
         std::int32_t out_zero_point, bool round_half_even) {
        QDRIFT_CHECK(function == "tanh" || function == "logistic", qdrift::ConfigError,
                     "lut_int8: function must be tanh or logistic, got '", function, "'");
        const auto lut = qdrift::lut_int8(function == "tanh" ? qdrift::LutFunction::kTanh : qdrift::LutFunction::kLogistic,
                                          in_scale, in_zero_point, out_scale, out_zero_point, round_half_even);
        auto out = array_out<std::int8_t>({256});
        std::copy(lut.begin(), lut.end(), out.mutable_data());
        return out;
      },
      "function"_a, "in_scale"_a, "in_zero_point"_a, "out_scale"_a, "out_zero_point"_a, py::kw_only(),
      "round_half_even"_a = false, "256-entry int8 TANH / LOGISTIC table; entry v + 128 is f(v).");

  m.def(
      "fully_connected_int8",
      [](const py::handle& x, const py::handle& filter, const py::object& bias, std::int32_t x_zero_point,
         const std::string& method, const py::object& mult, const py::object& shift, const py::object& scale,
         std::int32_t zero_point, std::int32_t act_min, std::int32_t act_max, const py::object& tail_from,
         const std::string& tail_method, const std::string& path, const py::object& accumulator) {
        const qdrift::Path p = qdrift::parse_path(path);
        const auto acc = accumulator_spec(accumulator, "fully_connected_int8");
        auto xi = array_in<std::int8_t>(x, "fully_connected_int8", "x");
        auto fi = array_in<std::int8_t>(filter, "fully_connected_int8", "filter");
        QDRIFT_CHECK(fi.shape.size() == 2 && !xi.shape.empty() && xi.shape.back() == fi.shape[1], qdrift::ShapeError,
                     "fully_connected_int8: filter ", qdrift::shape_to_string(fi.shape), " does not fit input ",
                     qdrift::shape_to_string(xi.shape));
        const std::size_t in = fi.shape[1], out = fi.shape[0];
        // Leading dims are the batch (counted from the shape, so in == 0 still gives one row each).
        const std::size_t batch = qdrift::num_elements(qdrift::Shape(xi.shape.begin(), xi.shape.end() - 1));
        py::array keep;
        const std::int32_t* b = optional_bias(bias, keep, out, "fully_connected_int8");
        const qdrift::OutputStage stage =
            make_stage(method, mult, shift, scale, zero_point, act_min, act_max, tail_from, tail_method);
        qdrift::Shape out_shape = xi.shape;
        out_shape.back() = out;
        auto y = array_out<std::int8_t>(out_shape);
        std::int8_t* yp = y.mutable_data();
        std::uint64_t overflows = 0;
        {
          py::gil_scoped_release nogil;
          qdrift::fully_connected_int8(xi.data, batch, in, x_zero_point, fi.data, out, b, stage, yp, p,
                                       acc.value_or(qdrift::AccumulatorSpec{}), &overflows);
        }
        return result(std::move(y), acc, overflows);
      },
      "x"_a, "filter"_a, "bias"_a, "x_zero_point"_a, py::kw_only(), "method"_a, "m"_a = py::none(),
      "shift"_a = py::none(), "scale"_a = py::none(), "zero_point"_a = 0, "act_min"_a = -128, "act_max"_a = 127,
      "tail_from"_a = py::none(), "tail_method"_a = "gemmlowp", "path"_a = "auto", "accumulator"_a = py::none(),
      "int8 FULLY_CONNECTED: filter (out, in) as TFLite stores it; int32 accumulation, then the output stage.\n"
      "path: 'reference' | 'fast' | 'auto' (same bits). accumulator=dict(bits=16, overflow='wrap'|'saturate')\n"
      "models a narrower/wider accumulator and makes the call return (y, overflow_count).\n"
      "tail_from / tail_method: output channels >= tail_from use tail_method (LiteRT's builtin depthwise).");

  m.def(
      "conv2d_int8",
      [](const py::handle& x, const py::handle& filter, const py::object& bias, std::int32_t x_zero_point,
         std::pair<std::size_t, std::size_t> strides, const std::string& padding,
         std::pair<std::size_t, std::size_t> dilation, std::size_t groups, const std::string& method,
         const py::object& mult, const py::object& shift, const py::object& scale, std::int32_t zero_point,
         std::int32_t act_min, std::int32_t act_max, const py::object& tail_from, const std::string& tail_method,
         const std::string& path, const py::object& accumulator) {
        const qdrift::Path p = qdrift::parse_path(path);
        const auto acc = accumulator_spec(accumulator, "conv2d_int8");
        auto xi = array_in<std::int8_t>(x, "conv2d_int8", "x");
        auto fi = array_in<std::int8_t>(filter, "conv2d_int8", "filter");
        const qdrift::ConvGeometry g =
            qdrift::make_conv_geometry(xi.shape, fi.shape, strides.first, strides.second, dilation.first,
                                       dilation.second, qdrift::parse_padding(padding), groups, "conv2d_int8");
        py::array keep;
        const std::int32_t* b = optional_bias(bias, keep, g.o, "conv2d_int8");
        const qdrift::OutputStage stage =
            make_stage(method, mult, shift, scale, zero_point, act_min, act_max, tail_from, tail_method);
        auto y = array_out<std::int8_t>({g.n, g.oh, g.ow, g.o});
        std::int8_t* yp = y.mutable_data();
        std::uint64_t overflows = 0;
        {
          py::gil_scoped_release nogil;
          qdrift::conv2d_int8(g, xi.data, x_zero_point, fi.data, b, stage, yp, p, acc.value_or(qdrift::AccumulatorSpec{}),
                              &overflows);
        }
        return result(std::move(y), acc, overflows);
      },
      "x"_a, "filter"_a, "bias"_a, "x_zero_point"_a, py::kw_only(), "strides"_a = std::pair<std::size_t, std::size_t>{1, 1},
      "padding"_a = "valid", "dilation"_a = std::pair<std::size_t, std::size_t>{1, 1}, "groups"_a = 1, "method"_a,
      "m"_a = py::none(), "shift"_a = py::none(), "scale"_a = py::none(), "zero_point"_a = 0, "act_min"_a = -128,
      "act_max"_a = 127, "tail_from"_a = py::none(), "tail_method"_a = "gemmlowp", "path"_a = "auto",
      "accumulator"_a = py::none(),
      "int8 CONV_2D on NHWC input; filter in qdrift's (KH, KW, C/groups, O) layout; padding taps add 0.\n"
      "path and accumulator as for fully_connected_int8.");
}
