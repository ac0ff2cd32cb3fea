// SPDX-License-Identifier: Apache-2.0
// The experiment config reader: JSON text -> ExperimentConfig -> normalized JSON text. Built on
// the shared strict ObjectReader, so every error message starts with the JSON pointer at fault.
#include "qdrift/experiments/experiment.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>
#include <string>
#include <utility>

#include "qdrift/core/check.h"
#include "qdrift/core/json_reader.h"

namespace qdrift {
namespace {

using json::child_pointer;
using json::Json;
using json::NameTable;
using json::ObjectReader;
using json::name_of;
using json::type_name;

constexpr NameTable<LayerType, 8> kLayerTypes{{{LayerType::kDense, "dense"},
                                               {LayerType::kConv2D, "conv2d"},
                                               {LayerType::kDepthwiseConv2D, "depthwise_conv2d"},
                                               {LayerType::kSimpleRnn, "simple_rnn"},
                                               {LayerType::kBatchNormalization, "batch_normalization"},
                                               {LayerType::kActivation, "activation"},
                                               {LayerType::kFlatten, "flatten"},
                                               {LayerType::kReshape, "reshape"}}};
constexpr NameTable<Padding, 2> kPaddings{{{Padding::kValid, "valid"}, {Padding::kSame, "same"}}};
constexpr NameTable<Activation, 5> kActivations{{{Activation::kLinear, "linear"},
                                                 {Activation::kRelu, "relu"},
                                                 {Activation::kRelu6, "relu6"},
                                                 {Activation::kTanh, "tanh"},
                                                 {Activation::kSigmoid, "sigmoid"}}};
constexpr NameTable<Initializer, 5> kInitializers{{{Initializer::kGlorotUniform, "glorot_uniform"},
                                                   {Initializer::kHeNormal, "he_normal"},
                                                   {Initializer::kOrthogonal, "orthogonal"},
                                                   {Initializer::kZeros, "zeros"},
                                                   {Initializer::kOnes, "ones"}}};
constexpr NameTable<DataKind, 6> kDataKinds{{{DataKind::kNormal, "normal"},
                                             {DataKind::kUniform, "uniform"},
                                             {DataKind::kConstant, "constant"},
                                             {DataKind::kNpy, "npy"},
                                             {DataKind::kNpz, "npz"},
                                             {DataKind::kDigits, "digits"}}};
constexpr NameTable<Profile, 5> kProfiles{{{Profile::kFake, "fake"},
                                           {Profile::kTfliteInt8, "tflite_int8"},
                                           {Profile::kTfliteInt16x8, "tflite_int16x8"},
                                           {Profile::kTfliteDynamic, "tflite_dynamic"},
                                           {Profile::kTfliteFp16, "tflite_fp16"}}};
constexpr NameTable<Kernels, 3> kKernels{{{Kernels::kReference, "reference"},
                                          {Kernels::kBuiltin, "builtin"},
                                          {Kernels::kXnnpack, "xnnpack"}}};
constexpr NameTable<QuantPoint, 4> kPoints{{{QuantPoint::kWeights, "weights"},
                                            {QuantPoint::kActivations, "activations"},
                                            {QuantPoint::kBias, "bias"},
                                            {QuantPoint::kState, "state"}}};
constexpr NameTable<Metric, 7> kMetrics{{{Metric::kSqnrDb, "sqnr_db"},
                                         {Metric::kMse, "mse"},
                                         {Metric::kMaxAbs, "max_abs"},
                                         {Metric::kRmse, "rmse"},
                                         {Metric::kMeanAbs, "mean_abs"},
                                         {Metric::kCosine, "cosine"},
                                         {Metric::kRelL2, "rel_l2"}}};
constexpr NameTable<Loss, 2> kLosses{{{Loss::kMse, "mse"}, {Loss::kCrossEntropy, "cross_entropy"}}};
constexpr NameTable<OptimizerKind, 2> kOptimizers{{{OptimizerKind::kSgd, "sgd"}, {OptimizerKind::kAdam, "adam"}}};
constexpr NameTable<TrainArm, 2> kArms{{{TrainArm::kPtq, "ptq"}, {TrainArm::kQat, "qat"}}};

// Weights a layer type owns (the names qd.Sequential uses in "layer/weight").
std::vector<std::string> weight_names(const LayerConfig& l) {
  switch (l.type) {
    case LayerType::kDense:
    case LayerType::kConv2D:
      return l.use_bias ? std::vector<std::string>{"kernel", "bias"} : std::vector<std::string>{"kernel"};
    case LayerType::kDepthwiseConv2D:
      return l.use_bias ? std::vector<std::string>{"depthwise_kernel", "bias"}
                        : std::vector<std::string>{"depthwise_kernel"};
    case LayerType::kSimpleRnn:
      return l.use_bias ? std::vector<std::string>{"kernel", "recurrent_kernel", "bias"}
                        : std::vector<std::string>{"kernel", "recurrent_kernel"};
    case LayerType::kBatchNormalization:
      return {"gamma", "beta", "moving_mean", "moving_variance"};
    default:
      return {};
  }
}

int read_positive(ObjectReader& r, const char* key, int* out, bool required) {
  if (required) r.require(key);
  r.read(key, out);
  QDRIFT_CHECK(*out >= 1, ConfigError, r.where(key), ": must be >= 1, got ", *out);
  return *out;
}

// A positive int or a list of positive ints of length `n` (n == 0: any length >= 1).
std::vector<int> read_int_list(const Json& v, const std::string& where, std::size_t n, bool allow_scalar) {
  std::vector<int> out;
  if (allow_scalar && v.is_number_integer()) {
    QDRIFT_CHECK(v.is_number_unsigned() && v.get<std::uint64_t>() >= 1 && v.get<std::uint64_t>() <= 1u << 20,
                 ConfigError, where, ": must be an integer in [1, 2^20], got ", v.dump());
    return std::vector<int>(n, v.get<int>());
  }
  QDRIFT_CHECK(v.is_array(), ConfigError, where, ": expected ", allow_scalar ? "an integer or " : "",
               "an array of integers, got ", type_name(v));
  QDRIFT_CHECK(n == 0 ? !v.empty() : v.size() == n, ConfigError, where, ": expected ",
               n == 0 ? std::string("at least 1") : std::to_string(n), " integers, got ", v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    const std::string w = where + "/" + std::to_string(i);
    QDRIFT_CHECK(v[i].is_number_integer(), ConfigError, w, ": expected an integer, got ", type_name(v[i]));
    QDRIFT_CHECK(v[i].is_number_unsigned() && v[i].get<std::uint64_t>() >= 1 && v[i].get<std::uint64_t>() <= 1u << 20,
                 ConfigError, w, ": must be an integer in [1, 2^20], got ", v[i].dump());
    out.push_back(v[i].get<int>());
  }
  return out;
}

void read_pair(ObjectReader& r, const char* key, std::array<int, 2>* out, bool required) {
  const Json* v = required ? &r.require(key) : r.take(key);
  if (v == nullptr) return;
  const auto list = read_int_list(*v, r.where(key), 2, true);
  *out = {list[0], list[1]};
}

LayerConfig read_layer(const Json& j, const std::string& where, std::size_t index) {
  LayerConfig l;
  ObjectReader r(j, where);
  r.require("type");
  r.read_enum("type", kLayerTypes, &l.type);
  l.name = std::string(name_of(kLayerTypes, l.type)) + "_" + std::to_string(index);
  r.read("name", &l.name);
  QDRIFT_CHECK(!l.name.empty() && l.name.find('/') == std::string::npos, ConfigError, r.where("name"),
               ": a layer name must be non-empty and contain no '/', got '", l.name, "'");
  switch (l.type) {
    case LayerType::kDense:
      read_positive(r, "units", &l.units, true);
      r.read_enum("activation", kActivations, &l.activation);
      r.read("use_bias", &l.use_bias);
      break;
    case LayerType::kConv2D:
    case LayerType::kDepthwiseConv2D:
      if (l.type == LayerType::kConv2D) {
        read_positive(r, "filters", &l.filters, true);
        read_positive(r, "groups", &l.groups, false);
        QDRIFT_CHECK(l.filters % l.groups == 0, ConfigError, r.where("groups"), ": groups (", l.groups,
                     ") must divide filters (", l.filters, ")");
      } else {
        read_positive(r, "depth_multiplier", &l.depth_multiplier, false);
      }
      read_pair(r, "kernel_size", &l.kernel_size, true);
      read_pair(r, "strides", &l.strides, false);
      read_pair(r, "dilation_rate", &l.dilation_rate, false);
      r.read_enum("padding", kPaddings, &l.padding);
      r.read_enum("activation", kActivations, &l.activation);
      r.read("use_bias", &l.use_bias);
      break;
    case LayerType::kSimpleRnn:
      read_positive(r, "units", &l.units, true);
      l.activation = Activation::kTanh;
      r.read_enum("activation", kActivations, &l.activation);
      r.read("use_bias", &l.use_bias);
      r.read("return_sequences", &l.return_sequences);
      r.read("go_backwards", &l.go_backwards);
      break;
    case LayerType::kBatchNormalization:
      r.read("epsilon", &l.epsilon);
      QDRIFT_CHECK(l.epsilon > 0.0, ConfigError, r.where("epsilon"), ": must be > 0, got ", l.epsilon);
      break;
    case LayerType::kActivation:
      r.require("activation");
      r.read_enum("activation", kActivations, &l.activation);
      break;
    case LayerType::kFlatten:
      break;
    case LayerType::kReshape:
      l.target_shape = read_int_list(r.require("target_shape"), r.where("target_shape"), 0, false);
      break;
  }
  r.finish();
  return l;
}

ModelConfig read_model(const Json& j, const std::string& where) {
  ModelConfig m;
  ObjectReader r(j, where);
  m.input_shape = read_int_list(r.require("input_shape"), r.where("input_shape"), 0, false);
  const Json& layers = r.require("layers");
  QDRIFT_CHECK(layers.is_array() && !layers.empty(), ConfigError, r.where("layers"),
               ": expected a non-empty array of layers, got ", layers.is_array() ? "an empty array" : type_name(layers));
  std::set<std::string> names;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const std::string w = r.where("layers") + "/" + std::to_string(i);
    m.layers.push_back(read_layer(layers[i], w, i));
    QDRIFT_CHECK(names.insert(m.layers.back().name).second, ConfigError, w, "/name: duplicate layer name '",
                 m.layers.back().name, "'");
  }
  if (const Json* init = r.take("init")) {
    ObjectReader ri(*init, r.where("init"));
    ri.read_enum("kernel", kInitializers, &m.init.kernel);
    ri.read_enum("recurrent", kInitializers, &m.init.recurrent);
    ri.read_enum("bias", kInitializers, &m.init.bias);
    ri.finish();
  }
  if (const Json* weights = r.take("weights")) {
    ObjectReader rw(*weights, r.where("weights"));  // checks it is an object
    for (auto it = weights->begin(); it != weights->end(); ++it) {
      const std::string w = rw.where(it.key());
      const auto slash = it.key().find('/');
      QDRIFT_CHECK(slash != std::string::npos, ConfigError, w, ": expected a key 'layer/weight', got '", it.key(), "'");
      const std::string layer = it.key().substr(0, slash), weight = it.key().substr(slash + 1);
      const LayerConfig* found = nullptr;
      for (const auto& l : m.layers) found = l.name == layer ? &l : found;
      QDRIFT_CHECK(found != nullptr, ConfigError, w, ": no layer named '", layer, "'");
      bool known = false;
      std::string expected;
      for (const auto& n : weight_names(*found)) {
        known = known || n == weight;
        expected += (expected.empty() ? "" : ", ") + n;
      }
      QDRIFT_CHECK(known, ConfigError, w, ": layer '", layer, "' has no weight '", weight, "'; it has ",
                   expected.empty() ? "none" : expected);
      rw.read(it.key().c_str(), &m.weights[it.key()]);
      QDRIFT_CHECK(std::isfinite(m.weights[it.key()]), ConfigError, w, ": must be finite");
    }
    rw.finish();
  }
  r.finish();
  return m;
}

DataConfig read_data(const Json& j, const std::string& where, std::string_view base_dir) {
  DataConfig d;
  ObjectReader r(j, where);
  r.read_enum("kind", kDataKinds, &d.kind);
  read_positive(r, "batch", &d.batch, false);
  d.calibration_batch = d.batch;
  read_positive(r, "calibration_batch", &d.calibration_batch, false);
  std::uint64_t seed = 0;
  if (r.take("seed") != nullptr) {
    r.read("seed", &seed);
    d.seed = seed;
  }
  switch (d.kind) {
    case DataKind::kNormal:
      r.read("mean", &d.mean);
      r.read("std", &d.std);
      QDRIFT_CHECK(std::isfinite(d.mean), ConfigError, r.where("mean"), ": must be finite");
      QDRIFT_CHECK(std::isfinite(d.std) && d.std > 0.0, ConfigError, r.where("std"), ": must be > 0, got ", d.std);
      break;
    case DataKind::kUniform:
      r.read("low", &d.low);
      r.read("high", &d.high);
      QDRIFT_CHECK(std::isfinite(d.low) && std::isfinite(d.high) && d.low < d.high, ConfigError, r.where("high"),
                   ": need finite low < high, got [", d.low, ", ", d.high, "]");
      break;
    case DataKind::kConstant:
      r.read("value", &d.value);
      QDRIFT_CHECK(std::isfinite(d.value), ConfigError, r.where("value"), ": must be finite");
      break;
    case DataKind::kNpy:
    case DataKind::kNpz: {
      r.require("path");
      r.read("path", &d.path);
      if (d.kind == DataKind::kNpz) {
        r.read("key", &d.key);
        QDRIFT_CHECK(!d.key.empty(), ConfigError, r.where("key"), ": must be non-empty");
      }
      const std::string ext = d.kind == DataKind::kNpy ? ".npy" : ".npz";
      QDRIFT_CHECK(d.path.size() > ext.size() && d.path.compare(d.path.size() - ext.size(), ext.size(), ext) == 0,
                   ConfigError, r.where("path"), ": a '", name_of(kDataKinds, d.kind), "' file must end in ", ext,
                   ", got '", d.path, "'");
      QDRIFT_CHECK(d.path.find('\0') == std::string::npos, ConfigError, r.where("path"), ": contains a NUL byte");
      std::filesystem::path p(d.path);
      if (p.is_relative() && !base_dir.empty()) p = std::filesystem::path(std::string(base_dir)) / p;
      d.path = p.lexically_normal().string();
      std::error_code ec;
      QDRIFT_CHECK(std::filesystem::is_regular_file(p, ec), ConfigError, r.where("path"), ": no such file '",
                   d.path, "'");
      break;
    }
    case DataKind::kDigits:
      QDRIFT_CHECK(d.batch <= 1797, ConfigError, r.where("batch"), ": the digits dataset has 1797 samples, got ",
                   d.batch);
      QDRIFT_CHECK(d.calibration_batch <= 1797, ConfigError, r.where("calibration_batch"),
                   ": the digits dataset has 1797 samples, got ", d.calibration_batch);
      d.train_batch = 1797 - d.batch;
      if (r.take("train_batch") != nullptr) read_positive(r, "train_batch", &d.train_batch, false);
      QDRIFT_CHECK(d.batch + d.train_batch <= 1797, ConfigError, r.where("train_batch"),
                   ": training rows must not overlap the ", d.batch, " evaluation rows of the 1797 samples, got ",
                   d.train_batch);
      break;
  }
  r.finish();
  return d;
}

std::optional<QuantSpec> read_spec(const Json& v, const std::string& where) {
  if (v.is_null()) return std::nullopt;
  return parse_quant_spec(v.dump(), where);
}

QuantConfig read_quant(const Json& j, const std::string& where, const ModelConfig& model) {
  QuantConfig q;
  ObjectReader r(j, where);
  r.read_enum("profile", kProfiles, &q.profile);
  if (q.profile == Profile::kFake) {
    std::optional<QuantSpec>* points[] = {&q.weights, &q.activations, &q.bias, &q.state};
    for (std::size_t i = 0; i < kPoints.size(); ++i) {
      const char* key = kPoints[i].second.data();
      if (const Json* v = r.take(key)) *points[i] = read_spec(*v, r.where(key));
    }
    if (const Json* over = r.take("overrides")) {
      ObjectReader ro(*over, r.where("overrides"));
      for (auto it = over->begin(); it != over->end(); ++it) {
        const std::string w = ro.where(it.key());
        bool known = false;
        for (const auto& l : model.layers) known = known || l.name == it.key();
        QDRIFT_CHECK(known, ConfigError, w, ": no layer named '", it.key(), "'");
        ro.take(it.key().c_str());
        ObjectReader rp(it.value(), w);
        auto& layer = q.overrides[it.key()];
        for (const auto& [point, name] : kPoints) {
          const std::string key(name);
          if (const Json* v = rp.take(key.c_str())) layer[point] = read_spec(*v, rp.where(key));
        }
        rp.finish();
      }
      ro.finish();
    }
    r.read("fold_batch_norm", &q.fold_batch_norm);
  } else {
    r.read_enum("kernels", kKernels, &q.kernels);
  }
  r.finish();
  return q;
}

template <class E, std::size_t N>
std::vector<E> read_enum_list(const Json& v, const std::string& where, const NameTable<E, N>& table) {
  QDRIFT_CHECK(v.is_array() && !v.empty(), ConfigError, where, ": expected a non-empty array, got ",
               v.is_array() ? "an empty array" : type_name(v));
  std::vector<E> out;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const std::string w = where + "/" + std::to_string(i);
    const E e = ObjectReader::parse_enum(v[i], table, w);
    for (E seen : out) QDRIFT_CHECK(seen != e, ConfigError, w, ": '", name_of(table, e), "' appears twice");
    out.push_back(e);
  }
  return out;
}

