// SPDX-License-Identifier: Apache-2.0
// Private: the fast affine element kernels, compiled once per instruction set
// (fake_quant_fast.inc) and picked at run time. Every variant computes the same IEEE
// operations in the same order, so all give identical bits (tests/cpp/test_affine.cpp).
#pragma once

#include <cstdint>
#include <vector>

#include "qdrift/core/rounding.h"
#include "qdrift/quantizers/affine.h"
#include "qdrift/quantizers/layout.h"

namespace qdrift::detail {

// Per-slot constants, built by the caller: lo = qmin - zp and hi = qmax - zp as floats. For
// per-channel layouts with channels last the arrays repeat the channel constants `rows` times.
struct SlotArrays {
  const float* inv;
  const float* scale;
  const float* lo;
  const float* hi;
  const float* zp;
  std::size_t rows;
};

using FakeQuantKernel = void (*)(const SliceLayout&, const SlotArrays&, Rounding, std::uint64_t seed,
                                 const float* x, float* y, std::uint8_t* mask);
using QuantizeKernel = void (*)(const SliceLayout&, const SlotArrays&, Rounding, std::uint64_t seed,
                                const float* x, std::int32_t* q);

struct IsaKernels {
  const char* name;  // "baseline", "avx2", "avx512"
  FakeQuantKernel fake_quant;
  QuantizeKernel quantize;
};

// The variants this binary has and this CPU runs, baseline first, best last.
const std::vector<IsaKernels>& available_isa_kernels();

// qdrift::fake_quant / qdrift::quantize with a chosen variant (they use the best one).
void fake_quant_with(const IsaKernels& k, const ElementwiseArgs& a, const float* x, float* y, std::uint8_t* mask);
void quantize_with(const IsaKernels& k, const ElementwiseArgs& a, const float* x, std::int32_t* q);

}  // namespace qdrift::detail
