// SPDX-License-Identifier: Apache-2.0
// Bindings: the int16x8 kernels (int16 activations, int8 weights, int64 or int32 bias).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "numpy_interop.h"
#include "qdrift/ops/integer16.h"

namespace py = pybind11;
using namespace pybind11::literals;
using qdrift::py_interop::array_in;
using qdrift::py_interop::array_out;
using qdrift::py_interop::values_of;

namespace {

qdrift::OutputStage stage_of(const std::string& method, const py::object& m, const py::object& shift,
                             const py::object& scale, std::int32_t act_min, std::int32_t act_max) {
  qdrift::OutputStage s;
  s.method = qdrift::parse_requant_method(method);
  s.multiplier = values_of<std::int32_t>(m, "output stage parameters");
  s.shift = values_of<int>(shift, "output stage parameters");
  s.scale = values_of<double>(scale, "output stage parameters");
  s.zero_point = 0;
  s.act_min = act_min;
  s.act_max = act_max;
  return s;
}

// The bias (int64 or int32, one per output channel) or none; the accumulator width follows it.
// Without a bias, `accumulator` ("int64" | "int32") names the width.
struct Bias {
  py::array keep;
  const std::int64_t* b64 = nullptr;
  const std::int32_t* b32 = nullptr;
  bool wide = true;
};

Bias bias_of(const py::object& bias, const std::string& accumulator, std::size_t channels, const char* fn) {
  QDRIFT_CHECK(accumulator == "int64" || accumulator == "int32", qdrift::ConfigError, fn,
               ": accumulator must be int64 or int32, got '", accumulator, "'");
  Bias r;
  r.wide = accumulator == "int64";
  if (bias.is_none()) return r;
  QDRIFT_CHECK(py::isinstance<py::array>(bias), qdrift::DTypeError, fn, ": bias must be a numpy int64 or int32 array");
  const auto dtype = py::reinterpret_borrow<py::array>(bias).dtype();
  const bool is64 = dtype.is(py::dtype::of<std::int64_t>());
  QDRIFT_CHECK(is64 == r.wide, qdrift::DTypeError, fn, ": bias dtype ", std::string(py::str(dtype)),
               " does not match accumulator ", accumulator, " (an int64 bias means int64 sums, int32 means int32)");
  std::size_t size = 0;
  if (is64) {
    auto b = array_in<std::int64_t>(bias, fn, "bias");
    r.keep = b.array;
    r.b64 = b.data;
    size = b.size();
  } else {
    auto b = array_in<std::int32_t>(bias, fn, "bias");
    r.keep = b.array;
    r.b32 = b.data;
    size = b.size();
  }
  QDRIFT_CHECK(size == channels, qdrift::ShapeError, fn, ": bias has ", size, " values for ", channels,
               " output channels");
  return r;
}

qdrift::LutFunction table_function(const std::string& function) {
  QDRIFT_CHECK(function == "tanh" || function == "logistic", qdrift::ConfigError,
               "int16 table: function must be tanh or logistic, got '", function, "'");
  return function == "tanh" ? qdrift::LutFunction::kTanh : qdrift::LutFunction::kLogistic;
}

}  // namespace

