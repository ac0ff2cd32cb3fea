"""The output stage each LiteRT kernel path applies to an int8 FULLY_CONNECTED / CONV_2D /
DEPTHWISE_CONV_2D accumulator (shared/reference/tflite-semantics.md §3), as arguments for
qdrift._core.fully_connected_int8 / conv2d_int8.

kernels: "reference" (BUILTIN_REF), "builtin" (BUILTIN_WITHOUT_DEFAULT_DELEGATES, x86), "xnnpack"
(the default interpreter)."""
from __future__ import annotations

import numpy as np

from . import _core

KERNEL_PATHS = ("reference", "builtin", "xnnpack")
f32 = np.float32


def round_half_away(v):
    """Ties away from zero, exactly (v - trunc(v) is exact in floating point)."""
    t = np.trunc(v)
    return t + np.sign(v) * (np.abs(v - t) >= 0.5)


def activation_range(activation, output_scale, output_zero_point, kernels, qmin=-128, qmax=127):
    """Integer clamp bounds of a fused RELU / RELU6 (CalculateActivationRangeQuantized; XNNPACK
    rounds the bounds half to even instead of half away)."""
    if activation in (None, "linear"):
        return qmin, qmax

    def quantize(v):
        with np.errstate(divide="ignore", invalid="ignore"):
            q = f32(f32(v) / f32(output_scale))
        # LiteRT's Prepare (kernel_util.cc Quantize) refuses a bound whose code is outside int32,
        # e.g. RELU6 on an output scale of 0: "no_integer_overflow_from_quantization".
        if not -2.0 ** 31 <= round_half_away(q) <= 2.0 ** 31:
            raise _core.DataError(f"the fused {activation}'s bound {v} is not representable with output scale "
                                  f"{output_scale} (LiteRT's Prepare rejects this op)")
        if kernels == "xnnpack":
            return int(np.rint(q + f32(output_zero_point)))
        return output_zero_point + int(round_half_away(q))

    lo = max(qmin, quantize(0.0))
    hi = min(qmax, quantize(6.0)) if activation == "relu6" else qmax
    return lo, hi


def output_stage(op, kernels, input_scale, weight_scales, output_scale, output_zero_point, activation="linear",
                 groups=1, channels=None):
    """Keyword arguments (method, m/shift or scale, zero_point, act_min, act_max, and for the
    builtin depthwise tail_from/tail_method) for one op. channels: output channels (default: the
    number of weight scales, as the converter writes per-channel scales)."""
    if kernels not in KERNEL_PATHS:
        raise _core.ConfigError(f"kernels: unknown path '{kernels}'; expected one of {', '.join(KERNEL_PATHS)}")
    s_w = np.atleast_1d(np.asarray(weight_scales, np.float32))
    s_in, s_out = f32(input_scale), f32(output_scale)
    act_min, act_max = activation_range(activation, s_out, output_zero_point, kernels)
    stage = dict(zero_point=int(output_zero_point), act_min=act_min, act_max=act_max)
    exact = float(s_in) * s_w.astype(np.float64) / float(s_out)          # double product, double division
    if kernels == "xnnpack":
        return dict(stage, method="xnnpack", scale=((s_in * s_w).astype(np.float32) / s_out).astype(np.float32))
    if kernels == "reference" and op == "fully_connected":
        return dict(stage, method="double_rha", scale=exact)
    if kernels == "builtin" and op == "fully_connected" and s_w.size == 1:
        exact = np.array([float(f32(s_in * s_w[0])) / float(s_out)])    # per-tensor FC: a float32 product
    method = "ruy" if kernels == "builtin" and (op == "fully_connected" or (op == "conv2d" and groups == 1)) \
        else "gemmlowp"
    ms, shifts = zip(*(_core.quantize_multiplier(float(v)) for v in exact))
    stage = dict(stage, method=method, m=np.array(ms, np.int32), shift=np.array(shifts, np.int32))
    if kernels == "builtin" and op == "depthwise":
        # x86 builtin depthwise: 8-channel SIMD blocks round like ruy, the O % 8 channels left
        # over use the scalar gemmlowp rule (measured against the interpreter).
        out_channels = s_w.size if channels is None else channels
        stage.update(method="ruy", tail_from=out_channels // 8 * 8, tail_method="gemmlowp")
    return stage
