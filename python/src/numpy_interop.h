// SPDX-License-Identifier: Apache-2.0
// numpy <-> C++ without copies: checked views of caller arrays (dtype and C-contiguity are
// errors, never silent copies) and freshly allocated outputs.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "qdrift/core/check.h"
#include "qdrift/core/tensor.h"

namespace qdrift::py_interop {

namespace py = pybind11;

template <class T> const char* dtype_name();
template <> inline const char* dtype_name<float>() { return "float32"; }
template <> inline const char* dtype_name<double>() { return "float64"; }
template <> inline const char* dtype_name<std::int32_t>() { return "int32"; }
template <> inline const char* dtype_name<std::int64_t>() { return "int64"; }
template <> inline const char* dtype_name<std::uint16_t>() { return "uint16"; }
template <> inline const char* dtype_name<std::uint8_t>() { return "uint8"; }
template <> inline const char* dtype_name<std::int8_t>() { return "int8"; }
template <> inline const char* dtype_name<std::int16_t>() { return "int16"; }

inline Shape shape_of(const py::array& a) {
  Shape s(static_cast<std::size_t>(a.ndim()));
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s[static_cast<std::size_t>(i)] = static_cast<std::size_t>(a.shape(i));
  return s;
}

// The values of a scalar or 1-D array argument (None: empty), converted to T; for the small
// parameter lists (multipliers, shifts, scales) of the integer output stages.
template <class T>
std::vector<T> values_of(const py::object& obj, const char* what) {
  if (obj.is_none()) return {};
  auto a = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(obj);
  QDRIFT_CHECK(a && a.ndim() <= 1, ConfigError, what, " must be scalars or 1-D arrays");
  return std::vector<T>(a.data(), a.data() + a.size());
}

// A read-only view of `obj` as a C-contiguous array of T. Raises DTypeError (TypeError) for
// another dtype and ShapeError (ValueError) for a non-contiguous array, naming `arg`.
template <class T>
struct ArrayIn {
  py::array array;
  const T* data = nullptr;
  Shape shape;
  std::size_t size() const { return num_elements(shape); }
};

template <class T>
ArrayIn<T> array_in(const py::handle& obj, const char* fn, const char* arg) {
  QDRIFT_CHECK(py::isinstance<py::array>(obj), DTypeError, fn, ": ", arg, " must be a numpy array of ",
               dtype_name<T>(), ", got ", std::string(py::str(py::type::of(obj).attr("__name__"))));
  py::array a = py::reinterpret_borrow<py::array>(obj);
  QDRIFT_CHECK(a.dtype().is(py::dtype::of<T>()), DTypeError, fn, ": ", arg, " must have dtype ",
               dtype_name<T>(), ", got ", std::string(py::str(a.dtype())),
               " (convert with .astype(np.", dtype_name<T>(), "))");
  QDRIFT_CHECK((a.flags() & py::array::c_style) != 0, ShapeError, fn, ": ", arg,
               " must be C-contiguous (use np.ascontiguousarray)");
  ArrayIn<T> r;
  r.array = a;
  r.data = static_cast<const T*>(a.data());
  r.shape = shape_of(a);
  return r;
}

// A new C-contiguous numpy array of T with `shape`, and its writable data pointer.
template <class T>
py::array_t<T> array_out(const Shape& shape) {
  std::vector<py::ssize_t> dims(shape.begin(), shape.end());
  return py::array_t<T>(dims);
}

template <class T>
T* mutable_data(py::array_t<T>& a) { return a.mutable_data(); }

}  // namespace qdrift::py_interop