void bind_integer16(py::module_& m) {
  m.def(
      "fully_connected_int16",
      [](const py::handle& x, const py::handle& filter, const py::object& bias, const std::string& accumulator,
         const std::string& method, const py::object& mult, const py::object& shift, const py::object& scale,
         std::int32_t act_min, std::int32_t act_max) {
        auto xi = array_in<std::int16_t>(x, "fully_connected_int16", "x");
        auto fi = array_in<std::int8_t>(filter, "fully_connected_int16", "filter");
        QDRIFT_CHECK(fi.shape.size() == 2 && !xi.shape.empty() && xi.shape.back() == fi.shape[1], qdrift::ShapeError,
                     "fully_connected_int16: filter ", qdrift::shape_to_string(fi.shape), " does not fit input ",
                     qdrift::shape_to_string(xi.shape));
        const std::size_t in = fi.shape[1], out = fi.shape[0], batch = in ? xi.size() / in : 0;
        const Bias b = bias_of(bias, accumulator, out, "fully_connected_int16");
        const qdrift::OutputStage stage = stage_of(method, mult, shift, scale, act_min, act_max);
        qdrift::Shape out_shape = xi.shape;
        out_shape.back() = out;
        auto y = array_out<std::int16_t>(out_shape);
        std::int16_t* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          if (b.wide) qdrift::fully_connected_int16(xi.data, batch, in, fi.data, out, b.b64, stage, yp);
          else qdrift::fully_connected_int16(xi.data, batch, in, fi.data, out, b.b32, stage, yp);
        }
        return y;
      },
      "x"_a, "filter"_a, "bias"_a, py::kw_only(), "accumulator"_a = "int64", "method"_a, "m"_a = py::none(),
      "shift"_a = py::none(), "scale"_a = py::none(), "act_min"_a = -32768, "act_max"_a = 32767,
      "int16x8 FULLY_CONNECTED: filter (out, in); sums in the bias's width (int64 or int32), then the output stage.");

  m.def(
      "conv2d_int16",
      [](const py::handle& x, const py::handle& filter, const py::object& bias, const std::string& accumulator,
         std::pair<std::size_t, std::size_t> strides, const std::string& padding,
         std::pair<std::size_t, std::size_t> dilation, std::size_t groups, const std::string& method,
         const py::object& mult, const py::object& shift, const py::object& scale, std::int32_t act_min,
         std::int32_t act_max) {
        auto xi = array_in<std::int16_t>(x, "conv2d_int16", "x");
        auto fi = array_in<std::int8_t>(filter, "conv2d_int16", "filter");
        const qdrift::ConvGeometry g =
            qdrift::make_conv_geometry(xi.shape, fi.shape, strides.first, strides.second, dilation.first,
                                       dilation.second, qdrift::parse_padding(padding), groups, "conv2d_int16");
        const Bias b = bias_of(bias, accumulator, g.o, "conv2d_int16");
        const qdrift::OutputStage stage = stage_of(method, mult, shift, scale, act_min, act_max);
        auto y = array_out<std::int16_t>({g.n, g.oh, g.ow, g.o});
        std::int16_t* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          if (b.wide) qdrift::conv2d_int16(g, xi.data, fi.data, b.b64, stage, yp);
          else qdrift::conv2d_int16(g, xi.data, fi.data, b.b32, stage, yp);
        }
        return y;
      },
      "x"_a, "filter"_a, "bias"_a, py::kw_only(), "accumulator"_a = "int64",
      "strides"_a = std::pair<std::size_t, std::size_t>{1, 1}, "padding"_a = "valid",
      "dilation"_a = std::pair<std::size_t, std::size_t>{1, 1}, "groups"_a = 1, "method"_a, "m"_a = py::none(),
      "shift"_a = py::none(), "scale"_a = py::none(), "act_min"_a = -32768, "act_max"_a = 32767,
      "int16x8 CONV_2D on NHWC input; filter (KH, KW, C/groups, O); depthwise is groups == C.");

  m.def(
      "add_int16",
      [](const py::handle& a, const py::handle& b, float a_scale, float b_scale, float out_scale,
         std::int32_t act_min, std::int32_t act_max) {
        auto ai = array_in<std::int16_t>(a, "add_int16", "a");
        auto bi = array_in<std::int16_t>(b, "add_int16", "b");
        QDRIFT_CHECK(ai.shape == bi.shape, qdrift::ShapeError, "add_int16: a ", qdrift::shape_to_string(ai.shape),
                     " and b ", qdrift::shape_to_string(bi.shape), " differ (broadcasting is not supported)");
        auto y = array_out<std::int16_t>(ai.shape);
        qdrift::add_int16(ai.data, bi.data, ai.size(), a_scale, b_scale, out_scale, act_min, act_max,
                          y.mutable_data());
        return y;
      },
      "a"_a, "b"_a, "a_scale"_a, "b_scale"_a, "out_scale"_a, py::kw_only(), "act_min"_a = -32768,
      "act_max"_a = 32767, "int16 ADD (zero points 0, general scales) as LiteRT's kernels compute it.");

  m.def(
      "mul_int16",
      [](const py::handle& a, const py::handle& b, float a_scale, float b_scale, float out_scale,
         std::int32_t act_min, std::int32_t act_max) {
        auto ai = array_in<std::int16_t>(a, "mul_int16", "a");
        auto bi = array_in<std::int16_t>(b, "mul_int16", "b");
        QDRIFT_CHECK(ai.shape == bi.shape, qdrift::ShapeError, "mul_int16: a ", qdrift::shape_to_string(ai.shape),
                     " and b ", qdrift::shape_to_string(bi.shape), " differ (broadcast b first)");
        auto y = array_out<std::int16_t>(ai.shape);
        qdrift::mul_int16(ai.data, bi.data, ai.size(), a_scale, b_scale, out_scale, act_min, act_max,
                          y.mutable_data());
        return y;
      },
      "a"_a, "b"_a, "a_scale"_a, "b_scale"_a, "out_scale"_a, py::kw_only(), "act_min"_a = -32768,
      "act_max"_a = 32767, "int16 MUL (zero points 0) as LiteRT's reference and builtin kernels compute it.");

  m.def(
      "int16_table_input",
      [](const std::string& function, float in_scale) {
        const qdrift::Int16TableInput p = qdrift::int16_table_input(table_function(function), in_scale);
        return py::make_tuple(p.multiplier, p.left_shift, p.power_of_two);
      },
      "function"_a, "in_scale"_a,
      "int16 TANH/LOGISTIC Prepare: (input_multiplier, input_left_shift, power_of_two) for the input scale.");

  m.def(
      "table_int16",
      [](const std::string& function, const py::handle& x, float in_scale) {
        const qdrift::LutFunction f = table_function(function);
        const qdrift::Int16TableInput p = qdrift::int16_table_input(f, in_scale);
        auto xi = array_in<std::int16_t>(x, "table_int16", "x");
        auto y = array_out<std::int16_t>(xi.shape);
        if (f == qdrift::LutFunction::kTanh) qdrift::tanh_int16(p, xi.data, xi.size(), y.mutable_data());
        else qdrift::logistic_int16(p, xi.data, xi.size(), y.mutable_data());
        return y;
      },
      "function"_a, "x"_a, "in_scale"_a,
      "int16 TANH / LOGISTIC (zero points 0, output scale 2^-15): the interpolated sigmoid table of LiteRT.");

  m.def(
      "fixed_point_int16",
      [](const std::string& function, const py::handle& x, int input_left_shift) {
        const qdrift::LutFunction f = table_function(function);
        auto xi = array_in<std::int16_t>(x, "fixed_point_int16", "x");
        QDRIFT_CHECK(f == qdrift::LutFunction::kTanh || input_left_shift == 0, qdrift::ConfigError,
                     "fixed_point_int16: logistic takes input_left_shift 0, got ", input_left_shift);
        auto y = array_out<std::int16_t>(xi.shape);
        if (f == qdrift::LutFunction::kTanh)
          qdrift::tanh_int16_fixed_point(input_left_shift, xi.data, xi.size(), y.mutable_data());
        else qdrift::logistic_int16_fixed_point(xi.data, xi.size(), y.mutable_data());
        return y;
      },
      "function"_a, "x"_a, "input_left_shift"_a = 0,
      "int16 TANH / LOGISTIC of the builtin kernels for power-of-two input scales: gemmlowp fixed point, Q3.12 in.");

  m.def("sigmoid_table_uint16", [] {
    auto out = array_out<std::uint16_t>({256});
    std::copy(qdrift::sigmoid_table_uint16(), qdrift::sigmoid_table_uint16() + 256, out.mutable_data());
    return out;
  }, "LiteRT's 256-entry sigmoid(i / 24) table in 0.16 fixed point.");

  m.def(
      "quantize_int16",
      [](const py::handle& x, float scale, std::int32_t zero_point, const std::string& rule) {
        QDRIFT_CHECK(rule == "reference" || rule == "neon_blocks", qdrift::ConfigError,
                     "quantize_int16: rule must be reference or neon_blocks, got '", rule, "'");
        auto xi = array_in<float>(x, "quantize_int16", "x");
        auto y = array_out<std::int16_t>(xi.shape);
        qdrift::quantize_int16(rule == "reference" ? qdrift::QuantizeRule::kReference : qdrift::QuantizeRule::kNeonBlocks,
                               xi.data, xi.size(), scale, zero_point, y.mutable_data());
        return y;
      },
      "x"_a, "scale"_a, "zero_point"_a = 0, py::kw_only(), "rule"_a = "reference",
      "float32 -> int16 QUANTIZE: 'reference' (BUILTIN_REF) or 'neon_blocks' (the builtin optimized kernel).");

  m.def(
      "dequantize_int16",
      [](const py::handle& q, float scale, std::int32_t zero_point) {
        auto qi = array_in<std::int16_t>(q, "dequantize_int16", "q");
        auto y = array_out<float>(qi.shape);
        qdrift::dequantize_int16(qi.data, qi.size(), scale, zero_point, y.mutable_data());
        return y;
      },
      "q"_a, "scale"_a, "zero_point"_a = 0, "int16 -> float32 DEQUANTIZE: f32(scale * (q - zero_point)).");
}
