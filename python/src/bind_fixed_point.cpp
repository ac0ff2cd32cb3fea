// SPDX-License-Identifier: Apache-2.0
// Bindings: quantize_multiplier and requantize (every LiteRT kernel path's output stage).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "numpy_interop.h"
#include "qdrift/core/fixed_point.h"

namespace py = pybind11;
using namespace pybind11::literals;

namespace {

using qdrift::ConfigError;

// A scalar or a 1-D per-channel array (one entry per element of acc's last axis) as a numpy
// array whose dtype kind is one of `kinds`.
py::array per_channel_array(const py::handle& obj, const char* arg, const char* kinds, const char* what) {
  const py::array a = py::array::ensure(obj);
  QDRIFT_CHECK(a && a.ndim() <= 1, ConfigError, "requantize: ", arg, " must be a scalar or a 1-D per-channel array");
  QDRIFT_CHECK(std::string(kinds).find(a.dtype().kind()) != std::string::npos, ConfigError, "requantize: ", arg,
               " must be ", what, " (or a 1-D array of them), got dtype ", std::string(py::str(a.dtype())));
  return a;
}

void check_channels(std::size_t n, const char* arg, std::size_t channels) {
  QDRIFT_CHECK(n == 1 || n == channels, qdrift::ShapeError, "requantize: ", arg, " has ", n,
               " entries but acc's last axis has ", channels);
}

// m and shift must be exact integers that fit int32.
std::vector<std::int32_t> int32_per_channel(const py::handle& obj, const char* arg, std::size_t channels) {
  const auto a = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(
      per_channel_array(obj, arg, "iu", "an integer"));
  check_channels(static_cast<std::size_t>(a.size()), arg, channels);
  std::vector<std::int32_t> v;
  for (py::ssize_t i = 0; i < a.size(); ++i) {
    const std::int64_t x = a.data()[i];
    QDRIFT_CHECK(x >= std::numeric_limits<std::int32_t>::min() && x <= std::numeric_limits<std::int32_t>::max(),
                 ConfigError, "requantize: ", arg, " = ", x, " does not fit int32");
    v.push_back(static_cast<std::int32_t>(x));
  }
  return v;
}

std::vector<double> real_per_channel(const py::handle& obj, const char* arg, std::size_t channels) {
  const auto a = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(
      per_channel_array(obj, arg, "iuf", "a real number"));
  check_channels(static_cast<std::size_t>(a.size()), arg, channels);
  return std::vector<double>(a.data(), a.data() + a.size());
}

std::int32_t int32_arg(std::int64_t v, const char* arg) {
  QDRIFT_CHECK(v >= std::numeric_limits<std::int32_t>::min() && v <= std::numeric_limits<std::int32_t>::max(),
               ConfigError, "requantize: ", arg, " = ", v, " does not fit int32");
  return static_cast<std::int32_t>(v);
}

// The element loop: slot c of `params` serves every element whose last-axis index is c.
template <class Acc>
py::array_t<std::int32_t> requantize_array(const qdrift::py_interop::ArrayIn<Acc>& acc,
                                           const std::vector<qdrift::RequantParams>& params) {
  auto out = qdrift::py_interop::array_out<std::int32_t>(acc.shape);
  std::int32_t* o = out.mutable_data();
  const std::size_t n = acc.size();
  const std::size_t slots = params.size();
  {
    py::gil_scoped_release nogil;
    for (std::size_t i = 0; i < n; ++i) o[i] = qdrift::requantize(acc.data[i], params[slots == 1 ? 0 : i % slots]);
  }
  return out;
}

py::array_t<std::int32_t> requantize_py(const py::handle& acc, const py::object& m, const py::object& shift,
                                        const py::object& scale, const std::string& method, std::int64_t zero_point,
                                        std::optional<std::int64_t> qmin, std::optional<std::int64_t> qmax) {
  qdrift::RequantParams p;
  p.method = qdrift::parse_requant_method(method);
  const bool real = qdrift::requant_method_uses_real_scale(p.method);
  if (real) {
    QDRIFT_CHECK(m.is_none(), ConfigError, "requantize: method ", method, " takes scale=, not m");
    QDRIFT_CHECK(shift.is_none(), ConfigError, "requantize: method ", method, " takes scale=, not shift");
    QDRIFT_CHECK(!scale.is_none(), ConfigError, "requantize: method ", method, " needs scale=");
  } else {
    QDRIFT_CHECK(scale.is_none(), ConfigError, "requantize: method ", method,
                 " takes m and shift (see quantize_multiplier), not scale");
    QDRIFT_CHECK(!m.is_none(), ConfigError, "requantize: method ", method, " needs m (see quantize_multiplier)");
    QDRIFT_CHECK(!shift.is_none(), ConfigError, "requantize: method ", method,
                 " needs shift (see quantize_multiplier)");
  }
  p.zero_point = int32_arg(zero_point, "zero_point");
  p.qmin = int32_arg(qmin.value_or(std::numeric_limits<std::int32_t>::min()), "qmin");
  p.qmax = int32_arg(qmax.value_or(std::numeric_limits<std::int32_t>::max()), "qmax");

  // int32 accumulators for the int32 rules, int64 for the int64 rule, either for the real-scale
  // rules (the reference FC accumulates int16x8 in int64).
  const bool wide = p.method == qdrift::RequantMethod::kInt64 ||
                    (real && py::isinstance<py::array>(acc) &&
                     py::reinterpret_borrow<py::array>(acc).dtype().is(py::dtype::of<std::int64_t>()));
  std::optional<qdrift::py_interop::ArrayIn<std::int64_t>> acc64;
  std::optional<qdrift::py_interop::ArrayIn<std::int32_t>> acc32;
  if (wide) acc64 = qdrift::py_interop::array_in<std::int64_t>(acc, "requantize", "acc");
  else acc32 = qdrift::py_interop::array_in<std::int32_t>(acc, "requantize", "acc");
  const qdrift::Shape& shape = wide ? acc64->shape : acc32->shape;
  const std::size_t channels = shape.empty() ? 1 : shape.back();

  std::vector<std::int32_t> ms{0};
  std::vector<std::int32_t> shifts{0};
  std::vector<double> scales{0.0};
  if (real) {
    scales = real_per_channel(scale, "scale", channels);
  } else {
    ms = int32_per_channel(m, "m", channels);
    shifts = int32_per_channel(shift, "shift", channels);
  }
  const std::size_t slots = std::max({ms.size(), shifts.size(), scales.size()});
  std::vector<qdrift::RequantParams> per_slot(slots, p);
  for (std::size_t c = 0; c < slots; ++c) {
    per_slot[c].multiplier = ms[ms.size() == 1 ? 0 : c];
    per_slot[c].shift = shifts[shifts.size() == 1 ? 0 : c];
    per_slot[c].scale = scales[scales.size() == 1 ? 0 : c];
    qdrift::validate(per_slot[c]);
  }
  return wide ? requantize_array(*acc64, per_slot) : requantize_array(*acc32, per_slot);
}

}  // namespace

