// SPDX-License-Identifier: Apache-2.0
// SimpleRNN as Keras computes a step: h_t = act((x_t W + b) + h_{t-1} U), built on dense().
#include <algorithm>
#include <vector>

#include "qdrift/core/check.h"
#include "qdrift/ops/ops.h"

namespace qdrift {

RnnShape make_rnn_shape(const Shape& x_shape, const Shape& kernel_shape, const Shape& recurrent_shape,
                        std::size_t bias_size, const std::string& layer) {
  QDRIFT_CHECK(x_shape.size() == 3, ShapeError, layer, ": the input must be (batch, time, features), got ",
               shape_to_string(x_shape));
  QDRIFT_CHECK(kernel_shape.size() == 2 && recurrent_shape.size() == 2, ShapeError, layer,
               ": kernel and recurrent kernel must be matrices");
  RnnShape s{x_shape[0], x_shape[1], x_shape[2], kernel_shape[1]};
  QDRIFT_CHECK(s.batch > 0, ShapeError, layer, ": the batch is empty");
  QDRIFT_CHECK(s.steps > 0, ShapeError, layer, ": the sequence has no time steps");
  QDRIFT_CHECK(kernel_shape[0] == s.features, ShapeError, layer, ": the input has ", s.features,
               " features but the kernel expects ", kernel_shape[0]);
  QDRIFT_CHECK(recurrent_shape[0] == s.units && recurrent_shape[1] == s.units, ShapeError, layer,
               ": the recurrent kernel must be (", s.units, ", ", s.units, "), got ", shape_to_string(recurrent_shape));
  QDRIFT_CHECK(bias_size == 0 || bias_size == s.units, ShapeError, layer, ": the bias has ", bias_size,
               " values but the layer has ", s.units, " units");
  return s;
}

void simple_rnn(const RnnShape& s, const float* x, const float* kernel, const float* recurrent, const float* bias,
                const float* h0, Activation act, bool go_backwards, float* states, Path path) {
  const DenseShape input_step{s.batch, s.features, s.units};
  const DenseShape state_step{s.batch, s.units, s.units};
  std::vector<float> xt(s.batch * s.features), h(s.batch * s.units), z(s.batch * s.units), r(s.batch * s.units);
  if (h0) std::copy(h0, h0 + h.size(), h.begin());
  for (std::size_t t = 0; t < s.steps; ++t) {
    const std::size_t src = go_backwards ? s.steps - 1 - t : t;
    for (std::size_t n = 0; n < s.batch; ++n)
      std::copy_n(x + (n * s.steps + src) * s.features, s.features, xt.begin() + static_cast<std::ptrdiff_t>(n * s.features));
    dense(input_step, xt.data(), kernel, bias, Activation::kLinear, z.data(), path);
    dense(state_step, h.data(), recurrent, nullptr, Activation::kLinear, r.data(), path);
    for (std::size_t i = 0; i < h.size(); ++i) h[i] = z[i] + r[i];
    apply_activation(act, h.data(), h.size());
    for (std::size_t n = 0; n < s.batch; ++n)
      std::copy(h.begin() + static_cast<std::ptrdiff_t>(n * s.units), h.begin() + static_cast<std::ptrdiff_t>((n + 1) * s.units),
                states + (n * s.steps + t) * s.units);
  }
}

}  // namespace qdrift
