// SPDX-License-Identifier: Apache-2.0
// Bindings: backward passes of dense, conv2d, depthwise_conv2d, simple_rnn and the activations.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <utility>

#include "numpy_interop.h"
#include "qdrift/ops/backward.h"

namespace py = pybind11;
using namespace pybind11::literals;
using qdrift::py_interop::array_in;
using qdrift::py_interop::array_out;
using qdrift::py_interop::ArrayIn;

namespace {

using Pair = std::pair<std::size_t, std::size_t>;

std::string label(const char* op, const std::string& name) {
  return name.empty() ? op : std::string(op) + " '" + name + "'";
}

void check_shape(const ArrayIn<float>& a, const qdrift::Shape& expected, const std::string& fn, const char* arg) {
  QDRIFT_CHECK(a.shape == expected, qdrift::ShapeError, fn, ": ", arg, " has shape ", qdrift::shape_to_string(a.shape),
               ", expected ", qdrift::shape_to_string(expected));
}

const float* optional_data(const py::object& obj, const qdrift::Shape& expected, const std::string& fn, const char* arg,
                           py::list* keep) {
  if (obj.is_none()) return nullptr;
  auto a = array_in<float>(obj, fn.c_str(), arg);
  check_shape(a, expected, fn, arg);
  keep->append(a.array);
  return a.data;
}

py::tuple conv_backward(const py::handle& x, const py::handle& kernel, const qdrift::Shape& kernel_shape,
                        const py::handle& dy, Pair strides, const std::string& padding, Pair dilation,
                        std::size_t groups, bool use_bias, const std::string& path, const std::string& layer) {
  auto xi = array_in<float>(x, layer.c_str(), "x");
  auto ki = array_in<float>(kernel, layer.c_str(), "kernel");
  auto di = array_in<float>(dy, layer.c_str(), "dy");
  const qdrift::ConvGeometry g =
      qdrift::make_conv_geometry(xi.shape, kernel_shape, strides.first, strides.second, dilation.first,
                                 dilation.second, qdrift::parse_padding(padding), groups, layer);
  check_shape(di, {g.n, g.oh, g.ow, g.o}, layer, "dy");
  const qdrift::Path p = qdrift::parse_path(path);
  auto dx = array_out<float>(xi.shape);
  auto dk = array_out<float>(ki.shape);
  auto db = array_out<float>({g.o});
  float *dxp = dx.mutable_data(), *dkp = dk.mutable_data(), *dbp = use_bias ? db.mutable_data() : nullptr;
  {
    py::gil_scoped_release nogil;
    qdrift::conv2d_backward(g, xi.data, ki.data, di.data, dxp, dkp, dbp, p);
  }
  return py::make_tuple(dx, dk, use_bias ? py::object(db) : py::object(py::none()));
}

}  // namespace

