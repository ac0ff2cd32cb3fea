// SPDX-License-Identifier: Apache-2.0
// qdrift's exception hierarchy: every user-facing problem is one of these, with a message
// that names the argument, layer or JSON pointer at fault.
#pragma once

#include <stdexcept>
#include <string>

namespace qdrift {

// Base of every qdrift exception. Python: qdrift.Error.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A bad value in a configuration or argument (bits out of range, unknown key, NaN scale).
// Python: qdrift.ConfigError, also a ValueError.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// Shapes or layouts that do not fit (rank, axis out of range, group size, non-contiguous).
// Python: qdrift.ShapeError, also a ValueError.
class ShapeError : public Error {
 public:
  using Error::Error;
};

// Wrong element type for an argument. Python: qdrift.DTypeError, also a TypeError.
class DTypeError : public Error {
 public:
  using Error::Error;
};

// A valid request that qdrift does not implement. Python: qdrift.UnsupportedError, also a
// NotImplementedError.
class UnsupportedError : public Error {
 public:
  using Error::Error;
};

// Data that cannot be processed as asked (NaN/Inf where a finite value is required, corrupt
// files). Python: qdrift.DataError, also a ValueError.
class DataError : public Error {
 public:
  using Error::Error;
};

}  // namespace qdrift
