// SPDX-License-Identifier: Apache-2.0
// Narrow float formats: fp16 (IEEE binary16), bf16, fp8 e4m3fn and e5m2 (OCP), converted from
// float32 with round-half-even, overflow and NaN as each format (and ml_dtypes) defines them.
#pragma once

#include <cstddef>
#include <cstdint>

#include "qdrift/quantizers/quant_spec.h"

namespace qdrift {

// Bit pattern of x in format f (in the low 16 or 8 bits). f must not be Format::kInt.
std::uint16_t float_to_bits(float x, Format f);
// The float32 value of a bit pattern (only the format's low bits are read).
float bits_to_float(std::uint16_t bits, Format f);
// Round to the format and back: the value a float32 becomes when stored in f.
float round_to_format(float x, Format f);

void cast(Format f, const float* x, std::size_t n, float* y);
void to_bits(Format f, const float* x, std::size_t n, std::uint16_t* bits);
void from_bits(Format f, const std::uint16_t* bits, std::size_t n, float* y);
// 8-bit codes for the fp8 formats (ConfigError for a 16-bit format).
void to_bits(Format f, const float* x, std::size_t n, std::uint8_t* bits);
void from_bits(Format f, const std::uint8_t* bits, std::size_t n, float* y);

int format_bits(Format f);  // 16 or 8
double format_max(Format f);  // largest finite value

}  // namespace qdrift
