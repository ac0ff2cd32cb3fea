// SPDX-License-Identifier: Apache-2.0
// Dense: validation, the reference loop (double accumulation) and the Eigen GEMM fast path.
#include <Eigen/Core>

#include "qdrift/core/check.h"
#include "qdrift/ops/ops.h"

namespace qdrift {
namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

void dense_reference(const DenseShape& s, const float* x, const float* w, const float* b, float* y) {
  for (std::size_t n = 0; n < s.batch; ++n)
    for (std::size_t o = 0; o < s.out; ++o) {
      double acc = b ? b[o] : 0.0;
      for (std::size_t i = 0; i < s.in; ++i) acc += static_cast<double>(x[n * s.in + i]) * w[i * s.out + o];
      y[n * s.out + o] = static_cast<float>(acc);
    }
}

void dense_fast(const DenseShape& s, const float* x, const float* w, const float* b, float* y) {
  const auto rows = static_cast<Eigen::Index>(s.batch), in = static_cast<Eigen::Index>(s.in),
             out = static_cast<Eigen::Index>(s.out);
  Eigen::Map<RowMatrix> Y(y, rows, out);
  Y.noalias() = Eigen::Map<const RowMatrix>(x, rows, in) * Eigen::Map<const RowMatrix>(w, in, out);
  if (b) Y.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(b, out);
}

}  // namespace

DenseShape make_dense_shape(const Shape& x_shape, const Shape& w_shape, const float* bias_or_null,
                            std::size_t bias_size, const std::string& layer) {
  QDRIFT_CHECK(w_shape.size() == 2, ShapeError, layer, ": the kernel must be (in, out), got ", shape_to_string(w_shape));
  QDRIFT_CHECK(!x_shape.empty(), ShapeError, layer, ": the input must have rank >= 1");
  QDRIFT_CHECK(x_shape.back() == w_shape[0], ShapeError, layer, ": the input's last axis has ", x_shape.back(),
               " features but the kernel expects ", w_shape[0], " (input ", shape_to_string(x_shape), ")");
  QDRIFT_CHECK(!bias_or_null || bias_size == w_shape[1], ShapeError, layer, ": the bias has ", bias_size,
               " values but the layer has ", w_shape[1], " units");
  DenseShape s;
  s.in = w_shape[0];
  s.out = w_shape[1];
  s.batch = num_elements(Shape(x_shape.begin(), x_shape.end() - 1));
  QDRIFT_CHECK(s.batch > 0, ShapeError, layer, ": the batch is empty (input ", shape_to_string(x_shape), ")");
  return s;
}

void dense(const DenseShape& s, const float* x, const float* w, const float* b, Activation act, float* y, Path path) {
  if (path == Path::kReference) {
    dense_reference(s, x, w, b, y);
  } else {
    dense_fast(s, x, w, b, y);
  }
  apply_activation(act, y, s.batch * s.out);
}

}  // namespace qdrift
