// SPDX-License-Identifier: Apache-2.0
// Float layers in Keras layouts: dense, conv2d (groups, depthwise, stride, dilation, SAME/VALID),
// simple RNN, activations and batch normalization (with its folding into a preceding layer).
// Each op has a readable reference path (double accumulation, plain loops) and a fast path
// (Eigen GEMM / vectorized loops); tests/cpp/test_ops.cpp holds them to a stated tolerance.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "qdrift/core/tensor.h"

namespace qdrift {

enum class Path : std::uint8_t { kReference, kFast };
std::string_view path_name(Path p);
Path parse_path(std::string_view name);   // "reference" | "fast" | "auto" (= fast)

enum class Activation : std::uint8_t { kLinear, kRelu, kRelu6, kTanh, kSigmoid };
std::string_view activation_name(Activation a);
Activation parse_activation(std::string_view name);   // ConfigError listing the names

// In place, float32, as Keras computes each function (tanh/sigmoid via std:: functions).
void apply_activation(Activation a, float* x, std::size_t n);

// ---- Dense: y[n, o] = act(sum_i x[n, i] * w[i, o] + b[o]); x (N, I), w (I, O) ----------------
struct DenseShape {
  std::size_t batch = 0, in = 0, out = 0;
};
// `layer` names the caller in errors. x_shape is (..., I): leading dims are flattened into N.
DenseShape make_dense_shape(const Shape& x_shape, const Shape& w_shape, const float* bias_or_null,
                            std::size_t bias_size, const std::string& layer);
void dense(const DenseShape& s, const float* x, const float* w, const float* b, Activation act, float* y, Path path);

// ---- Conv2D on NHWC input; kernel (KH, KW, C / groups, O) ---------------------------------
enum class Padding : std::uint8_t { kValid, kSame };
Padding parse_padding(std::string_view name);

struct ConvGeometry {
  std::size_t n = 0, h = 0, w = 0, c = 0;        // input
  std::size_t kh = 0, kw = 0, o = 0, groups = 1;  // kernel
  std::size_t sh = 1, sw = 1, dh = 1, dw = 1;     // strides, dilation
  std::size_t oh = 0, ow = 0;                     // output
  std::size_t pad_top = 0, pad_left = 0;          // TensorFlow's rule: the odd pixel goes after
  std::size_t cg() const { return c / groups; }
  std::size_t og() const { return o / groups; }
};
// Validates rank, channels, groups, strides/dilations > 0, non-empty batch and a VALID kernel
// that fits; throws ShapeError / ConfigError naming `layer`.
ConvGeometry make_conv_geometry(const Shape& x_shape, const Shape& kernel_shape, std::size_t stride_h,
                                std::size_t stride_w, std::size_t dilation_h, std::size_t dilation_w,
                                Padding padding, std::size_t groups, const std::string& layer);
void conv2d(const ConvGeometry& g, const float* x, const float* kernel, const float* b, Activation act, float* y,
            Path path);

// ---- SimpleRNN: h_t = act(x_t W + b + h_{t-1} U); x (N, T, F), W (F, U), U (U, U) ----------
struct RnnShape {
  std::size_t batch = 0, steps = 0, features = 0, units = 0;
};
RnnShape make_rnn_shape(const Shape& x_shape, const Shape& kernel_shape, const Shape& recurrent_shape,
                        std::size_t bias_size, const std::string& layer);
// states: (N, T, U), every step's hidden state in processing order (reversed input when
// go_backwards, as Keras returns it). h0 may be null (zeros).
void simple_rnn(const RnnShape& s, const float* x, const float* kernel, const float* recurrent, const float* bias,
                const float* h0, Activation act, bool go_backwards, float* states, Path path);

// ---- BatchNormalization (inference) over the last axis --------------------------------------
// y = x * inv + (beta - mean * inv), inv = gamma / sqrt(var + eps), float32 (tf.nn.batch_normalization).
void batch_norm(const float* x, std::size_t n, std::size_t channels, const float* gamma, const float* beta,
                const float* mean, const float* var, float eps, float* y);
// Fold into the preceding layer's kernel (output channel = last kernel axis) and bias, in float32
// as the TFLite converter does: W' = W * m[c], b' = b * m[c] + (beta - mean * m[c]),
// m = gamma / sqrt(var + eps). `bias` may be null (treated as zeros); outputs are resized.
void fold_batch_norm(const float* kernel, std::size_t kernel_size, const float* bias, std::size_t channels,
                     const float* gamma, const float* beta, const float* mean, const float* var, float eps,
                     std::vector<float>* folded_kernel, std::vector<float>* folded_bias);

}  // namespace qdrift
