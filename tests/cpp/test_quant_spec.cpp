// SPDX-License-Identifier: Apache-2.0
// QuantSpec: code ranges, validation, and the strict JSON reader's error messages.
#include <doctest/doctest.h>

#include "qdrift/core/error.h"
#include "qdrift/quantizers/quant_spec.h"

using qdrift::ConfigError;
using qdrift::parse_quant_spec;

TEST_CASE("quant_spec: code ranges for every width, sign and narrow range") {
  for (int bits = 2; bits <= 16; ++bits) {
    qdrift::QuantSpec s;
    s.bits = bits;
    CAPTURE(bits);
    CHECK(s.qmin() == -(1 << (bits - 1)));
    CHECK(s.qmax() == (1 << (bits - 1)) - 1);
    s.narrow_range = true;
    CHECK(s.qmin() == -(1 << (bits - 1)) + 1);
    s.is_signed = false;
    CHECK(s.qmin() == 1);
    CHECK(s.qmax() == (1 << bits) - 1);
    s.narrow_range = false;
    CHECK(s.qmin() == 0);
  }
}

TEST_CASE("quant_spec: JSON round trip") {
  const auto s = parse_quant_spec(R"({"bits": 4, "signed": false, "granularity": "per_group", "axis": 1,
                                      "group_size": 32, "observer": "mse", "rounding": "stochastic", "seed": 9})");
  CHECK(s.bits == 4);
  CHECK(!s.is_signed);
  CHECK(s.granularity == qdrift::Granularity::kPerGroup);
  CHECK(s.group_size == 32);
  CHECK(s.rounding == qdrift::Rounding::kStochastic);
  CHECK(parse_quant_spec(qdrift::to_json(s)) == s);
  // The TFLite formula rounds half away unless told otherwise.
  CHECK(parse_quant_spec(R"({"formula": "tflite"})").rounding == qdrift::Rounding::kHalfAway);
}

TEST_CASE("quant_spec: every error names the JSON pointer") {
  struct Case {
    const char* json;
    const char* message;
  };
  const Case cases[] = {
      {R"({"bitz": 8})", "/q/bitz: unknown key 'bitz'"},
      {R"({"bits": 17})", "/q/bits: bits must be in [2, 16], got 17"},
      {R"({"bits": 1})", "/q/bits: bits must be in [2, 16], got 1"},
      {R"({"bits": "8"})", "/q/bits: expected an integer"},
      {R"({"bits": 8.5})", "/q/bits: expected an integer"},
      {R"({"granularity": "per_chanel"})", "/q/granularity: unknown value 'per_chanel'; expected one of per_tensor, per_channel, per_group"},
      {R"({"granularity": "per_group"})", "/q/group_size: per_group quantization needs group_size > 0"},
      {R"({"group_size": 4})", "/q/group_size: group_size is only meaningful"},
      {R"({"signed": 1})", "/q/signed: expected a boolean"},
      {R"({"seed": -1})", "/q/seed: expected a non-negative integer"},
      {R"({"percentile": 20})", "/q/percentile: must be in (50, 100]"},
      {R"({"format": "fp8"})", "/q/format: unknown value 'fp8'"},
      {R"({"format": "fp16", "granularity": "per_channel"})", "/q/granularity: float format fp16 has no scale"},
      {R"({"formula": "tflite", "bits": 4})", "/q/formula: the TFLite converter quantizes"},
      {R"([1, 2])", "/q: expected an object"},
      {R"({"bits": )", "/q: invalid JSON"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.json);
    CHECK_THROWS_WITH_AS(parse_quant_spec(c.json, "/q"), doctest::Contains(c.message), ConfigError);
  }
}
