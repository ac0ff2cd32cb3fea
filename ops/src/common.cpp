// SPDX-License-Identifier: Apache-2.0
// Names, activations and batch normalization (shared by every layer).
#include <array>
#include <cmath>
#include <string>
#include <utility>

#include "qdrift/core/check.h"
#include "qdrift/ops/ops.h"

namespace qdrift {
namespace {
constexpr std::array<std::pair<Activation, std::string_view>, 5> kActivations{{
    {Activation::kLinear, "linear"},
    {Activation::kRelu, "relu"},
    {Activation::kRelu6, "relu6"},
    {Activation::kTanh, "tanh"},
    {Activation::kSigmoid, "sigmoid"},
}};
}  // namespace

std::string_view path_name(Path p) { return p == Path::kReference ? "reference" : "fast"; }

Path parse_path(std::string_view name) {
  if (name == "reference") return Path::kReference;
  if (name == "fast" || name == "auto") return Path::kFast;
  throw ConfigError("path: unknown path '" + std::string(name) + "'; expected one of reference, fast, auto");
}

std::string_view activation_name(Activation a) {
  for (const auto& [v, n] : kActivations)
    if (v == a) return n;
  return "?";
}

Activation parse_activation(std::string_view name) {
  if (name.empty() || name == "None") return Activation::kLinear;
  for (const auto& [v, n] : kActivations)
    if (n == name) return v;
  throw ConfigError("activation: unknown activation '" + std::string(name) +
                    "'; expected one of linear, relu, relu6, tanh, sigmoid");
}

Padding parse_padding(std::string_view name) {
  if (name == "valid") return Padding::kValid;
  if (name == "same") return Padding::kSame;
  throw ConfigError("padding: unknown padding '" + std::string(name) + "'; expected one of valid, same");
}

void apply_activation(Activation a, float* x, std::size_t n) {
  switch (a) {
    case Activation::kLinear: return;
    case Activation::kRelu:
      for (std::size_t i = 0; i < n; ++i) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
      return;
    case Activation::kRelu6:
      for (std::size_t i = 0; i < n; ++i) x[i] = x[i] > 0.0f ? (x[i] < 6.0f ? x[i] : 6.0f) : 0.0f;
      return;
    case Activation::kTanh:
      for (std::size_t i = 0; i < n; ++i) x[i] = std::tanh(x[i]);
      return;
    case Activation::kSigmoid:
      for (std::size_t i = 0; i < n; ++i) x[i] = 1.0f / (1.0f + std::exp(-x[i]));
      return;
  }
}

void batch_norm(const float* x, std::size_t n, std::size_t channels, const float* gamma, const float* beta,
                const float* mean, const float* var, float eps, float* y) {
  std::vector<float> inv(channels), shift(channels);
  for (std::size_t c = 0; c < channels; ++c) {
    inv[c] = gamma[c] / std::sqrt(var[c] + eps);
    shift[c] = beta[c] - mean[c] * inv[c];
  }
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t c = i % channels;
    y[i] = x[i] * inv[c] + shift[c];
  }
}

void fold_batch_norm(const float* kernel, std::size_t kernel_size, const float* bias, std::size_t channels,
                     const float* gamma, const float* beta, const float* mean, const float* var, float eps,
                     std::vector<float>* folded_kernel, std::vector<float>* folded_bias) {
  QDRIFT_CHECK(channels > 0 && kernel_size % channels == 0, ShapeError, "fold_batch_norm: a kernel of ",
               kernel_size, " values does not end in ", channels, " output channels");
  std::vector<float> mult(channels);
  for (std::size_t c = 0; c < channels; ++c) mult[c] = gamma[c] / std::sqrt(var[c] + eps);
  folded_kernel->resize(kernel_size);
  for (std::size_t i = 0; i < kernel_size; ++i) (*folded_kernel)[i] = kernel[i] * mult[i % channels];
  folded_bias->resize(channels);
  for (std::size_t c = 0; c < channels; ++c) {
    const float b = bias ? bias[c] : 0.0f;
    (*folded_bias)[c] = b * mult[c] + (beta[c] - mean[c] * mult[c]);
  }
}

}  // namespace qdrift