void bind_fixed_point(py::module_& m) {
  m.def(
      "quantize_multiplier",
      [](double real_multiplier) {
        const qdrift::QuantizedMultiplier q = qdrift::quantize_multiplier(real_multiplier);
        return py::make_tuple(q.multiplier, q.shift);
      },
      "real_multiplier"_a,
      "TFLite QuantizeMultiplier: M -> (m, shift) with M ~= m * 2^(shift - 31), m in [2^30, 2^31) or 0.");

  m.def("requantize", &requantize_py, "acc"_a, "m"_a = py::none(), "shift"_a = py::none(), py::kw_only(),
        "scale"_a = py::none(), "method"_a = "gemmlowp", "zero_point"_a = 0, "qmin"_a = py::none(),
        "qmax"_a = py::none(),
        R"doc(Requantize accumulators as a LiteRT kernel path does, then add zero_point and clamp to
[qmin, qmax] (default: the int32 range) in that kernel's order. Returns int32.

method: "gemmlowp" (reference conv: SRDHM then rounding divide), "single" (TFLITE_SINGLE_ROUNDING),
"ruy" (x86 builtin GEMM: two round-half-up steps) take an int32 acc; "int64" (int16x8 with int64
accumulators) takes an int64 acc. These four take m and shift from quantize_multiplier.
"xnnpack" (fp32, round half to even) and "double_rha" (reference FULLY_CONNECTED since LiteRT 1.3)
take the real scale= and an int32 or int64 acc. m/shift/scale may be 1-D arrays with one entry per
channel of acc's last axis.)doc");
}
