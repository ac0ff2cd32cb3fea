// SPDX-License-Identifier: Apache-2.0
// Integer FULLY_CONNECTED and CONV_2D: the readable reference loops (int32 accumulators, as the
// int8 kernels use; w * (x - zp) with |w| <= 127 cannot overflow below 2^16 taps).
#include "qdrift/ops/integer.h"

#include "qdrift/core/check.h"

namespace qdrift {

std::vector<RequantParams> OutputStage::per_channel(std::size_t channels) const {
  const bool real = requant_method_uses_real_scale(method);
  const std::size_t given = real ? scale.size() : multiplier.size();
  QDRIFT_CHECK(given == 1 || given == channels, ConfigError, "output stage: ", given,
               " requantization parameters for ", channels, " output channels");
  QDRIFT_CHECK(real || shift.size() == multiplier.size(), ConfigError, "output stage: ", multiplier.size(),
               " multipliers but ", shift.size(), " shifts");
  QDRIFT_CHECK(act_min <= act_max, ConfigError, "output stage: act_min ", act_min, " > act_max ", act_max);
  std::vector<RequantParams> out(channels);
  for (std::size_t c = 0; c < channels; ++c) {
    RequantParams& p = out[c];
    const std::size_t i = given == 1 ? 0 : c;
    p.method = method;
    if (real) {
      p.scale = scale[i];
    } else {
      p.multiplier = multiplier[i];
      p.shift = shift[i];
    }
    p.zero_point = zero_point;
    p.qmin = act_min;
    p.qmax = act_max;
    validate(p);
  }
  return out;
}

void fully_connected_int8(const std::int8_t* x, std::size_t batch, std::size_t in, std::int32_t x_zero_point,
                          const std::int8_t* filter, std::size_t out, const std::int32_t* bias,
                          const OutputStage& stage, std::int8_t* y) {
  const std::vector<RequantParams> rq = stage.per_channel(out);
  for (std::size_t n = 0; n < batch; ++n)
    for (std::size_t o = 0; o < out; ++o) {
      // acc = bias[o] + sum_i filter[o, i] * (x[n, i] - zp_in)
      std::int32_t acc = bias ? bias[o] : 0;
      for (std::size_t i = 0; i < in; ++i) acc += filter[o * in + i] * (x[n * in + i] - x_zero_point);
      y[n * out + o] = static_cast<std::int8_t>(requantize(acc, rq[o]));
    }
}

void conv2d_int8(const ConvGeometry& g, const std::int8_t* x, std::int32_t x_zero_point, const std::int8_t* filter,
                 const std::int32_t* bias, const OutputStage& stage, std::int8_t* y) {
  const std::vector<RequantParams> rq = stage.per_channel(g.o);
  for (std::size_t n = 0; n < g.n; ++n)
    for (std::size_t oy = 0; oy < g.oh; ++oy)
      for (std::size_t ox = 0; ox < g.ow; ++ox)
        for (std::size_t oc = 0; oc < g.o; ++oc) {
          const std::size_t group = oc / g.og();
          std::int32_t acc = bias ? bias[oc] : 0;
          for (std::size_t ky = 0; ky < g.kh; ++ky) {
            const auto iy = static_cast<std::ptrdiff_t>(oy * g.sh + ky * g.dh) - static_cast<std::ptrdiff_t>(g.pad_top);
            if (iy < 0 || iy >= static_cast<std::ptrdiff_t>(g.h)) continue;   // padding: x == zp_in, adds 0
            for (std::size_t kx = 0; kx < g.kw; ++kx) {
              const auto ix = static_cast<std::ptrdiff_t>(ox * g.sw + kx * g.dw) - static_cast<std::ptrdiff_t>(g.pad_left);
              if (ix < 0 || ix >= static_cast<std::ptrdiff_t>(g.w)) continue;
              const std::int8_t* xp =
                  x + ((n * g.h + static_cast<std::size_t>(iy)) * g.w + static_cast<std::size_t>(ix)) * g.c + group * g.cg();
              for (std::size_t ic = 0; ic < g.cg(); ++ic)
                acc += filter[((ky * g.kw + kx) * g.cg() + ic) * g.o + oc] * (xp[ic] - x_zero_point);
            }
          }
          y[((n * g.oh + oy) * g.ow + ox) * g.o + oc] = static_cast<std::int8_t>(requantize(acc, rq[oc]));
        }
}

}  // namespace qdrift
