// SPDX-License-Identifier: Apache-2.0
// Bindings: hybrid (int8 weights, float activations) and float32 FC / CONV_2D kernels of each LiteRT
// path, and the per-row input quantizers they use.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <utility>

#include "numpy_interop.h"
#include "qdrift/ops/hybrid.h"

namespace py = pybind11;
using namespace pybind11::literals;
using qdrift::py_interop::array_in;
using qdrift::py_interop::array_out;
using Pair = std::pair<std::size_t, std::size_t>;

namespace {

const float* optional_floats(const py::object& obj, py::array& keep, std::size_t size, const char* fn,
                             const char* arg) {
  if (obj.is_none()) return nullptr;
  auto a = array_in<float>(obj, fn, arg);
  QDRIFT_CHECK(a.size() == size, qdrift::ShapeError, fn, ": ", arg, " has ", a.size(), " values for ", size,
               " output channels");
  keep = a.array;
  return a.data;
}

qdrift::ConvGeometry geometry(const qdrift::Shape& x, const qdrift::Shape& f, Pair strides, const std::string& padding,
                              Pair dilation, std::size_t groups, const char* fn) {
  return qdrift::make_conv_geometry(x, f, strides.first, strides.second, dilation.first, dilation.second,
                                    qdrift::parse_padding(padding), groups, fn);
}

}  // namespace

