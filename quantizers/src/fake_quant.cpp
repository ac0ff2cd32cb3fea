// SPDX-License-Identifier: Apache-2.0
// Element kernels of affine quantization: a readable reference (ref::), and the dispatch to the
// fast loops (fake_quant_fast.inc, one build per instruction set) that must agree with it bit
// for bit.
#include <algorithm>
#include <cmath>
#include <vector>

#include "qdrift/core/check.h"
#include "qdrift/quantizers/affine.h"
#include "fake_quant_isa.h"

namespace qdrift {
namespace {

// ---------------------------------------------------------------------------------------
// Reference: the spec, written the way torch's CPU kernel reads (zero point added after
// rounding, clamp on the code, (q - zp) * scale). One element at a time.
// ---------------------------------------------------------------------------------------
struct RefElement {
  float code_f;   // round(f32(x * inv)) + zp, before the clamp (float, as torch keeps it)
  std::int32_t q; // clamped code (NaN -> zero point)
};

RefElement ref_element(const ElementwiseArgs& a, std::size_t slot, float x, std::size_t index) {
  const QuantParams& p = *a.params;
  const float v = x * p.inv_scale[slot];
  const float code_f = round_with(a.rounding, v, a.seed, index) + static_cast<float>(p.zero_point[slot]);
  std::int32_t q = p.zero_point[slot];
  if (!std::isnan(code_f)) {
    q = static_cast<std::int32_t>(std::clamp(code_f, static_cast<float>(p.qmin), static_cast<float>(p.qmax)));
  }
  return {code_f, q};
}

// The per-slot constant tables the fast kernels read (built here, in baseline code). With
// channels last, the tables repeat so that one kernel span covers ~4096 elements.
struct SlotTable {
  std::vector<float> inv, scale, lo, hi, zp;
  std::size_t rows = 1;
  SlotTable(const QuantParams& p, const SliceLayout& l) {
    if (l.granularity == Granularity::kPerChannel && l.inner == 1 && l.channels > 0)
      rows = std::max<std::size_t>(1, std::min(l.outer, 4096 / l.channels));
    for (std::size_t r = 0; r < rows; ++r) {
      for (std::size_t s = 0; s < p.scale.size(); ++s) {
        inv.push_back(p.inv_scale[s]);
        scale.push_back(p.scale[s]);
        lo.push_back(static_cast<float>(p.qmin - p.zero_point[s]));
        hi.push_back(static_cast<float>(p.qmax - p.zero_point[s]));
        zp.push_back(static_cast<float>(p.zero_point[s]));
      }
    }
  }
  detail::SlotArrays arrays() const { return {inv.data(), scale.data(), lo.data(), hi.data(), zp.data(), rows}; }
};

const detail::IsaKernels& best_kernels() {
  static const detail::IsaKernels& best = detail::available_isa_kernels().back();
  return best;
}

}  // namespace

namespace detail {
namespace baseline {
void fake_quant(const SliceLayout&, const SlotArrays&, Rounding, std::uint64_t, const float*, float*, std::uint8_t*);
void quantize(const SliceLayout&, const SlotArrays&, Rounding, std::uint64_t, const float*, std::int32_t*);
}  // namespace baseline
#if QDRIFT_X86_ISAS
namespace avx2 {
void fake_quant(const SliceLayout&, const SlotArrays&, Rounding, std::uint64_t, const float*, float*, std::uint8_t*);
void quantize(const SliceLayout&, const SlotArrays&, Rounding, std::uint64_t, const float*, std::int32_t*);
}  // namespace avx2
namespace avx512 {
void fake_quant(const SliceLayout&, const SlotArrays&, Rounding, std::uint64_t, const float*, float*, std::uint8_t*);
void quantize(const SliceLayout&, const SlotArrays&, Rounding, std::uint64_t, const float*, std::int32_t*);
}  // namespace avx512
#endif

const std::vector<IsaKernels>& available_isa_kernels() {
  static const std::vector<IsaKernels> kernels = [] {
    std::vector<IsaKernels> k{{"baseline", &baseline::fake_quant, &baseline::quantize}};
#if QDRIFT_X86_ISAS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) k.push_back({"avx2", &avx2::fake_quant, &avx2::quantize});
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
      k.push_back({"avx512", &avx512::fake_quant, &avx512::quantize});
#endif
    return k;
  }();
  return kernels;
}
}  // namespace detail

namespace ref {

void quantize(const ElementwiseArgs& a, const float* x, std::int32_t* q) {
  for_each_element(*a.layout, [&](std::size_t i, std::size_t s) { q[i] = ref_element(a, s, x[i], i).q; });
}

void fake_quant(const ElementwiseArgs& a, const float* x, float* y, std::uint8_t* mask) {
  const QuantParams& p = *a.params;
  for_each_element(*a.layout, [&](std::size_t i, std::size_t s) {
    const RefElement e = ref_element(a, s, x[i], i);
    const bool in_range = e.code_f >= static_cast<float>(p.qmin) && e.code_f <= static_cast<float>(p.qmax);
    y[i] = std::isnan(x[i]) ? x[i] : static_cast<float>(e.q - p.zero_point[s]) * p.scale[s];
    if (mask) mask[i] = static_cast<std::uint8_t>(in_range);
  });
}

}  // namespace ref

void detail::quantize_with(const IsaKernels& k, const ElementwiseArgs& a, const float* x, std::int32_t* q) {
  const SlotTable t(*a.params, *a.layout);
  k.quantize(*a.layout, t.arrays(), a.rounding, a.seed, x, q);
}

void detail::fake_quant_with(const IsaKernels& k, const ElementwiseArgs& a, const float* x, float* y,
                             std::uint8_t* mask) {
  const SlotTable t(*a.params, *a.layout);
  k.fake_quant(*a.layout, t.arrays(), a.rounding, a.seed, x, y, mask);
}

void quantize(const ElementwiseArgs& a, const float* x, std::int32_t* q) { detail::quantize_with(best_kernels(), a, x, q); }

void fake_quant(const ElementwiseArgs& a, const float* x, float* y, std::uint8_t* mask) {
  detail::fake_quant_with(best_kernels(), a, x, y, mask);
}

void dequantize(const ElementwiseArgs& a, const std::int32_t* q, float* y) {
  const QuantParams& p = *a.params;
  for_each_element(*a.layout, [&](std::size_t i, std::size_t s) {
    y[i] = static_cast<float>(q[i] - p.zero_point[s]) * p.scale[s];
  });
}

void apply_ste_mask(const std::uint8_t* mask, const float* dy, std::size_t n, float* dx) {
  // dy * 0 (not a literal 0): a NaN or Inf gradient stays visible, as in torch's dY * mask.
  for (std::size_t i = 0; i < n; ++i) dx[i] = mask[i] ? dy[i] : 0.0f * dy[i];
}

void fake_quant_backward(const ElementwiseArgs& a, const float* x, const float* dy, float* dx) {
  const std::size_t n = a.layout->num_elements();
  std::vector<float> y(n);
  std::vector<std::uint8_t> mask(n);
  fake_quant(a, x, y.data(), mask.data());
  apply_ste_mask(mask.data(), dy, n, dx);
}

// torch's fake_quantize_learnable_*_grad_kernel_cpu, element by element. Note it rounds
// f32(zp + f32(x * inv)) with the zero point added *before* rounding (unlike the forward).
void fake_quant_lsq_backward(const ElementwiseArgs& a, const float* x, const float* dy, float grad_factor,
                             float* dx, float* dscale, float* dzero_point) {
  const QuantParams& p = *a.params;
  const std::size_t slots = p.scale.size();
  std::vector<double> sum_scale(slots, 0.0), sum_zp(slots, 0.0);
  for_each_element(*a.layout, [&](std::size_t i, std::size_t s) {
    const float scale = p.scale[s];
    const float inv = p.inv_scale[s];
    const float zp = static_cast<float>(p.zero_point[s]);
    const float code = round_half_even(zp + x[i] * inv);
    if (std::isnan(code)) {  // a NaN input has no code: no gradient to x, scale or zero point
      dx[i] = 0.0f;
      return;
    }
    const bool below = code < static_cast<float>(p.qmin);
    const bool above = code > static_cast<float>(p.qmax);
    dx[i] = (below || above) ? 0.0f * dy[i] : dy[i];
    if (below || above) {
      const float edge = static_cast<float>((below ? p.qmin : p.qmax) - p.zero_point[s]);
      sum_scale[s] += static_cast<double>(dy[i] * edge * grad_factor);
      sum_zp[s] += static_cast<double>(dy[i] * -1.0f * scale * grad_factor);
    } else {
      const float xfq = static_cast<float>(static_cast<std::int32_t>(code) - p.zero_point[s]) * scale;
      sum_scale[s] += static_cast<double>(dy[i] * (xfq - x[i]) * inv * grad_factor);
    }
  });
  for (std::size_t s = 0; s < slots; ++s) {
    dscale[s] = static_cast<float>(sum_scale[s]);
    dzero_point[s] = static_cast<float>(sum_zp[s]);
  }
}

}  // namespace qdrift
