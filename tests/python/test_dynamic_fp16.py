"""qd.from_tflite on dynamic-range ("hybrid") and float16 files the real converter writes: random
Keras models (Dense / Conv2D / DepthwiseConv2D above and below the converter's 1024-weight
threshold, SimpleRNN with and without unroll), run by qdrift and by LiteRT on each kernel path
(op resolver pinned), compared bit for bit; the canonical examples; the hybrid input-quantization
rules probed with constructed inputs (tflite-semantics.md §10 items 10-12)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import qdrift as qd  # noqa: E402
from qdrift import _core  # noqa: E402
from test_tflite_kernels import RESOLVERS, run_litert  # noqa: E402

MODELS_PER_PROFILE = 100
L = keras.layers


def convert(km, profile):
    conv = tf.lite.TFLiteConverter.from_keras_model(km)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]          # no representative data: dynamic range
    if profile == "fp16":
        conv.target_spec.supported_types = [tf.float16]
    return conv.convert()


def ulps(a, b):
    """Distance in float32 units in the last place (the integers between the two bit patterns)."""
    def ordered(v):
        i = np.asarray(v, np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(2 ** 31) - i, i)
    return np.abs(ordered(a) - ordered(b))


def random_model(rng, trial):
    """A small Keras model and its input shape; `trial` cycles through the layer kinds. 'big'
    layers have >= 1024 weights (quantized to int8 by the dynamic-range converter), small ones
    stay float32 there; under float16 every weight becomes float16."""
    kind = ("dense", "conv", "depthwise", "rnn", "rnn_unrolled", "stack")[trial % 6]
    big = bool(rng.integers(0, 2))
    act = str(rng.choice(["linear", "relu", "relu6", "tanh", "sigmoid"]))
    if kind == "dense":
        n_in = int(rng.integers(33, 80)) if big else int(rng.integers(1, 24))
        units = int(rng.integers(1024 // n_in + 1, 1024 // n_in + 20)) if big else int(rng.integers(1, 24))
        return keras.Sequential([keras.Input((n_in,)), L.Dense(units, activation=act)]), (n_in,), kind, big
    if kind in ("conv", "depthwise"):
        c = int(rng.integers(8, 24)) if big else int(rng.integers(1, 5))
        shape = (int(rng.integers(3, 9)), int(rng.integers(3, 9)), c)
        common = dict(strides=int(rng.integers(1, 3)), padding=str(rng.choice(["same", "valid"])),
                      activation=str(rng.choice(["linear", "relu", "relu6"])))
        if kind == "conv":
            k = int(rng.choice([1, 3]))       # XNNPACK runs 1x1 stride-1 conv as FC (per-pixel quantization)
            filters = int(rng.integers(1024 // (k * k * c) + 1, 1024 // (k * k * c) + 8)) if big \
                else int(rng.integers(1, 5))
            return keras.Sequential([keras.Input(shape), L.Conv2D(filters, k, **common)]), shape, kind, big
        m = int(rng.integers(1, 3))
        if big:
            shape = shape[:2] + (int(rng.integers(1024 // (9 * m) + 1, 1024 // (9 * m) + 16)),)
        return keras.Sequential([keras.Input(shape), L.DepthwiseConv2D(3, depth_multiplier=m, **common)]), shape, \
            kind, big
    if kind.startswith("rnn"):
        units = int(rng.integers(32, 48)) if big else int(rng.integers(2, 12))
        steps, feats = int(rng.integers(2, 7)), int(rng.integers(1, 40 if big else 8))
        rnn = L.SimpleRNN(units, unroll=kind == "rnn_unrolled", return_sequences=bool(rng.integers(0, 2)))
        return keras.Sequential([keras.Input((steps, feats), batch_size=1), rnn]), (steps, feats), kind, big
    shape = (int(rng.integers(4, 8)), int(rng.integers(4, 8)), int(rng.integers(8, 16)))
    return keras.Sequential([keras.Input(shape), L.Conv2D(16, 3, padding="same", activation="relu"),
                             L.DepthwiseConv2D(3, activation="relu6"), L.Flatten(),
                             L.Dense(int(rng.integers(2, 40)), activation=act), L.Dense(3)]), shape, kind, big


def scaled_ulps(ours, expected):
    """max |ours - expected| in units of the float32 spacing at the largest |expected| (cancellation
    near zero would make a plain ulp count meaningless), and the plain ulp count."""
    top = np.spacing(np.float32(np.abs(expected).max()) or np.float32(1))
    return float(np.abs(ours.astype(np.float64) - expected).max() / top), int(ulps(ours, expected).max())


COMPUTE_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "TANH", "LOGISTIC")


def only_hybrid(tm):
    """Every compute op is a hybrid (int8-weight) FC / conv: no float sums, no float TANH."""
    ops = [(sg, op) for sg in tm.subgraphs for op in sg.ops if op.name in COMPUTE_OPS]
    return bool(ops) and all(op.name not in ("TANH", "LOGISTIC") and sg.tensors[op.inputs[1]].dtype == np.int8
                             for sg, op in ops)


def run_all(rng, profile, n_models):
    """Every model on every path. Returns, per path, the worst scaled-ulp difference over all
    models (with the model that produced it) and the number of models reproduced exactly; the
    worst difference over the models made only of hybrid ops and their number; and on how many
    models LiteRT's own paths disagree."""
    worst = {k: (0.0, 0, None) for k in RESOLVERS}
    exact = {k: 0 for k in RESOLVERS}
    hybrid_worst, n_hybrid, paths_differ = 0, 0, 0
    for trial in range(n_models):
        km, shape, kind, big = random_model(rng, trial)
        km.set_weights([rng.normal(0, 0.4, w.shape).astype(np.float32) for w in km.get_weights()])
        flatbuffer = convert(km, profile)
        tm = qd.from_tflite(flatbuffer)
        batch = 1 if kind.startswith("rnn") else int(rng.choice([1, 2, 3]))
        x = rng.normal(size=(batch,) + shape).astype(np.float32)
        if trial % 10 == 9:
            x[0] = 0.0     # an all-zero image / row (hybrid kernels skip or zero-quantize it)
        hybrid = only_hybrid(tm)
        n_hybrid += hybrid
        outputs = {}
        for kernels in RESOLVERS:
            _, expected = run_litert(flatbuffer, kernels, x)
            outputs[kernels] = expected
            ours = tm.run(x, kernels=kernels)
            assert ours.shape == expected.shape, (profile, kind, kernels, trial)
            scaled, plain = scaled_ulps(ours, expected)
            exact[kernels] += plain == 0
            if hybrid:
                hybrid_worst = max(hybrid_worst, plain)
            if scaled > worst[kernels][0]:
                worst[kernels] = (scaled, plain, (trial, kind, big, layer_summary(km)))
        paths_differ += not (np.array_equal(outputs["reference"], outputs["builtin"]) and
                             np.array_equal(outputs["reference"], outputs["xnnpack"]))
    return worst, exact, hybrid_worst, n_hybrid, paths_differ


