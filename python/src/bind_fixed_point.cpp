// SPDX-License-Identifier: Apache-2.0
// Bindings: quantize_multiplier and requantize (every LiteRT kernel path's output stage).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "numpy_interop.h"
#include "qdrift/core/fixed_point.h"

namespace py = pybind11;
using namespace pybind11::literals;

namespace {

// A scalar or a 1-D per-channel array (one entry per element of acc's last axis).
template <class T>
std::vector<T> per_channel(const py::handle& obj, const char* arg, std::size_t channels) {
  auto a = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(obj);
  QDRIFT_CHECK(a && a.ndim() <= 1, qdrift::ConfigError, "requantize: ", arg,
               " must be a scalar or a 1-D per-channel array");
  std::vector<T> v(a.data(), a.data() + a.size());
  QDRIFT_CHECK(v.size() == 1 || v.size() == channels, qdrift::ShapeError, "requantize: ", arg, " has ", v.size(),
               " entries but acc's last axis has ", channels);
  return v;
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

  m.def(
      "requantize",
      [](const py::handle& acc, const py::object& multiplier, const py::object& shift, const py::object& scale,
         const std::string& method, std::int64_t zero_point, std::optional<std::int64_t> qmin,
         std::optional<std::int64_t> qmax) {
        qdrift::RequantParams p;
        p.method = qdrift::parse_requant_method(method);
        const bool real = qdrift::requant_method_uses_real_scale(p.method);
        QDRIFT_CHECK(!real || (multiplier.is_none() && shift.is_none()), qdrift::ConfigError, "requantize: method ",
                     method, " takes scale=, not m/shift");
        QDRIFT_CHECK(real || scale.is_none(), qdrift::ConfigError, "requantize: method ", method,
                     " takes m and shift (see quantize_multiplier), not scale=");
        QDRIFT_CHECK(real || (!multiplier.is_none() && !shift.is_none()), qdrift::ConfigError,
                     "requantize: method ", method, " needs both m and shift");
        QDRIFT_CHECK(!real || !scale.is_none(), qdrift::ConfigError, "requantize: method ", method, " needs scale=");
        QDRIFT_CHECK(zero_point >= INT32_MIN && zero_point <= INT32_MAX, qdrift::ConfigError,
                     "requantize: zero_point must fit int32");
        p.zero_point = static_cast<std::int32_t>(zero_point);
        p.qmin = static_cast<std::int32_t>(qmin.value_or(INT32_MIN));
        p.qmax = static_cast<std::int32_t>(qmax.value_or(INT32_MAX));

        // int64 accumulators feed the int64 path; int32 feeds every other one.
        const bool wide = p.method == qdrift::RequantMethod::kInt64 ||
                          (py::isinstance<py::array>(acc) &&
                           py::reinterpret_borrow<py::array>(acc).dtype().is(py::dtype::of<std::int64_t>()));
        std::vector<std::int64_t> values;
        qdrift::Shape shape;
        if (wide) {
          auto in = qdrift::py_interop::array_in<std::int64_t>(acc, "requantize", "acc");
          values.assign(in.data, in.data + in.size());
          shape = in.shape;
        } else {
          auto in = qdrift::py_interop::array_in<std::int32_t>(acc, "requantize", "acc");
          values.assign(in.data, in.data + in.size());
          shape = in.shape;
        }
        const std::size_t channels = shape.empty() ? 1 : shape.back();
        std::vector<std::int32_t> ms{0};
        std::vector<int> shifts{0};
        std::vector<double> scales{0.0};
        if (real) {
          scales = per_channel<double>(scale, "scale", channels);
        } else {
          ms = per_channel<std::int32_t>(multiplier, "m", channels);
          shifts = per_channel<int>(shift, "shift", channels);
        }
        const std::size_t slots = std::max({ms.size(), shifts.size(), scales.size()});
        std::vector<qdrift::RequantParams> per_slot(slots, p);
        for (std::size_t c = 0; c < slots; ++c) {
          per_slot[c].multiplier = ms[ms.size() == 1 ? 0 : c];
          per_slot[c].shift = shifts[shifts.size() == 1 ? 0 : c];
          per_slot[c].scale = scales[scales.size() == 1 ? 0 : c];
          qdrift::validate(per_slot[c]);
        }
        auto out = qdrift::py_interop::array_out<std::int32_t>(shape);
        std::int32_t* o = out.mutable_data();
        {
          py::gil_scoped_release nogil;
          for (std::size_t i = 0; i < values.size(); ++i)
            o[i] = qdrift::requantize(values[i], per_slot[slots == 1 ? 0 : i % channels]);
        }
        return out;
      },
      "acc"_a, "m"_a = py::none(), "shift"_a = py::none(), py::kw_only(), "scale"_a = py::none(),
      "method"_a = "gemmlowp", "zero_point"_a = 0, "qmin"_a = py::none(), "qmax"_a = py::none(),
      R"doc(Requantize int32 (or int64) accumulators as a LiteRT kernel path does, then add zero_point
and clamp to [qmin, qmax] in that kernel's order.

method: "gemmlowp" (reference conv: SRDHM then rounding divide), "single" (TFLITE_SINGLE_ROUNDING),
"ruy" (x86 builtin GEMM: two round-half-up steps), "int64" (int16x8 with int64 accumulators) take
m and shift from quantize_multiplier; "xnnpack" (fp32, round half to even) and "double_rha"
(reference FULLY_CONNECTED since LiteRT 1.3) take the real scale. m/shift/scale may be 1-D arrays
with one entry per channel of acc's last axis.)doc");
}
