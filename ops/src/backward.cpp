// SPDX-License-Identifier: Apache-2.0
// Backward passes: activations, dense, conv2d (reference loops and im2col / depthwise fast
// paths) and SimpleRNN backpropagation through time.
#include "qdrift/ops/backward.h"

#include <Eigen/Core>

#include <algorithm>
#include <vector>

#include "conv_index.h"

namespace qdrift {
namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Strided = Eigen::OuterStride<>;
using detail::conv_input_index;

Eigen::Index idx(std::size_t v) { return static_cast<Eigen::Index>(v); }

void store(const std::vector<double>& acc, float* out) {
  for (std::size_t i = 0; i < acc.size(); ++i) out[i] = static_cast<float>(acc[i]);
}

// ---- dense -------------------------------------------------------------------------------------

void dense_backward_reference(const DenseShape& s, const float* x, const float* w, const float* dy, float* dx,
                              float* dw, float* db) {
  if (dx) {
    for (std::size_t n = 0; n < s.batch; ++n)
      for (std::size_t i = 0; i < s.in; ++i) {
        double acc = 0.0;   // dx[n, i] = sum_o dy[n, o] w[i, o]
        for (std::size_t o = 0; o < s.out; ++o) acc += static_cast<double>(dy[n * s.out + o]) * w[i * s.out + o];
        dx[n * s.in + i] = static_cast<float>(acc);
      }
  }
  for (std::size_t i = 0; i < s.in; ++i)
    for (std::size_t o = 0; o < s.out; ++o) {
      double acc = 0.0;     // dw[i, o] = sum_n x[n, i] dy[n, o]
      for (std::size_t n = 0; n < s.batch; ++n) acc += static_cast<double>(x[n * s.in + i]) * dy[n * s.out + o];
      dw[i * s.out + o] = static_cast<float>(acc);
    }
  if (db) {
    for (std::size_t o = 0; o < s.out; ++o) {
      double acc = 0.0;
      for (std::size_t n = 0; n < s.batch; ++n) acc += dy[n * s.out + o];
      db[o] = static_cast<float>(acc);
    }
  }
}

void dense_backward_fast(const DenseShape& s, const float* x, const float* w, const float* dy, float* dx, float* dw,
                         float* db) {
  const Eigen::Map<const RowMatrix> X(x, idx(s.batch), idx(s.in)), W(w, idx(s.in), idx(s.out)),
      DY(dy, idx(s.batch), idx(s.out));
  if (dx) Eigen::Map<RowMatrix>(dx, idx(s.batch), idx(s.in)).noalias() = DY * W.transpose();
  Eigen::Map<RowMatrix>(dw, idx(s.in), idx(s.out)).noalias() = X.transpose() * DY;
  if (db) Eigen::Map<Eigen::RowVectorXf>(db, idx(s.out)) = DY.colwise().sum();
}

// ---- conv2d ------------------------------------------------------------------------------------

// The forward's loops with every multiply-add turned into its two partial derivatives:
// y[n, oy, ox, oc] += x[n, iy, ix, g*Cg + ic] * k[ky, kx, ic, oc].
void conv_backward_reference(const ConvGeometry& g, const float* x, const float* k, const float* dy, float* dx,
                             float* dk, float* db) {
  std::vector<double> dxa(dx ? g.n * g.h * g.w * g.c : 0), dka(g.kh * g.kw * g.cg() * g.o), dba(g.o);
  for (std::size_t n = 0; n < g.n; ++n)
    for (std::size_t oy = 0; oy < g.oh; ++oy)
      for (std::size_t ox = 0; ox < g.ow; ++ox)
        for (std::size_t oc = 0; oc < g.o; ++oc) {
          const double d = dy[((n * g.oh + oy) * g.ow + ox) * g.o + oc];
          const std::size_t group = oc / g.og();
          dba[oc] += d;
          for (std::size_t ky = 0; ky < g.kh; ++ky) {
            const std::ptrdiff_t iy = conv_input_index(oy, ky, g.sh, g.dh, g.pad_top, g.h);
            if (iy < 0) continue;
            for (std::size_t kx = 0; kx < g.kw; ++kx) {
              const std::ptrdiff_t ix = conv_input_index(ox, kx, g.sw, g.dw, g.pad_left, g.w);
              if (ix < 0) continue;
              const std::size_t xbase =
                  ((n * g.h + static_cast<std::size_t>(iy)) * g.w + static_cast<std::size_t>(ix)) * g.c + group * g.cg();
              for (std::size_t ic = 0; ic < g.cg(); ++ic) {
                const std::size_t kidx = ((ky * g.kw + kx) * g.cg() + ic) * g.o + oc;
                dka[kidx] += d * x[xbase + ic];
                if (dx) dxa[xbase + ic] += d * k[kidx];
              }
            }
          }
        }
  if (dx) store(dxa, dx);
  store(dka, dk);
  if (db) store(dba, db);
}

// One input channel per group: direct loops over taps, as the forward's depthwise path.
void conv_backward_depthwise_fast(const ConvGeometry& g, const float* x, const float* k, const float* dy, float* dx,
                                  float* dk, float* db) {
  const std::size_t og = g.og();
  if (dx) std::fill(dx, dx + g.n * g.h * g.w * g.c, 0.0f);
  std::fill(dk, dk + g.kh * g.kw * g.o, 0.0f);
  for (std::size_t n = 0; n < g.n; ++n)
    for (std::size_t oy = 0; oy < g.oh; ++oy)
      for (std::size_t ox = 0; ox < g.ow; ++ox) {
        const float* dyp = dy + ((n * g.oh + oy) * g.ow + ox) * g.o;
        for (std::size_t ky = 0; ky < g.kh; ++ky) {
          const std::ptrdiff_t iy = conv_input_index(oy, ky, g.sh, g.dh, g.pad_top, g.h);
          if (iy < 0) continue;
          for (std::size_t kx = 0; kx < g.kw; ++kx) {
            const std::ptrdiff_t ix = conv_input_index(ox, kx, g.sw, g.dw, g.pad_left, g.w);
            if (ix < 0) continue;
            const std::size_t xoff =
                ((n * g.h + static_cast<std::size_t>(iy)) * g.w + static_cast<std::size_t>(ix)) * g.c;
            const float* xp = x + xoff;
            const float* kp = k + (ky * g.kw + kx) * g.o;
            float* dkp = dk + (ky * g.kw + kx) * g.o;
            for (std::size_t oc = 0; oc < g.o; ++oc) dkp[oc] += dyp[oc] * xp[oc / og];
            if (dx) {
              float* dxp = dx + xoff;
              for (std::size_t oc = 0; oc < g.o; ++oc) dxp[oc / og] += dyp[oc] * kp[oc];
            }
          }
        }
      }
  if (db) {
    Eigen::Map<Eigen::RowVectorXf>(db, idx(g.o)) =
        Eigen::Map<const RowMatrix>(dy, idx(g.n * g.oh * g.ow), idx(g.o)).colwise().sum();
  }
}

// im2col per image and group as in the forward; dK_g += cols^T dY_g, dcols = dY_g K_g^T, then
// col2im adds each column entry back onto the input pixel it was copied from.
void conv_backward_im2col_fast(const ConvGeometry& g, const float* x, const float* k, const float* dy, float* dx,
                               float* dk, float* db) {
  const std::size_t pixels = g.oh * g.ow, depth = g.kh * g.kw * g.cg();
  std::vector<float> cols(pixels * depth), dcols(dx ? pixels * depth : 0);
  std::fill(dk, dk + depth * g.o, 0.0f);
  if (dx) std::fill(dx, dx + g.n * g.h * g.w * g.c, 0.0f);
  const Eigen::Index rows = idx(pixels), inner = idx(depth), ogi = idx(g.og()), ld = idx(g.o);
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
      const Eigen::Map<const RowMatrix, 0, Strided> DY(dy + n * pixels * g.o + group * g.og(), rows, ogi, Strided(ld));
      const Eigen::Map<const RowMatrix> C(cols.data(), rows, inner);
      Eigen::Map<RowMatrix, 0, Strided>(dk + group * g.og(), inner, ogi, Strided(ld)).noalias() += C.transpose() * DY;
      if (!dx) continue;
      Eigen::Map<RowMatrix>(dcols.data(), rows, inner).noalias() =
          DY * Eigen::Map<const RowMatrix, 0, Strided>(k + group * g.og(), inner, ogi, Strided(ld)).transpose();
      const float* dcp = dcols.data();
      for (std::size_t oy = 0; oy < g.oh; ++oy)
        for (std::size_t ox = 0; ox < g.ow; ++ox)
          for (std::size_t ky = 0; ky < g.kh; ++ky) {
            const std::ptrdiff_t iy = conv_input_index(oy, ky, g.sh, g.dh, g.pad_top, g.h);
            for (std::size_t kx = 0; kx < g.kw; ++kx, dcp += g.cg()) {
              const std::ptrdiff_t ix = conv_input_index(ox, kx, g.sw, g.dw, g.pad_left, g.w);
              if (iy < 0 || ix < 0) continue;
              float* dxp = dx + ((n * g.h + static_cast<std::size_t>(iy)) * g.w + static_cast<std::size_t>(ix)) * g.c +
                           group * g.cg();
              for (std::size_t ic = 0; ic < g.cg(); ++ic) dxp[ic] += dcp[ic];
            }
          }
    }
  }
  if (db) {
    Eigen::Map<Eigen::RowVectorXf>(db, idx(g.o)) =
        Eigen::Map<const RowMatrix>(dy, idx(g.n * pixels), idx(g.o)).colwise().sum();
  }
}

