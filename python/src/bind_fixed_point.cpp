// SPDX-License-Identifier: Apache-2.0
// (placeholder until implemented)
#include <pybind11/pybind11.h>
#include "qdrift/core/error.h"
namespace py = pybind11;
void bind_fixed_point(py::module_& m) {
  m.def("quantize_multiplier", [](py::args, py::kwargs) { throw qdrift::UnsupportedError("quantize_multiplier: not implemented yet"); });
  m.def("requantize", [](py::args, py::kwargs) { throw qdrift::UnsupportedError("requantize: not implemented yet"); });
}
