"""int8 FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D: qdrift's fast and reference kernels vs the
LiteRT interpreter (builtin kernels = BUILTIN_WITHOUT_DEFAULT_DELEGATES, and the default XNNPACK)
on the same converted models (Keras layer -> real TFLite converter, int8 in and out) and the same
int8 input, single thread, in one run. qdrift's kernel is called with the arguments prepared
once (as invoke() runs on prepared tensors); its output is checked bit-exact against each path."""
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras  # noqa: E402
import qdrift as qd  # noqa: E402
from qdrift import _core  # noqa: E402
from qdrift.tflite_kernels import output_stage  # noqa: E402
from timing import RESOLVERS, best_time, litert_interpreter  # noqa: E402

CASES = [
    ("dense 1x512 -> 512", (1, 512), lambda: keras.layers.Dense(512)),
    ("dense 64x512 -> 512", (64, 512), lambda: keras.layers.Dense(512)),
    ("dense 1x1024 -> 1024", (1, 1024), lambda: keras.layers.Dense(1024)),
    ("dense 64x1024 -> 1024", (64, 1024), lambda: keras.layers.Dense(1024)),
    ("conv 1x56x56x64, 3x3 -> 64 same", (1, 56, 56, 64), lambda: keras.layers.Conv2D(64, 3, padding="same")),
    ("conv 1x56x56x64, 3x3 s2 -> 128", (1, 56, 56, 64), lambda: keras.layers.Conv2D(128, 3, strides=2, padding="same")),
    ("depthwise 1x56x56x128, 3x3 same", (1, 56, 56, 128), lambda: keras.layers.DepthwiseConv2D(3, padding="same")),
]


def convert(km, shape, rng):
    cal = rng.normal(size=(8,) + shape[1:]).astype(np.float32)
    conv = tf.lite.TFLiteConverter.from_keras_model(km)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([cal[i:i + 1]] for i in range(len(cal)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def qdrift_kernel(tm, kernels, x):
    """The model's one compute op as a closure over prepared arguments: path -> int8 output."""
    (op,) = [o for o in tm.ops if o.name in ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")]
    t_in, w, t_out = (tm.tensors[i] for i in op.inputs[:2] + op.outputs[:1])
    b = tm.tensors[op.inputs[2]].data if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    zp = int(t_in.zero_point[0])
    if op.name == "FULLY_CONNECTED":
        stage = output_stage("fully_connected", kernels, t_in.scale[0], w.scale, t_out.scale[0],
                             int(t_out.zero_point[0]))
        return lambda path: _core.fully_connected_int8(x, w.data, b, zp, path=path, **stage)
    if op.name == "CONV_2D":
        groups, f, kind = x.shape[3] // w.shape[3], np.ascontiguousarray(np.transpose(w.data, (1, 2, 3, 0))), "conv2d"
    else:
        groups, kind = x.shape[3], "depthwise"
        f = np.ascontiguousarray(w.data.reshape(w.shape[1], w.shape[2], 1, w.shape[3]))
    stage = output_stage(kind, kernels, t_in.scale[0], w.scale, t_out.scale[0], int(t_out.zero_point[0]),
                         groups=groups)
    o = op.options
    return lambda path: _core.conv2d_int8(x, f, b, zp, strides=o["strides"], padding=o["padding"],
                                          dilation=o["dilation"], groups=groups, path=path, **stage)


def run():
    rng = np.random.default_rng(0)
    rows = []
    for label, shape, make in CASES:
        km = keras.Sequential([keras.Input(shape=shape[1:]), make()])
        km.set_weights([rng.normal(0, 0.1, v.shape).astype(np.float32) for v in km.get_weights()])
        flatbuffer = convert(km, shape, rng)
        tm = qd.from_tflite(flatbuffer)
        x = rng.integers(-128, 128, shape).astype(np.int8)
        row = dict(case=label)
        for kernels in RESOLVERS:
            it, call = litert_interpreter(flatbuffer, kernels, x)
            expected = call()
            kernel = qdrift_kernel(tm, kernels, x)
            assert np.array_equal(kernel("fast").reshape(expected.shape), expected), (label, kernels)
            row[f"litert_{kernels}_ms"] = best_time(it.invoke) * 1e3
            row[f"qdrift_fast_{kernels}_stage_ms"] = best_time(lambda: kernel("fast")) * 1e3
        assert np.array_equal(kernel("reference"), kernel("fast"))
        row["qdrift_reference_ms"] = best_time(lambda: kernel("reference"), 1) * 1e3
        fast = row["qdrift_fast_xnnpack_stage_ms"]
        row.update(builtin_over_fast=row["litert_builtin_ms"] / row["qdrift_fast_builtin_stage_ms"],
                   xnnpack_over_fast=row["litert_xnnpack_ms"] / fast, reference_over_fast=row["qdrift_reference_ms"] / fast)
        rows.append(row)
    print("single thread; ratio > 1 means qdrift fast is faster. fast(b)/fast(x): qdrift fast with the builtin /")
    print("xnnpack output stage (each bit-exact with that LiteRT path); builtin/fast and xnnpack/fast pair them.")
    print(f"{'case':<34}{'fast(b)':>9}{'fast(x)':>9}{'ref':>9}{'builtin':>9}{'xnnpack':>9}"
          f"{'bltn/fast':>10}{'xnn/fast':>9}{'ref/fast':>9}   (ms)")
    for r in rows:
        print(f"{r['case']:<34}{r['qdrift_fast_builtin_stage_ms']:>9.3f}{r['qdrift_fast_xnnpack_stage_ms']:>9.3f}"
              f"{r['qdrift_reference_ms']:>9.2f}{r['litert_builtin_ms']:>9.3f}{r['litert_xnnpack_ms']:>9.3f}"
              f"{r['builtin_over_fast']:>10.2f}{r['xnnpack_over_fast']:>9.2f}{r['reference_over_fast']:>9.0f}")
    print(json.dumps(dict(bench="int8", rows=rows)))
    return rows


if __name__ == "__main__":
    run()
