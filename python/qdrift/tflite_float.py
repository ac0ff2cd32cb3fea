"""The float side of qd.from_tflite: float32 and float16-weight ops, dynamic-range ("hybrid": int8
weights, float activations) FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D, the int32 shape
arithmetic the converter emits, and WHILE loops over subgraphs (non-unrolled Keras SimpleRNN).

tflite_model.TFLiteModel calls `handles` / `run_op` for every op; integer (int8) ops stay there.
Float kernels follow TFLite's reference kernels (C++ in ops/src/hybrid.cpp); the hybrid ones
follow each path's input quantization and float epilogue (tests/python/test_dynamic_fp16.py)."""
from __future__ import annotations

import numpy as np

from . import _core

# Float clamp of each fused activation (TfLiteFusedActivation codes).
FLOAT_ACTIVATIONS = {0: (-np.inf, np.inf), 1: (0.0, np.inf), 2: (-1.0, 1.0), 3: (0.0, 6.0)}
_SHAPE_OPS = ("SHAPE", "STRIDED_SLICE", "PACK", "FILL", "TRANSPOSE", "GATHER", "SLICE", "CONCATENATION", "LESS",
              "LOGICAL_AND", "WHILE", "UNPACK", "RESHAPE", "ADD", "DEQUANTIZE", "REDUCE_PROD")
_FLOAT_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "TANH", "LOGISTIC", "MUL")
SUPPORTED_OPS = tuple(dict.fromkeys(_SHAPE_OPS + _FLOAT_OPS))
_INTEGER_DTYPES = (np.int8, np.int16, np.uint8)


def activation_function(op, kernels):
    """activation_f32's name for float TANH / LOGISTIC on path `kernels`. The tensorflow wheel's
    builtin ("tf_builtin") has the same TANH as LiteRT's, and LOGISTIC without a scalar tail."""
    suffix = {"reference": "", "builtin": "_eigen", "xnnpack": "_xnnpack", "tf_builtin": "_eigen"}[kernels]
    if op == "LOGISTIC" and kernels == "tf_builtin":
        suffix = "_eigen_tf"
    return op.lower() + suffix


def handles(tensors, op) -> bool:
    """True when this module runs `op`: anything whose first input is not an int8/int16
    activation, and SHAPE of any tensor (its value is only the shape)."""
    if op.name == "SHAPE" or op.name == "WHILE":
        return True
    return op.name in SUPPORTED_OPS and tensors[op.inputs[0]].dtype not in _INTEGER_DTYPES


def options(tfl, table, name):
    """Builtin options of the ops only this module runs (tflite_model._options reads the rest)."""
    def init(cls):
        o = cls()
        o.Init(table.Bytes, table.Pos)
        return o
    if name == "STRIDED_SLICE":
        o = init(tfl.StridedSliceOptions)
        if o.EllipsisMask() or o.NewAxisMask():
            raise _core.UnsupportedError("from_tflite: STRIDED_SLICE with ellipsis or new-axis masks")
        return dict(begin_mask=o.BeginMask(), end_mask=o.EndMask(), shrink_axis_mask=o.ShrinkAxisMask())
    if name == "GATHER":
        o = init(tfl.GatherOptions)
        if o.BatchDims():
            raise _core.UnsupportedError("from_tflite: GATHER with batch_dims")
        return dict(axis=o.Axis())
    if name == "CONCATENATION":
        o = init(tfl.ConcatenationOptions)
        return dict(axis=o.Axis(), activation=o.FusedActivationFunction())
    if name == "PACK":
        return dict(axis=init(tfl.PackOptions).Axis())
    if name == "MUL":
        return dict(activation=init(tfl.MulOptions).FusedActivationFunction())
    if name == "REDUCE_PROD":   # the element count of a Dense's leading axes (rank-3 input)
        return dict(keep_dims=init(tfl.ReducerOptions).KeepDims())
    if name == "WHILE":
        o = init(tfl.WhileOptions)
        return dict(cond=o.CondSubgraphIndex(), body=o.BodySubgraphIndex())
    return {}


