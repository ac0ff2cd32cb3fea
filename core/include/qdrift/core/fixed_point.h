// SPDX-License-Identifier: Apache-2.0
// Fixed-point requantization exactly as TFLite's kernel paths compute it
// (shared/reference/tflite-semantics.md §3): the (multiplier, shift) encoding of a real
// multiplier and the rounding variants of the gemmlowp, ruy, XNNPACK and reference paths.
#pragma once

#include <cstdint>
#include <string_view>

namespace qdrift {

// A real multiplier M encoded as m * 2^(shift - 31), m in [2^30, 2^31) or m == 0.
struct QuantizedMultiplier {
  std::int32_t multiplier = 0;
  int shift = 0;
};

// TFLite QuantizeMultiplier (default build): frexp, RHA(q * 2^31), the q == 2^31 branch
// (shift + 1), and flush to (0, 0) when shift < -31. Throws ConfigError for negative, NaN or
// infinite M.
QuantizedMultiplier quantize_multiplier(double real_multiplier);

// gemmlowp SaturatingRoundingDoublingHighMul: RHU(a * b / 2^31), saturating INT32_MIN^2.
std::int32_t saturating_rounding_doubling_high_mul(std::int32_t a, std::int32_t b);

// gemmlowp RoundingDivideByPOT: RHA(x / 2^exponent), 0 <= exponent <= 31.
std::int32_t rounding_divide_by_pot(std::int32_t x, int exponent);

// The requantization rules of the LiteRT kernel paths. One enumerator per rule; the
// spellings are the `method=` names of qdrift.requantize.
enum class RequantMethod : std::uint8_t {
  kGemmlowp,   // "gemmlowp":   TFLite default MultiplyByQuantizedMultiplier: SRDHM (RHU) then RDBPOT (RHA)
  kSingle,     // "single":     TFLITE_SINGLE_ROUNDING: RHU(acc * m / 2^(31 - shift)) in int64
  kRuy,        // "ruy":        ruy x86 AVX2/AVX-512 kernels: RHU high-mul (no saturation) then RHU shift
  kInt64,      // "int64":      int64-accumulator overload (int16x8): 16-bit reduced multiplier, single RHU
  kXnnpack,    // "xnnpack":    fp32: RNE(f32(f32(acc) * scale)), scale a float32
  kDoubleRha,  // "double_rha": reference FC since LiteRT 1.3: RHA((double)acc * scale), scale a double
};

std::string_view requant_method_name(RequantMethod m);
RequantMethod parse_requant_method(std::string_view name);  // ConfigError listing the names
bool requant_method_uses_real_scale(RequantMethod m);       // xnnpack and double_rha

// Fixed-point rules (kGemmlowp, kSingle, kRuy): value before the zero point and clamp.
std::int32_t requantize_gemmlowp(std::int32_t acc, std::int32_t multiplier, int shift);
std::int32_t requantize_single(std::int32_t acc, std::int32_t multiplier, int shift);
std::int32_t requantize_ruy(std::int32_t acc, std::int32_t multiplier, int shift);
std::int32_t requantize_int64(std::int64_t acc, std::int32_t multiplier, int shift);

// Full output stage as the kernels order it: rule, + zero_point, clamp to [qmin, qmax].
// XNNPACK clamps in float before rounding (to [qmin - zp, qmax - zp]); the others clamp the
// integer after adding zp. Fixed-point rules read (multiplier, shift); real-scale rules read
// `scale` (XNNPACK narrows it to float32 first, as it stores it).
struct RequantParams {
  RequantMethod method = RequantMethod::kGemmlowp;
  std::int32_t multiplier = 0;
  int shift = 0;
  double scale = 0.0;
  std::int32_t zero_point = 0;
  std::int32_t qmin = INT32_MIN;
  std::int32_t qmax = INT32_MAX;
};
// Validates p (shift range, scale finite and >= 0, qmin <= qmax); throws ConfigError.
void validate(const RequantParams& p);
std::int32_t requantize(std::int64_t acc, const RequantParams& p);

}  // namespace qdrift
