// SPDX-License-Identifier: Apache-2.0
// Which parameter slot each element of a tensor uses. A tensor of shape S is viewed as
// (outer, channels, inner) around `axis`; per tensor uses one slot, per channel one per
// channel, per group one per run of `group_size` channels at each (outer, inner) position.
#pragma once

#include <cstddef>

#include "qdrift/quantizers/quant_spec.h"

namespace qdrift {

struct SliceLayout {
  Granularity granularity = Granularity::kPerTensor;
  std::size_t outer = 0;     // product of dims before axis (all elements per tensor)
  std::size_t channels = 1;  // dim at axis (1 per tensor)
  std::size_t inner = 1;     // product of dims after axis
  std::size_t group_size = 1;

  std::size_t num_elements() const { return outer * channels * inner; }
  std::size_t num_slots() const;
  // Slot of the element at (o, c, k); flat index (o * channels + c) * inner + k.
  std::size_t slot(std::size_t o, std::size_t c, std::size_t k) const {
    switch (granularity) {
      case Granularity::kPerTensor: return 0;
      case Granularity::kPerChannel: return c;
      case Granularity::kPerGroup: return (o * (channels / group_size) + c / group_size) * inner + k;
    }
    return 0;
  }
};

// Calls fn(flat index, slot) for every element of a row-major tensor with layout l, in order.
template <class Fn>
void for_each_element(const SliceLayout& l, Fn&& fn) {
  std::size_t i = 0;
  for (std::size_t o = 0; o < l.outer; ++o)
    for (std::size_t c = 0; c < l.channels; ++c)
      for (std::size_t k = 0; k < l.inner; ++k, ++i) fn(i, l.slot(o, c, k));
}

// Throws ShapeError naming `what` when the axis is out of range or the group size does not
// divide the axis length. `axis` may be negative (counted from the end).
SliceLayout make_layout(const Shape& shape, Granularity g, int axis, int group_size, const char* what);

// Shape of the parameter tensor for this layout: () / (C,) / shape with axis -> C / group_size.
Shape param_shape(const Shape& shape, const SliceLayout& layout, int normalized_axis);

}  // namespace qdrift
