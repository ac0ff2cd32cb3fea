// SPDX-License-Identifier: Apache-2.0
// Shape helpers shared by every error message.
#include <string>

#include "qdrift/core/check.h"
#include "qdrift/core/tensor.h"

namespace qdrift {

std::string shape_to_string(const Shape& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

int normalize_axis(int axis, std::size_t rank, const char* what) {
  const int r = static_cast<int>(rank);
  QDRIFT_CHECK(axis >= -r && axis < r, ShapeError, what, ": axis ", axis,
               " is out of range for a tensor of rank ", r);
  return axis < 0 ? axis + r : axis;
}

}  // namespace qdrift
