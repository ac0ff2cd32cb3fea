// SPDX-License-Identifier: Apache-2.0
// Conv2D (NHWC, kernel (KH, KW, C/groups, O)): TensorFlow's padding rule, the reference loops
// (double accumulation, out-of-image taps skipped), and fast paths: a direct vectorized loop
// for depthwise shapes (one input channel per group) and im2col + Eigen GEMM otherwise.
#include <Eigen/Core>

#include <vector>

#include "conv_index.h"
#include "qdrift/core/check.h"
#include "qdrift/ops/ops.h"

namespace qdrift {
namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Strided = Eigen::OuterStride<>;

using detail::conv_input_index;

void conv_reference(const ConvGeometry& g, const float* x, const float* k, const float* b, float* y) {
  for (std::size_t n = 0; n < g.n; ++n)
    for (std::size_t oy = 0; oy < g.oh; ++oy)
      for (std::size_t ox = 0; ox < g.ow; ++ox)
        for (std::size_t oc = 0; oc < g.o; ++oc) {
          const std::size_t group = oc / g.og();
          double acc = b ? b[oc] : 0.0;
          for (std::size_t ky = 0; ky < g.kh; ++ky) {
            const std::ptrdiff_t iy = conv_input_index(oy, ky, g.sh, g.dh, g.pad_top, g.h);
            if (iy < 0) continue;
            for (std::size_t kx = 0; kx < g.kw; ++kx) {
              const std::ptrdiff_t ix = conv_input_index(ox, kx, g.sw, g.dw, g.pad_left, g.w);
              if (ix < 0) continue;
              const float* xp = x + ((n * g.h + static_cast<std::size_t>(iy)) * g.w + static_cast<std::size_t>(ix)) * g.c +
                                group * g.cg();
              for (std::size_t ic = 0; ic < g.cg(); ++ic)
                acc += static_cast<double>(xp[ic]) * k[((ky * g.kw + kx) * g.cg() + ic) * g.o + oc];
            }
          }
          y[((n * g.oh + oy) * g.ow + ox) * g.o + oc] = static_cast<float>(acc);
        }
}

// One input channel per group (depthwise with depth multiplier og): output channel oc reads
// input channel oc / og. Accumulates taps in kernel order, vectorized over channels.
void conv_depthwise_fast(const ConvGeometry& g, const float* x, const float* k, const float* b, float* y) {
  const std::size_t og = g.og();
  for (std::size_t n = 0; n < g.n; ++n)
    for (std::size_t oy = 0; oy < g.oh; ++oy)
      for (std::size_t ox = 0; ox < g.ow; ++ox) {
        float* yp = y + ((n * g.oh + oy) * g.ow + ox) * g.o;
        for (std::size_t oc = 0; oc < g.o; ++oc) yp[oc] = b ? b[oc] : 0.0f;
        for (std::size_t ky = 0; ky < g.kh; ++ky) {
          const std::ptrdiff_t iy = conv_input_index(oy, ky, g.sh, g.dh, g.pad_top, g.h);
          if (iy < 0) continue;
          for (std::size_t kx = 0; kx < g.kw; ++kx) {
            const std::ptrdiff_t ix = conv_input_index(ox, kx, g.sw, g.dw, g.pad_left, g.w);
            if (ix < 0) continue;
            const float* xp = x + ((n * g.h + static_cast<std::size_t>(iy)) * g.w + static_cast<std::size_t>(ix)) * g.c;
            const float* kp = k + (ky * g.kw + kx) * g.o;
            if (og == 1) {
              for (std::size_t c = 0; c < g.o; ++c) yp[c] += xp[c] * kp[c];
            } else {
              for (std::size_t oc = 0; oc < g.o; ++oc) yp[oc] += xp[oc / og] * kp[oc];
            }
          }
        }
      }
}

// im2col per image and group, then one GEMM: (OH*OW, KH*KW*Cg) x (KH*KW*Cg, Og).
void conv_im2col_fast(const ConvGeometry& g, const float* x, const float* k, const float* b, float* y) {
  const std::size_t pixels = g.oh * g.ow, depth = g.kh * g.kw * g.cg();
  std::vector<float> cols(pixels * depth);
  for (std::size_t n = 0; n < g.n; ++n) {
    for (std::size_t group = 0; group < g.groups; ++group) {
      float* cp = cols.data();
      for (std::size_t oy = 0; oy < g.oh; ++oy)
        for (std::size_t ox = 0; ox < g.ow; ++ox)
          for (std::size_t ky = 0; ky < g.kh; ++ky) {
            const std::ptrdiff_t iy = conv_input_index(oy, ky, g.sh, g.dh, g.pad_top, g.h);
            for (std::size_t kx = 0; kx < g.kw; ++kx, cp += g.cg()) {
              const std::ptrdiff_t ix = conv_input_index(ox, kx, g.sw, g.dw, g.pad_left, g.w);
              if (iy < 0 || ix < 0) {
                std::fill(cp, cp + g.cg(), 0.0f);
                continue;
              }
              const float* xp = x + ((n * g.h + static_cast<std::size_t>(iy)) * g.w + static_cast<std::size_t>(ix)) * g.c +
                                group * g.cg();
              std::copy(xp, xp + g.cg(), cp);
            }
          }
      const auto rows = static_cast<Eigen::Index>(pixels), inner = static_cast<Eigen::Index>(depth),
                 og = static_cast<Eigen::Index>(g.og()), ld = static_cast<Eigen::Index>(g.o);
      Eigen::Map<RowMatrix, 0, Strided> out(y + n * pixels * g.o + group * g.og(), rows, og, Strided(ld));
      out.noalias() = Eigen::Map<const RowMatrix>(cols.data(), rows, inner) *
                      Eigen::Map<const RowMatrix, 0, Strided>(k + group * g.og(), inner, og, Strided(ld));
    }
  }
  if (b) {
    Eigen::Map<RowMatrix> Y(y, static_cast<Eigen::Index>(g.n * pixels), static_cast<Eigen::Index>(g.o));
    Y.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(b, static_cast<Eigen::Index>(g.o));
  }
}

// TensorFlow's output size and leading padding for one spatial dimension.
void spatial(std::size_t in, std::size_t k, std::size_t stride, std::size_t dilation, Padding p, const std::string& layer,
             const char* dim, std::size_t* out, std::size_t* pad_before) {
  const std::size_t effective = (k - 1) * dilation + 1;
  if (p == Padding::kSame) {
    *out = (in + stride - 1) / stride;
    const std::size_t needed = (*out - 1) * stride + effective;
    *pad_before = needed > in ? (needed - in) / 2 : 0;
    return;
  }
  QDRIFT_CHECK(in >= effective, ShapeError, layer, ": the kernel spans ", effective, " ", dim, " (with dilation) but the ",
               "input has only ", in, " under VALID padding");
  *out = (in - effective) / stride + 1;
  *pad_before = 0;
}

}  // namespace