AnalysisConfig read_analysis(const Json& j, const std::string& where) {
  AnalysisConfig a;
  ObjectReader r(j, where);
  if (const Json* v = r.take("metrics")) a.metrics = read_enum_list(*v, r.where("metrics"), kMetrics);
  r.read("isolated", &a.isolated);
  r.read("per_timestep", &a.per_timestep);
  r.read("attribution", &a.attribution);
  r.read("predict", &a.predict);
  r.finish();
  return a;
}

// epochs, batch_size and optimizer of one phase, read from `r` (the caller finishes it).
void read_phase(ObjectReader& r, PhaseConfig* p) {
  read_positive(r, "epochs", &p->epochs, false);
  read_positive(r, "batch_size", &p->batch_size, false);
  if (const Json* v = r.take("optimizer")) {
    ObjectReader ro(*v, r.where("optimizer"));
    auto& o = p->optimizer;
    ro.read_enum("kind", kOptimizers, &o.kind);
    ro.read("lr", &o.lr);
    ro.read("momentum", &o.momentum);
    ro.read("weight_decay", &o.weight_decay);
    ro.finish();
    QDRIFT_CHECK(std::isfinite(o.lr) && o.lr > 0.0, ConfigError, ro.where("lr"), ": must be > 0, got ", o.lr);
    QDRIFT_CHECK(o.momentum >= 0.0 && o.momentum < 1.0, ConfigError, ro.where("momentum"),
                 ": must be in [0, 1), got ", o.momentum);
    QDRIFT_CHECK(std::isfinite(o.weight_decay) && o.weight_decay >= 0.0, ConfigError, ro.where("weight_decay"),
                 ": must be >= 0, got ", o.weight_decay);
    QDRIFT_CHECK(o.kind == OptimizerKind::kSgd || o.momentum == 0.0, ConfigError, ro.where("momentum"),
                 ": only sgd has momentum (adam keeps its own moment estimates)");
  }
}

