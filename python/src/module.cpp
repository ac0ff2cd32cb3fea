// SPDX-License-Identifier: Apache-2.0
// qdrift._core: wiring only; each bind_*.cpp is a list of m.def / py::class_ lines.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_errors(py::module_& m);
void bind_fixed_point(py::module_& m);
void bind_float_format(py::module_& m);
void bind_quantizers(py::module_& m);
void bind_tflite(py::module_& m);
void bind_ops(py::module_& m);
void bind_integer(py::module_& m);
void bind_backward(py::module_& m);
void bind_analysis(py::module_& m);
void bind_experiments(py::module_& m);
void bind_integer16(py::module_& m);
void bind_hybrid(py::module_& m);

PYBIND11_MODULE(_core, m) {
  m.doc() = "qdrift C++ core (private). Import `qdrift`, not `qdrift._core`.";
  bind_errors(m);  // first: later bindings may throw
  bind_fixed_point(m);
  bind_float_format(m);
  bind_quantizers(m);
  bind_tflite(m);
  bind_ops(m);
  bind_integer(m);
  bind_backward(m);
  bind_analysis(m);
  bind_experiments(m);
  bind_integer16(m);
  bind_hybrid(m);
  m.attr("__version__") = QDRIFT_VERSION_STRING;
}
