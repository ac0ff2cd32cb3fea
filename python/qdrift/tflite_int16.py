"""The int16x8 profile (int16 activations, int8 weights, int64 or int32 biases) on each LiteRT kernel
path: which kernel and output stage runs each int16 op of a .tflite file, as measured with
ai-edge-litert 2.3 (tests/python/test_int16x8.py) and read in the LiteRT sources.

What each path computes (XNNPACK takes no int16 op, so "xnnpack" always equals "builtin"):

| op                       | reference (BUILTIN_REF)        | builtin / xnnpack                        |
|--------------------------|--------------------------------|------------------------------------------|
| FULLY_CONNECTED, int64 b | RHA((double)acc * M), int64    | the same (the int64 bias forces it)      |
| FULLY_CONNECTED, int32 b | RHA((double)acc * M), int32    | ruy: two round-half-up steps, int32      |
| CONV_2D, int64 b         | 16-bit reduced multiplier      | the same                                 |
| CONV_2D, int32 b         | gemmlowp double rounding       | ruy (groups == 1), gemmlowp (groups > 1) |
| DEPTHWISE_CONV_2D        | int64 bias only (16-bit reduced multiplier); LiteRT rejects int32 bias    |
| ADD                      | inputs << 15, gemmlowp rescaling (the same on both)                       |
| MUL                      | a * b in int32, gemmlowp rescaling by f32(f32(s_a * s_b) / s_out) (both)  |
| TANH / LOGISTIC          | interpolated sigmoid table (the same on both, unless the input scale is a |
|                          | power of two within 1e-3 in log2: then builtin runs gemmlowp fixed point) |
| QUANTIZE float -> int16  | RHA(f32(x / s))                | blocks of 8: RNE(f32(x * f32(1/s))), tail RHA(x / (double)s) |
| DEQUANTIZE int16 -> float| f32(s * q)                     | the same                                 |

M = (double)s_in * s_w[c] / (double)s_out (per-tensor FC on the builtin path: a float32 product).
"""
from __future__ import annotations

import numpy as np

from . import _core
from .tflite_kernels import activation_range, f32

INT16_OPS = ("QUANTIZE", "DEQUANTIZE", "FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "TANH", "LOGISTIC",
             "MUL")
# Data movement the converter emits around int16 ops: TRANSPOSE (unrolled RNN inputs) and the
# SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND pair around a dilated convolution. Exact for any dtype.
DATA_OPS = ("TRANSPOSE", "SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND")
_ACTIVATIONS = {0: "linear", 1: "relu", 3: "relu6"}
_TENSOR_TYPE_INT32, _TENSOR_TYPE_INT64 = 2, 4     # TFLite schema TensorType values (quantized_bias_type)


def handles(op, tensors) -> bool:
    """True for the ops of the int16x8 profile: int16 activations in (or out, for QUANTIZE)."""
    if op.name in DATA_OPS:
        return True
    if op.name not in INT16_OPS:
        return False
    if op.name == "QUANTIZE":
        return tensors[op.outputs[0]].dtype == np.int16 or tensors[op.inputs[0]].dtype == np.int16
    return tensors[op.inputs[0]].dtype == np.int16


