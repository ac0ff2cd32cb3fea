// SPDX-License-Identifier: Apache-2.0
// (placeholder until implemented)
#include <pybind11/pybind11.h>
#include "qdrift/core/error.h"
namespace py = pybind11;
void bind_float_format(py::module_& m) {
  m.def("cast", [](py::args, py::kwargs) { throw qdrift::UnsupportedError("cast: not implemented yet"); });
  m.def("to_bits", [](py::args, py::kwargs) { throw qdrift::UnsupportedError("to_bits: not implemented yet"); });
  m.def("from_bits", [](py::args, py::kwargs) { throw qdrift::UnsupportedError("from_bits: not implemented yet"); });
}
