// SPDX-License-Identifier: Apache-2.0
// Bindings: QuantParams, Quantizer, and the torch-style fake_quant functions. Convert, release
// the GIL, call; all validation lives in C++ below these lines.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "numpy_interop.h"
#include "qdrift/quantizers/affine.h"
#include "qdrift/quantizers/quantizer.h"

namespace py = pybind11;
using namespace pybind11::literals;
using qdrift::py_interop::array_in;
using qdrift::py_interop::array_out;

namespace {

py::array_t<float> float_array(const std::vector<float>& v, const qdrift::Shape& shape) {
  auto a = array_out<float>(shape);
  std::copy(v.begin(), v.end(), a.mutable_data());
  return a;
}

py::array_t<std::int32_t> int_array(const std::vector<std::int32_t>& v, const qdrift::Shape& shape) {
  auto a = array_out<std::int32_t>(shape);
  std::copy(v.begin(), v.end(), a.mutable_data());
  return a;
}

// scale: a Python number or an array-like of floats (cast to float32, as torch stores scales).
std::vector<float> floats_from(const py::handle& obj, const char* fn, const char* arg, qdrift::Shape* shape) {
  py::array_t<float, py::array::c_style | py::array::forcecast> a;
  try {
    a = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(obj);
  } catch (const py::error_already_set&) {
  }
  QDRIFT_CHECK(a, qdrift::DTypeError, fn, ": ", arg, " must be a number or an array of numbers");
  if (shape) *shape = qdrift::py_interop::shape_of(a);
  return std::vector<float>(a.data(), a.data() + a.size());
}

// zero_point: a Python int or an integer array; floats are refused rather than truncated.
std::vector<std::int32_t> ints_from(const py::handle& obj, const char* fn, const char* arg) {
  py::array a = py::array::ensure(obj);
  QDRIFT_CHECK(a && (a.dtype().kind() == 'i' || a.dtype().kind() == 'u'), qdrift::DTypeError, fn, ": ", arg,
               " must be an integer or an array of integers, got ",
               a ? std::string(py::str(a.dtype())) : std::string("an object"));
  auto i32 = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
  std::vector<std::int32_t> out;
  for (py::ssize_t i = 0; i < i32.size(); ++i) {
    const std::int64_t v = i32.data()[i];
    QDRIFT_CHECK(v >= INT32_MIN && v <= INT32_MAX, qdrift::ConfigError, fn, ": ", arg, "[", i, "] = ", v,
                 " does not fit int32");
    out.push_back(static_cast<std::int32_t>(v));
  }
  return out;
}

struct ExplicitParams {
  qdrift::QuantParams params;
  qdrift::SliceLayout layout;
};

ExplicitParams explicit_params(const qdrift::Shape& x_shape, const py::handle& scale, const py::handle& zero_point,
                               std::int64_t qmin, std::int64_t qmax, std::optional<int> axis, const char* fn) {
  QDRIFT_CHECK(qmin >= INT32_MIN && qmax <= INT32_MAX, qdrift::ConfigError, fn, ": qmin/qmax must fit int32");
  std::vector<float> s = floats_from(scale, fn, "scale", nullptr);
  std::vector<std::int32_t> z = ints_from(zero_point, fn, "zero_point");
  QDRIFT_CHECK(axis.has_value() || s.size() == 1, qdrift::ShapeError, fn, ": scale has ", s.size(),
               " entries; pass axis= for per-channel quantization");
  const auto g = axis ? qdrift::Granularity::kPerChannel : qdrift::Granularity::kPerTensor;
  ExplicitParams e;
  e.params = qdrift::make_params(std::move(s), std::move(z), static_cast<std::int32_t>(qmin),
                                 static_cast<std::int32_t>(qmax), g, axis.value_or(-1), 0, x_shape);
  e.layout = qdrift::make_layout(x_shape, g, axis.value_or(-1), 0, fn);
  return e;
}

// `out`: None for a new array, else a writable C-contiguous float32 array of x's shape.
py::array_t<float> output_like(const qdrift::Shape& shape, const py::object& out, const char* fn) {
  if (out.is_none()) return array_out<float>(shape);
  QDRIFT_CHECK(py::isinstance<py::array_t<float>>(out) &&
                   py::reinterpret_borrow<py::array>(out).dtype().is(py::dtype::of<float>()),
               qdrift::DTypeError, fn, ": out must be a float32 numpy array");
  auto a = py::reinterpret_borrow<py::array_t<float>>(out);
  QDRIFT_CHECK((a.flags() & py::array::c_style) && a.writeable(), qdrift::ShapeError, fn,
               ": out must be writable and C-contiguous");
  QDRIFT_CHECK(qdrift::py_interop::shape_of(a) == shape, qdrift::ShapeError, fn, ": out has shape ",
               qdrift::shape_to_string(qdrift::py_interop::shape_of(a)), " but x has ", qdrift::shape_to_string(shape));
  return a;
}

qdrift::ElementwiseArgs make_args(const ExplicitParams& e, const std::string& rounding, std::uint64_t seed) {
  qdrift::ElementwiseArgs a;
  a.layout = &e.layout;
  a.params = &e.params;
  a.rounding = qdrift::parse_rounding(rounding);
  a.seed = seed;
  return a;
}


}  // namespace

