// SPDX-License-Identifier: Apache-2.0
// QDRIFT_CHECK: always-on checks of user input that throw a typed qdrift exception.
// QDRIFT_DCHECK: debug-only internal invariants ("cannot happen" after validation).
#pragma once

#include <cassert>
#include <sstream>
#include <string>

#include "qdrift/core/error.h"

namespace qdrift::detail {
template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}
}  // namespace qdrift::detail

// QDRIFT_CHECK(cond, ErrorType, message parts...): throws ErrorType(concat(parts...)).
#define QDRIFT_CHECK(cond, ErrorType, ...)                          \
  do {                                                              \
    if (!(cond)) throw ErrorType(::qdrift::detail::concat(__VA_ARGS__)); \
  } while (false)

#define QDRIFT_DCHECK(cond) assert(cond)
