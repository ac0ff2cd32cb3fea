"""The int16x8 profile (int16 activations, int8 per-channel weights, int64 or int32 biases):
qd.from_tflite(file).run(x, kernels=k) equals the real LiteRT interpreter bit for bit on every
kernel path, for random Keras models converted by the real TFLite converter; and what the paths
really compute differently on the same files (XNNPACK takes no int16 op; the builtin path differs
from the reference in QUANTIZE and in int32-bias FC/conv)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import qdrift as qd  # noqa: E402
from qdrift import _core  # noqa: E402
from test_tflite_kernels import RESOLVERS, run_litert  # noqa: E402


def convert_int16x8(km, calibration, bias="int64", int16_io=False, batch=1):
    """The real converter, int16x8 profile; calibration samples in batches of `batch`."""
    conv = tf.lite.TFLiteConverter.from_keras_model(km)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([calibration[i:i + batch]] for i in range(0, len(calibration), batch))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    if bias == "int32":
        conv._experimental_full_integer_quantization_bias_type = tf.int32
    if int16_io:
        conv.inference_input_type = tf.int16
        conv.inference_output_type = tf.int16
    return conv.convert()


def random_layers(rng, kind):
    """(input shape, Keras layers) for one random model of `kind`."""
    act = lambda: str(rng.choice(["linear", "relu", "relu6"]))  # noqa: E731
    if kind == "dense":
        shape = (int(rng.integers(1, 40)),)
        return shape, [keras.layers.Dense(int(rng.integers(1, 24)), activation=act()),
                       keras.layers.Dense(int(rng.integers(1, 12)), activation=str(rng.choice(["tanh", "sigmoid",
                                                                                                "linear"])))]
    if kind == "rnn":
        shape = (int(rng.integers(1, 6)), int(rng.integers(1, 5)))
        return shape, [keras.layers.SimpleRNN(int(rng.integers(1, 10)), unroll=True)]
    shape = (int(rng.integers(3, 10)), int(rng.integers(3, 10)), int(rng.integers(1, 6)))
    dilation = int(rng.choice([1, 1, 2]))
    common = dict(strides=1 if dilation > 1 else int(rng.integers(1, 3)), dilation_rate=dilation,
                  padding=str(rng.choice(["same", "valid"])), activation=act())
    k = int(rng.integers(1, 4))
    if dilation > 1:   # a VALID kernel must fit: effective size (k - 1) * d + 1
        k = min(k, (min(shape[:2]) - 1) // dilation + 1)
    if kind == "conv":
        groups = int(rng.choice([1, 1, 2])) if shape[2] % 2 == 0 else 1
        return shape, [keras.layers.Conv2D(groups * int(rng.integers(1, 4)), k, groups=groups, **common)]
    return shape, [keras.layers.DepthwiseConv2D(k, depth_multiplier=int(rng.integers(1, 3)), **common)]


def random_model(rng, kind, batch):
    """A random Keras model; unrolled RNNs get a static batch (a dynamic one builds the zero state
    with SHAPE/FILL ops at run time)."""
    shape, layers = random_layers(rng, kind)
    km = keras.Sequential([keras.Input(shape, batch_size=batch if kind == "rnn" else None), *layers])
    km.set_weights([rng.normal(0, float(rng.uniform(0.2, 1.0)), w.shape).astype(np.float32)
                    for w in km.get_weights()])
    return shape, km


def outputs_on_every_path(flatbuffer, x):
    """LiteRT's output and qdrift's, per path; asserts they are equal."""
    tm = qd.from_tflite(flatbuffer)
    outs = {}
    for kernels in RESOLVERS:
        _, expected = run_litert(flatbuffer, kernels, x)
        ours = tm.run(x, kernels=kernels)
        assert ours.dtype == expected.dtype
        assert np.array_equal(ours, expected), (kernels, np.abs(ours.astype(np.float64) - expected).max())
        outs[kernels] = expected
    return outs
