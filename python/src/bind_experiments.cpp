// SPDX-License-Identifier: Apache-2.0
// Experiment configs: the strict C++ reader, returning normalized JSON text (defaults filled).
#include <pybind11/pybind11.h>

#include <string>

#include "qdrift/experiments/experiment.h"

namespace py = pybind11;

void bind_experiments(py::module_& m) {
  m.def(
      "parse_experiment",
      [](const std::string& json_text, const std::string& base_dir) {
        return qdrift::to_json(qdrift::parse_experiment(json_text, base_dir));
      },
      py::arg("json_text"), py::arg("base_dir") = "",
      "Read an experiment config strictly (ConfigError names the JSON pointer) and return it "
      "normalized: every key present, defaults filled, data paths resolved against base_dir. "
      "Every sweep value is validated on its own.");
  m.def(
      "experiment_point",
      [](const std::string& json_text, const std::string& overrides_json, const std::string& base_dir) {
        return qdrift::to_json(qdrift::experiment_point(json_text, overrides_json, base_dir));
      },
      py::arg("json_text"), py::arg("overrides_json"), py::arg("base_dir") = "",
      "One sweep point: the config without its sweep, with each JSON pointer of overrides_json set, "
      "read strictly and returned normalized.");
}
