// SPDX-License-Identifier: Apache-2.0
// Bindings: error metrics (whole tensor or per group), argmax agreement, LSB-difference
// histograms and out-of-range counts. Convert, check shapes, release the GIL, call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "numpy_interop.h"
#include "qdrift/analysis/metrics.h"

namespace py = pybind11;
using namespace pybind11::literals;
using qdrift::py_interop::array_in;
using qdrift::py_interop::array_out;

namespace {

template <class T>
void check_same_shape(const qdrift::py_interop::ArrayIn<T>& r, const qdrift::py_interop::ArrayIn<T>& c,
                      const std::string& what) {
  QDRIFT_CHECK(r.shape == c.shape, qdrift::ShapeError, what, ": reference ", qdrift::shape_to_string(r.shape),
               " and candidate ", qdrift::shape_to_string(c.shape), " differ in shape");
}

void check_layout(std::size_t size, std::size_t outer, std::size_t groups, std::size_t inner, const std::string& what) {
  QDRIFT_CHECK(outer * groups * inner == size, qdrift::ShapeError, what, ": layout (", outer, ", ", groups, ", ", inner,
               ") does not cover the ", size, " elements");
}

}  // namespace

void bind_analysis(py::module_& m) {
  m.def(
      "error_metrics",
      [](const py::handle& reference, const py::handle& candidate, std::size_t outer, std::size_t groups,
         std::size_t inner, const std::string& what) {
        auto r = array_in<float>(reference, what.c_str(), "reference");
        auto c = array_in<float>(candidate, what.c_str(), "candidate");
        check_same_shape(r, c, what);
        check_layout(r.size(), outer, groups, inner, what);
        std::vector<qdrift::ErrorMetrics> out;
        {
          py::gil_scoped_release nogil;
          out = qdrift::grouped_error_metrics(r.data, c.data, outer, groups, inner, what);
        }
        auto column = [&](auto member) {
          auto a = array_out<double>({groups});
          double* p = a.mutable_data();
          for (std::size_t g = 0; g < groups; ++g) p[g] = static_cast<double>(out[g].*member);
          return a;
        };
        py::dict d;
        d["count"] = column(&qdrift::ErrorMetrics::count);
        d["mse"] = column(&qdrift::ErrorMetrics::mse);
        d["rmse"] = column(&qdrift::ErrorMetrics::rmse);
        d["sqnr_db"] = column(&qdrift::ErrorMetrics::sqnr_db);
        d["max_abs"] = column(&qdrift::ErrorMetrics::max_abs);
        d["mean_abs"] = column(&qdrift::ErrorMetrics::mean_abs);
        d["cosine"] = column(&qdrift::ErrorMetrics::cosine);
        d["rel_l2"] = column(&qdrift::ErrorMetrics::rel_l2);
        d["ref_energy"] = column(&qdrift::ErrorMetrics::ref_energy);
        d["noise_energy"] = column(&qdrift::ErrorMetrics::noise_energy);
        return d;
      },
      "reference"_a, "candidate"_a, py::kw_only(), "outer"_a, "groups"_a, "inner"_a, "what"_a = "error_metrics",
      "Metrics of each group g of float32 (outer, groups, inner) buffers -> dict of float64 arrays (one value per "
      "group): count, mse, rmse, sqnr_db, max_abs, mean_abs, cosine, rel_l2, ref_energy, noise_energy.");

  m.def(
      "argmax_agreement",
      [](const py::handle& reference, const py::handle& candidate, const std::string& what) {
        auto r = array_in<float>(reference, what.c_str(), "reference");
        auto c = array_in<float>(candidate, what.c_str(), "candidate");
        check_same_shape(r, c, what);
        const std::size_t cols = r.shape.empty() ? 1 : r.shape.back();
        const std::size_t rows = cols == 0 ? 0 : r.size() / cols;
        py::gil_scoped_release nogil;
        return qdrift::argmax_agreement(r.data, c.data, rows, cols, what);
      },
      "reference"_a, "candidate"_a, py::kw_only(), "what"_a = "argmax_agreement",
      "Fraction of rows (all axes but the last) whose argmax over the last axis agrees.");

  m.def(
      "lsb_histogram",
      [](const py::handle& reference, const py::handle& candidate, std::int32_t max_diff) {
        auto r = array_in<std::int32_t>(reference, "lsb_histogram", "reference");
        auto c = array_in<std::int32_t>(candidate, "lsb_histogram", "candidate");
        check_same_shape(r, c, "lsb_histogram");
        std::vector<std::int64_t> bins;
        {
          py::gil_scoped_release nogil;
          bins = qdrift::lsb_histogram(r.data, c.data, r.size(), max_diff);
        }
        return py::array_t<std::int64_t>(static_cast<py::ssize_t>(bins.size()), bins.data());
      },
      "reference"_a, "candidate"_a, py::kw_only(), "max_diff"_a = 16,
      "Counts of int32 code differences candidate - reference, bins -max_diff..max_diff (end bins collect the rest).");

  m.def(
      "count_outside",
      [](const py::handle& x, std::size_t outer, std::size_t groups, std::size_t inner, const std::vector<float>& lo,
         const std::vector<float>& hi, const std::string& what) {
        auto xi = array_in<float>(x, what.c_str(), "x");
        check_layout(xi.size(), outer, groups, inner, what);
        std::vector<std::int64_t> counts;
        {
          py::gil_scoped_release nogil;
          counts = qdrift::count_outside(xi.data, outer, groups, inner, lo, hi, what);
        }
        return py::array_t<std::int64_t>(static_cast<py::ssize_t>(counts.size()), counts.data());
      },
      "x"_a, py::kw_only(), "outer"_a, "groups"_a, "inner"_a, "lo"_a, "hi"_a, "what"_a = "count_outside",
      "Per group of float32 (outer, groups, inner) x: values outside [lo, hi] (lo/hi: 1 value or one per channel, "
      "channel = inner index % len(lo)).");
}
