"""The "tf_builtin" float kernels (the tensorflow wheel's builtin TFLite kernels, which its
converter's calibrator runs) against tf.lite.Interpreter with BUILTIN_WITHOUT_DEFAULT_DELEGATES,
bit for bit, on random FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D / TANH / LOGISTIC."""
import numpy as np
import tensorflow as tf

from qdrift import _core

keras = tf.keras
f32 = np.float32


def _tf_run(km, x, fb=None, num_threads=None):
    fb = fb or tf.lite.TFLiteConverter.from_keras_model(km).convert()
    it = tf.lite.Interpreter(model_content=fb, num_threads=num_threads, experimental_op_resolver_type=(
        tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], x.shape)
    it.allocate_tensors()
    it.set_tensor(inp["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def _random_weights(rng, km):
    km.set_weights([rng.normal(size=w.shape).astype(f32) for w in km.get_weights()])
    return km.get_weights()


def test_fully_connected_equals_the_tf_wheel(rng):
    for depth, units in [(5, 5), (31, 7), (36, 3), (12, 6), (64, 13), (3, 2)]:
        km = keras.Sequential([keras.Input((depth,)), keras.layers.Dense(units)])
        w, b = _random_weights(rng, km)
        fb = tf.lite.TFLiteConverter.from_keras_model(km).convert()
        for batch in (1, 1, 2, 3, 5):
            x = rng.normal(size=(batch, depth)).astype(f32)
            ours = _core.fully_connected_f32(x, np.ascontiguousarray(w.T), b, kernels="tf_builtin")
            assert np.array_equal(ours, _tf_run(km, x, fb)), (depth, units, batch)


def test_one_unit_fully_connected_equals_both_wheels(rng):
    """One output unit at batch 1 (a Dense(1) head; what the calibrator runs) is Eigen's inner
    product, whose order depends only on the depth: packets of 8 on the tensorflow wheel, of 4 on
    ai-edge-litert's builtin path. Depths around every packet and four-packet boundary."""
    from ai_edge_litert import interpreter as litert
    for depth in (1, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 23, 24, 25, 31, 32, 33, 39, 40, 47, 57, 71, 100):
        km = keras.Sequential([keras.Input((depth,)), keras.layers.Dense(1)])
        w, b = _random_weights(rng, km)
        fb = tf.lite.TFLiteConverter.from_keras_model(km).convert()
        it = litert.Interpreter(model_content=fb, experimental_op_resolver_type=(
            litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
        it.allocate_tensors()
        for _ in range(3):
            x = rng.normal(size=(1, depth)).astype(f32)
            ours = _core.fully_connected_f32(x, np.ascontiguousarray(w.T), b, kernels="tf_builtin")
            assert np.array_equal(ours, _tf_run(km, x, fb)), ("tf_builtin", depth, x, w)
            it.set_tensor(it.get_input_details()[0]["index"], x)
            it.invoke()
            ours = _core.fully_connected_f32(x, np.ascontiguousarray(w.T), b, kernels="builtin")
            assert np.array_equal(ours, it.get_tensor(it.get_output_details()[0]["index"])), ("builtin", depth)


def test_conv_and_depthwise_equal_the_tf_wheel(rng):
    """CONV_2D as the calibrator runs it: its interpreter keeps the default thread count (-1), so
    the builtin CONV_2D takes the multithreaded kernel (conv.cc: supports_multithreaded_kernel
    unless recommended_num_threads == 1), an Eigen tensor contraction on eigen_support's pool of
    4 threads; tf.lite.Interpreter(num_threads=4) runs the same. Shapes cover the GEBP micro-tiles,
    tiny products (coefficient-based in the single-thread GEMM, not here), one output channel,
    one output pixel, 1x1 and full-size filters (the contraction's MatMul shortcuts)."""
    cases = [(3, 4, 6, 3, "valid"), (4, 1, 2, 2, "valid"), (6, 3, 5, 3, "valid"), (6, 3, 8, 3, "same"),
             (5, 7, 6, 1, "valid"), (8, 4, 12, 3, "same"), (8, 4, 9, 2, "valid"), (2, 4, 10, 1, "same"),
             (4, 3, 1, 3, "same"), (3, 3, 1, 3, "valid"), (3, 2, 4, 3, "valid"), (5, 5, 29, 3, "same"),
             (2, 2, 6, 2, "valid"), (3, 2, 3, 2, "same")]
    for h, c, o, k, padding in cases:
        km = keras.Sequential([keras.Input((h, h, c)), keras.layers.Conv2D(o, k, padding=padding)])
        w, b = _random_weights(rng, km)
        x = rng.normal(size=(1, h, h, c)).astype(f32)
        ours = _core.conv2d_f32(x, w, b, kernels="tf_builtin", padding=padding)
        assert np.array_equal(ours, _tf_run(km, x, num_threads=4)), (h, c, o, k, padding)
    km = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")])
    w, b = _random_weights(rng, km)
    x = rng.normal(size=(1, 6, 6, 3)).astype(f32)
    ours = _core.conv2d_f32(x, w.reshape(3, 3, 1, 6), b, kernels="tf_builtin", padding="same", groups=3,
                            depthwise=True)
    assert np.array_equal(ours, _tf_run(km, x))


def test_tanh_and_logistic_equal_the_tf_wheel(rng):
    for activation, function in (("tanh", "tanh_eigen"), ("sigmoid", "logistic_eigen_tf")):
        for n in (1, 3, 8, 37):
            km = keras.Sequential([keras.Input((n,)), keras.layers.Activation(activation)])
            x = (rng.normal(size=(1, n)) * 4).astype(f32)
            assert np.array_equal(_core.activation_f32(x, function), _tf_run(km, x)), (activation, n)
