// SPDX-License-Identifier: Apache-2.0
// (placeholder until implemented)
#include <pybind11/pybind11.h>
#include "qdrift/core/error.h"
namespace py = pybind11;
void bind_tflite(py::module_& m) {
  m.def("tflite_activation_params_int8", [](py::args, py::kwargs) { throw qdrift::UnsupportedError("tflite_activation_params_int8: not implemented yet"); });
  m.def("tflite_activation_params_int16", [](py::args, py::kwargs) { throw qdrift::UnsupportedError("tflite_activation_params_int16: not implemented yet"); });
  m.def("tflite_quantize_bias_int32", [](py::args, py::kwargs) { throw qdrift::UnsupportedError("tflite_quantize_bias_int32: not implemented yet"); });
  m.def("tflite_quantize_bias_int64", [](py::args, py::kwargs) { throw qdrift::UnsupportedError("tflite_quantize_bias_int64: not implemented yet"); });
  m.def("tflite_quantize_weights", [](py::args, py::kwargs) { throw qdrift::UnsupportedError("tflite_quantize_weights: not implemented yet"); });
}