def run_op(op, tensors, values, kernels):
    t_in, t_out = tensors[op.inputs[0]], tensors[op.outputs[0]]
    x = values[op.inputs[0]]
    if op.name in DATA_OPS:
        return _move_data(op.name, x, [tensors[i].data for i in op.inputs[1:]], t_out)
    if op.name == "QUANTIZE":
        if t_in.dtype != np.float32:
            raise _core.UnsupportedError(f"run: QUANTIZE {t_in.dtype.__name__} -> {t_out.dtype.__name__} "
                                         "(requantization) is not supported; only float32 -> int16")
        rule = "reference" if kernels == "reference" else "neon_blocks"
        return _core.quantize_int16(np.ascontiguousarray(x, np.float32), float(t_out.scale[0]),
                                    int(t_out.zero_point[0]), rule=rule)
    if op.name == "DEQUANTIZE":
        return _core.dequantize_int16(np.ascontiguousarray(x), float(t_in.scale[0]), int(t_in.zero_point[0]))
    for t in (t_in, t_out):
        if t.zero_point.size and np.any(t.zero_point != 0):
            raise _core.UnsupportedError(f"run: int16 {op.name} needs zero points 0 (tensor '{t.name}' has "
                                         f"{int(t.zero_point[0])})")
    if op.name in ("TANH", "LOGISTIC"):
        return _table(op.name.lower(), x, t_in, t_out, kernels)
    act = _ACTIVATIONS.get(op.options.get("activation", 0))
    if act is None:
        raise _core.UnsupportedError(f"run: fused activation {op.options['activation']} of {op.name} is not supported")
    act_min, act_max = activation_range(act, f32(t_out.scale[0]), 0, "reference", qmin=-32768, qmax=32767)
    if op.name == "ADD":
        return _add(op, tensors, values, act_min, act_max)
    if op.name == "MUL":
        t_b = tensors[op.inputs[1]]
        if t_b.zero_point.size and np.any(t_b.zero_point != 0):
            raise _core.UnsupportedError(f"run: int16 MUL needs zero points 0 (tensor '{t_b.name}' has "
                                         f"{int(t_b.zero_point[0])}; LiteRT's Prepare rejects it)")
        b = values[op.inputs[1]] if op.inputs[1] in values else t_b.data
        a, b = (np.ascontiguousarray(v) for v in np.broadcast_arrays(x, b))
        return _core.mul_int16(a, b, float(t_in.scale[0]), float(t_b.scale[0]), float(t_out.scale[0]),
                               act_min=act_min, act_max=act_max)
    w = tensors[op.inputs[1]]
    bias = tensors[op.inputs[2]].data if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    accumulator = _accumulator(op, bias)
    stage = _output_stage(op.name, kernels, accumulator, t_in.scale[0], w.scale, t_out.scale[0],
                          groups=x.shape[3] // w.shape[3] if op.name == "CONV_2D" else 1)
    stage.update(act_min=act_min, act_max=act_max)
    if op.name == "FULLY_CONNECTED":
        y = _core.fully_connected_int16(np.ascontiguousarray(x.reshape(-1, w.shape[1])), w.data, bias,
                                        accumulator=accumulator, **stage)
        return y.reshape((x.shape[0],) + tuple(t_out.shape[1:])) if len(t_out.shape) > 1 else y
    if op.name == "CONV_2D":
        groups = x.shape[3] // w.shape[3]
        f = np.ascontiguousarray(np.transpose(w.data, (1, 2, 3, 0)))      # OHWI -> (KH, KW, C/g, O)
    else:
        groups = x.shape[3]
        f = np.ascontiguousarray(w.data.reshape(w.shape[1], w.shape[2], 1, w.shape[3]))
    return _core.conv2d_int16(x, f, bias, accumulator=accumulator, strides=op.options["strides"],
                              padding=op.options["padding"], dilation=op.options["dilation"], groups=groups, **stage)


def _accumulator(op, bias):
    """The sum's width: the bias's type, or the op's quantized_bias_type when there is no bias."""
    declared = {_TENSOR_TYPE_INT32: "int32", _TENSOR_TYPE_INT64: "int64"}.get(op.options.get("quantized_bias_type", 0))
    if bias is not None:
        kind = "int64" if bias.dtype == np.int64 else "int32"
        if declared is not None and declared != kind:
            raise _core.UnsupportedError(f"run: int16 {op.name} has a {kind} bias but declares quantized_bias_type "
                                         f"{declared}; LiteRT rejects the file")
        if kind == "int32" and declared is None and op.name != "DEPTHWISE_CONV_2D":
            raise _core.UnsupportedError(f"run: int16 {op.name} with an int32 bias and no quantized_bias_type: LiteRT "
                                         "reads that bias as int64")
    else:
        kind = declared or "int64"
    if op.name == "DEPTHWISE_CONV_2D" and kind != "int64":
        raise _core.UnsupportedError("run: int16 DEPTHWISE_CONV_2D with an int32 bias: LiteRT's Prepare rejects it "
                                     "(bias->type != kTfLiteInt64)")
    return kind


def _output_stage(name, kernels, accumulator, input_scale, weight_scales, output_scale, groups=1):
    """method and m/shift or scale for one int16 FC / conv on one kernel path (table above)."""
    s_w = np.atleast_1d(np.asarray(weight_scales, np.float32))
    s_in, s_out = f32(input_scale), f32(output_scale)
    exact = float(s_in) * s_w.astype(np.float64) / float(s_out)          # double product, double division
    if name == "FULLY_CONNECTED":
        if accumulator == "int64" or kernels == "reference":
            return dict(method="double_rha", scale=exact)
        method = "ruy"
        if s_w.size == 1:      # per-tensor Prepare: GetQuantizedConvolutionMultipler's float product
            exact = np.array([float(f32(s_in * s_w[0])) / float(s_out)])
    elif accumulator == "int64":
        method = "int64"
    else:
        method = "ruy" if kernels != "reference" and groups == 1 else "gemmlowp"
    ms, shifts = zip(*(_core.quantize_multiplier(float(v)) for v in exact))
    return dict(method=method, m=np.array(ms, np.int32), shift=np.array(shifts, np.int32))


def _add(op, tensors, values, act_min, act_max):
    t_a, t_b, t_out = (tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    a = values[op.inputs[0]]
    b = values[op.inputs[1]] if op.inputs[1] in values else t_b.data
    scales = [float(t.scale[0]) for t in (t_a, t_b, t_out)]
    if op.options.get("pot_scale_int16", True) and all(_is_power_of_two(s) for s in scales):
        raise _core.UnsupportedError("run: int16 ADD with power-of-two scales (the LSTM fixed-point kernel) is not "
                                     "supported")
    a, b = (np.ascontiguousarray(v) for v in np.broadcast_arrays(a, b))
    return _core.add_int16(a, b, *scales, act_min=act_min, act_max=act_max)


def _is_power_of_two(scale):
    """LiteRT's CheckedLog2: log2 through float32 logs within 1e-3 of an integer."""
    log2 = np.log(f32(scale)) * (f32(1) / np.log(f32(2)))
    return abs(float(log2 - np.round(log2))) < 1e-3


def _table(function, x, t_in, t_out, kernels):
    if float(t_out.scale[0]) != 2.0 ** -15:
        raise _core.UnsupportedError(f"run: int16 {function.upper()} needs output scale 2^-15, got {t_out.scale[0]}")
    _, left_shift, power_of_two = _core.int16_table_input(function, float(t_in.scale[0]))
    x = np.ascontiguousarray(x)
    if power_of_two and kernels != "reference":    # the builtin kernel's gemmlowp fixed point
        return _core.fixed_point_int16(function, x, left_shift)
    return _core.table_int16(function, x, float(t_in.scale[0]))


def _move_data(name, x, constants, t_out):
    if any(c is None for c in constants):
        raise _core.UnsupportedError(f"run: {name} with computed (non-constant) parameters is not supported")
    if name == "TRANSPOSE":
        return np.ascontiguousarray(np.transpose(x, constants[0]))
    (bh, bw), ((top, bottom), (left, right)) = constants[0], constants[1]
    n, c = x.shape[0], x.shape[3]
    if name == "SPACE_TO_BATCH_ND":
        # Pad with the zero point (real 0), then move each (i, j) phase of the block into its own
        # batch slice: out[(i * bw + j) * N + n, y, x] = padded[n, y * bh + i, x * bw + j].
        pad = int(t_out.zero_point[0]) if t_out.zero_point.size else 0
        p = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=pad)
        h, w = p.shape[1] // bh, p.shape[2] // bw
        return np.ascontiguousarray(p.reshape(n, h, bh, w, bw, c).transpose(2, 4, 0, 1, 3, 5).reshape(bh * bw * n, h, w, c))
    # BATCH_TO_SPACE_ND, the inverse, then crop.
    n //= bh * bw
    h, w = x.shape[1], x.shape[2]
    y = x.reshape(bh, bw, n, h, w, c).transpose(2, 3, 0, 4, 1, 5).reshape(n, h * bh, w * bw, c)
    return np.ascontiguousarray(y[:, top:h * bh - bottom, left:w * bw - right, :])