// ---- SimpleRNN -----------------------------------------------------------------------------------

// Row of x read at processing step t (go_backwards reads the sequence reversed).
std::size_t source_step(const RnnShape& s, std::size_t t, bool go_backwards) {
  return go_backwards ? s.steps - 1 - t : t;
}

// dz_t for every step, walking back through time: dh = dstates_t + dh_{from t+1}; through the
// state quantizer's mask and the activation; dh_{t-1} = dz_t U^T. Returns dh0 in `dh`.
// `reference` accumulates dh_{t-1} in double; the fast path uses one GEMM per step.
void rnn_dz(const RnnShape& s, const float* recurrent, const float* states, const float* activated,
            const float* state_mask, const float* dstates, Activation act, std::vector<float>* dz,
            std::vector<float>* dh, bool reference) {
  const std::size_t N = s.batch, T = s.steps, U = s.units;
  dz->assign(N * T * U, 0.0f);
  dh->assign(N * U, 0.0f);
  std::vector<float> g(N * U), a(N * U), dzt(N * U);
  for (std::size_t t = T; t-- > 0;) {
    for (std::size_t n = 0; n < N; ++n)
      for (std::size_t u = 0; u < U; ++u) {
        const std::size_t i = (n * T + t) * U + u;
        float v = (*dh)[n * U + u] + dstates[i];
        if (state_mask) v *= state_mask[i];
        g[n * U + u] = v;
        a[n * U + u] = activated ? activated[i] : states[i];
      }
    activation_backward(act, a.data(), g.data(), dzt.data(), N * U);
    for (std::size_t n = 0; n < N; ++n) std::copy_n(dzt.data() + n * U, U, dz->data() + (n * T + t) * U);
    if (reference) {
      for (std::size_t n = 0; n < N; ++n)
        for (std::size_t i = 0; i < U; ++i) {
          double acc = 0.0;   // dh_{t-1}[n, i] = sum_u dz_t[n, u] U[i, u]
          for (std::size_t u = 0; u < U; ++u) acc += static_cast<double>(dzt[n * U + u]) * recurrent[i * U + u];
          (*dh)[n * U + i] = static_cast<float>(acc);
        }
    } else {
      Eigen::Map<RowMatrix>(dh->data(), idx(N), idx(U)).noalias() =
          Eigen::Map<const RowMatrix>(dzt.data(), idx(N), idx(U)) *
          Eigen::Map<const RowMatrix>(recurrent, idx(U), idx(U)).transpose();
    }
  }
}

}  // namespace

