"""Float dense and conv2d: qdrift's fast path vs Keras 3 (TensorFlow backend, the layer inside a
tf.function) on the same shapes, single thread, in one run."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import qdrift as qd  # noqa: E402
from timing import best_time  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
import keras  # noqa: E402

CASES = [
    ("dense 256x512 -> 512", (256, 512), lambda: keras.layers.Dense(512)),
    ("dense 1x1024 -> 1024", (1, 1024), lambda: keras.layers.Dense(1024)),
    ("conv 1x56x56x64, 3x3 -> 64 same", (1, 56, 56, 64), lambda: keras.layers.Conv2D(64, 3, padding="same")),
    ("conv 8x28x28x32, 3x3 s2 -> 64", (8, 28, 28, 32), lambda: keras.layers.Conv2D(64, 3, strides=2, padding="same")),
    ("conv 1x32x32x32, 3x3 groups 4", (1, 32, 32, 32), lambda: keras.layers.Conv2D(32, 3, padding="same", groups=4)),
    ("depthwise 1x56x56x128, 3x3", (1, 56, 56, 128), lambda: keras.layers.DepthwiseConv2D(3, padding="same")),
]


def run():
    rng = np.random.default_rng(0)
    rows = []
    for label, shape, make in CASES:
        km = keras.Sequential([keras.Input(shape=shape[1:]), make()])
        km.set_weights([rng.normal(0, 0.1, w.shape).astype(np.float32) for w in km.get_weights()])
        qm = qd.from_keras(km)
        x = rng.normal(size=shape).astype(np.float32)
        xt = tf.constant(x)
        call = tf.function(lambda t: km(t, training=False))
        assert np.allclose(qm(x), call(xt).numpy(), rtol=1e-4, atol=1e-4)
        t_qd = best_time(lambda: qm(x))
        t_keras = best_time(lambda: call(xt).numpy())
        rows.append(dict(case=label, qdrift_ms=t_qd * 1e3, keras_ms=t_keras * 1e3, keras_over_qdrift=t_keras / t_qd))
    print("single thread; ratio > 1 means qdrift is faster")
    print(f"{'case':<34}{'qdrift ms':>10}{'keras ms':>10}{'keras/qdrift':>14}")
    for r in rows:
        print(f"{r['case']:<34}{r['qdrift_ms']:>10.3f}{r['keras_ms']:>10.3f}{r['keras_over_qdrift']:>14.2f}")
    return rows


if __name__ == "__main__":
    run()