void bind_backward(py::module_& m) {
  m.def(
      "activation_backward",
      [](const py::handle& y, const py::handle& dy, const std::string& name) {
        auto yi = array_in<float>(y, "activation_backward", "y");
        auto di = array_in<float>(dy, "activation_backward", "dy");
        check_shape(di, yi.shape, "activation_backward", "dy");
        const qdrift::Activation act = qdrift::parse_activation(name);
        auto dx = array_out<float>(yi.shape);
        float* dxp = dx.mutable_data();
        {
          py::gil_scoped_release nogil;
          qdrift::activation_backward(act, yi.data, di.data, dxp, yi.size());
        }
        return dx;
      },
      "y"_a, "dy"_a, "name"_a,
      "Gradient through an activation from its OUTPUT y: dy * f'(.) (torch's rule at the relu/relu6 kinks: 0).");

  m.def(
      "dense_backward",
      [](const py::handle& x, const py::handle& kernel, const py::handle& dy, bool use_bias, const std::string& path,
         const std::string& name) {
        const std::string layer = label("dense_backward", name);
        auto xi = array_in<float>(x, layer.c_str(), "x");
        auto ki = array_in<float>(kernel, layer.c_str(), "kernel");
        auto di = array_in<float>(dy, layer.c_str(), "dy");
        const qdrift::DenseShape s = qdrift::make_dense_shape(xi.shape, ki.shape, nullptr, 0, layer);
        qdrift::Shape y_shape = xi.shape;
        y_shape.back() = s.out;
        check_shape(di, y_shape, layer, "dy");
        const qdrift::Path p = qdrift::parse_path(path);
        auto dx = array_out<float>(xi.shape);
        auto dk = array_out<float>(ki.shape);
        auto db = array_out<float>({s.out});
        float *dxp = dx.mutable_data(), *dkp = dk.mutable_data(), *dbp = use_bias ? db.mutable_data() : nullptr;
        {
          py::gil_scoped_release nogil;
          qdrift::dense_backward(s, xi.data, ki.data, di.data, dxp, dkp, dbp, p);
        }
        return py::make_tuple(dx, dk, use_bias ? py::object(db) : py::object(py::none()));
      },
      "x"_a, "kernel"_a, "dy"_a, py::kw_only(), "use_bias"_a = true, "path"_a = "auto", "name"_a = "",
      "Backward of x @ kernel + bias given dy (the gradient before any activation) -> (dx, dkernel, dbias|None).");

  m.def(
      "conv2d_backward",
      [](const py::handle& x, const py::handle& kernel, const py::handle& dy, Pair strides, const std::string& padding,
         Pair dilation, std::size_t groups, bool use_bias, const std::string& path, const std::string& name) {
        auto ki = array_in<float>(kernel, "conv2d_backward", "kernel");
        return conv_backward(x, kernel, ki.shape, dy, strides, padding, dilation, groups, use_bias, path,
                             label("conv2d_backward", name));
      },
      "x"_a, "kernel"_a, "dy"_a, py::kw_only(), "strides"_a = Pair{1, 1}, "padding"_a = "valid",
      "dilation"_a = Pair{1, 1}, "groups"_a = 1, "use_bias"_a = true, "path"_a = "auto", "name"_a = "",
      "Backward of conv2d (same geometry keywords) given dy -> (dx, dkernel, dbias|None).");

  m.def(
      "depthwise_conv2d_backward",
      [](const py::handle& x, const py::handle& kernel, const py::handle& dy, Pair strides, const std::string& padding,
         Pair dilation, bool use_bias, const std::string& path, const std::string& name) {
        const std::string layer = label("depthwise_conv2d_backward", name);
        auto ki = array_in<float>(kernel, layer.c_str(), "kernel");
        QDRIFT_CHECK(ki.shape.size() == 4, qdrift::ShapeError, layer, ": the kernel must be (KH, KW, C, multiplier), got ",
                     qdrift::shape_to_string(ki.shape));
        // The forward's view: (KH, KW, C, M) is the grouped kernel (KH, KW, 1, C*M), C groups.
        const qdrift::Shape grouped{ki.shape[0], ki.shape[1], 1, ki.shape[2] * ki.shape[3]};
        return conv_backward(x, kernel, grouped, dy, strides, padding, dilation, ki.shape[2], use_bias, path, layer);
      },
      "x"_a, "kernel"_a, "dy"_a, py::kw_only(), "strides"_a = Pair{1, 1}, "padding"_a = "valid",
      "dilation"_a = Pair{1, 1}, "use_bias"_a = true, "path"_a = "auto", "name"_a = "",
      "Backward of depthwise_conv2d given dy -> (dx, dkernel (KH, KW, C, multiplier), dbias|None).");

  m.def(
      "simple_rnn_backward",
      [](const py::handle& x, const py::handle& kernel, const py::handle& recurrent_kernel, const py::handle& states,
         const py::handle& dstates, const py::object& initial_state, const py::object& activated,
         const py::object& state_mask, const std::string& activation, bool go_backwards, bool use_bias,
         const std::string& path, const std::string& name) {
        const std::string layer = label("simple_rnn_backward", name);
        auto xi = array_in<float>(x, layer.c_str(), "x");
        auto ki = array_in<float>(kernel, layer.c_str(), "kernel");
        auto ri = array_in<float>(recurrent_kernel, layer.c_str(), "recurrent_kernel");
        const qdrift::RnnShape s = qdrift::make_rnn_shape(xi.shape, ki.shape, ri.shape, 0, layer);
        const qdrift::Shape seq{s.batch, s.steps, s.units};
        auto si = array_in<float>(states, layer.c_str(), "states");
        check_shape(si, seq, layer, "states");
        auto di = array_in<float>(dstates, layer.c_str(), "dstates");
        check_shape(di, seq, layer, "dstates");
        py::list keep;
        const float* h0 = optional_data(initial_state, {s.batch, s.units}, layer, "initial_state", &keep);
        const float* act_out = optional_data(activated, seq, layer, "activated", &keep);
        const float* mask = optional_data(state_mask, seq, layer, "state_mask", &keep);
        const qdrift::Activation act = qdrift::parse_activation(activation);
        const qdrift::Path p = qdrift::parse_path(path);
        auto dx = array_out<float>(xi.shape);
        auto dk = array_out<float>(ki.shape);
        auto dr = array_out<float>(ri.shape);
        auto db = array_out<float>({s.units});
        auto dh0 = array_out<float>({s.batch, s.units});
        float *dxp = dx.mutable_data(), *dkp = dk.mutable_data(), *drp = dr.mutable_data(), *dh0p = dh0.mutable_data();
        float* dbp = use_bias ? db.mutable_data() : nullptr;
        {
          py::gil_scoped_release nogil;
          qdrift::simple_rnn_backward(s, xi.data, ki.data, ri.data, h0, si.data, act_out, mask, di.data, act,
                                      go_backwards, dxp, dkp, drp, dbp, dh0p, p);
        }
        return py::make_tuple(dx, dk, dr, use_bias ? py::object(db) : py::object(py::none()), dh0);
      },
      "x"_a, "kernel"_a, "recurrent_kernel"_a, "states"_a, "dstates"_a, py::kw_only(), "initial_state"_a = py::none(),
      "activated"_a = py::none(), "state_mask"_a = py::none(), "activation"_a = "tanh", "go_backwards"_a = false,
      "use_bias"_a = true, "path"_a = "auto", "name"_a = "",
      R"doc(SimpleRNN backpropagation through time -> (dx, dkernel, drecurrent, dbias|None, dh0).

states: the forward's (batch, time, units) output (the h_t fed to the next step); dstates: the
loss gradient at each h_t from outside the recurrence. With a state quantizer, pass the
activation outputs before it (activated) and its straight-through mask (state_mask).)doc");
}