void bind_quantizers(py::module_& m) {
  py::class_<qdrift::QuantParams>(m, "QuantParams", "Calibrated parameters: real = scale * (q - zero_point).")
      .def(py::init([](const py::handle& scale, const py::handle& zero_point, std::int64_t qmin, std::int64_t qmax,
                       std::optional<int> axis, int group_size) {
             qdrift::QuantParams p;
             p.scale = floats_from(scale, "QuantParams", "scale", &p.param_shape);
             p.zero_point = ints_from(zero_point, "QuantParams", "zero_point");
             if (p.zero_point.size() == 1 && p.scale.size() > 1) p.zero_point.assign(p.scale.size(), p.zero_point[0]);
             p.qmin = static_cast<std::int32_t>(qmin);
             p.qmax = static_cast<std::int32_t>(qmax);
             p.granularity = !axis ? qdrift::Granularity::kPerTensor
                             : group_size > 0 ? qdrift::Granularity::kPerGroup
                                              : qdrift::Granularity::kPerChannel;
             QDRIFT_CHECK(axis || p.scale.size() == 1, qdrift::ShapeError, "QuantParams: scale has ", p.scale.size(),
                          " entries; pass axis= for per-channel or per-group parameters");
             QDRIFT_CHECK(!axis || *axis >= 0, qdrift::ShapeError,
                          "QuantParams: axis must be non-negative (it is stored against the input's rank)");
             if (!axis) p.param_shape = {};
             p.axis = axis.value_or(-1);
             p.group_size = group_size;
             for (float s : p.scale) p.inv_scale.push_back(1.0f / s);
             return p;
           }),
           "scale"_a, "zero_point"_a, "qmin"_a, "qmax"_a, "axis"_a = py::none(), "group_size"_a = 0)
      .def_property_readonly("scale", [](const qdrift::QuantParams& p) { return float_array(p.scale, p.param_shape); })
      .def_property_readonly("zero_point",
                             [](const qdrift::QuantParams& p) { return int_array(p.zero_point, p.param_shape); })
      .def_readonly("qmin", &qdrift::QuantParams::qmin)
      .def_readonly("qmax", &qdrift::QuantParams::qmax)
      .def_property_readonly("axis", [](const qdrift::QuantParams& p) -> py::object {
        if (p.granularity == qdrift::Granularity::kPerTensor) return py::none();
        return py::int_(p.axis);
      })
      .def_readonly("group_size", &qdrift::QuantParams::group_size)
      .def_property_readonly("granularity",
                             [](const qdrift::QuantParams& p) { return std::string(qdrift::granularity_name(p.granularity)); })
      .def("__repr__", [](const qdrift::QuantParams& p) {
        std::string s = "QuantParams(" + std::string(qdrift::granularity_name(p.granularity)) + ", slots=" +
                        std::to_string(p.scale.size()) + ", qmin=" + std::to_string(p.qmin) +
                        ", qmax=" + std::to_string(p.qmax);
        if (p.scale.size() == 1)
          s += ", scale=" + std::string(py::str(py::float_(p.scale[0]))) + ", zero_point=" + std::to_string(p.zero_point[0]);
        return s + ")";
      });

  m.def(
      "fake_quant",
      [](const py::handle& x, const py::handle& scale, const py::handle& zero_point, std::int64_t qmin,
         std::int64_t qmax, std::optional<int> axis, const std::string& rounding, std::uint64_t seed,
         bool return_mask, const py::object& out) -> py::object {
        auto in = array_in<float>(x, "fake_quant", "x");
        const ExplicitParams e = explicit_params(in.shape, scale, zero_point, qmin, qmax, axis, "fake_quant");
        const qdrift::ElementwiseArgs a = make_args(e, rounding, seed);
        auto y = output_like(in.shape, out, "fake_quant");
        float* yp = y.mutable_data();
        if (!return_mask) {
          py::gil_scoped_release nogil;
          qdrift::fake_quant(a, in.data, yp, nullptr);
          return std::move(y);
        }
        auto mask = array_out<bool>(in.shape);
        auto* mp = reinterpret_cast<std::uint8_t*>(mask.mutable_data());
        {
          py::gil_scoped_release nogil;
          qdrift::fake_quant(a, in.data, yp, mp);
        }
        return py::make_tuple(y, mask);
      },
      "x"_a, "scale"_a, "zero_point"_a, "qmin"_a, "qmax"_a, "axis"_a = py::none(), py::kw_only(),
      "rounding"_a = "half_even", "seed"_a = 0, "return_mask"_a = false, "out"_a = py::none(),
      R"doc(Fake-quantize x: y = (clamp(round(x * (1/scale)) + zero_point, qmin, qmax) - zero_point) * scale.

Bit-exact with torch.fake_quantize_per_tensor_affine (axis=None) and
torch.fake_quantize_per_channel_affine (axis=k) for rounding="half_even". x must be a C-contiguous
float32 array (read without a copy). NaN stays NaN; +-Inf saturate. return_mask=True also returns
the straight-through mask (True where the unclamped code was inside [qmin, qmax]). out: an
optional float32 array of x's shape to write into (it may be x itself).)doc");

  m.def(
      "fake_quant_backward",
      [](const py::handle& x, const py::handle& grad, const py::handle& scale, const py::handle& zero_point,
         std::int64_t qmin, std::int64_t qmax, std::optional<int> axis, const std::string& rounding,
         std::uint64_t seed) {
        auto in = array_in<float>(x, "fake_quant_backward", "x");
        auto g = array_in<float>(grad, "fake_quant_backward", "grad");
        QDRIFT_CHECK(g.shape == in.shape, qdrift::ShapeError, "fake_quant_backward: grad has shape ",
                     qdrift::shape_to_string(g.shape), " but x has ", qdrift::shape_to_string(in.shape));
        const ExplicitParams e = explicit_params(in.shape, scale, zero_point, qmin, qmax, axis, "fake_quant_backward");
        const qdrift::ElementwiseArgs a = make_args(e, rounding, seed);
        auto dx = array_out<float>(in.shape);
        float* dp = dx.mutable_data();
        {
          py::gil_scoped_release nogil;
          qdrift::fake_quant_backward(a, in.data, g.data, dp);
        }
        return dx;
      },
      "x"_a, "grad"_a, "scale"_a, "zero_point"_a, "qmin"_a, "qmax"_a, "axis"_a = py::none(), py::kw_only(),
      "rounding"_a = "half_even", "seed"_a = 0,
      "Straight-through gradient of fake_quant: grad where x's code was inside [qmin, qmax], else 0.");

  m.def(
      "fake_quant_lsq_backward",
      [](const py::handle& x, const py::handle& grad, const py::handle& scale, const py::handle& zero_point,
         std::int64_t qmin, std::int64_t qmax, std::optional<int> axis, float grad_factor) {
        auto in = array_in<float>(x, "fake_quant_lsq_backward", "x");
        auto g = array_in<float>(grad, "fake_quant_lsq_backward", "grad");
        QDRIFT_CHECK(g.shape == in.shape, qdrift::ShapeError, "fake_quant_lsq_backward: grad has shape ",
                     qdrift::shape_to_string(g.shape), " but x has ", qdrift::shape_to_string(in.shape));
        const ExplicitParams e =
            explicit_params(in.shape, scale, zero_point, qmin, qmax, axis, "fake_quant_lsq_backward");
        const qdrift::ElementwiseArgs a = make_args(e, "half_even", 0);
        auto dx = array_out<float>(in.shape);
        std::vector<float> ds(e.params.scale.size()), dz(e.params.scale.size());
        float* dp = dx.mutable_data();
        {
          py::gil_scoped_release nogil;
          qdrift::fake_quant_lsq_backward(a, in.data, g.data, grad_factor, dp, ds.data(), dz.data());
        }
        return py::make_tuple(dx, float_array(ds, e.params.param_shape), float_array(dz, e.params.param_shape));
      },
      "x"_a, "grad"_a, "scale"_a, "zero_point"_a, "qmin"_a, "qmax"_a, "axis"_a = py::none(), py::kw_only(),
      "grad_factor"_a = 1.0f,
      R"doc(LSQ gradients of fake_quant with a learnable scale and zero point -> (dx, dscale, dzero_point).

Element rule of torch._fake_quantize_learnable_per_tensor_affine / _per_channel_affine's backward
(integer zero points); the per-slot sums are accumulated in double.)doc");

  py::class_<qdrift::Quantizer>(m, "Quantizer")
      .def(py::init([](const std::string& spec_json) { return qdrift::Quantizer(qdrift::parse_quant_spec(spec_json)); }),
           "spec_json"_a)
      .def("spec_json", [](const qdrift::Quantizer& q) { return qdrift::to_json(q.spec()); })
      .def_property_readonly("qmin", [](const qdrift::Quantizer& q) { return q.spec().qmin(); })
      .def_property_readonly("qmax", [](const qdrift::Quantizer& q) { return q.spec().qmax(); })
      .def(
          "observe",
          [](qdrift::Quantizer& q, const py::handle& x) {
            auto in = array_in<float>(x, "Quantizer.observe", "x");
            py::gil_scoped_release nogil;
            q.observe(in.data, in.shape);
          },
          "x"_a, "Accumulate calibration statistics from a batch (static mode).")
      .def("freeze", &qdrift::Quantizer::freeze, "Fix the parameters; later observe() calls raise ConfigError.")
      .def_property_readonly("frozen", &qdrift::Quantizer::frozen)
      .def_property_readonly("params", &qdrift::Quantizer::params)
      .def("set_params", &qdrift::Quantizer::set_params, "params"_a)
      .def(
          "params_for",
          [](const qdrift::Quantizer& q, const py::handle& x) {
            auto in = array_in<float>(x, "Quantizer.params_for", "x");
            py::gil_scoped_release nogil;
            return q.params_for(in.data, in.shape);
          },
          "x"_a, "The parameters used for input x (computed from x in dynamic mode).")
      .def("observed_range",
           [](const qdrift::Quantizer& q) {
             std::vector<float> mn, mx;
             q.observed_range(&mn, &mx);
             return py::make_tuple(float_array(mn, {mn.size()}), float_array(mx, {mx.size()}));
           })
      .def(
          "quantize",
          [](const qdrift::Quantizer& q, const py::handle& x) {
            auto in = array_in<float>(x, "Quantizer.quantize", "x");
            auto out = array_out<std::int32_t>(in.shape);
            std::int32_t* op = out.mutable_data();
            {
              py::gil_scoped_release nogil;
              q.quantize(in.data, in.shape, op);
            }
            return out;
          },
          "x"_a, "Integer codes (int32); float formats give their bit patterns.")
      .def(
          "dequantize",
          [](const qdrift::Quantizer& q, const py::handle& codes, std::optional<qdrift::QuantParams> params) {
            auto in = array_in<std::int32_t>(codes, "Quantizer.dequantize", "codes");
            const qdrift::QuantParams p = params ? *params : (q.is_float_format() ? qdrift::QuantParams{} : q.params());
            auto out = array_out<float>(in.shape);
            float* op = out.mutable_data();
            {
              py::gil_scoped_release nogil;
              q.dequantize(in.data, in.shape, p, op);
            }
            return out;
          },
          "codes"_a, "params"_a = py::none())
      .def(
          "fake_quant",
          [](const qdrift::Quantizer& q, const py::handle& x, bool return_mask) -> py::object {
            auto in = array_in<float>(x, "Quantizer.fake_quant", "x");
            auto y = array_out<float>(in.shape);
            float* yp = y.mutable_data();
            if (!return_mask) {
              py::gil_scoped_release nogil;
              q.fake_quant(in.data, in.shape, yp, nullptr);
              return std::move(y);
            }
            auto mask = array_out<bool>(in.shape);
            auto* mp = reinterpret_cast<std::uint8_t*>(mask.mutable_data());
            {
              py::gil_scoped_release nogil;
              q.fake_quant(in.data, in.shape, yp, mp);
            }
            return py::make_tuple(y, mask);
          },
          "x"_a, py::kw_only(), "return_mask"_a = false)
      .def(
          "fake_quant_backward",
          [](const qdrift::Quantizer& q, const py::handle& x, const py::handle& grad) {
            auto in = array_in<float>(x, "Quantizer.fake_quant_backward", "x");
            auto g = array_in<float>(grad, "Quantizer.fake_quant_backward", "grad");
            QDRIFT_CHECK(g.shape == in.shape, qdrift::ShapeError, "Quantizer.fake_quant_backward: grad has shape ",
                         qdrift::shape_to_string(g.shape), " but x has ", qdrift::shape_to_string(in.shape));
            auto dx = array_out<float>(in.shape);
            float* dp = dx.mutable_data();
            {
              py::gil_scoped_release nogil;
              q.fake_quant_backward(in.data, g.data, in.shape, dp);
            }
            return dx;
          },
          "x"_a, "grad"_a)
      .def(
          "fake_quant_lsq_backward",
          [](const qdrift::Quantizer& q, const py::handle& x, const py::handle& grad, float grad_factor) {
            auto in = array_in<float>(x, "Quantizer.fake_quant_lsq_backward", "x");
            auto g = array_in<float>(grad, "Quantizer.fake_quant_lsq_backward", "grad");
            QDRIFT_CHECK(g.shape == in.shape, qdrift::ShapeError, "Quantizer.fake_quant_lsq_backward: grad has shape ",
                         qdrift::shape_to_string(g.shape), " but x has ", qdrift::shape_to_string(in.shape));
            auto dx = array_out<float>(in.shape);
            float* dp = dx.mutable_data();
            std::vector<float> ds, dz;
            {
              py::gil_scoped_release nogil;
              q.fake_quant_lsq_backward(in.data, g.data, in.shape, grad_factor, dp, &ds, &dz);
            }
            const qdrift::Shape ps = q.params_for(in.data, in.shape).param_shape;
            return py::make_tuple(dx, float_array(ds, ps), float_array(dz, ps));
          },
          "x"_a, "grad"_a, py::kw_only(), "grad_factor"_a = 1.0f);
}