ConvGeometry make_conv_geometry(const Shape& x_shape, const Shape& kernel_shape, std::size_t stride_h,
                                std::size_t stride_w, std::size_t dilation_h, std::size_t dilation_w,
                                Padding padding, std::size_t groups, const std::string& layer) {
  QDRIFT_CHECK(x_shape.size() == 4, ShapeError, layer, ": the input must be NHWC (rank 4), got ",
               shape_to_string(x_shape));
  QDRIFT_CHECK(kernel_shape.size() == 4, ShapeError, layer, ": the kernel must be (KH, KW, C/groups, O), got ",
               shape_to_string(kernel_shape));
  QDRIFT_CHECK(stride_h > 0 && stride_w > 0, ConfigError, layer, ": strides must be positive, got (", stride_h, ", ",
               stride_w, ")");
  QDRIFT_CHECK(dilation_h > 0 && dilation_w > 0, ConfigError, layer, ": dilation must be positive, got (", dilation_h,
               ", ", dilation_w, ")");
  QDRIFT_CHECK(groups > 0, ConfigError, layer, ": groups must be positive");
  ConvGeometry g;
  g.n = x_shape[0];
  g.h = x_shape[1];
  g.w = x_shape[2];
  g.c = x_shape[3];
  g.kh = kernel_shape[0];
  g.kw = kernel_shape[1];
  g.o = kernel_shape[3];
  g.groups = groups;
  g.sh = stride_h;
  g.sw = stride_w;
  g.dh = dilation_h;
  g.dw = dilation_w;
  QDRIFT_CHECK(g.n > 0, ShapeError, layer, ": the batch is empty (input ", shape_to_string(x_shape), ")");
  QDRIFT_CHECK(g.kh > 0 && g.kw > 0, ShapeError, layer, ": the kernel has an empty spatial size");
  QDRIFT_CHECK(g.c % groups == 0 && kernel_shape[2] == g.c / groups, ShapeError, layer, ": the input has ", g.c,
               " channels but the kernel ", shape_to_string(kernel_shape), " expects ", kernel_shape[2] * groups,
               " (", groups, " group(s) of ", kernel_shape[2], ")");
  QDRIFT_CHECK(g.o % groups == 0, ShapeError, layer, ": ", g.o, " filters do not split into ", groups, " groups");
  spatial(g.h, g.kh, g.sh, g.dh, padding, layer, "rows", &g.oh, &g.pad_top);
  spatial(g.w, g.kw, g.sw, g.dw, padding, layer, "columns", &g.ow, &g.pad_left);
  return g;
}

void conv2d(const ConvGeometry& g, const float* x, const float* kernel, const float* b, Activation act, float* y,
            Path path) {
  if (path == Path::kReference) {
    conv_reference(g, x, kernel, b, y);
  } else if (g.cg() == 1) {
    conv_depthwise_fast(g, x, kernel, b, y);
  } else {
    conv_im2col_fast(g, x, kernel, b, y);
  }
  apply_activation(act, y, g.n * g.oh * g.ow * g.o);
}

}  // namespace qdrift