TrainConfig read_train(const Json& j, const std::string& where) {
  TrainConfig t;
  ObjectReader r(j, where);
  read_phase(r, &t.fine_tune);
  if (const Json* v = r.take("pretrain")) {
    ObjectReader rp(*v, r.where("pretrain"));
    read_phase(rp, &t.pretrain);
    rp.finish();
  }
  r.read_enum("loss", kLosses, &t.loss);
  r.read("lsq", &t.lsq);
  if (const Json* v = r.take("arms")) t.arms = read_enum_list(*v, r.where("arms"), kArms);
  r.finish();
  return t;
}

// RFC 6901 reference tokens of `pointer` (which must start with '/'); ConfigError at `where`.
std::vector<std::string> pointer_tokens(const std::string& pointer, const std::string& where) {
  QDRIFT_CHECK(!pointer.empty() && pointer[0] == '/', ConfigError, where, ": a sweep key must be a JSON pointer "
               "starting with '/', got '", pointer, "'");
  std::vector<std::string> tokens(1);
  for (std::size_t i = 1; i < pointer.size(); ++i) {
    const char c = pointer[i];
    if (c == '/') {
      tokens.emplace_back();
    } else if (c == '~') {
      const char next = i + 1 < pointer.size() ? pointer[i + 1] : '\0';
      QDRIFT_CHECK(next == '0' || next == '1', ConfigError, where, ": '~' must be followed by 0 or 1 in the "
                   "JSON pointer '", pointer, "'");
      tokens.back() += next == '0' ? '~' : '/';
      ++i;
    } else {
      tokens.back() += c;
    }
  }
  return tokens;
}

