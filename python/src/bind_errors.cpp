// SPDX-License-Identifier: Apache-2.0
// C++ exceptions -> Python: qdrift.Error subclasses that are also the matching builtin type.
#include <pybind11/pybind11.h>

#include "qdrift/core/error.h"

namespace py = pybind11;

void bind_errors(py::module_& m) {
  // Register the base first: pybind11 tries translators in reverse order of registration,
  // so each subclass's translator runs before the base's would swallow it.
  auto& base = py::register_exception<qdrift::Error>(m, "Error", PyExc_RuntimeError);
  // A tuple of bases makes the Python class a subclass of both qdrift.Error and the builtin.
  auto bases = [&](PyObject* builtin) { return py::make_tuple(base, py::handle(builtin)); };
  py::register_exception<qdrift::ConfigError>(m, "ConfigError", bases(PyExc_ValueError).ptr());
  py::register_exception<qdrift::ShapeError>(m, "ShapeError", bases(PyExc_ValueError).ptr());
  py::register_exception<qdrift::DataError>(m, "DataError", bases(PyExc_ValueError).ptr());
  py::register_exception<qdrift::DTypeError>(m, "DTypeError", bases(PyExc_TypeError).ptr());
  py::register_exception<qdrift::UnsupportedError>(m, "UnsupportedError",
                                                   bases(PyExc_NotImplementedError).ptr());
}