def layer_summary(km):
    return [(type(layer).__name__, layer.get_config().get("activation")) for layer in km.layers]


@pytest.mark.parametrize("profile", ["dynamic", "fp16"])
def test_random_models_equal_litert(rng, profile):
    """Bit for bit on every path: hybrid FC / conv / depthwise (integer part, input quantization,
    float epilogue), float FC / conv / depthwise in each path's summation order, and each path's
    TANH / LOGISTIC approximation. (No tolerance: the worst difference over the 100 models,
    reported in units of the float32 spacing at the output's largest magnitude, must be 0.)"""
    worst, exact, hybrid_worst, n_hybrid, paths_differ = run_all(rng, profile, MODELS_PER_PROFILE)
    print(profile, worst, exact, hybrid_worst, n_hybrid, paths_differ)
    for kernels in RESOLVERS:
        assert exact[kernels] == MODELS_PER_PROFILE, (kernels, exact[kernels], worst[kernels])
    assert n_hybrid >= (15 if profile == "dynamic" else 0)   # the dynamic set really exercises hybrid ops
    # The three paths really give different bits on most of these models, so matching each one
    # is not vacuous.
    assert paths_differ >= MODELS_PER_PROFILE // 2


def test_canonical_examples(rng):
    """The three canonical models under dynamic range and float16: every weight tensor is far below
    the 1024-element threshold (so dynamic range leaves them float32) and 1.5 and 1.0 are exact in
    float16, so both profiles compute the float model; qdrift equals LiteRT on every path."""
    dense = keras.Sequential([keras.Input((1,)), L.Dense(1, use_bias=False)])
    dense.set_weights([np.array([[1.5]], np.float32)])
    conv = keras.Sequential([keras.Input((5, 5, 1)), L.Conv2D(1, 3, use_bias=False)])
    conv.set_weights([np.ones((3, 3, 1, 1), np.float32)])
    cases = [(dense, np.array([[2.0]], np.float32), 3.0), (conv, np.ones((1, 5, 5, 1), np.float32), 9.0)]
    for unroll in (False, True):
        rnn = keras.Sequential([keras.Input((5, 1), batch_size=1), L.SimpleRNN(4, use_bias=False, unroll=unroll)])
        rnn.set_weights([np.ones((1, 4), np.float32), np.ones((4, 4), np.float32)])
        cases.append((rnn, np.ones((1, 5, 1), np.float32), None))
    for km, x, exact in cases:
        for profile in ("dynamic", "fp16"):
            flatbuffer = convert(km, profile)
            tm = qd.from_tflite(flatbuffer)
            assert not any(t.dtype == np.int8 for t in tm.tensors), "no weight reaches the hybrid threshold"
            for kernels in RESOLVERS:
                _, expected = run_litert(flatbuffer, kernels, x)
                ours = tm.run(x, kernels=kernels)
                assert np.array_equal(ours, expected), (profile, kernels, ours.ravel()[:4], expected.ravel()[:4])
            if exact is not None:
                assert np.all(ours == exact)            # float arithmetic: 2.0 * 1.5 and nine 1.0s are exact
            else:   # h1 = tanh(1), h_t = tanh(1 + 4 h_{t-1}): the float recurrence, 0.99999 after 5 steps
                assert np.allclose(ours, np.asarray(km(x)), rtol=0, atol=2e-7), ours  # float32 tanh ulps