// Sets `pointer` in `root` to `value`, creating missing objects on the way.
void set_pointer(Json& root, const std::string& pointer, const Json& value, const std::string& where) {
  const auto tokens = pointer_tokens(pointer, where);
  QDRIFT_CHECK(tokens[0] != "sweep", ConfigError, where, ": a sweep cannot change the sweep itself");
  Json* cur = &root;
  std::string at;
  for (std::size_t t = 0; t < tokens.size(); ++t) {
    const std::string& tok = tokens[t];
    const bool last = t + 1 == tokens.size();
    // A section the config leaves out is null once normalized (e.g. "state"): a sweep into it
    // creates it, so a normalized config reads back as the original did.
    if (cur->is_null() && t > 0) *cur = Json::object();
    if (cur->is_object()) {
      if (last) {
        (*cur)[tok] = value;
        return;
      }
      if (!cur->contains(tok)) (*cur)[tok] = Json::object();
      cur = &(*cur)[tok];
    } else if (cur->is_array()) {
      bool digits = !tok.empty() && tok.size() <= 9 && (tok == "0" || tok[0] != '0');
      for (char c : tok) digits = digits && c >= '0' && c <= '9';
      QDRIFT_CHECK(digits && std::stoul(tok) < cur->size(), ConfigError, where, ": '", tok,
                   "' is not an index of the array at ", json::display_pointer(at), " (size ", cur->size(), ")");
      const std::size_t i = std::stoul(tok);
      if (last) {
        (*cur)[i] = value;
        return;
      }
      cur = &(*cur)[i];
    } else {
      throw ConfigError(where + ": cannot set '" + pointer + "': " + json::display_pointer(at) + " is " +
                        type_name(*cur) + ", not an object or array");
    }
    at += "/" + json::escape_token(tok);
  }
}