void activation_backward(Activation a, const float* y, const float* dy, float* dx, std::size_t n) {
  switch (a) {
    case Activation::kLinear:
      std::copy(dy, dy + n, dx);
      return;
    case Activation::kRelu:
      for (std::size_t i = 0; i < n; ++i) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
      return;
    case Activation::kRelu6:
      for (std::size_t i = 0; i < n; ++i) dx[i] = (y[i] > 0.0f && y[i] < 6.0f) ? dy[i] : 0.0f;
      return;
    case Activation::kTanh:
      for (std::size_t i = 0; i < n; ++i) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
      return;
    case Activation::kSigmoid:
      for (std::size_t i = 0; i < n; ++i) dx[i] = dy[i] * (1.0f - y[i]) * y[i];
      return;
  }
}

void dense_backward(const DenseShape& s, const float* x, const float* w, const float* dy, float* dx, float* dw,
                    float* db, Path path) {
  if (path == Path::kReference) {
    dense_backward_reference(s, x, w, dy, dx, dw, db);
  } else {
    dense_backward_fast(s, x, w, dy, dx, dw, db);
  }
}

void conv2d_backward(const ConvGeometry& g, const float* x, const float* kernel, const float* dy, float* dx,
                     float* dkernel, float* db, Path path) {
  if (path == Path::kReference) {
    conv_backward_reference(g, x, kernel, dy, dx, dkernel, db);
  } else if (g.cg() == 1) {
    conv_backward_depthwise_fast(g, x, kernel, dy, dx, dkernel, db);
  } else {
    conv_backward_im2col_fast(g, x, kernel, dy, dx, dkernel, db);
  }
}

