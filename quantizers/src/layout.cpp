// SPDX-License-Identifier: Apache-2.0
// Element-to-parameter-slot mapping for per-tensor, per-channel and per-group quantization.
#include "qdrift/quantizers/layout.h"

#include "qdrift/core/check.h"

namespace qdrift {

std::size_t SliceLayout::num_slots() const {
  switch (granularity) {
    case Granularity::kPerTensor: return 1;
    case Granularity::kPerChannel: return channels;
    case Granularity::kPerGroup: return outer * (channels / group_size) * inner;
  }
  return 1;
}

SliceLayout make_layout(const Shape& shape, Granularity g, int axis, int group_size, const char* what) {
  SliceLayout l;
  l.granularity = g;
  if (g == Granularity::kPerTensor) {
    l.outer = num_elements(shape);
    return l;
  }
  QDRIFT_CHECK(!shape.empty(), ShapeError, what, ": ", granularity_name(g),
               " quantization needs a tensor of rank >= 1, got a scalar");
  const auto a = static_cast<std::size_t>(normalize_axis(axis, shape.size(), what));
  l.outer = 1;
  for (std::size_t i = 0; i < a; ++i) l.outer *= shape[i];
  l.channels = shape[a];
  for (std::size_t i = a + 1; i < shape.size(); ++i) l.inner *= shape[i];
  if (g == Granularity::kPerGroup) {
    QDRIFT_CHECK(group_size > 0, ConfigError, what, ": group_size must be positive, got ", group_size);
    QDRIFT_CHECK(l.channels % static_cast<std::size_t>(group_size) == 0, ShapeError, what,
                 ": group_size ", group_size, " does not divide axis ", axis, " of length ",
                 l.channels, " (shape ", shape_to_string(shape), ")");
    l.group_size = static_cast<std::size_t>(group_size);
  }
  return l;
}

Shape param_shape(const Shape& shape, const SliceLayout& layout, int normalized_axis) {
  switch (layout.granularity) {
    case Granularity::kPerTensor: return {};
    case Granularity::kPerChannel: return {layout.channels};
    case Granularity::kPerGroup: {
      Shape s = shape;
      s[static_cast<std::size_t>(normalized_axis)] /= layout.group_size;
      return s;
    }
  }
  return {};
}

}  // namespace qdrift