def hybrid_dense(n):
    """Dense(n, n) with an identity kernel (n*n >= 1024 weights: int8 per channel, scale 1/127, q = 127
    on the diagonal): output o is (q_o - zp) * f32(s_row * s_w) * 127, so it reveals each quantized input."""
    km = keras.Sequential([keras.Input((n,)), L.Dense(n, use_bias=False)])
    km.set_weights([np.eye(n, dtype=np.float32)])
    return convert(km, "dynamic")


NEAR_HALF = np.float32(0.5) - np.float32(2.0 ** -25)     # 0.49999997: v + 0.5 rounds up to 1.0 in float32


def test_hybrid_fc_input_rounding_on_the_wheel():
    """Asymmetric per-row input quantization of hybrid FULLY_CONNECTED (asymmetric_quantize_inputs is
    set by the converter). Row [255, ties...]: range 255, scale 1, zp -128, inv 1, so x * inv = x.
    TFLite (reference and builtin alike) rounds x*inv first and adds zp after, half away from zero,
    except that whole blocks of 8 use NEON's pre-v8 RoundToNearest, trunc(v + 0.5): 0.49999997 gives 1
    there and 0 in the tail. XNNPACK rounds half to even everywhere. Portable TFLite would give
    RHA(zp + x), i.e. 0 for x = 0.5 -- the wheel does not run the portable code."""
    n = 33                                                   # 4 blocks of 8 and a one-element tail
    flatbuffer = hybrid_dense(n)
    tm = qd.from_tflite(flatbuffer)
    x = np.zeros((1, n), np.float32)
    x[0, 0] = 255.0
    for i, v in {1: 0.5, 2: 1.5, 3: 2.5, 4: NEAR_HALF, 5: -0.0, 32: NEAR_HALF}.items():
        x[0, i] = v
    want = {"reference": [1, 2, 3, 1, 0, 0], "builtin": [1, 2, 3, 1, 0, 0], "xnnpack": [0, 2, 2, 0, 0, 0]}
    for kernels in RESOLVERS:
        _, expected = run_litert(flatbuffer, kernels, x)
        ours = tm.run(x, kernels=kernels)
        assert np.array_equal(ours, expected), kernels
        codes = np.rint(expected[0, [1, 2, 3, 4, 5, 32]] * 255 / expected[0, 0]).astype(int)  # (q - zp) per input
        assert codes.tolist() == want[kernels], (kernels, codes)
    q, scale, zp = _core.quantize_rows(x, "tflite_asymmetric")
    assert (scale[0], zp[0]) == (1.0, -128) and (q[0, [1, 4, 32]].astype(int) + 128).tolist() == [1, 1, 0]


