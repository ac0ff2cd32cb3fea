// SPDX-License-Identifier: Apache-2.0
// Bindings: float layers (dense, conv2d, depthwise_conv2d, simple_rnn, activations, batch norm).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "numpy_interop.h"
#include "qdrift/ops/ops.h"

namespace py = pybind11;
using namespace pybind11::literals;
using qdrift::py_interop::array_in;
using qdrift::py_interop::array_out;

namespace {

using Pair = std::pair<std::size_t, std::size_t>;

struct OptionalArray {
  const float* data = nullptr;
  std::size_t size = 0;
  py::array keep;
};

OptionalArray optional_in(const py::object& obj, const std::string& fn, const char* arg) {
  OptionalArray o;
  if (obj.is_none()) return o;
  auto in = array_in<float>(obj, fn.c_str(), arg);
  o.data = in.data;
  o.size = in.size();
  o.keep = in.array;
  return o;
}

// gamma, beta, moving_mean, moving_variance: one value per channel each.
std::vector<qdrift::py_interop::ArrayIn<float>> batch_norm_params(const py::handle& gamma, const py::handle& beta,
                                                                 const py::handle& mean, const py::handle& var,
                                                                 std::size_t channels, const char* fn) {
  const char* names[] = {"gamma", "beta", "moving_mean", "moving_variance"};
  const py::handle params[] = {gamma, beta, mean, var};
  std::vector<qdrift::py_interop::ArrayIn<float>> p;
  for (int i = 0; i < 4; ++i) {
    p.push_back(array_in<float>(params[i], fn, names[i]));
    QDRIFT_CHECK(p.back().size() == channels, qdrift::ShapeError, fn, ": ", names[i], " has ", p.back().size(),
                 " values but there are ", channels, " channels");
  }
  return p;
}

std::string label(const char* op, const std::string& name) { return name.empty() ? op : std::string(op) + " '" + name + "'"; }

py::array_t<float> conv(const py::handle& x, const py::handle& kernel, const qdrift::Shape& kernel_shape,
                        const py::object& bias, Pair strides, const std::string& padding, Pair dilation,
                        std::size_t groups, const std::string& activation, const std::string& path,
                        const std::string& layer) {
  auto xi = array_in<float>(x, layer.c_str(), "x");
  auto ki = array_in<float>(kernel, layer.c_str(), "kernel");
  const OptionalArray b = optional_in(bias, layer, "bias");
  const qdrift::ConvGeometry g =
      qdrift::make_conv_geometry(xi.shape, kernel_shape, strides.first, strides.second, dilation.first,
                                 dilation.second, qdrift::parse_padding(padding), groups, layer);
  QDRIFT_CHECK(!b.data || b.size == g.o, qdrift::ShapeError, layer, ": the bias has ", b.size, " values but the layer has ",
               g.o, " filters");
  const qdrift::Activation act = qdrift::parse_activation(activation);
  const qdrift::Path p = qdrift::parse_path(path);
  auto y = array_out<float>({g.n, g.oh, g.ow, g.o});
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release nogil;
    qdrift::conv2d(g, xi.data, ki.data, b.data, act, yp, p);
  }
  return y;
}

}  // namespace

