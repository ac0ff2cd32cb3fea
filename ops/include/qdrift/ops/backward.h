// SPDX-License-Identifier: Apache-2.0
// Backward passes of the float layers for training and QAT: dense, conv2d (every geometry the
// forward takes: groups, depthwise, stride, dilation, SAME/VALID), SimpleRNN through time, and
// the activations. Each has a readable reference path (plain loops, double accumulation) and a
// fast path (Eigen GEMM); tests/cpp/test_backward.cpp holds them together and
// tests/python/test_qat.py holds both against torch autograd.
//
// Conventions: `dy` is the gradient of the loss with respect to the op's linear output (before
// its activation; chain activation_backward first). Every output gradient buffer is written,
// never accumulated into. Null `db` / `dx` / `dh0` pointers skip that gradient.
#pragma once

#include <cstddef>

#include "qdrift/ops/ops.h"

namespace qdrift {

// dx = dy * f'(.), computed from the activation's OUTPUT y as torch does for tanh and sigmoid
// (1 - y^2, y (1 - y)); relu passes where y > 0, relu6 where 0 < y < 6 (torch's threshold and
// hardtanh backward: zero at the kinks). dx may alias dy.
void activation_backward(Activation a, const float* y, const float* dy, float* dx, std::size_t n);

// y = x w + b: dx = dy w^T (N, I), dw = x^T dy (I, O), db = sum_n dy (O).
void dense_backward(const DenseShape& s, const float* x, const float* w, const float* dy, float* dx, float* dw,
                    float* db, Path path);

// Conv2D backward on the geometry of the forward call: dx (N, H, W, C), dkernel
// (KH, KW, C/groups, O), db (O). Taps that fell into the padding contribute nothing.
void conv2d_backward(const ConvGeometry& g, const float* x, const float* kernel, const float* dy, float* dx,
                     float* dkernel, float* db, Path path);

// SimpleRNN backpropagation through time for h_t = q_t(a_t), a_t = act(x_t W + b + h_{t-1} U).
//   states:     (N, T, U) the h_t the forward fed to the next step (processing order)
//   activated:  (N, T, U) the a_t before the state quantizer q_t, or null when there is none
//               (then a_t = h_t)
//   state_mask: (N, T, U) q_t's straight-through mask (1 inside the range, 0 clipped), or null
//   dstates:    (N, T, U) the loss gradient arriving at each h_t from outside the recurrence
//               (the layer's output: every step for return_sequences, else only the last)
// Writes dx (N, T, F) in input order (go_backwards reverses as the forward did), dkernel
// (F, U), drecurrent (U, U), db (U) and dh0 (N, U).
void simple_rnn_backward(const RnnShape& s, const float* x, const float* kernel, const float* recurrent,
                         const float* h0, const float* states, const float* activated, const float* state_mask,
                         const float* dstates, Activation act, bool go_backwards, float* dx, float* dkernel,
                         float* drecurrent, float* db, float* dh0, Path path);

}  // namespace qdrift