Json parse_text(std::string_view text) {
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const Json::exception& e) {   // parse_error, and out_of_range for a number like 1e999
    throw ConfigError(std::string("/: invalid JSON: ") + e.what());
  }
}

ExperimentConfig read_experiment(const Json& j, std::string_view base_dir, bool allow_sweep) {
  ExperimentConfig c;
  ObjectReader r(j, "");
  r.read("format_version", &c.format_version);
  QDRIFT_CHECK(c.format_version == 1, ConfigError, r.where("format_version"), ": only format_version 1 exists, got ",
               c.format_version);
  r.read("name", &c.name);
  QDRIFT_CHECK(!c.name.empty(), ConfigError, r.where("name"), ": must be non-empty");
  r.read("seed", &c.seed);
  c.model = read_model(r.require("model"), r.where("model"));
  if (const Json* v = r.take("data")) c.data = read_data(*v, r.where("data"), base_dir);
  if (!c.data.seed) c.data.seed = c.seed;
  if (const Json* v = r.take("quant")) c.quant = read_quant(*v, r.where("quant"), c.model);
  if (const Json* v = r.take("analysis")) c.analysis = read_analysis(*v, r.where("analysis"));
  if (const Json* v = r.take("train")) {
    c.train = read_train(*v, r.where("train"));
    // Training needs labels and held-out evaluation rows; calibration comes from the training rows.
    QDRIFT_CHECK(c.data.kind == DataKind::kDigits, ConfigError, r.where("data") + "/kind",
                 ": /train needs labelled data, and 'digits' is the only kind with labels; got '",
                 name_of(kDataKinds, c.data.kind), "'");
    QDRIFT_CHECK(c.quant.profile == Profile::kFake, ConfigError, r.where("quant") + "/profile",
                 ": /train needs the 'fake' profile (QAT trains fake quantizers), got '",
                 name_of(kProfiles, c.quant.profile), "'");
    QDRIFT_CHECK(c.data.calibration_batch <= c.data.train_batch, ConfigError, r.where("data") + "/calibration_batch",
                 ": with /train, calibration rows are training rows, so at most /data/train_batch (",
                 c.data.train_batch, "), got ", c.data.calibration_batch);
  }
  if (allow_sweep) {
    if (const Json* grid = r.take("sweep")) {
      ObjectReader rs(*grid, r.where("sweep"));
      Json base = j;
      base.erase("sweep");
      std::vector<std::vector<std::string>> seen;
      for (auto it = grid->begin(); it != grid->end(); ++it) {
        const std::string w = rs.where(it.key());
        rs.take(it.key().c_str());
        const auto tokens = pointer_tokens(it.key(), w);
        for (const auto& other : seen) {
          const std::size_t n = std::min(other.size(), tokens.size());
          QDRIFT_CHECK(!std::equal(other.begin(), other.begin() + static_cast<std::ptrdiff_t>(n), tokens.begin()),
                       ConfigError, w, ": overlaps another sweep key (one contains the other)");
        }
        seen.push_back(tokens);
        QDRIFT_CHECK(it.value().is_array() && !it.value().empty(), ConfigError, w,
                     ": expected a non-empty array of values, got ",
                     it.value().is_array() ? "an empty array" : type_name(it.value()));
        auto& values = c.sweep[it.key()];
        for (std::size_t i = 0; i < it.value().size(); ++i) {
          const std::string wi = w + "/" + std::to_string(i);
          Json point = base;
          set_pointer(point, it.key(), it.value()[i], wi);
          try {
            read_experiment(point, base_dir, false);
          } catch (const ConfigError& e) {
            throw ConfigError(wi + ": " + e.what());
          }
          values.push_back(it.value()[i].dump());
        }
      }
      rs.finish();
    }
  }
  r.finish();
  return c;
}

