// SPDX-License-Identifier: Apache-2.0
// Tensor types: owning tensors are xtensor arrays; views adapt caller-owned, contiguous,
// row-major buffers (numpy arrays from Python) without copying.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>

namespace qdrift {

using Shape = std::vector<std::size_t>;

// Owning, row-major tensor.
template <class T>
using Tensor = xt::xarray<T, xt::layout_type::row_major>;

// Non-owning, row-major view of a contiguous buffer. T may be const.
template <class T>
using TensorView =
    xt::xarray_adaptor<xt::xbuffer_adaptor<T*, xt::no_ownership>, xt::layout_type::row_major, Shape>;

inline std::size_t num_elements(const Shape& shape) {
  std::size_t n = 1;
  for (std::size_t d : shape) n *= d;
  return n;
}

template <class T>
TensorView<T> make_view(T* data, const Shape& shape) {
  return xt::adapt(data, num_elements(shape), xt::no_ownership(), shape);
}

std::string shape_to_string(const Shape& shape);  // "(2, 3, 4)"

// Resolve a possibly negative axis against a rank; throws ShapeError naming `what`.
int normalize_axis(int axis, std::size_t rank, const char* what);

}  // namespace qdrift
