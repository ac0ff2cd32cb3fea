"""TF vs TFLite, measured: convert a Keras model with the real TFLite converter for a profile, run the
file on each LiteRT kernel path (op resolver pinned) and with qd.from_tflite, and tabulate every tensor.

TensorFlow and ai-edge-litert are imported only when these functions run (they are the oracle,
not a dependency of the rest of qdrift)."""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import _core
from .tflite_kernels import KERNEL_PATHS
from .tflite_model import TFLiteModel, from_tflite

# Every converter setting qdrift models, by profile name (the names qd.convert uses, plus float).
PROFILES = ("tflite_float", "tflite_int8", "tflite_int16x8", "tflite_dynamic", "tflite_fp16")
# LiteRT's op resolver for each kernel path (qdrift's `kernels=` names).
RESOLVERS = {"reference": "BUILTIN_REF", "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "xnnpack": "AUTO"}


def convert_keras(km, profile, calibration=None) -> bytes:
    """The .tflite bytes TensorFlow's converter writes for the Keras model `km` under `profile`:
    tflite_float (no optimization), tflite_int8 (full integer: representative dataset, int8 ops only,
    float input/output), tflite_int16x8 (int16 activations, int8 weights), tflite_dynamic (int8
    weights, float activations: Optimize.DEFAULT without data), tflite_fp16 (float16 constants).
    The full-integer profiles need `calibration` (inputs, batch first), fed one sample at a time."""
    if profile not in PROFILES:
        raise _core.ConfigError(f"convert_keras: unknown profile '{profile}'; expected one of {', '.join(PROFILES)}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")        # "Assets written to ..." on every conversion
    conv = tf.lite.TFLiteConverter.from_keras_model(km)
    if profile != "tflite_float":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if profile in ("tflite_int8", "tflite_int16x8"):
        if calibration is None:
            raise _core.ConfigError(f"convert_keras: profile '{profile}' needs calibration data (calibration=...)")
        cal = np.asarray(calibration, np.float32)
        conv.representative_dataset = lambda: ([cal[i:i + 1]] for i in range(len(cal)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] if profile == "tflite_int8" else \
            [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    if profile == "tflite_fp16":
        conv.target_spec.supported_types = [tf.float16]
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")      # "Statistics for quantized inputs were expected" (float I/O)
        return conv.convert()


def _batch_one(tm: TFLiteModel) -> bool:
    """True when the file fixes batch 1 (an unrolled SimpleRNN reshapes to (T, 1, F)): run sample by sample."""
    return any(op.name == "UNPACK" for sg in getattr(tm, "subgraphs", [tm]) for op in sg.ops) or \
        any(op.name == "WHILE" for op in tm.ops)


def _per_sample(run, x, batch_one):
    """run(x) -> (y, {name: value}); with batch_one, sample by sample: y concatenated, taps stacked."""
    if not batch_one or len(x) == 1:
        return run(x)
    results = [run(x[i:i + 1]) for i in range(len(x))]
    names = set.intersection(*(set(t) for _, t in results))
    return np.concatenate([y for y, _ in results]), {n: np.stack([t[n] for _, t in results]) for n in names}


def run_litert(flatbuffer, x, kernels="reference", taps=False, batch_one=None):
    """The file's output for x on one LiteRT path (the op resolver pinned as RESOLVERS says);
    taps=True: also {tensor name: value} of every computed tensor (experimental_preserve_all_tensors;
    with XNNPACK the delegated tensors are not kept, so only the output is returned there)."""
    if kernels not in RESOLVERS:
        raise _core.ConfigError(f"run_litert: unknown kernels '{kernels}'; expected one of {', '.join(RESOLVERS)}")
    from ai_edge_litert import interpreter as litert

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # preserve_all_tensors "is intended for debugging"
        it = litert.Interpreter(model_content=flatbuffer, experimental_preserve_all_tensors=True,
                                experimental_op_resolver_type=getattr(litert.OpResolverType, RESOLVERS[kernels]))
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    computed = _computed_tensors(from_tflite(flatbuffer)) if taps and kernels != "xnnpack" else []
    by_name = {d["name"]: d["index"] for d in it.get_tensor_details()}
    shape = [None]

    def run(xb):
        if shape[0] != xb.shape:
            it.resize_tensor_input(inp["index"], xb.shape)
            it.allocate_tensors()
            shape[0] = xb.shape
        it.set_tensor(inp["index"], np.ascontiguousarray(xb, inp["dtype"]))
        it.invoke()
        values = {n: np.array(it.get_tensor(by_name[n])) for n in computed if n in by_name}
        y = np.array(it.get_tensor(out["index"]))
        values[out["name"]] = y
        return y, values

    x = np.asarray(x)
    if batch_one is None:
        batch_one = _batch_one(from_tflite(flatbuffer))
    y, values = _per_sample(run, x, batch_one)
    return (y, values) if taps else y


def _computed_tensors(tm):
    """Names of the main subgraph's tensors that an op writes (not constants, not the input)."""
    return [tm.tensors[o].name for op in tm.ops for o in op.outputs]


def run_qdrift(tm, x, kernels="reference", taps=False):
    """qd.from_tflite's run, batched the way run_litert batches (sample by sample for batch-1 files)."""
    tm = tm if isinstance(tm, TFLiteModel) else from_tflite(tm)
    computed = set(_computed_tensors(tm))

    def run(xb):
        y, t = tm.run(xb, kernels=kernels, taps=True)
        return y, {n: v for n, v in t.items() if n in computed}

    y, values = _per_sample(run, np.asarray(x), _batch_one(tm))
    return (y, values) if taps else y


def ulps(a, b):
    """|a - b| in float32 units in the last place (the count of float32 values between them)."""
    def ordered(v):
        i = np.asarray(v, np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(2 ** 31) - i, i)
    return np.abs(ordered(a) - ordered(b))


def _difference(ours, theirs):
    """(equal, max |difference| in the tensor's own units: codes for integers, values for floats,
    max float32 ulps or None)."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    if ours.shape != theirs.shape:
        raise _core.ShapeError(f"compare: qdrift's tensor is {ours.shape}, LiteRT's {theirs.shape}")
    equal = bool(np.array_equal(ours, theirs))
    if ours.size == 0:
        return equal, 0.0, 0 if ours.dtype.kind == "f" else None
    diff = float(np.abs(ours.astype(np.float64) - theirs.astype(np.float64)).max())
    return equal, diff, int(ulps(ours, theirs).max()) if ours.dtype.kind == "f" else None


@dataclass
class TFLiteComparison:
    """One model under one profile: the real converter's file, qdrift's reading of it, each path's
    LiteRT and qdrift outputs, and `table` (pandas, one row per path and computed tensor)."""
    profile: str
    flatbuffer: bytes
    model: TFLiteModel
    litert: dict = field(default_factory=dict)     # kernels -> LiteRT output
    qdrift: dict = field(default_factory=dict)     # kernels -> qdrift output
    table: object = None


def compare_tflite(km, profile, x, calibration=None, kernels=tuple(KERNEL_PATHS), reference=None):
    """Convert `km` for `profile` with the real converter, run the file on each path with LiteRT
    and with qdrift (taps on), and tabulate every computed tensor. Table columns: profile, kernels,
    tensor, dtype, shape, output (is the model output), equal (np.array_equal), max_diff (codes for
    integer tensors, values for float ones), max_ulps (float tensors); with `reference` (e.g. the
    Keras float output) the output rows also carry max_abs_err and mse against it."""
    import pandas as pd

    flatbuffer = convert_keras(km, profile, calibration)
    tm = from_tflite(flatbuffer)
    x = np.asarray(x, np.float32)
    out_name = tm.tensors[tm.outputs[0]].name
    rows, result = [], TFLiteComparison(profile, flatbuffer, tm)
    for k in kernels:
        y_lite, t_lite = run_litert(flatbuffer, x, k, taps=True)
        y_ours, t_ours = run_qdrift(tm, x, k, taps=True)
        result.litert[k], result.qdrift[k] = y_lite, y_ours
        for name, theirs in t_lite.items():
            if name not in t_ours:      # int32 shape arithmetic (SHAPE -> PACK) qdrift skips for int8 files
                continue
            equal, diff, max_ulps = _difference(t_ours[name], theirs)
            row = dict(profile=profile, kernels=k, tensor=name, dtype=str(theirs.dtype), shape=tuple(theirs.shape),
                       output=name == out_name, equal=equal, max_diff=diff, max_ulps=max_ulps)
            if reference is not None and name == out_name:
                err = theirs.astype(np.float64) - np.asarray(reference, np.float64).reshape(theirs.shape)
                row.update(max_abs_err=float(np.abs(err).max()), mse=float(np.mean(err ** 2)))
            rows.append(row)
    result.table = pd.DataFrame(rows)
    return result


def constants_table(tm):
    """Each weight / bias constant a FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D reads, with its
    stored dtype and element count (dynamic range quantizes a constant only from 1024 elements)."""
    import pandas as pd

    rows = []
    for sg in getattr(tm, "subgraphs", [tm]):
        for op in sg.ops:
            if op.name not in ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D"):
                continue
            for role, i in zip(("weights", "bias"), op.inputs[1:3]):
                if i < 0:
                    continue
                t = sg.tensors[i]
                if t.data is None and t.dtype == np.float32:   # produced by a DEQUANTIZE (float16 constant)
                    src = [o for o in sg.ops if i in o.outputs]
                    t = sg.tensors[src[0].inputs[0]] if src else t
                rows.append(dict(op=op.name, role=role, tensor=t.name, dtype=np.dtype(t.dtype).name,
                                 elements=int(np.prod(t.shape))))
    return pd.DataFrame(rows)


# The converter's int8 choices as qdrift quantizer specs: weights per output channel, symmetric,
# narrow range [-127, 127], rounded half away (std::round); activations asymmetric per tensor with
# the converter's scale / zero-point formulas, from the calibration min/max.
INT8_WEIGHTS = dict(bits=8, symmetric=True, narrow_range=True, granularity="per_channel", formula="tflite",
                    rounding="half_away")
INT8_ACTIVATIONS = dict(bits=8, formula="tflite", rounding="half_away")
_FUSED_ACTIVATIONS = ("relu", "relu6")


def int8_config(model, weights=True, activations=True, state=True):
    """A qd.QuantConfig that puts quantizers where the int8 converter puts quantized tensors in
    `model` (a qd.Sequential): the input, each Dense / Conv output -- except outputs the converter
    fuses into a following ReLU / ReLU6 (BatchNormalization in between folds away) and Flatten /
    Reshape, which keep their input's parameters -- and each SimpleRNN's hidden state. weights /
    activations / state=False leave that point float. (The unrolled RNN's per-step FC and ADD
    outputs are quantized in the file too; qdrift's SimpleRNN has no quantizer there.)"""
    from . import layers as L
    from .model import QuantConfig

    overrides = {}
    kept = [layer for i, layer in enumerate(model.layers)
            if not (isinstance(layer, L.BatchNormalization) and i > 0 and
                    isinstance(model.layers[i - 1], (L.Dense, L.Conv2D, L.DepthwiseConv2D)) and
                    model.layers[i - 1].activation == "linear")]
    for layer, nxt in zip(kept, kept[1:] + [None]):
        fused = isinstance(layer, (L.Dense, L.Conv2D, L.DepthwiseConv2D)) and layer.activation == "linear" and \
            isinstance(nxt, L.Activation) and nxt.activation in _FUSED_ACTIVATIONS
        if fused or isinstance(layer, (L.Flatten, L.Reshape)):
            overrides[layer.name] = {"activations": None}
    return QuantConfig(weights=dict(INT8_WEIGHTS) if weights else None,
                       activations=dict(INT8_ACTIVATIONS) if activations else None,
                       state=dict(INT8_ACTIVATIONS) if state else None, overrides=overrides)


def mse(a, b) -> float:
    """Mean squared difference in float64."""
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def mechanism_table(steps, reference, total=None):
    """Split an output error into mechanisms: `steps` is an ordered list of (mechanism, output)
    where each output adds one mechanism to the previous one. Columns: mechanism, mse (of that
    output against `reference`), increment (its mse minus the previous step's, the first step's
    against the reference itself) and share = increment / total (default: the last step's mse).
    Increments can be negative: a mechanism may cancel part of an earlier one's error."""
    import pandas as pd

    rows, previous = [], 0.0
    for name, y in steps:
        e = mse(y, reference)
        rows.append(dict(mechanism=name, mse=e, increment=e - previous))
        previous = e
    table = pd.DataFrame(rows)
    total = previous if total is None else total
    table["share"] = table["increment"] / total if total > 0 else 0.0
    return table


def dynamic_weight_names(qm, min_elements=1024):
    """The weight quantizers of a quantized qd.Sequential (see quantizer_names) whose tensor the
    dynamic-range converter quantizes: those with at least `min_elements` elements (smaller
    constants stay float32 in the file; qdrift.convert.DYNAMIC_MIN_ELEMENTS)."""
    names = []
    for name in qm.quantizer_names():
        parts = name.split("/")
        if len(parts) == 3 and parts[1] == "weights" and qm.layer(parts[0]).weights[parts[2]].size >= min_elements:
            names.append(name)
    return names