def test_hybrid_conv_symmetric_input_rounding_on_the_wheel():
    """Hybrid CONV_2D whose channel scales are all equal takes the per-tensor path: symmetric
    per-image quantization (tflite-semantics.md §10 item 10). Image of 27 values [254, ...]: range 254,
    inv = 0.5. Ties (x = 1 -> 0.5) round away from zero at every position on the wheel -- not half
    to even in the blocks of 8 as §5.2 said; only 0.49999997 (x = 0.99999994) shows the block/tail
    split. XNNPACK quantizes the image asymmetrically (qd8), half to even."""
    c, o = 9, 114                                            # 1x1 kernel, 9 x 114 = 1026 weights, all scales equal
    w = np.zeros((1, 1, c, o), np.float32)
    w[0, 0, np.arange(o) % c, np.arange(o)] = 1.0
    km = keras.Sequential([keras.Input((1, 3, c)), L.Conv2D(o, 1, use_bias=False)])
    km.set_weights([w])
    flatbuffer = convert(km, "dynamic")
    tm = qd.from_tflite(flatbuffer)
    x = np.zeros((1, 1, 3, c), np.float32)
    flat = x.reshape(-1)
    ties = {1: 1.0, 2: -1.0, 3: 3.0, 4: 2 * NEAR_HALF, 24: -1.0, 25: 1.0, 26: 2 * NEAR_HALF}   # 24.. = tail
    flat[0] = 254.0
    for i, v in ties.items():
        flat[i] = v
    for kernels in RESOLVERS:
        _, expected = run_litert(flatbuffer, kernels, x)
        assert np.array_equal(tm.run(x, kernels=kernels), expected), kernels
        if kernels != "xnnpack":
            codes = np.rint(expected.reshape(-1, o)[:, :c].reshape(-1)[list(ties)] / 2).astype(int)  # s_row * 127 s_w = 2
            assert codes.tolist() == [1, -1, 2, 1, -1, 1, 0], (kernels, codes)


def test_all_zero_inputs():
    """§10 item 12: an all-zero input to hybrid FC skips the matmul (output = bias); a zero row in a
    non-zero batch quantizes to q = 0 with scale 1. Checked against LiteRT on every path."""
    km = keras.Sequential([keras.Input((40,)), L.Dense(30, activation="relu")])
    rng = np.random.default_rng(7)
    km.set_weights([rng.normal(0, 0.4, w.shape).astype(np.float32) for w in km.get_weights()])
    flatbuffer = convert(km, "dynamic")
    tm = qd.from_tflite(flatbuffer)
    for x in (np.zeros((2, 40), np.float32), np.stack([np.zeros(40), rng.normal(size=40)]).astype(np.float32)):
        for kernels in RESOLVERS:
            _, expected = run_litert(flatbuffer, kernels, x)
            assert np.array_equal(tm.run(x, kernels=kernels), expected), kernels
        bias = km.get_weights()[1]
        assert np.array_equal(expected[0], np.maximum(bias, 0))     # the zero row gives relu(bias) exactly


def without_asymmetric_inputs(flatbuffer):
    """The same file with every FULLY_CONNECTED's asymmetric_quantize_inputs flag cleared (the
    converter always sets it; older files and other tools leave it false). The flag is one byte in
    the op's FullyConnectedOptions table (vtable slot 10)."""
    import tflite
    buf = bytearray(flatbuffer)
    m = tflite.Model.GetRootAsModel(bytes(buf), 0)
    flipped = 0
    for s in range(m.SubgraphsLength()):
        sg = m.Subgraphs(s)
        for i in range(sg.OperatorsLength()):
            table = sg.Operators(i).BuiltinOptions()
            o = tflite.FullyConnectedOptions()
            if table is None or m.OperatorCodes(sg.Operators(i).OpcodeIndex()).BuiltinCode() != \
                    tflite.BuiltinOperator.FULLY_CONNECTED:
                continue
            o.Init(table.Bytes, table.Pos)
            field = o._tab.Offset(10)
            if field and o.AsymmetricQuantizeInputs():
                buf[table.Pos + field] = 0
                flipped += 1
    assert flipped > 0
    return bytes(buf)


def test_symmetric_hybrid_fc_inputs(rng):
    """asymmetric_quantize_inputs = false: TFLite quantizes each row symmetrically (range/127, the
    NEON block / tail rounding); XNNPACK ignores the flag (it always quantizes asymmetrically, qd8).
    qdrift equals LiteRT on every path, including a row with a tie at a block and at a tail position."""
    km = keras.Sequential([keras.Input((45,)), L.Dense(30, activation="relu")])
    km.set_weights([rng.normal(0, 0.4, w.shape).astype(np.float32) for w in km.get_weights()])
    flatbuffer = without_asymmetric_inputs(convert(km, "dynamic"))
    tm = qd.from_tflite(flatbuffer)
    assert not [op for op in tm.ops if op.name == "FULLY_CONNECTED"][0].options["asymmetric_quantize_inputs"]
    x = rng.normal(size=(3, 45)).astype(np.float32)
    x[1] = 0.0
    x[1, 0], x[1, 3], x[1, 44] = 254.0, 1.0, 1.0     # inv = 0.5: ties at index 3 (block) and 44 (tail)
    for kernels in RESOLVERS:
        _, expected = run_litert(flatbuffer, kernels, x)
        assert np.array_equal(tm.run(x, kernels=kernels), expected), kernels
    asym = qd.from_tflite(convert(km, "dynamic"))
    assert not np.array_equal(asym.run(x, kernels="builtin"), tm.run(x, kernels="builtin"))  # the flag matters