Json spec_json(const std::optional<QuantSpec>& s) {
  return s ? Json::parse(to_json(*s)) : Json(nullptr);
}

Json layer_json(const LayerConfig& l) {
  Json j;
  j["type"] = name_of(kLayerTypes, l.type);
  j["name"] = l.name;
  auto pair = [](const std::array<int, 2>& p) { return Json::array({p[0], p[1]}); };
  switch (l.type) {
    case LayerType::kDense:
      j["units"] = l.units;
      j["activation"] = name_of(kActivations, l.activation);
      j["use_bias"] = l.use_bias;
      break;
    case LayerType::kConv2D:
    case LayerType::kDepthwiseConv2D:
      if (l.type == LayerType::kConv2D) {
        j["filters"] = l.filters;
        j["groups"] = l.groups;
      } else {
        j["depth_multiplier"] = l.depth_multiplier;
      }
      j["kernel_size"] = pair(l.kernel_size);
      j["strides"] = pair(l.strides);
      j["dilation_rate"] = pair(l.dilation_rate);
      j["padding"] = name_of(kPaddings, l.padding);
      j["activation"] = name_of(kActivations, l.activation);
      j["use_bias"] = l.use_bias;
      break;
    case LayerType::kSimpleRnn:
      j["units"] = l.units;
      j["activation"] = name_of(kActivations, l.activation);
      j["use_bias"] = l.use_bias;
      j["return_sequences"] = l.return_sequences;
      j["go_backwards"] = l.go_backwards;
      break;
    case LayerType::kBatchNormalization:
      j["epsilon"] = l.epsilon;
      break;
    case LayerType::kActivation:
      j["activation"] = name_of(kActivations, l.activation);
      break;
    case LayerType::kFlatten:
      break;
    case LayerType::kReshape:
      j["target_shape"] = l.target_shape;
      break;
  }
  return j;
}