void simple_rnn_backward(const RnnShape& s, const float* x, const float* kernel, const float* recurrent,
                         const float* h0, const float* states, const float* activated, const float* state_mask,
                         const float* dstates, Activation act, bool go_backwards, float* dx, float* dkernel,
                         float* drecurrent, float* db, float* dh0, Path path) {
  const std::size_t N = s.batch, T = s.steps, F = s.features, U = s.units;
  const bool reference = path == Path::kReference;
  std::vector<float> dz, dh;
  rnn_dz(s, recurrent, states, activated, state_mask, dstates, act, &dz, &dh, reference);
  if (dh0) std::copy(dh.begin(), dh.end(), dh0);
  // Inputs in processing order, and the previous state each step read (h0 or zeros first).
  std::vector<float> xs(N * T * F), hprev(N * T * U, 0.0f);
  for (std::size_t n = 0; n < N; ++n)
    for (std::size_t t = 0; t < T; ++t) {
      std::copy_n(x + (n * T + source_step(s, t, go_backwards)) * F, F, xs.data() + (n * T + t) * F);
      float* hp = hprev.data() + (n * T + t) * U;
      if (t > 0) {
        std::copy_n(states + (n * T + t - 1) * U, U, hp);
      } else if (h0) {
        std::copy_n(h0 + n * U, U, hp);
      }
    }
  // Every step shares W, U and b, so their gradients are sums over (n, t): one dense backward
  // each over the N*T rows (the reference path's accumulate in double over all rows).
  std::vector<float> dxs(dx ? N * T * F : 0);
  dense_backward(DenseShape{N * T, F, U}, xs.data(), kernel, dz.data(), dx ? dxs.data() : nullptr, dkernel, db, path);
  dense_backward(DenseShape{N * T, U, U}, hprev.data(), recurrent, dz.data(), nullptr, drecurrent, nullptr, path);
  if (dx) {
    for (std::size_t n = 0; n < N; ++n)
      for (std::size_t t = 0; t < T; ++t)
        std::copy_n(dxs.data() + (n * T + t) * F, F, dx + (n * T + source_step(s, t, go_backwards)) * F);
  }
}

}  // namespace qdrift
