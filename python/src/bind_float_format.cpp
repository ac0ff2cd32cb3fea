// SPDX-License-Identifier: Apache-2.0
// Bindings: cast / to_bits / from_bits for fp16, bf16, fp8_e4m3 and fp8_e5m2.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>
#include <vector>

#include "numpy_interop.h"
#include "qdrift/quantizers/float_format.h"

namespace py = pybind11;
using namespace pybind11::literals;
using qdrift::py_interop::array_in;
using qdrift::py_interop::array_out;

namespace {

qdrift::Format parse_float_format(const std::string& name, const char* fn) {
  if (name == "fp16") return qdrift::Format::kFp16;
  if (name == "bf16") return qdrift::Format::kBf16;
  if (name == "fp8_e4m3") return qdrift::Format::kFp8E4M3;
  if (name == "fp8_e5m2") return qdrift::Format::kFp8E5M2;
  throw qdrift::ConfigError(std::string(fn) + ": unknown float format '" + name +
                            "'; expected one of fp16, bf16, fp8_e4m3, fp8_e5m2");
}

}  // namespace

void bind_float_format(py::module_& m) {
  m.def(
      "cast",
      [](const py::handle& x, const std::string& format) {
        const qdrift::Format f = parse_float_format(format, "cast");
        auto in = array_in<float>(x, "cast", "x");
        auto y = array_out<float>(in.shape);
        float* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          qdrift::cast(f, in.data, in.size(), yp);
        }
        return y;
      },
      "x"_a, "format"_a,
      "Round float32 values to a narrow float format (half to even) and back to float32.\n\n"
      "fp16 and fp8_e5m2 and bf16 overflow to +-inf; fp8_e4m3 (e4m3fn, no inf) overflows to NaN.");

  m.def(
      "to_bits",
      [](const py::handle& x, const std::string& format) -> py::array {
        const qdrift::Format f = parse_float_format(format, "to_bits");
        auto in = array_in<float>(x, "to_bits", "x");
        std::vector<std::uint16_t> bits(in.size());
        {
          py::gil_scoped_release nogil;
          qdrift::to_bits(f, in.data, in.size(), bits.data());
        }
        if (qdrift::format_bits(f) == 16) {
          auto out = array_out<std::uint16_t>(in.shape);
          std::copy(bits.begin(), bits.end(), out.mutable_data());
          return std::move(out);
        }
        auto out = array_out<std::uint8_t>(in.shape);
        std::transform(bits.begin(), bits.end(), out.mutable_data(),
                       [](std::uint16_t b) { return static_cast<std::uint8_t>(b); });
        return std::move(out);
      },
      "x"_a, "format"_a, "Bit patterns of x in the format: uint16 for fp16/bf16, uint8 for fp8.");

  m.def(
      "from_bits",
      [](const py::handle& bits, const std::string& format) {
        const qdrift::Format f = parse_float_format(format, "from_bits");
        const bool wide = qdrift::format_bits(f) == 16;
        std::vector<std::uint16_t> b;
        qdrift::Shape shape;
        if (wide) {
          auto in = array_in<std::uint16_t>(bits, "from_bits", "bits");
          b.assign(in.data, in.data + in.size());
          shape = in.shape;
        } else {
          auto in = array_in<std::uint8_t>(bits, "from_bits", "bits");
          b.assign(in.data, in.data + in.size());
          shape = in.shape;
        }
        auto y = array_out<float>(shape);
        float* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          qdrift::from_bits(f, b.data(), b.size(), yp);
        }
        return y;
      },
      "bits"_a, "format"_a, "float32 values of bit patterns (uint16 for fp16/bf16, uint8 for fp8).");
}