template <class E, std::size_t N>
Json enum_list_json(const std::vector<E>& values, const NameTable<E, N>& table) {
  Json j = Json::array();
  for (E e : values) j.push_back(name_of(table, e));
  return j;
}

}  // namespace

QuantSpec default_weight_spec() {
  QuantSpec s;
  s.symmetric = true;
  s.narrow_range = true;
  s.granularity = Granularity::kPerChannel;
  return s;
}

QuantSpec default_activation_spec() { return QuantSpec{}; }

ExperimentConfig parse_experiment(std::string_view json_text, std::string_view base_dir) {
  return read_experiment(parse_text(json_text), base_dir, true);
}

ExperimentConfig experiment_point(std::string_view json_text, std::string_view overrides_json,
                                  std::string_view base_dir) {
  Json j = parse_text(json_text);
  QDRIFT_CHECK(j.is_object(), ConfigError, "/: expected an object, got ", type_name(j));
  j.erase("sweep");
  const Json overrides = parse_text(overrides_json);
  QDRIFT_CHECK(overrides.is_object(), ConfigError, "sweep point: expected an object of JSON pointer -> value, got ",
               type_name(overrides));
  for (auto it = overrides.begin(); it != overrides.end(); ++it)
    set_pointer(j, it.key(), it.value(), child_pointer("/sweep", it.key()));
  try {
    return read_experiment(j, base_dir, false);
  } catch (const ConfigError& e) {
    if (overrides.empty()) throw;
    throw ConfigError(std::string(e.what()) + " (in sweep point " + overrides.dump() + ")");
  }
}

