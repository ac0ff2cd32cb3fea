// SPDX-License-Identifier: Apache-2.0
// Bindings: cast / to_bits / from_bits for fp16, bf16, fp8_e4m3 and fp8_e5m2 (no input copies).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "numpy_interop.h"
#include "qdrift/quantizers/float_format.h"

namespace py = pybind11;
using namespace pybind11::literals;
using qdrift::py_interop::array_in;
using qdrift::py_interop::array_out;

namespace {

constexpr qdrift::Format kFloatFormats[] = {qdrift::Format::kFp16, qdrift::Format::kBf16,
                                            qdrift::Format::kFp8E4M3, qdrift::Format::kFp8E5M2};

// Names come from format_name(), the one table JSON configs use too. "int" is a Format but not
// a float format, so it is rejected like any unknown name.
qdrift::Format parse_float_format(const std::string& name, const char* fn) {
  std::string valid;
  for (qdrift::Format f : kFloatFormats) {
    if (qdrift::format_name(f) == name) return f;
    valid += (valid.empty() ? "" : ", ") + std::string(qdrift::format_name(f));
  }
  throw qdrift::ConfigError(std::string(fn) + ": unknown float format '" + name + "'; expected one of " + valid);
}

}  // namespace

void bind_float_format(py::module_& m) {
  m.def(
      "cast",
      [](const py::handle& x, const std::string& format) {
        const qdrift::Format f = parse_float_format(format, "cast");
        const auto in = array_in<float>(x, "cast", "x");
        auto y = array_out<float>(in.shape);
        float* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          qdrift::cast(f, in.data, in.size(), yp);
        }
        return y;
      },
      "x"_a, "format"_a,
      R"doc(Round float32 values to a narrow float format and back: what x becomes when stored in it.

format: "fp16" | "bf16" | "fp8_e4m3" | "fp8_e5m2". Round half to even with subnormals, bit for bit
as numpy (fp16) and ml_dtypes (bf16, float8_e4m3fn, float8_e5m2) cast. Beyond the largest finite
value: +-inf for fp16, bf16 and fp8_e5m2; NaN for fp8_e4m3 (e4m3fn has no inf). NaN stays NaN
with its sign. Raises DTypeError unless x is float32, ShapeError unless C-contiguous.)doc");

  m.def(
      "to_bits",
      [](const py::handle& x, const std::string& format) -> py::array {
        const qdrift::Format f = parse_float_format(format, "to_bits");
        const auto in = array_in<float>(x, "to_bits", "x");
        if (qdrift::format_bits(f) == 16) {
          auto out = array_out<std::uint16_t>(in.shape);
          std::uint16_t* op = out.mutable_data();
          {
            py::gil_scoped_release nogil;
            qdrift::to_bits(f, in.data, in.size(), op);
          }
          return std::move(out);
        }
        auto out = array_out<std::uint8_t>(in.shape);
        std::uint8_t* op = out.mutable_data();
        {
          py::gil_scoped_release nogil;
          qdrift::to_bits(f, in.data, in.size(), op);
        }
        return std::move(out);
      },
      "x"_a, "format"_a,
      "Bit patterns of float32 x rounded to the format (as cast): uint16 for fp16/bf16, uint8 for fp8.\n"
      "Equal to numpy/ml_dtypes x.astype(dtype).view(uint), NaN patterns included.");

  m.def(
      "from_bits",
      [](const py::handle& bits, const std::string& format) {
        const qdrift::Format f = parse_float_format(format, "from_bits");
        if (qdrift::format_bits(f) == 16) {
          const auto in = array_in<std::uint16_t>(bits, "from_bits", "bits");
          auto y = array_out<float>(in.shape);
          float* yp = y.mutable_data();
          {
            py::gil_scoped_release nogil;
            qdrift::from_bits(f, in.data, in.size(), yp);
          }
          return y;
        }
        const auto in = array_in<std::uint8_t>(bits, "from_bits", "bits");
        auto y = array_out<float>(in.shape);
        float* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          qdrift::from_bits(f, in.data, in.size(), yp);
        }
        return y;
      },
      "bits"_a, "format"_a,
      "float32 values of bit patterns: uint16 for fp16/bf16, uint8 for fp8 (exact; NaN patterns decode as "
      "numpy/ml_dtypes do).");
}