def _value(model, values, index):
    return values[index] if index in values else model.tensors[index].data


def _float_range(activation, name):
    if activation not in FLOAT_ACTIVATIONS:
        raise _core.UnsupportedError(f"run: fused activation {activation} of float {name} is not supported")
    lo, hi = FLOAT_ACTIVATIONS[activation]
    return lo, hi


def run_op(model, op, values, kernels, path="auto"):
    """Evaluate `op` and store its outputs in `values`; path: qdrift's kernels ("auto" | "fast" | "reference")."""
    get = lambda k: _value(model, values, op.inputs[k])  # noqa: E731
    out = model.tensors[op.outputs[0]]
    name = op.name
    if name == "WHILE":
        cond, body = model.subgraphs[op.options["cond"]], model.subgraphs[op.options["body"]]
        # The body runs on the same path: the XNNPACK delegate takes the ops of loop bodies too
        # (measured: a hybrid FC inside the WHILE rounds its inputs as XNNPACK does).
        state = [_value(model, values, i) for i in op.inputs]
        while bool(cond.evaluate(dict(zip(cond.inputs, state)), kernels, path)[cond.outputs[0]]):
            result = body.evaluate(dict(zip(body.inputs, state)), kernels, path)
            state = [result[o] if o in result else body.tensors[o].data for o in body.outputs]
        values.update(zip(op.outputs, state))
        return
    if name == "UNPACK":
        x = get(0)
        for k, o in enumerate(op.outputs):
            values[o] = np.ascontiguousarray(np.take(x, k, axis=op.options["axis"]))
        return
    values[op.outputs[0]] = _single(model, op, get, out, kernels, path)


def _single(model, op, get, out, kernels, path="auto"):
    name = op.name
    if name == "SHAPE":
        return np.asarray(get(0).shape, np.int32)
    if name == "STRIDED_SLICE":
        x, begin, end, strides = get(0), get(1), get(2), get(3)
        o, index = op.options, []
        for d in range(len(begin)):
            if o["shrink_axis_mask"] >> d & 1:
                index.append(int(begin[d]))
            else:
                index.append(slice(None if o["begin_mask"] >> d & 1 else int(begin[d]),
                                   None if o["end_mask"] >> d & 1 else int(end[d]), int(strides[d])))
        return np.array(x[tuple(index)])   # a copy; 0-d when every axis shrinks
    if name == "PACK":
        # The converter may pack a scalar with a one-element constant; PACK only counts elements.
        parts = [get(k) for k in range(len(op.inputs))]
        return np.stack([np.reshape(p, np.shape(parts[0])) for p in parts], axis=op.options["axis"])
    if name == "FILL":
        return np.full(tuple(int(d) for d in get(0)), get(1), dtype=out.dtype)
    if name == "TRANSPOSE":
        return np.ascontiguousarray(np.transpose(get(0), tuple(int(p) for p in get(1))))
    if name == "GATHER":
        return np.ascontiguousarray(np.take(get(0), get(1), axis=op.options["axis"]))
    if name == "SLICE":
        x, begin, size = get(0), get(1), get(2)
        return np.ascontiguousarray(x[tuple(slice(int(b), None if int(s) == -1 else int(b) + int(s))
                                            for b, s in zip(begin, size))])
    if name == "CONCATENATION":
        if op.options.get("activation", 0):
            raise _core.UnsupportedError("run: CONCATENATION with a fused activation")
        return np.concatenate([get(k) for k in range(len(op.inputs))], axis=op.options["axis"])
    if name == "LESS":
        return np.less(get(0), get(1))
    if name == "REDUCE_PROD":
        axes = tuple(int(a) for a in np.ravel(get(1)))
        return np.prod(get(0), axis=axes, keepdims=bool(op.options.get("keep_dims"))).astype(out.dtype)
    if name == "LOGICAL_AND":
        return np.logical_and(get(0), get(1))
    if name == "RESHAPE":
        x = get(0)
        shape = tuple(int(d) for d in get(1)) if len(op.inputs) > 1 and op.inputs[1] >= 0 else out.shape
        if -1 not in shape and int(np.prod(shape)) != x.size:
            shape = (x.shape[0],) + tuple(out.shape[1:])    # the batch changed at run time
        return np.ascontiguousarray(x.reshape(shape))
    if name == "DEQUANTIZE":   # float16 constant -> float32 (exact)
        return get(0).astype(np.float32)
    if name == "ADD":
        a, b = get(0), get(1)
        y = a + b
        if y.dtype == np.float32:
            lo, hi = _float_range(op.options.get("activation", 0), name)
            y = np.clip(y, np.float32(lo), np.float32(hi)).astype(np.float32)
        return y
    if name == "MUL":   # one float32 product per element on every path (a unfolded BatchNormalization's scale)
        lo, hi = _float_range(op.options.get("activation", 0), name)
        return np.clip((get(0) * get(1)).astype(np.float32), np.float32(lo), np.float32(hi)).astype(np.float32)
    if name in ("TANH", "LOGISTIC"):
        # Each path's own approximation: std:: functions (reference), Eigen's (builtin; packets
        # of 4 over the flattened tensor, a scalar tail), XNNPACK's.
        return _core.activation_f32(np.ascontiguousarray(get(0), np.float32), activation_function(name, kernels))
    return _linear(model, op, get, out, kernels, path)


