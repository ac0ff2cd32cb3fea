"""Test helpers: run the real TFLite converter on a Keras model (capturing its calibrated float
model), read the calibrator's per-tensor ranges, random Keras models, and a tensor-by-tensor
comparison of two TFLiteModels."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import contextlib  # noqa: E402
import io  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.lite.python.optimize import calibrator as _calibrator  # noqa: E402

import qdrift as qd  # noqa: E402
from qdrift.tflite_model import SHAPE_OPS  # noqa: E402

L = keras.layers


def convert_with_tf(km, profile, calibration=None, inference_io="float"):
    """(the converter's .tflite bytes, the calibrated float model's bytes or None)."""
    conv = tf.lite.TFLiteConverter.from_keras_model(km)
    captured = {}
    if profile in ("tflite_int8", "tflite_int16x8"):
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([calibration[i:i + 1]] for i in range(len(calibration)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] if profile == "tflite_int8" else \
            [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        if inference_io != "float":
            conv.inference_input_type = conv.inference_output_type = tf.int8 if inference_io == "int8" else tf.int16
    elif profile == "tflite_dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif profile == "tflite_fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    original = _calibrator.Calibrator.calibrate
    original_cq = _calibrator.Calibrator.calibrate_and_quantize

    def spy(self, gen):
        captured["calibrated"] = original(self, gen)
        return captured["calibrated"]

    def spy_cq(self, gen, *args, **kwargs):
        # The int16x8 path calibrates and quantizes in one call; a second calibrator on the same
        # float model gives the same statistics (the float kernels are deterministic).
        captured["calibrated"] = original(_calibrator.Calibrator(self._model_content), gen)
        return original_cq(self, gen, *args, **kwargs)

    _calibrator.Calibrator.calibrate = spy
    _calibrator.Calibrator.calibrate_and_quantize = spy_cq
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            flatbuffer = conv.convert()
    finally:
        _calibrator.Calibrator.calibrate = original
        _calibrator.Calibrator.calibrate_and_quantize = original_cq
    return flatbuffer, captured.get("calibrated")


def calibrated_ranges(calibrated, tm, missing_ok=False):
    """The calibrator's (min, max) of each float tensor, keyed by qd.convert's tensor names: the
    calibrated float graph's ops (shape arithmetic left out) align one to one with the converted
    model's ops (QUANTIZE/DEQUANTIZE left out). missing_ok: None for a tensor the calibrator
    logged no statistics for (it had only NaN / inf values)."""
    import tflite
    m = tflite.Model.GetRootAsModel(calibrated, 0)
    sg = m.Subgraphs(0)
    codes = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}

    def minmax(i):
        q = sg.Tensors(i).Quantization()
        if missing_ok and (q is None or not q.MinLength()):
            return None
        return (np.float32(q.MinAsNumpy()[0]), np.float32(q.MaxAsNumpy()[0]))

    float_ops = []
    for k in range(sg.OperatorsLength()):
        op = sg.Operators(k)
        c = m.OperatorCodes(op.OpcodeIndex())
        name = codes[max(c.BuiltinCode(), c.DeprecatedBuiltinCode())]
        outs = list(op.OutputsAsNumpy())
        if name not in SHAPE_OPS and not all(sg.Tensors(int(i)).Type() == tflite.TensorType.INT32 for i in outs):
            float_ops.append((name, outs))
    ours = [op for op in tm.ops if op.name not in ("QUANTIZE", "DEQUANTIZE")]
    assert [n for n, _ in float_ops] == [op.name for op in ours], ([n for n, _ in float_ops], [o.name for o in ours])
    ranges = {"input": minmax(int(sg.Inputs(0)))}
    for (_, outs), op in zip(float_ops, ours):
        for i, o in zip(outs, op.outputs):
            ranges[tm.tensors[o].name] = minmax(int(i))
    return ranges


def compare_models(ours, theirs, what=""):
    """Same op sequence (shape arithmetic left out), and per op the same tensor types, shapes,
    scales, zero points and constant data, wired the same way (each activation tensor of ours
    stands for one of theirs). A WHILE op's cond and body subgraphs are compared the same way,
    inputs and outputs in order. Returns the number of tensors compared."""
    return _compare_subgraph(ours, theirs, what, 0)


def _shape_arithmetic(tm):
    """Ops computing shapes at run time (SHAPE, and the SHAPE_OPS or int32 ops such as GATHER and
    REDUCE_PROD fed by it): left out."""
    skipped, computed = set(), set()
    for k, op in enumerate(tm.ops):
        fed = any(i in computed for i in op.inputs)
        if op.name == "SHAPE" or fed and (op.name in SHAPE_OPS or
                                          all(tm.tensors[o].dtype == np.int32 for o in op.outputs)):
            skipped.add(k)
            computed.update(op.outputs)
    return skipped


def _compare_subgraph(ours, theirs, what, index):
    def constant_dequantize(tm):
        """float16 constants read through DEQUANTIZE (fp16 profile): output id -> constant id. The
        converter puts these ops first in an order of its own; they are compared at their use."""
        return {op.outputs[0]: op.inputs[0] for op in tm.ops
                if op.name == "DEQUANTIZE" and tm.tensors[op.inputs[0]].data is not None}

    what = (what, f"subgraph {index}") if index else what
    via_a, via_b = constant_dequantize(ours), constant_dequantize(theirs)
    skip_a, skip_b = _shape_arithmetic(ours), _shape_arithmetic(theirs)
    a = [op for k, op in enumerate(ours.ops) if k not in skip_a and op.outputs[0] not in via_a]
    b = [op for k, op in enumerate(theirs.ops) if k not in skip_b and op.outputs[0] not in via_b]
    assert [op.name for op in a] == [op.name for op in b], (what, [op.name for op in a], [op.name for op in b])
    # Activation tensors of ours -> theirs (constants may be shared in one file and copied in the other).
    wiring, wired = {}, {}

    def wire(ia, ib, where):
        if ia < 0 or ours.tensors[ia].data is not None or ia in via_a:
            return
        assert wiring.setdefault(ia, ib) == ib and wired.setdefault(ib, ia) == ia, where + ("wired differently",)

    assert len(ours.inputs) == len(theirs.inputs) and len(ours.outputs) == len(theirs.outputs), \
        (what, ours.inputs, theirs.inputs, ours.outputs, theirs.outputs)
    n = 0
    for k, (ia, ib) in enumerate(zip(ours.inputs, theirs.inputs)):
        ta, tb = ours.tensors[ia], theirs.tensors[ib]
        assert (ta.dtype, tuple(ta.shape)) == (tb.dtype, tuple(tb.shape)), (what, "input", k, ta, tb)
        wire(ia, ib, (what, "input", k))
    for k, (oa, ob) in enumerate(zip(a, b)):
        ins_a, ins_b = oa.inputs, ob.inputs
        if oa.name == "RESHAPE" and not (ours.tensors[ins_a[1]].data is not None and
                                         theirs.tensors[ins_b[1]].data is not None):
            ins_a, ins_b = ins_a[:1], ins_b[:1]     # the shape operand: a constant here, computed there
        assert len(ins_a) == len(ins_b) and len(oa.outputs) == len(ob.outputs), (what, k, oa.name)
        pairs = list(zip(ins_a, ins_b)) + list(zip(oa.outputs, ob.outputs))
        pairs += [(via_a[ia], via_b[ib]) for ia, ib in zip(ins_a, ins_b) if ia in via_a or ib in via_b]
        for ia, ib in pairs:
            if ia in via_a and ib not in via_b or ib in via_b and ia not in via_a:
                raise AssertionError((what, k, oa.name, "read through DEQUANTIZE in one only"))
            if ia < 0 or ib < 0:
                assert ia == ib, (what, k, oa.name, "optional input present in one only", ia, ib)
                continue
            ta, tb = ours.tensors[ia], theirs.tensors[ib]
            where = (what, k, oa.name, ta.name, tb.name)
            assert ta.dtype == tb.dtype, where + (ta.dtype, tb.dtype)
            assert tuple(ta.shape) == tuple(tb.shape), where + (ta.shape, tb.shape)
            assert np.array_equal(ta.scale, tb.scale), where + (ta.scale, tb.scale)
            assert np.array_equal(ta.zero_point, tb.zero_point), where + (ta.zero_point, tb.zero_point)
            assert (ta.data is None) == (tb.data is None), where + ("constant in one only",)
            if ta.data is not None:
                # float16 / float32 constants compared bit for bit (array_equal on the values
                # would call -0.0 == 0.0 equal)
                assert ta.data.tobytes() == tb.data.tobytes(), where + (int(np.sum(ta.data != tb.data)),)
            wire(ia, ib, where)
            n += 1
        if oa.name not in ("RESHAPE",):
            assert oa.options == ob.options, (what, k, oa.name, oa.options, ob.options)
        if oa.name == "WHILE":      # same subgraph indices (options above); compare cond and body
            for sub in (oa.options["cond"], oa.options["body"]):
                n += _compare_subgraph(ours.subgraphs[sub], theirs.subgraphs[sub], what, sub)
    for k, (ia, ib) in enumerate(zip(ours.outputs, theirs.outputs)):
        ta, tb = ours.tensors[ia], theirs.tensors[ib]
        assert (ta.dtype, tuple(ta.shape)) == (tb.dtype, tuple(tb.shape)), (what, "output", k, ta, tb)
        wire(ia, ib, (what, "output", k))
    if index == 0:
        assert len(getattr(ours, "subgraphs", [ours])) == len(theirs.subgraphs), (what, len(ours.subgraphs), len(theirs.subgraphs))
    return n


# ---- random Keras models -------------------------------------------------------------------------
ACTS = ["linear", "relu", "relu6", "tanh", "sigmoid"]


def _act(rng):
    return str(rng.choice(ACTS))


def _maybe_bn_and_act(rng, layers, act_in_layer):
    """After a Dense/Conv: sometimes a BatchNormalization, sometimes a separate activation layer."""
    if act_in_layer == "linear" and rng.random() < 0.4:
        layers.append(L.BatchNormalization(epsilon=float(rng.choice([1e-3, 1e-5]))))
    if act_in_layer == "linear" and rng.random() < 0.4:
        a = _act(rng)
        layers.append(L.ReLU() if a == "relu" and rng.random() < 0.5 else L.Activation(a))
    if not isinstance(layers[-1], L.BatchNormalization) and rng.random() < 0.15:
        # not folded: MUL + ADD in the file
        layers.append(L.BatchNormalization(epsilon=float(rng.choice([1e-3, 1e-5]))))


def random_image_model(rng):
    h, w, c = int(rng.integers(4, 10)), int(rng.integers(4, 10)), int(rng.integers(1, 5))
    layers, shape = [], (h, w, c)
    for _ in range(int(rng.integers(1, 4))):
        strides = int(rng.choice([1, 1, 2]))
        # Dilated convolutions (SPACE_TO_BATCH_ND ... BATCH_TO_SPACE_ND in the file) need strides 1.
        dilation = (1, 1) if rng.random() < 0.6 else tuple(int(d) for d in rng.choice([1, 2, 3], 2))
        strides = 1 if max(dilation) > 1 else strides
        k = int(rng.integers(1, 4))
        padding = str(rng.choice(["same", "valid"]))
        act = _act(rng) if rng.random() < 0.5 else "linear"
        if padding == "valid" and (h - dilation[0] * (k - 1) < 1 or w - dilation[1] * (k - 1) < 1):
            padding = "same"
        if rng.random() < 0.6:
            layers.append(L.Conv2D(int(rng.integers(1, 7)), k, strides=strides, padding=padding,
                                   dilation_rate=dilation, activation=act))
        else:
            layers.append(L.DepthwiseConv2D(k, strides=strides, padding=padding, dilation_rate=dilation,
                                            depth_multiplier=int(rng.integers(1, 3)), activation=act))
        km = keras.Sequential([keras.Input(shape)] + layers)
        h, w = km.output_shape[1:3]
        _maybe_bn_and_act(rng, layers, act)
    layers.append(L.Flatten())
    for _ in range(int(rng.integers(0, 2))):
        act = _act(rng) if rng.random() < 0.5 else "linear"
        layers.append(L.Dense(int(rng.integers(1, 12)), activation=act))
        _maybe_bn_and_act(rng, layers, act)
    layers.append(L.Dense(int(rng.integers(1, 6))))
    return keras.Sequential([keras.Input(shape)] + layers)


def random_dense_model(rng):
    """Dense stacks: linear Dense -> Dense pairs (the converter moves the first bias into the
    second), BatchNormalization between them, Dense without bias, and sometimes a first Dense on
    a (T, F) input (RESHAPE, FC, RESHAPE, ADD in the file) before a Flatten."""
    shape = (int(rng.integers(1, 40)),)
    layers = []
    if rng.random() < 0.25:
        shape = (int(rng.integers(1, 6)), int(rng.integers(1, 9)))
        act = _act(rng) if rng.random() < 0.6 else "linear"
        layers.append(L.Dense(int(rng.integers(1, 9)), activation=act, use_bias=bool(rng.random() < 0.8)))
        if act == "linear" and rng.random() < 0.3:
            layers.append(L.ReLU())
        layers.append(L.Flatten())
    for _ in range(int(rng.integers(1, 4))):
        act = _act(rng) if rng.random() < 0.6 else "linear"
        layers.append(L.Dense(int(rng.integers(1, 24)), activation=act, use_bias=bool(rng.random() < 0.85)))
        _maybe_bn_and_act(rng, layers, act)
    return keras.Sequential([keras.Input(shape)] + layers)


def random_rnn_model(rng, while_loops=False):
    """A batch-1 SimpleRNN, optionally with a Dense head. while_loops=True: half of them keep
    Keras's unroll=False (the converter's WHILE loop; float profiles only), and those sometimes
    return sequences (then Flatten before the Dense) or have 32+ units (U reaches the dynamic
    range profile's 1024-element threshold). The default draws exactly what it always drew."""
    t, f = int(rng.integers(1, 6)), int(rng.integers(1, 5))
    unroll, sequences = True, False
    if while_loops and rng.random() < 0.5:
        unroll, sequences = False, bool(rng.random() < 0.4)
        units = int(rng.choice([31, 32, 33, 40])) if rng.random() < 0.3 else int(rng.integers(1, 9))
        layers = [L.SimpleRNN(units, unroll=False, use_bias=bool(rng.random() < 0.8), return_sequences=sequences)]
    else:
        layers = [L.SimpleRNN(int(rng.integers(1, 9)), unroll=True, use_bias=bool(rng.random() < 0.8))]
    if rng.random() < 0.5:
        layers += [L.Flatten()] if sequences else []
        layers.append(L.Dense(int(rng.integers(1, 5)), activation=_act(rng)))
    return keras.Sequential([keras.Input((t, f), batch_size=1)] + layers)


def randomize_weights(km, rng):
    ws = []
    for v in km.weights:
        if "variance" in v.name:
            ws.append(rng.uniform(0.2, 2.0, v.shape).astype(np.float32))
        else:
            ws.append(rng.normal(0, 0.5, v.shape).astype(np.float32))
    km.set_weights(ws)


def random_model(rng, kind=None, while_loops=False):
    """while_loops: let RNNs be non-unrolled WHILE loops (see random_rnn_model; float profiles)."""
    kind = kind or str(rng.choice(["image", "image", "dense", "rnn"]))
    if kind == "rnn":
        km = random_rnn_model(rng, while_loops)
    else:
        km = {"image": random_image_model, "dense": random_dense_model}[kind](rng)
    randomize_weights(km, rng)
    return kind, km


def patch_tensors(flatbuffer, edits):
    """A copy of a .tflite file with some tensors' parameters overwritten in place (subgraph 0):
    edits = {tensor index: dict(scale=float, zero_point=int, data=array)}. Each tensor must
    already hold one scale and one zero point, and `data` must match its constant buffer's size,
    so the flatbuffer's layout is unchanged. Lets a test give a converter-made op any parameters."""
    import struct

    import tflite
    buf = bytearray(flatbuffer)
    sg = tflite.Model.GetRootAsModel(buf, 0).Subgraphs(0)
    model = tflite.Model.GetRootAsModel(buf, 0)
    for i, e in edits.items():
        t = sg.Tensors(i)
        q = t.Quantization()
        # QuantizationParameters fields: min (vtable offset 4), max (6), scale (8), zero_point (10)
        for key, slot, fmt in (("scale", 8, "<f"), ("zero_point", 10, "<q")):
            if key in e:
                assert q.ScaleLength() == 1 and q.ZeroPointLength() == 1, (i, "per-tensor parameters only")
                struct.pack_into(fmt, buf, q._tab.Vector(q._tab.Offset(slot)), e[key])
        if "data" in e:
            b = model.Buffers(t.Buffer())
            raw = np.ascontiguousarray(e["data"]).tobytes()
            assert b.DataLength() == len(raw), (i, b.DataLength(), len(raw))
            start = b._tab.Vector(b._tab.Offset(4))
            buf[start:start + len(raw)] = raw
    return bytes(buf)
