// SPDX-License-Identifier: Apache-2.0
// The experiment config reader: normalization round trip, sweep validation, JSON-pointer errors.
#include <doctest/doctest.h>

#include <string>

#include "qdrift/core/error.h"
#include "qdrift/experiments/experiment.h"

using qdrift::ConfigError;
using qdrift::parse_experiment;

namespace {

const char* kBase = R"({"name": "t", "seed": 7,
  "model": {"input_shape": [5, 1], "layers": [{"type": "simple_rnn", "units": 4, "name": "rnn"},
                                              {"type": "dense", "units": 2}]},
  "quant": {"weights": {"bits": 4}, "overrides": {"dense_1": {"activations": null}}},
  "sweep": {"/quant/weights/bits": [2, 8], "/seed": [0, 1, 2]}})";

// The message of the ConfigError `text` raises ("" if none).
std::string error_of(const std::string& text) {
  try {
    parse_experiment(text);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

std::string with_quant(const std::string& quant) {
  return R"({"model": {"input_shape": [3], "layers": [{"type": "dense", "units": 2}]}, "quant": )" + quant + "}";
}

}  // namespace

TEST_CASE("experiment: normalizing is idempotent and fills the defaults") {
  const auto c = parse_experiment(kBase);
  CHECK(c.model.layers[1].name == "dense_1");            // qd.Sequential's naming rule
  CHECK(c.model.layers[0].activation == qdrift::Activation::kTanh);
  CHECK(c.data.seed == 7u);                               // the experiment's seed unless set
  CHECK(c.data.calibration_batch == c.data.batch);
  CHECK(c.quant.weights->bits == 4);
  CHECK(!c.quant.overrides.at("dense_1").at(qdrift::QuantPoint::kActivations).has_value());
  CHECK(c.quant.activations == qdrift::default_activation_spec());
  CHECK(c.sweep.at("/seed").size() == 3);
  const std::string normalized = qdrift::to_json(c);
  CHECK(qdrift::to_json(parse_experiment(normalized)) == normalized);
}

TEST_CASE("experiment: a sweep point sets its pointers and drops the sweep") {
  const auto p = qdrift::experiment_point(kBase, R"({"/quant/weights/bits": 8, "/seed": 2})");
  CHECK(p.quant.weights->bits == 8);
  CHECK(p.seed == 2u);
  CHECK(p.data.seed == 2u);
  CHECK(p.sweep.empty());
  // A missing object on the way is created; its parent's reader then sees it.
  const auto q = qdrift::experiment_point(kBase, R"({"/analysis/per_timestep": false})");
  CHECK(!q.analysis.per_timestep);
}

TEST_CASE("experiment: errors start with the JSON pointer at fault") {
  struct Case {
    std::string text, pointer;
  };
  const Case cases[] = {
      {"[1]", "/: expected an object"},
      {"{", "/: invalid JSON"},
      {"22e2222", "/: invalid JSON"},   // nlohmann's out_of_range (found by the fuzzer)
      {R"({"model": {"input_shape": [3], "layers": [{"type": "dense"}]}})", "/model/layers/0/units: missing"},
      {R"({"model": {"input_shape": [3], "layers": [{"type": "dens", "units": 1}]}})", "/model/layers/0/type: unknown value 'dens'"},
      {with_quant(R"({"weights": {"bits": -4}})"), "/quant/weights/bits: bits must be in [2, 16]"},
      {with_quant(R"({"weights": {"bits": 99999999999999999999}})"), "/quant/weights/bits: "},
      {with_quant(R"({"profile": "tflite_int8", "state": null})"), "/quant/state: unknown key"},
      {with_quant(R"({"overrides": {"a/b": {}}})"), "/quant/overrides/a~1b: no layer named 'a/b'"},
      {R"({"model": {"input_shape": [3], "layers": [{"type": "dense", "units": 2}]}, "data": {"kind": "npy", "path": "/no/such.npy"}})",
       "/data/path: no such file"},
      {R"({"model": {"input_shape": [3], "layers": [{"type": "dense", "units": 2}]}, "sweep": {"/seed": [0, -1]}})",
       "/sweep/~1seed/1: /seed: expected a non-negative integer"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.text);
    const std::string message = error_of(c.text);
    CHECK(message.rfind(c.pointer, 0) == 0);
    if (message.rfind(c.pointer, 0) != 0) MESSAGE(message);
  }
}

TEST_CASE("experiment: a train section reads its two phases and needs labelled digits") {
  const std::string digits = R"({"model": {"input_shape": [8, 8], "layers": [{"type": "simple_rnn", "units": 4}]},
    "data": {"kind": "digits", "batch": 97, "calibration_batch": 200},
    "train": {"epochs": 3, "optimizer": {"kind": "adam", "lr": 0.002}, "lsq": true,
              "pretrain": {"epochs": 5, "batch_size": 16}}})";
  const auto c = parse_experiment(digits);
  REQUIRE(c.train.has_value());
  CHECK(c.train->fine_tune.epochs == 3);
  CHECK(c.train->fine_tune.batch_size == 32);           // each phase has its own defaults
  CHECK(c.train->fine_tune.optimizer.kind == qdrift::OptimizerKind::kAdam);
  CHECK(c.train->pretrain.epochs == 5);
  CHECK(c.train->pretrain.batch_size == 16);
  CHECK(c.train->pretrain.optimizer.kind == qdrift::OptimizerKind::kSgd);
  CHECK(c.train->lsq);
  CHECK(c.data.train_batch == 1797 - 97);                // the rows after the evaluation rows
  const std::string normalized = qdrift::to_json(c);
  CHECK(qdrift::to_json(parse_experiment(normalized)) == normalized);
  const std::string normal = R"({"model": {"input_shape": [3], "layers": [{"type": "dense", "units": 2}]},
    "train": {}})";
  CHECK(error_of(normal).rfind("/data/kind: ", 0) == 0);
}
