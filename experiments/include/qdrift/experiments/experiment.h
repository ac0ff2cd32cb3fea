// SPDX-License-Identifier: Apache-2.0
// An experiment config (DESIGN.md §5) as plain data with its defaults, and the strict reader
// that turns JSON text into it. No JSON types here: nlohmann-json stays private to the reader.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qdrift/quantizers/quant_spec.h"

namespace qdrift {

enum class LayerType : std::uint8_t {
  kDense, kConv2D, kDepthwiseConv2D, kSimpleRnn, kBatchNormalization, kActivation, kFlatten, kReshape
};
enum class Padding : std::uint8_t { kValid, kSame };
enum class Activation : std::uint8_t { kLinear, kRelu, kRelu6, kTanh, kSigmoid };
enum class Initializer : std::uint8_t { kGlorotUniform, kHeNormal, kOrthogonal, kZeros, kOnes };

// One layer; only the fields of its type are read and written (others are unknown keys).
struct LayerConfig {
  LayerType type = LayerType::kDense;
  std::string name;                       // default "<type>_<index>", qd.Sequential's rule
  int units = 0;                          // dense, simple_rnn: required, >= 1
  int filters = 0;                        // conv2d: required, >= 1
  std::array<int, 2> kernel_size{0, 0};   // conv2d, depthwise_conv2d: required (int or pair)
  std::array<int, 2> strides{1, 1};
  std::array<int, 2> dilation_rate{1, 1};
  Padding padding = Padding::kValid;
  int groups = 1;                         // conv2d
  int depth_multiplier = 1;               // depthwise_conv2d
  Activation activation = Activation::kLinear;  // simple_rnn defaults to tanh; activation: required
  bool use_bias = true;
  bool return_sequences = false;          // simple_rnn
  bool go_backwards = false;              // simple_rnn
  double epsilon = 1e-3;                  // batch_normalization
  std::vector<int> target_shape;          // reshape: required
};

struct InitConfig {
  Initializer kernel = Initializer::kGlorotUniform;     // kernels and depthwise kernels
  Initializer recurrent = Initializer::kOrthogonal;     // recurrent kernels
  Initializer bias = Initializer::kZeros;
};

struct ModelConfig {
  std::vector<int> input_shape;           // required, without the batch axis
  std::vector<LayerConfig> layers;        // required, non-empty
  InitConfig init;
  std::map<std::string, double> weights;  // "layer/weight" -> fill value (after initialization)
};

enum class DataKind : std::uint8_t { kNormal, kUniform, kConstant, kNpy, kNpz, kDigits };

struct DataConfig {
  DataKind kind = DataKind::kNormal;
  int batch = 32;                   // evaluation samples
  int calibration_batch = 32;       // calibration samples; the reader's default is `batch`
  int train_batch = 0;              // digits: training samples; the reader's default is 1797 - batch
  std::optional<std::uint64_t> seed;  // default: the experiment's seed
  double mean = 0.0, std = 1.0;     // normal
  double low = -1.0, high = 1.0;    // uniform
  double value = 1.0;               // constant
  std::string path;                 // npy, npz: required, relative to the config's folder
  std::string key = "x";            // npz: the array's name
};

enum class Profile : std::uint8_t { kFake, kTfliteInt8, kTfliteInt16x8, kTfliteDynamic, kTfliteFp16 };
enum class Kernels : std::uint8_t { kReference, kBuiltin, kXnnpack };
enum class QuantPoint : std::uint8_t { kWeights, kActivations, kBias, kState };

// QuantConfig's defaults (python/qdrift/model.py); std::nullopt keeps a point in float.
QuantSpec default_weight_spec();
QuantSpec default_activation_spec();

struct QuantConfig {
  Profile profile = Profile::kFake;
  // profile "fake":
  std::optional<QuantSpec> weights = default_weight_spec();
  std::optional<QuantSpec> activations = default_activation_spec();
  std::optional<QuantSpec> bias;
  std::optional<QuantSpec> state;
  std::map<std::string, std::map<QuantPoint, std::optional<QuantSpec>>> overrides;
  bool fold_batch_norm = true;
  // tflite_* profiles:
  Kernels kernels = Kernels::kReference;
};

// qd.compare's metrics (python/qdrift/analysis.py METRICS).
enum class Metric : std::uint8_t { kSqnrDb, kMse, kMaxAbs, kRmse, kMeanAbs, kCosine, kRelL2 };

struct AnalysisConfig {
  std::vector<Metric> metrics{Metric::kSqnrDb, Metric::kMse, Metric::kMaxAbs};
  bool isolated = true;
  bool per_timestep = true;
  bool attribution = false;
  bool predict = false;
};

enum class Loss : std::uint8_t { kMse, kCrossEntropy };
enum class OptimizerKind : std::uint8_t { kSgd, kAdam };
enum class TrainArm : std::uint8_t { kPtq, kQat };

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::kSgd;
  double lr = 0.01;
  double momentum = 0.0;      // [0, 1)
  double weight_decay = 0.0;  // >= 0
};

// One training phase: minibatch epochs with an optimizer (qd.Sequential.fit).
struct PhaseConfig {
  int epochs = 1;
  int batch_size = 32;
  OptimizerConfig optimizer;
};

// PTQ vs QAT: pretrain the float model, then give every arm the same fine-tuning budget.
struct TrainConfig {
  PhaseConfig pretrain;       // the float model, before the arms (/train/pretrain)
  PhaseConfig fine_tune;      // each arm: float and QAT train, PTQ quantizes the float arm (/train itself)
  Loss loss = Loss::kMse;     // both phases; mse targets are one-hot labels
  bool lsq = false;           // QAT arm: learn the quantizers' scales and zero points
  std::vector<TrainArm> arms{TrainArm::kPtq, TrainArm::kQat};
};

struct ExperimentConfig {
  int format_version = 1;
  std::string name = "experiment";
  std::uint64_t seed = 0;
  ModelConfig model;
  DataConfig data;
  QuantConfig quant;
  AnalysisConfig analysis;
  std::optional<TrainConfig> train;
  // Sweep grid: JSON pointer -> the values it takes, each as JSON text. Points are the
  // Cartesian product, in key order.
  std::map<std::string, std::vector<std::string>> sweep;
};

// Strict reader: unknown keys, wrong types and bad values raise ConfigError whose message
// starts with the JSON pointer at fault. `base_dir` resolves relative data paths; every
// data file must exist. Every sweep value is applied on its own and validated, so a bad grid
// entry fails here (its pointer is /sweep/<escaped key>/<index>).
ExperimentConfig parse_experiment(std::string_view json_text, std::string_view base_dir = "");

// The normalized config: every key present, defaults filled, data paths resolved.
std::string to_json(const ExperimentConfig& config);

// One sweep point: `json_text` with its "sweep" removed and each pointer of `overrides_json`
// (an object pointer -> value) set, then read strictly. Missing objects on the way are
// created; array indices must exist.
ExperimentConfig experiment_point(std::string_view json_text, std::string_view overrides_json,
                                  std::string_view base_dir = "");

}  // namespace qdrift
