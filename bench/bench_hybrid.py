"""Dynamic-range ("hybrid") and float32 dense / conv2d / depthwise: qdrift's from_tflite run, fast
kernels (path="auto") and the readable reference loops (path="reference"), vs the LiteRT
interpreter on the same .tflite file (builtin kernels and XNNPACK), single thread, in one run.
Every timed qdrift result is first checked to equal LiteRT's output bit for bit."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import qdrift as qd  # noqa: E402
from timing import RESOLVERS, best_time, litert_interpreter  # noqa: E402

CASES = [
    ("dense 1x512 -> 512", (1, 512), lambda: keras.layers.Dense(512)),
    ("dense 64x256 -> 256", (64, 256), lambda: keras.layers.Dense(256)),
    ("conv 1x28x28x32, 3x3 -> 32 same", (1, 28, 28, 32), lambda: keras.layers.Conv2D(32, 3, padding="same")),
    ("conv 4x14x14x64, 3x3 s2 -> 64", (4, 14, 14, 64), lambda: keras.layers.Conv2D(64, 3, strides=2, padding="same")),
    ("conv 1x28x28x64, 1x1 -> 64", (1, 28, 28, 64), lambda: keras.layers.Conv2D(64, 1)),
    ("dwconv 1x28x28x128, 3x3 same", (1, 28, 28, 128), lambda: keras.layers.DepthwiseConv2D(3, padding="same")),
]


def measure(label, flatbuffer, x):
    tm = qd.from_tflite(flatbuffer)
    row = dict(case=label)
    for kernels in RESOLVERS:
        _, call = litert_interpreter(flatbuffer, kernels, x)
        expected = call()
        for path in ("auto", "reference"):   # the same bits, timed
            assert np.array_equal(tm.run(x, kernels=kernels, path=path), expected), (label, kernels, path)
        row[f"qdrift_ref_{kernels}_ms"] = best_time(lambda: tm.run(x, kernels=kernels, path="reference"),
                                                    repeats=3) * 1e3
        row[f"qdrift_fast_{kernels}_ms"] = best_time(lambda: tm.run(x, kernels=kernels, path="auto")) * 1e3
        row[f"litert_{kernels}_ms"] = best_time(call) * 1e3
        row[f"fast_over_ref_{kernels}"] = row[f"qdrift_ref_{kernels}_ms"] / row[f"qdrift_fast_{kernels}_ms"]
        row[f"litert_over_fast_{kernels}"] = row[f"litert_{kernels}_ms"] / row[f"qdrift_fast_{kernels}_ms"]
    return row


def run():
    rng = np.random.default_rng(0)
    results = {}
    for weights in ("hybrid", "float32"):
        rows = []
        for label, shape, make in CASES:
            km = keras.Sequential([keras.Input(shape=shape[1:]), make()])
            km.set_weights([rng.normal(0, 0.1, w.shape).astype(np.float32) for w in km.get_weights()])
            conv = tf.lite.TFLiteConverter.from_keras_model(km)
            if weights == "hybrid":
                conv.optimizations = [tf.lite.Optimize.DEFAULT]   # no representative data: dynamic range
            rows.append(measure(label, conv.convert(), rng.normal(size=shape).astype(np.float32)))
        results[weights] = rows
    print("single thread, ms; speedup = qdrift reference / fast; vs LiteRT = LiteRT / qdrift fast "
          "(> 1: qdrift is faster)")
    for weights, rows in results.items():
        for kernels in RESOLVERS:
            print(f"-- {weights} weights, LiteRT {kernels} path")
            print(f"{'case':<34}{'qd ref':>9}{'qd fast':>9}{'LiteRT':>9}{'speedup':>9}{'vs LiteRT':>10}")
            for r in rows:
                print(f"{r['case']:<34}{r[f'qdrift_ref_{kernels}_ms']:>9.3f}{r[f'qdrift_fast_{kernels}_ms']:>9.3f}"
                      f"{r[f'litert_{kernels}_ms']:>9.3f}{r[f'fast_over_ref_{kernels}']:>9.1f}"
                      f"{r[f'litert_over_fast_{kernels}']:>10.3f}")
    return results


if __name__ == "__main__":
    run()