def _linear(model, op, get, out, kernels, path="auto"):
    """FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D with float32 or int8 (hybrid) weights."""
    name = op.name
    x = np.ascontiguousarray(get(0), np.float32)
    w_tensor = model.tensors[op.inputs[1]]
    w = get(1)
    bias = get(2) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    bias = None if bias is None else np.ascontiguousarray(bias, np.float32)
    lo, hi = _float_range(op.options.get("activation", 0), name)
    hybrid = w.dtype == np.int8
    if hybrid and (w_tensor.zero_point.size and np.any(w_tensor.zero_point != 0)):
        raise _core.UnsupportedError(f"run: hybrid {name} with non-zero weight zero points")
    scales = np.ascontiguousarray(w_tensor.scale, np.float32)
    if name == "FULLY_CONNECTED":
        x2 = np.ascontiguousarray(x.reshape(-1, w.shape[1]))
        if hybrid:
            y = _core.fully_connected_hybrid(x2, w, scales, bias, kernels=kernels,
                                             asymmetric_inputs=bool(op.options.get("asymmetric_quantize_inputs")),
                                             lo=lo, hi=hi, path=path)
        else:
            y = _core.fully_connected_f32(x2, np.ascontiguousarray(w, np.float32), bias, kernels=kernels, lo=lo, hi=hi,
                                          path=path)
        return y.reshape(x.shape[:-1] + (w.shape[0],)) if op.options.get("keep_num_dims") else y
    if name == "CONV_2D":
        groups = x.shape[3] // w.shape[3]
        f = np.ascontiguousarray(np.transpose(w, (1, 2, 3, 0)))       # OHWI -> (KH, KW, C/g, O)
    else:
        groups = x.shape[3]
        f = np.ascontiguousarray(w.reshape(w.shape[1], w.shape[2], 1, w.shape[3]))
    geometry = dict(strides=op.options["strides"], padding=op.options["padding"], dilation=op.options["dilation"],
                    groups=groups, lo=lo, hi=hi)
    if hybrid:
        return _core.conv2d_hybrid(x, f, scales, bias, kernels=kernels, depthwise=name == "DEPTHWISE_CONV_2D",
                                   path=path, **geometry)
    return _core.conv2d_f32(x, f.astype(np.float32), bias, kernels=kernels, depthwise=name == "DEPTHWISE_CONV_2D",
                            path=path, **geometry)
