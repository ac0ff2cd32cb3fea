// SPDX-License-Identifier: Apache-2.0
// Private: the input row/column a convolution tap reads, shared by the float and int8 kernels.
#pragma once

#include <cstddef>

namespace qdrift::detail {

// Input index of output position `o` and kernel tap `k`, or -1 when it falls in the padding
// (those taps are skipped: zero in float, the zero point in int8, both contribute nothing).
inline std::ptrdiff_t conv_input_index(std::size_t o, std::size_t k, std::size_t stride, std::size_t dilation,
                                       std::size_t pad, std::size_t size) {
  const auto i = static_cast<std::ptrdiff_t>(o * stride + k * dilation) - static_cast<std::ptrdiff_t>(pad);
  return (i >= 0 && i < static_cast<std::ptrdiff_t>(size)) ? i : -1;
}

}  // namespace qdrift::detail
