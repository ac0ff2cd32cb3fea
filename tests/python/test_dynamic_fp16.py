"""qd.from_tflite on dynamic-range ("hybrid") and float16 files the real converter writes: random
Keras models (Dense / Conv2D / DepthwiseConv2D above and below the converter's 1024-weight
threshold, SimpleRNN with and without unroll), run by qdrift and by LiteRT on each kernel path
(op resolver pinned), compared bit for bit where the arithmetic can be reproduced and within a
measured ulp bound where it cannot; the canonical examples; the hybrid input-quantization rules
probed with constructed inputs (tflite-semantics.md §10 items 10-12)."""
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
            k = 3
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
    models (with the model that produced it) and the number of models reproduced exactly, and
    the worst difference over the models made only of hybrid ops."""
    worst = {k: (0.0, 0, None) for k in RESOLVERS}
    exact = {k: 0 for k in RESOLVERS}
    hybrid_worst, n_hybrid = 0, 0
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
        for kernels in RESOLVERS:
            _, expected = run_litert(flatbuffer, kernels, x)
            ours = tm.run(x, kernels=kernels)
            assert ours.shape == expected.shape, (profile, kind, kernels, trial)
            scaled, plain = scaled_ulps(ours, expected)
            exact[kernels] += plain == 0
            if hybrid:
                hybrid_worst = max(hybrid_worst, plain)
            if scaled > worst[kernels][0]:
                worst[kernels] = (scaled, plain, (trial, kind, big, layer_summary(km)))
    return worst, exact, hybrid_worst, n_hybrid


def layer_summary(km):
    return [(type(layer).__name__, layer.get_config().get("activation")) for layer in km.layers]


# Largest difference measured over the whole test set (default seed), per path, in units of the
# float32 spacing at the output's largest magnitude. Causes, by path:
# - reference: none; every model reproduces bit for bit (asserted exactly).
# - builtin: the float TANH/LOGISTIC kernels use Eigen's rational approximation (qdrift uses
#   std::tanh as the reference kernel does), and small float conv / depthwise sum in Eigen's
#   blocked order. Under dynamic range a 1-ulp TANH difference in a SimpleRNN step can move the
#   next step's hybrid input quantization by one code, so RNN outputs differ by up to one
#   quantization step, the bulk of the bound.
# - xnnpack: the same, with XNNPACK's own tanh / sigmoid approximations and depthwise tap order.
BOUNDS = {"dynamic": {"reference": 0, "builtin": None, "xnnpack": None},
          "fp16": {"reference": 0, "builtin": None, "xnnpack": None}}


@pytest.mark.parametrize("profile", ["dynamic", "fp16"])
def test_random_models_equal_litert(rng, profile):
    worst, exact, hybrid_worst, n_hybrid = run_all(rng, profile, MODELS_PER_PROFILE)
    print(profile, worst, exact, hybrid_worst, n_hybrid)
    assert exact["reference"] == MODELS_PER_PROFILE, worst["reference"]
    # Models made only of hybrid FC / conv / depthwise ops: bit-exact on every path (the integer
    # part, the input quantization and the float epilogue are all reproduced).
    assert hybrid_worst == 0
    assert n_hybrid >= (15 if profile == "dynamic" else 0)