void bind_hybrid(py::module_& m) {
  m.def(
      "quantize_rows",
      [](const py::handle& x, const std::string& rule) {
        auto xi = array_in<float>(x, "quantize_rows", "x");
        QDRIFT_CHECK(xi.shape.size() == 2, qdrift::ShapeError, "quantize_rows: x must be (rows, n), got ",
                     qdrift::shape_to_string(xi.shape));
        QDRIFT_CHECK(rule == "tflite_symmetric" || rule == "tflite_asymmetric" || rule == "xnnpack",
                     qdrift::ConfigError, "quantize_rows: rule must be tflite_symmetric, tflite_asymmetric or "
                     "xnnpack, got '", rule, "'");
        const std::size_t rows = xi.shape[0], n = xi.shape[1];
        auto q = array_out<std::int8_t>(xi.shape);
        auto scale = array_out<float>({rows});
        auto zp = array_out<std::int32_t>({rows});
        for (std::size_t r = 0; r < rows; ++r) {
          std::int8_t* qr = q.mutable_data() + r * n;
          if (rule == "tflite_symmetric") {
            qdrift::quantize_row_symmetric_tflite(xi.data + r * n, n, qr, scale.mutable_data() + r);
            zp.mutable_data()[r] = 0;
          } else if (rule == "tflite_asymmetric") {
            qdrift::quantize_row_asymmetric_tflite(xi.data + r * n, n, qr, scale.mutable_data() + r,
                                                   zp.mutable_data() + r);
          } else {
            qdrift::quantize_row_xnnpack(xi.data + r * n, n, qr, scale.mutable_data() + r, zp.mutable_data() + r);
          }
        }
        return py::make_tuple(q, scale, zp);
      },
      "x"_a, "rule"_a,
      "Quantize each row of x (rows, n) as a hybrid kernel does: returns (q int8, scale, zero_point) per row.");

  m.def(
      "fully_connected_hybrid",
      [](const py::handle& x, const py::handle& filter, const py::handle& filter_scale, const py::object& bias,
         const std::string& kernels, bool asymmetric_inputs, float lo, float hi, const std::string& impl) {
        const char* fn = "fully_connected_hybrid";
        auto xi = array_in<float>(x, fn, "x");
        auto fi = array_in<std::int8_t>(filter, fn, "filter");
        auto si = array_in<float>(filter_scale, fn, "filter_scale");
        QDRIFT_CHECK(fi.shape.size() == 2 && xi.shape.size() == 2 && xi.shape[1] == fi.shape[1], qdrift::ShapeError,
                     fn, ": filter ", qdrift::shape_to_string(fi.shape), " does not fit input ",
                     qdrift::shape_to_string(xi.shape));
        const std::size_t out = fi.shape[0];
        py::array keep;
        const float* b = optional_floats(bias, keep, out, fn, "bias");
        const qdrift::KernelPath path = qdrift::parse_kernel_path(kernels);
        const qdrift::Path p = qdrift::parse_path(impl);
        auto y = array_out<float>({xi.shape[0], out});
        float* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          qdrift::fully_connected_hybrid(path, xi.data, xi.shape[0], xi.shape[1], fi.data, out, si.data, si.size(), b,
                                         asymmetric_inputs, lo, hi, yp, p);
        }
        return y;
      },
      "x"_a, "filter"_a, "filter_scale"_a, "bias"_a, py::kw_only(), "kernels"_a, "asymmetric_inputs"_a = true,
      "lo"_a = -INFINITY, "hi"_a = INFINITY, "path"_a = "auto",
      "Hybrid FULLY_CONNECTED: x (batch, in) float32, filter (out, in) int8 with per-channel or one scale.\n"
      "kernels: the LiteRT path; path: qdrift's kernels, 'reference' | 'fast' | 'auto' (same bits).");

  m.def(
      "conv2d_hybrid",
      [](const py::handle& x, const py::handle& filter, const py::handle& filter_scale, const py::object& bias,
         const std::string& kernels, Pair strides, const std::string& padding, Pair dilation, std::size_t groups,
         bool depthwise, float lo, float hi, const std::string& impl) {
        const char* fn = "conv2d_hybrid";
        auto xi = array_in<float>(x, fn, "x");
        auto fi = array_in<std::int8_t>(filter, fn, "filter");
        auto si = array_in<float>(filter_scale, fn, "filter_scale");
        const qdrift::ConvGeometry g = geometry(xi.shape, fi.shape, strides, padding, dilation, groups, fn);
        py::array keep;
        const float* b = optional_floats(bias, keep, g.o, fn, "bias");
        const qdrift::KernelPath path = qdrift::parse_kernel_path(kernels);
        const qdrift::Path p = qdrift::parse_path(impl);
        auto y = array_out<float>({g.n, g.oh, g.ow, g.o});
        float* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          qdrift::conv2d_hybrid(path, g, xi.data, fi.data, si.data, si.size(), b, depthwise, lo, hi, yp, p);
        }
        return y;
      },
      "x"_a, "filter"_a, "filter_scale"_a, "bias"_a, py::kw_only(), "kernels"_a, "strides"_a = Pair{1, 1},
      "padding"_a = "valid", "dilation"_a = Pair{1, 1}, "groups"_a = 1, "depthwise"_a = false, "lo"_a = -INFINITY,
      "hi"_a = INFINITY, "path"_a = "auto",
      "Hybrid CONV_2D / DEPTHWISE_CONV_2D on NHWC float32; filter int8 in (KH, KW, C/groups, O).\n"
      "kernels: the LiteRT path; path: qdrift's kernels, 'reference' | 'fast' | 'auto' (same bits).");

  m.def(
      "fully_connected_f32",
      [](const py::handle& x, const py::handle& filter, const py::object& bias, const std::string& kernels, float lo,
         float hi, const std::string& impl) {
        const char* fn = "fully_connected_f32";
        auto xi = array_in<float>(x, fn, "x");
        auto fi = array_in<float>(filter, fn, "filter");
        QDRIFT_CHECK(fi.shape.size() == 2 && xi.shape.size() == 2 && xi.shape[1] == fi.shape[1], qdrift::ShapeError,
                     fn, ": filter ", qdrift::shape_to_string(fi.shape), " does not fit input ",
                     qdrift::shape_to_string(xi.shape));
        py::array keep;
        const float* b = optional_floats(bias, keep, fi.shape[0], fn, "bias");
        const qdrift::KernelPath path = qdrift::parse_kernel_path(kernels);
        const qdrift::Path p = qdrift::parse_path(impl);
        auto y = array_out<float>({xi.shape[0], fi.shape[0]});
        float* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          qdrift::fully_connected_f32(path, xi.data, xi.shape[0], xi.shape[1], fi.data, fi.shape[0], b, lo, hi, yp, p);
        }
        return y;
      },
      "x"_a, "filter"_a, "bias"_a, py::kw_only(), "kernels"_a, "lo"_a = -INFINITY, "hi"_a = INFINITY, "path"_a = "auto",
      "float32 FULLY_CONNECTED in the summation order of a LiteRT path: filter (out, in).\n"
      "path: qdrift's kernels, 'reference' | 'fast' | 'auto' (same bits).");

  m.def(
      "conv2d_f32",
      [](const py::handle& x, const py::handle& filter, const py::object& bias, const std::string& kernels,
         Pair strides, const std::string& padding, Pair dilation, std::size_t groups, bool depthwise, float lo,
         float hi, const std::string& impl) {
        const char* fn = "conv2d_f32";
        auto xi = array_in<float>(x, fn, "x");
        auto fi = array_in<float>(filter, fn, "filter");
        const qdrift::ConvGeometry g = geometry(xi.shape, fi.shape, strides, padding, dilation, groups, fn);
        py::array keep;
        const float* b = optional_floats(bias, keep, g.o, fn, "bias");
        const qdrift::KernelPath path = qdrift::parse_kernel_path(kernels);
        const qdrift::Path p = qdrift::parse_path(impl);
        auto y = array_out<float>({g.n, g.oh, g.ow, g.o});
        float* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          qdrift::conv2d_f32(path, g, xi.data, fi.data, b, depthwise, lo, hi, yp, p);
        }
        return y;
      },
      "x"_a, "filter"_a, "bias"_a, py::kw_only(), "kernels"_a, "strides"_a = Pair{1, 1}, "padding"_a = "valid",
      "dilation"_a = Pair{1, 1}, "groups"_a = 1, "depthwise"_a = false, "lo"_a = -INFINITY, "hi"_a = INFINITY,
      "path"_a = "auto",
      "float32 CONV_2D / DEPTHWISE_CONV_2D in the summation order of a LiteRT path: filter (KH, KW, C/groups, O).\n"
      "path: qdrift's kernels, 'reference' | 'fast' | 'auto' (same bits).");

  m.def(
      "activation_f32",
      [](const py::handle& x, const std::string& function) {
        auto xi = array_in<float>(x, "activation_f32", "x");
        using Fn = void (*)(const float*, std::size_t, float*);
        const std::pair<const char*, Fn> table[] = {{"tanh", qdrift::tanh_f32},
                                                    {"tanh_eigen", qdrift::tanh_eigen_f32},
                                                    {"tanh_xnnpack", qdrift::tanh_xnnpack_f32},
                                                    {"logistic", qdrift::logistic_f32},
                                                    {"logistic_eigen", qdrift::logistic_eigen_f32},
                                                    {"logistic_xnnpack", qdrift::logistic_xnnpack_f32},
                                                    {"logistic_eigen_tf", qdrift::logistic_eigen_tf_f32}};
        Fn f = nullptr;
        for (const auto& [name, fn] : table)
          if (function == name) f = fn;
        QDRIFT_CHECK(f != nullptr, qdrift::ConfigError, "activation_f32: function must be tanh, tanh_eigen, "
                     "tanh_xnnpack, logistic, logistic_eigen, logistic_xnnpack or logistic_eigen_tf, got '", function, "'");
        auto y = array_out<float>(xi.shape);
        f(xi.data, xi.size(), y.mutable_data());
        return y;
      },
      "x"_a, "function"_a, "float32 TANH / LOGISTIC as TFLite's reference kernels compute them; tanh_eigen / tanh_xnnpack: the builtin / XNNPACK TANH.");
}