void bind_ops(py::module_& m) {
  m.def(
      "dense",
      [](const py::handle& x, const py::handle& kernel, const py::object& bias, const std::string& activation,
         const std::string& path, const std::string& name) {
        const std::string layer = label("dense", name);
        auto xi = array_in<float>(x, layer.c_str(), "x");
        auto ki = array_in<float>(kernel, layer.c_str(), "kernel");
        const OptionalArray b = optional_in(bias, layer, "bias");
        const qdrift::DenseShape s = qdrift::make_dense_shape(xi.shape, ki.shape, b.data, b.size, layer);
        const qdrift::Activation act = qdrift::parse_activation(activation);
        const qdrift::Path p = qdrift::parse_path(path);
        qdrift::Shape out_shape = xi.shape;
        out_shape.back() = s.out;
        auto y = array_out<float>(out_shape);
        float* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          qdrift::dense(s, xi.data, ki.data, b.data, act, yp, p);
        }
        return y;
      },
      "x"_a, "kernel"_a, "bias"_a = py::none(), py::kw_only(), "activation"_a = "linear", "path"_a = "auto",
      "name"_a = "", "Keras Dense: act(x @ kernel + bias); kernel (in, units); leading axes of x are batch axes.");

  m.def(
      "conv2d",
      [](const py::handle& x, const py::handle& kernel, const py::object& bias, Pair strides, const std::string& padding,
         Pair dilation, std::size_t groups, const std::string& activation, const std::string& path,
         const std::string& name) {
        auto ki = array_in<float>(kernel, "conv2d", "kernel");
        return conv(x, kernel, ki.shape, bias, strides, padding, dilation, groups, activation, path,
                    label("conv2d", name));
      },
      "x"_a, "kernel"_a, "bias"_a = py::none(), py::kw_only(), "strides"_a = Pair{1, 1}, "padding"_a = "valid",
      "dilation"_a = Pair{1, 1}, "groups"_a = 1, "activation"_a = "linear", "path"_a = "auto", "name"_a = "",
      "Keras Conv2D on NHWC input; kernel (KH, KW, C/groups, filters); TensorFlow's SAME/VALID rule.");

  m.def(
      "depthwise_conv2d",
      [](const py::handle& x, const py::handle& kernel, const py::object& bias, Pair strides, const std::string& padding,
         Pair dilation, const std::string& activation, const std::string& path, const std::string& name) {
        const std::string layer = label("depthwise_conv2d", name);
        auto ki = array_in<float>(kernel, layer.c_str(), "kernel");
        QDRIFT_CHECK(ki.shape.size() == 4, qdrift::ShapeError, layer, ": the kernel must be (KH, KW, C, multiplier), got ",
                     qdrift::shape_to_string(ki.shape));
        // (KH, KW, C, M) is, in memory, the grouped kernel (KH, KW, 1, C*M) with C groups:
        // output channel c*M + m reads input channel c, as Keras orders them.
        const qdrift::Shape grouped{ki.shape[0], ki.shape[1], 1, ki.shape[2] * ki.shape[3]};
        return conv(x, kernel, grouped, bias, strides, padding, dilation, ki.shape[2], activation, path, layer);
      },
      "x"_a, "kernel"_a, "bias"_a = py::none(), py::kw_only(), "strides"_a = Pair{1, 1}, "padding"_a = "valid",
      "dilation"_a = Pair{1, 1}, "activation"_a = "linear", "path"_a = "auto", "name"_a = "",
      "Keras DepthwiseConv2D; kernel (KH, KW, C, depth_multiplier).");

  m.def(
      "simple_rnn",
      [](const py::handle& x, const py::handle& kernel, const py::handle& recurrent_kernel, const py::object& bias,
         const py::object& initial_state, const std::string& activation, bool go_backwards, const std::string& path,
         const std::string& name) {
        const std::string layer = label("simple_rnn", name);
        auto xi = array_in<float>(x, layer.c_str(), "x");
        auto ki = array_in<float>(kernel, layer.c_str(), "kernel");
        auto ri = array_in<float>(recurrent_kernel, layer.c_str(), "recurrent_kernel");
        const OptionalArray b = optional_in(bias, layer, "bias");
        const OptionalArray h0 = optional_in(initial_state, layer, "initial_state");
        const qdrift::RnnShape s = qdrift::make_rnn_shape(xi.shape, ki.shape, ri.shape, b.size, layer);
        QDRIFT_CHECK(!h0.data || h0.size == s.batch * s.units, qdrift::ShapeError, layer, ": initial_state has ",
                     h0.size, " values, expected (", s.batch, ", ", s.units, ")");
        const qdrift::Activation act = qdrift::parse_activation(activation);
        const qdrift::Path p = qdrift::parse_path(path);
        auto states = array_out<float>({s.batch, s.steps, s.units});
        float* sp = states.mutable_data();
        {
          py::gil_scoped_release nogil;
          qdrift::simple_rnn(s, xi.data, ki.data, ri.data, b.data, h0.data, act, go_backwards, sp, p);
        }
        return states;
      },
      "x"_a, "kernel"_a, "recurrent_kernel"_a, "bias"_a = py::none(), py::kw_only(), "initial_state"_a = py::none(),
      "activation"_a = "tanh", "go_backwards"_a = false, "path"_a = "auto", "name"_a = "",
      "Keras SimpleRNN -> every step's hidden state (batch, time, units), in processing order.");

  m.def(
      "activation",
      [](const py::handle& x, const std::string& name) {
        auto xi = array_in<float>(x, "activation", "x");
        const qdrift::Activation act = qdrift::parse_activation(name);
        auto y = array_out<float>(xi.shape);
        float* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          std::copy(xi.data, xi.data + xi.size(), yp);
          qdrift::apply_activation(act, yp, xi.size());
        }
        return y;
      },
      "x"_a, "name"_a, "linear | relu | relu6 | tanh | sigmoid, in float32.");

  m.def(
      "batch_norm",
      [](const py::handle& x, const py::handle& gamma, const py::handle& beta, const py::handle& mean,
         const py::handle& var, float epsilon) {
        auto xi = array_in<float>(x, "batch_norm", "x");
        QDRIFT_CHECK(!xi.shape.empty(), qdrift::ShapeError, "batch_norm: x must have a channel axis");
        const std::size_t c = xi.shape.back();
        const auto p = batch_norm_params(gamma, beta, mean, var, c, "batch_norm");
        auto y = array_out<float>(xi.shape);
        qdrift::batch_norm(xi.data, xi.size(), c, p[0].data, p[1].data, p[2].data, p[3].data, epsilon, y.mutable_data());
        return y;
      },
      "x"_a, "gamma"_a, "beta"_a, "moving_mean"_a, "moving_variance"_a, "epsilon"_a = 1e-3f,
      "Inference batch norm over the last axis: x * inv + (beta - mean * inv), inv = gamma / sqrt(var + eps).");

  m.def(
      "fold_batch_norm",
      [](const py::handle& kernel, const py::object& bias, const py::handle& gamma, const py::handle& beta,
         const py::handle& mean, const py::handle& var, float epsilon) {
        auto ki = array_in<float>(kernel, "fold_batch_norm", "kernel");
        QDRIFT_CHECK(!ki.shape.empty(), qdrift::ShapeError, "fold_batch_norm: the kernel needs an output-channel axis");
        const std::size_t c = ki.shape.back();
        const OptionalArray b = optional_in(bias, "fold_batch_norm", "bias");
        QDRIFT_CHECK(!b.data || b.size == c, qdrift::ShapeError, "fold_batch_norm: bias has ", b.size, " values, expected ", c);
        const auto p = batch_norm_params(gamma, beta, mean, var, c, "fold_batch_norm");
        std::vector<float> fk, fb;
        qdrift::fold_batch_norm(ki.data, ki.size(), b.data, c, p[0].data, p[1].data, p[2].data, p[3].data, epsilon, &fk, &fb);
        auto k_out = array_out<float>(ki.shape);
        std::copy(fk.begin(), fk.end(), k_out.mutable_data());
        auto b_out = array_out<float>({c});
        std::copy(fb.begin(), fb.end(), b_out.mutable_data());
        return py::make_tuple(k_out, b_out);
      },
      "kernel"_a, "bias"_a, "gamma"_a, "beta"_a, "moving_mean"_a, "moving_variance"_a, "epsilon"_a = 1e-3f,
      "Fold inference batch norm into the preceding kernel/bias in float32, as the TFLite converter does.");
}