std::string to_json(const ExperimentConfig& c) {
  Json j;
  j["format_version"] = c.format_version;
  j["name"] = c.name;
  j["seed"] = c.seed;

  Json& m = j["model"];
  m["input_shape"] = c.model.input_shape;
  m["layers"] = Json::array();
  for (const auto& l : c.model.layers) m["layers"].push_back(layer_json(l));
  m["init"] = {{"kernel", name_of(kInitializers, c.model.init.kernel)},
               {"recurrent", name_of(kInitializers, c.model.init.recurrent)},
               {"bias", name_of(kInitializers, c.model.init.bias)}};
  m["weights"] = Json::object();
  for (const auto& [k, v] : c.model.weights) m["weights"][k] = v;

  const DataConfig& d = c.data;
  Json& dj = j["data"];
  dj["kind"] = name_of(kDataKinds, d.kind);
  dj["batch"] = d.batch;
  dj["calibration_batch"] = d.calibration_batch;
  dj["seed"] = d.seed.value_or(c.seed);
  switch (d.kind) {
    case DataKind::kNormal: dj["mean"] = d.mean; dj["std"] = d.std; break;
    case DataKind::kUniform: dj["low"] = d.low; dj["high"] = d.high; break;
    case DataKind::kConstant: dj["value"] = d.value; break;
    case DataKind::kNpy: dj["path"] = d.path; break;
    case DataKind::kNpz: dj["path"] = d.path; dj["key"] = d.key; break;
    case DataKind::kDigits: dj["train_batch"] = d.train_batch; break;
  }

  const QuantConfig& q = c.quant;
  Json& qj = j["quant"];
  qj["profile"] = name_of(kProfiles, q.profile);
  if (q.profile == Profile::kFake) {
    qj["weights"] = spec_json(q.weights);
    qj["activations"] = spec_json(q.activations);
    qj["bias"] = spec_json(q.bias);
    qj["state"] = spec_json(q.state);
    qj["overrides"] = Json::object();
    for (const auto& [layer, points] : q.overrides) {
      Json& lj = qj["overrides"][layer];
      lj = Json::object();
      for (const auto& [point, spec] : points) lj[std::string(name_of(kPoints, point))] = spec_json(spec);
    }
    qj["fold_batch_norm"] = q.fold_batch_norm;
  } else {
    qj["kernels"] = name_of(kKernels, q.kernels);
  }

  const AnalysisConfig& a = c.analysis;
  j["analysis"] = {{"metrics", enum_list_json(a.metrics, kMetrics)},
                   {"isolated", a.isolated},
                   {"per_timestep", a.per_timestep},
                   {"attribution", a.attribution},
                   {"predict", a.predict}};

  if (c.train) {
    const TrainConfig& t = *c.train;
    auto phase = [](const PhaseConfig& p) {
      return Json{{"epochs", p.epochs},
                  {"batch_size", p.batch_size},
                  {"optimizer", {{"kind", name_of(kOptimizers, p.optimizer.kind)},
                                 {"lr", p.optimizer.lr},
                                 {"momentum", p.optimizer.momentum},
                                 {"weight_decay", p.optimizer.weight_decay}}}};
    };
    Json& tj = j["train"];
    tj = phase(t.fine_tune);
    tj["pretrain"] = phase(t.pretrain);
    tj["loss"] = name_of(kLosses, t.loss);
    tj["lsq"] = t.lsq;
    tj["arms"] = enum_list_json(t.arms, kArms);
  }

  Json& s = j["sweep"];
  s = Json::object();
  for (const auto& [pointer, values] : c.sweep) {
    s[pointer] = Json::array();
    for (const auto& v : values) s[pointer].push_back(Json::parse(v));
  }
  return j.dump();
}

}  // namespace qdrift
