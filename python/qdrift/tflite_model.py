"""qd.from_tflite: the exact quantized model a .tflite file holds, run on any LiteRT kernel path.

Supported ops: QUANTIZE, DEQUANTIZE, FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D, RESHAPE, ADD, MUL
(broadcasting), TANH, LOGISTIC and UNPACK with int8 activations, int8 weights and int32 biases (the
full-integer profile). The file is read with
the `tflite` package (flatbuffers bindings of the TFLite schema). Ops on int16 activations (the
int16x8 profile) run through qdrift.tflite_int16; float32, float16-weight and dynamic-range ops,
shape arithmetic and WHILE loops run in qdrift.tflite_float."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from . import _core, tflite_float, tflite_int16
from .tflite_kernels import KERNEL_PATHS, activation_range, f32, output_stage, round_half_away

_DTYPES = {"FLOAT16": np.float16, "FLOAT32": np.float32, "INT32": np.int32, "INT8": np.int8, "INT64": np.int64,
           "INT16": np.int16, "UINT8": np.uint8, "BOOL": np.bool_}
_ACTIVATIONS = {0: "linear", 1: "relu", 3: "relu6"}
SUPPORTED_OPS = ("QUANTIZE", "DEQUANTIZE", "FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "RESHAPE", "ADD",
                 "TANH", "LOGISTIC", "UNPACK", "MUL") + tflite_int16.DATA_OPS
# Shape arithmetic the converter emits for a dynamic batch (Keras Flatten: SHAPE -> STRIDED_SLICE
# -> PACK -> RESHAPE's shape input). qdrift reshapes to the output tensor's shape with the actual
# batch, so these are skipped; they are accepted only when nothing but such a chain reads them.
SHAPE_OPS = ("SHAPE", "STRIDED_SLICE", "PACK")


@dataclass
class Tensor:
    name: str
    dtype: type
    shape: tuple
    scale: np.ndarray         # empty when not quantized
    zero_point: np.ndarray
    data: np.ndarray | None   # constant tensors only


@dataclass
class Op:
    name: str
    inputs: list
    outputs: list
    options: dict


def _tflite():
    try:
        import tflite
    except ImportError:   # pragma: no cover (a declared dependency)
        raise _core.UnsupportedError("from_tflite needs the 'tflite' package: pip install tflite") from None
    return tflite


def _enum_names(enum_cls):
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def _options(tfl, op, name):
    table = op.BuiltinOptions()
    if table is None:
        return {}
    if name == "FULLY_CONNECTED":
        o = tfl.FullyConnectedOptions()
        o.Init(table.Bytes, table.Pos)
        return dict(activation=o.FusedActivationFunction(), keep_num_dims=o.KeepNumDims(),
                    quantized_bias_type=o.QuantizedBiasType(),
                    asymmetric_quantize_inputs=o.AsymmetricQuantizeInputs())
    if name == "ADD":
        o = tfl.AddOptions()
        o.Init(table.Bytes, table.Pos)
        return dict(activation=o.FusedActivationFunction(), pot_scale_int16=bool(o.PotScaleInt16()))
    if name == "UNPACK":
        o = tfl.UnpackOptions()
        o.Init(table.Bytes, table.Pos)
        return dict(axis=o.Axis())
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        o = tfl.Conv2DOptions() if name == "CONV_2D" else tfl.DepthwiseConv2DOptions()
        o.Init(table.Bytes, table.Pos)
        options = dict(activation=o.FusedActivationFunction(), padding="same" if o.Padding() == 0 else "valid",
                       strides=(o.StrideH(), o.StrideW()), dilation=(o.DilationHFactor(), o.DilationWFactor()))
        if name == "CONV_2D":
            options["quantized_bias_type"] = o.QuantizedBiasType()
        return options
    return tflite_float.options(tfl, table, name)


class TFLiteModel:
    """A parsed full-integer .tflite graph. `run(x, kernels=...)` reproduces the chosen LiteRT
    kernel path bit for bit: "reference" (BUILTIN_REF), "builtin" (BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    or "xnnpack" (the default interpreter)."""

    def __init__(self, tensors, ops, inputs, outputs):
        self.tensors, self.ops, self.inputs, self.outputs = tensors, ops, inputs, outputs

    @property
    def input_details(self):
        t = self.tensors[self.inputs[0]]
        return dict(shape=t.shape, dtype=t.dtype, scale=t.scale, zero_point=t.zero_point)

    def run(self, x, kernels="reference", taps=False, path="auto", accumulator=None):
        """The model's output for x on one LiteRT kernel path.

        taps=True: also {tensor name: value} for every tensor computed on the way (as LiteRT's
        experimental_preserve_all_tensors shows them).
        path: qdrift's kernels, "auto" | "fast" | "reference" (same bits).
        accumulator=dict(bits=16, overflow="wrap" | "saturate") models the FC/conv accumulators
        (default: int32 wrap, what the LiteRT kernels use) and adds {output tensor name: overflow
        count}. The result is y, (y, taps), (y, overflows) or (y, taps, overflows)."""
        if kernels not in KERNEL_PATHS:
            raise _core.ConfigError(f"run: unknown kernels '{kernels}'; expected one of {', '.join(KERNEL_PATHS)}")
        first = self.tensors[self.inputs[0]]
        x = np.asarray(x)
        if x.dtype != first.dtype:
            raise _core.DTypeError(f"run: the model's input '{first.name}' is {first.dtype.__name__}, got {x.dtype}")
        if tuple(x.shape[1:]) != tuple(first.shape[1:]):
            raise _core.ShapeError(f"run: the model's input is (batch, {', '.join(map(str, first.shape[1:]))}), "
                                   f"got {tuple(x.shape)}")
        overflows = None if accumulator is None else {}
        values = self.evaluate({self.inputs[0]: np.ascontiguousarray(x)}, kernels, path, accumulator, overflows)
        y = values[self.outputs[0]]
        extras = ({self.tensors[i].name: v for i, v in values.items()},) if taps else ()
        extras += (overflows,) if overflows is not None else ()
        return (y,) + extras if extras else y

    def evaluate(self, values, kernels, path="auto", accumulator=None, overflows=None):
        """Run every op of this subgraph on `values` (tensor index -> array); returns all values."""
        for op in self.ops:
            if tflite_float.handles(self.tensors, op):
                tflite_float.run_op(self, op, values, kernels, path)
            elif op.name == "UNPACK":
                x = values[op.inputs[0]]
                for k, out in enumerate(op.outputs):
                    values[out] = np.ascontiguousarray(np.take(x, k, axis=op.options["axis"]))
            elif op.name not in SHAPE_OPS:
                values[op.outputs[0]] = self._run_op(op, values, kernels, path, accumulator, overflows)
        return values

    def _run_op(self, op, values, kernels, path="auto", accumulator=None, overflows=None):
        if tflite_int16.handles(op, self.tensors):
            return tflite_int16.run_op(op, self.tensors, values, kernels)
        t_in, t_out = self.tensors[op.inputs[0]], self.tensors[op.outputs[0]]
        x = values[op.inputs[0]]
        if op.name == "QUANTIZE":
            return _quantize(x, float(t_out.scale[0]), int(t_out.zero_point[0]), kernels)
        if op.name == "DEQUANTIZE":
            return _dequantize(x, float(t_in.scale[0]), int(t_in.zero_point[0]), kernels)
        if op.name == "RESHAPE":
            # The file's static shape, unless the batch changed at run time (then keep the batch).
            shape = t_out.shape if int(np.prod(t_out.shape)) == x.size else (x.shape[0],) + tuple(t_out.shape[1:])
            if int(np.prod(shape)) != x.size and len(op.inputs) > 1:   # a run-time shape (Dense on rank 3: (-1, F))
                given = values[op.inputs[1]] if op.inputs[1] in values else self.tensors[op.inputs[1]].data
                shape = tuple(int(d) for d in given)
            return np.ascontiguousarray(x.reshape(shape))
        if op.name in ("TANH", "LOGISTIC"):
            # A 256-entry table; XNNPACK rounds its entries half to even, the TFLite kernels half away.
            lut = _core.lut_int8(op.name.lower(), float(t_in.scale[0]), int(t_in.zero_point[0]), float(t_out.scale[0]),
                                 int(t_out.zero_point[0]), round_half_even=kernels == "xnnpack")
            return lut[x.astype(np.int32) + 128]
        if op.name == "ADD":
            t_b = self.tensors[op.inputs[1]]
            b = values[op.inputs[1]] if op.inputs[1] in values else t_b.data
            act = _ACTIVATIONS.get(op.options.get("activation", 0))
            lo, hi = activation_range(act, t_out.scale[0], int(t_out.zero_point[0]), kernels)
            return _core.add_int8(x, np.ascontiguousarray(np.broadcast_to(b, x.shape)), float(t_in.scale[0]),
                                  int(t_in.zero_point[0]), float(t_b.scale[0]), int(t_b.zero_point[0]),
                                  float(t_out.scale[0]), int(t_out.zero_point[0]),
                                  kernel="xnnpack" if kernels == "xnnpack" else "tflite", act_min=lo, act_max=hi)
        if op.name == "MUL":
            # reference and builtin: gemmlowp rescaling by f32(f32(s_a * s_b) / s_out); XNNPACK: fp32 vmul.
            t_b = self.tensors[op.inputs[1]]
            b = values[op.inputs[1]] if op.inputs[1] in values else t_b.data
            act = _ACTIVATIONS.get(op.options.get("activation", 0))
            lo, hi = activation_range(act, t_out.scale[0], int(t_out.zero_point[0]), kernels)
            a, b = (np.ascontiguousarray(v) for v in np.broadcast_arrays(x, b))
            return _core.mul_int8(a, b, float(t_in.scale[0]), int(t_in.zero_point[0]), float(t_b.scale[0]),
                                  int(t_b.zero_point[0]), float(t_out.scale[0]), int(t_out.zero_point[0]),
                                  kernel="xnnpack" if kernels == "xnnpack" else "tflite", act_min=lo, act_max=hi)
        w = self.tensors[op.inputs[1]]
        b = self.tensors[op.inputs[2]].data if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        act = _ACTIVATIONS.get(op.options.get("activation", 0))
        if act is None:
            raise _core.UnsupportedError(f"run: fused activation {op.options['activation']} of {op.name} is not supported")
        zp_in = int(t_in.zero_point[0])
        integer = dict(path=path) if accumulator is None else dict(path=path, accumulator=accumulator)

        def counted(result):
            if accumulator is None:
                return result
            overflows[t_out.name] = result[1]
            return result[0]

        if op.name == "FULLY_CONNECTED":
            stage = output_stage("fully_connected", kernels, t_in.scale[0], w.scale, t_out.scale[0],
                                 int(t_out.zero_point[0]), act)
            y = counted(_core.fully_connected_int8(np.ascontiguousarray(x.reshape(-1, w.shape[1])), w.data, b, zp_in,
                                                   **stage, **integer))
            return y.reshape((x.shape[0],) + tuple(t_out.shape[1:])) if len(t_out.shape) > 1 else y
        if op.name == "CONV_2D":
            groups = x.shape[3] // w.shape[3]
            f = np.ascontiguousarray(np.transpose(w.data, (1, 2, 3, 0)))      # OHWI -> (KH, KW, C/g, O)
            kind = "conv2d"
        else:
            groups = x.shape[3]
            f = np.ascontiguousarray(w.data.reshape(w.shape[1], w.shape[2], 1, w.shape[3]))
            kind = "depthwise"
        stage = output_stage(kind, kernels, t_in.scale[0], w.scale, t_out.scale[0], int(t_out.zero_point[0]), act,
                             groups=groups)
        return counted(_core.conv2d_int8(x, f, b, zp_in, strides=op.options["strides"], padding=op.options["padding"],
                                         dilation=op.options["dilation"], groups=groups, **stage, **integer))


def _quantize(x, scale, zero_point, kernels):
    """float32 -> int8 as each path's QUANTIZE kernel rounds (tflite-semantics.md §7). The builtin
    kernel is LiteRT's NEON code (NEON_2_SSE on x86): whole blocks of 8 of the flat tensor multiply
    by f32(1 / (double)s) and round half to even, the n % 8 tail divides in double and rounds half
    away. The TFLite kernels' float -> int32 conversion gives INT32_MIN for NaN and for codes
    beyond int32, and adding a negative zero point to it wraps: such inputs give -128 or 127."""
    x = np.asarray(x, np.float32)
    if kernels == "xnnpack":
        q = np.rint((x * (f32(1) / f32(scale))).astype(np.float32))        # ties to even
        q = np.where(np.isnan(q), 127 - zero_point, q)    # its float clamp (minps) maps NaN to the top
        return np.clip(q + zero_point, -128, 127).astype(np.int8)
    if kernels == "builtin":
        flat = x.ravel()
        blocked = flat.size - flat.size % 8
        q = np.concatenate([np.rint((flat[:blocked] * f32(1.0 / scale)).astype(np.float32)),
                            round_half_away(flat[blocked:].astype(np.float64) / scale)]).reshape(x.shape)
    else:
        q = round_half_away((x / f32(scale)).astype(np.float32))
    with np.errstate(invalid="ignore"):
        code = np.where(np.abs(q) < 2.0 ** 31, q, -(2.0 ** 31)).astype(np.int64)   # NaN fails the test too
    code = (code + zero_point + 2 ** 31) % 2 ** 32 - 2 ** 31     # the int32 addition wraps (INT32_MIN - 30 > 0)
    return np.clip(code, -128, 127).astype(np.int8)


def _dequantize(x, scale, zero_point, kernels):
    """int -> float32 as each path's DEQUANTIZE computes it. The builtin x86 kernel (NEON code
    through NEON_2_SSE) does blocks of 8 as f32(q * s) + f32(-zp * (double)s) and the tail as
    f32((q - zp) * s); the reference kernel and XNNPACK compute f32((q - zp) * s) everywhere."""
    q = np.asarray(x).astype(np.int32)
    y = ((q - zero_point).astype(np.float32) * f32(scale)).astype(np.float32)
    if kernels == "builtin":
        flat, head = y.reshape(-1), q.size // 8 * 8
        offset = f32(-zero_point * float(f32(scale)))
        flat[:head] = (q.reshape(-1)[:head].astype(np.float32) * f32(scale)).astype(np.float32) + offset
    return y


def _read_subgraph(tfl, m, sg, types, ops_by_code):
    """One subgraph's tensors and ops (WHILE loops keep their condition and body in others)."""
    tensors = []
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        q = t.Quantization()
        dtype = _DTYPES.get(types.get(t.Type()))
        if dtype is None:
            raise _core.UnsupportedError(f"from_tflite: tensor '{t.Name().decode()}' has type "
                                         f"{types.get(t.Type(), t.Type())}")
        raw = m.Buffers(t.Buffer()).DataAsNumpy() if t.Buffer() < m.BuffersLength() else 0
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        data = None
        if isinstance(raw, np.ndarray) and raw.size:
            data = np.ascontiguousarray(np.frombuffer(raw.tobytes(), dtype=dtype).reshape(shape))
        scale = q.ScaleAsNumpy() if q is not None and q.ScaleLength() else np.zeros(0, np.float32)
        zp = q.ZeroPointAsNumpy() if q is not None and q.ZeroPointLength() else np.zeros(0, np.int64)
        tensors.append(Tensor(t.Name().decode(), dtype, shape, np.asarray(scale, np.float32),
                              np.asarray(zp, np.int64), data))
    ops = []
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        code = m.OperatorCodes(op.OpcodeIndex())
        name = ops_by_code.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        if name not in SUPPORTED_OPS + SHAPE_OPS + tflite_float.SUPPORTED_OPS:
            raise _core.UnsupportedError(f"from_tflite: operator {i} is {name}; supported: "
                                         f"{', '.join(dict.fromkeys(SUPPORTED_OPS + tflite_float.SUPPORTED_OPS))}")
        ops.append(Op(name, [int(v) for v in op.InputsAsNumpy()], [int(v) for v in op.OutputsAsNumpy()],
                      _options(tfl, op, name)))
    inputs, outputs = [int(v) for v in sg.InputsAsNumpy()], [int(v) for v in sg.OutputsAsNumpy()]
    return TFLiteModel(tensors, ops, inputs, outputs)


def from_tflite(model) -> TFLiteModel:
    """Read a .tflite file (a path or its bytes). Files that are not TFLite flatbuffers, are
    truncated, or hold unsupported ops raise DataError / UnsupportedError naming the problem."""
    tfl = _tflite()
    if isinstance(model, (str, os.PathLike)):
        with open(model, "rb") as f:
            buf = f.read()
    else:
        buf = bytes(model)
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise _core.DataError("from_tflite: not a TFLite flatbuffer (no 'TFL3' identifier)")
    types, ops_by_code = _enum_names(tfl.TensorType), _enum_names(tfl.BuiltinOperator)
    try:
        m = tfl.Model.GetRootAsModel(buf, 0)
        subgraphs = [_read_subgraph(tfl, m, m.Subgraphs(i), types, ops_by_code)
                     for i in range(m.SubgraphsLength())]
    except _core.Error:
        raise
    except Exception as e:   # the flatbuffer library signals corruption with assorted exceptions
        raise _core.DataError(f"from_tflite: the flatbuffer is corrupt or truncated ({type(e).__name__}: {e})") from None
    for sg in subgraphs:
        sg.subgraphs = subgraphs
    return subgraphs[0]
