"""qdrift's float layers and models against Keras 3 (TensorFlow backend), the oracle: 200 random
single-layer configurations, the three canonical examples, 50 random Sequential stacks through
qd.from_keras; plus invariants and named errors."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import qdrift as qd  # noqa: E402

U = 2.0 ** -24   # unit roundoff of float32


def keras_model(input_shape, *layers):
    return keras.Sequential([keras.Input(shape=input_shape), *layers])


def randomize(model, rng, scale=0.5):
    for layer in model.layers:
        ws = layer.get_weights()
        if type(layer).__name__ == "BatchNormalization":
            ws = [rng.uniform(0.5, 1.5, w.shape) if i != len(ws) - 1 else rng.uniform(0.2, 2.0, w.shape)
                  for i, w in enumerate(ws)]
        else:
            ws = [rng.normal(0, scale, w.shape) for w in ws]
        layer.set_weights([w.astype(np.float32) for w in ws])


def magnitude(qm, x):
    """The same model run on |x| with |weights| and no activations (reference path): the
    sum of |products| that bounds float32 summation error, per output element."""
    y = np.abs(x)
    for layer in qm.layers:
        w = {k: np.abs(v) for k, v in layer.weights.items()}
        if isinstance(layer, qd.layers.Dense):
            y = qd.ops.dense(y, w["kernel"], w.get("bias"), path="reference")
        elif isinstance(layer, qd.layers.Conv2D):
            y = qd.ops.conv2d(y, w["kernel"], w.get("bias"), strides=layer.strides, padding=layer.padding,
                              dilation=layer.dilation_rate, groups=layer.groups, path="reference")
        elif isinstance(layer, qd.layers.DepthwiseConv2D):
            y = qd.ops.depthwise_conv2d(y, w["depthwise_kernel"], w.get("bias"), strides=layer.strides,
                                        padding=layer.padding, dilation=layer.dilation_rate, path="reference")
        elif isinstance(layer, qd.layers.BatchNormalization):
            inv = layer.weights["gamma"].astype(np.float64) / np.sqrt(layer.weights["moving_variance"] + layer.epsilon)
            y = y * np.abs(inv) + np.abs(layer.weights["beta"]) + np.abs(layer.weights["moving_mean"] * inv)
        else:
            y = layer.forward(y)
    return y


def single_layer_case(rng, i):
    batch = int(rng.choice([1, 2, 5]))
    act = str(rng.choice(["linear", "relu", "relu6", "tanh", "sigmoid"]))
    kind = ["dense", "conv", "depthwise", "rnn", "bn"][i % 5] if i < 190 else ["conv", "depthwise"][i % 2]
    if kind == "dense":
        shape = (int(rng.integers(1, 70)),) if i % 3 else (int(rng.integers(1, 5)), int(rng.integers(1, 40)))
        layer = keras.layers.Dense(int(rng.integers(1, 50)), activation=act, use_bias=bool(i % 4))
        depth = shape[-1]
    elif kind in ("conv", "depthwise"):
        k = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        strides = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        dil = (1, 1) if strides != (1, 1) else (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        pad = str(rng.choice(["same", "valid"]))
        h = (k[0] - 1) * dil[0] + int(rng.integers(1, 9))
        w = (k[1] - 1) * dil[1] + int(rng.integers(1, 9))
        if kind == "conv":
            groups = int(rng.choice([1, 1, 2, 3]))
            c = groups * int(rng.integers(1, 5))
            layer = keras.layers.Conv2D(groups * int(rng.integers(1, 5)), k, strides=strides, padding=pad,
                                        dilation_rate=dil, groups=groups, activation=act, use_bias=bool(i % 4))
            depth = k[0] * k[1] * c // groups
        else:
            c = int(rng.integers(1, 7))
            layer = keras.layers.DepthwiseConv2D(k, strides=strides, padding=pad, dilation_rate=dil,
                                                 depth_multiplier=int(rng.integers(1, 4)), activation=act,
                                                 use_bias=bool(i % 4))
            depth = k[0] * k[1]
        shape = (h, w, c)
    elif kind == "rnn":
        t, f = int(rng.integers(1, 12)), int(rng.integers(1, 9))
        shape = (t, f)
        layer = keras.layers.SimpleRNN(int(rng.integers(1, 12)), activation=str(rng.choice(["tanh", "relu"])),
                                       return_sequences=bool(i % 2), go_backwards=bool((i // 2) % 2),
                                       use_bias=bool(i % 3))
        depth = f + layer.units
    else:
        shape = tuple(int(d) for d in rng.integers(1, 6, int(rng.integers(1, 4))))
        layer = keras.layers.BatchNormalization(epsilon=float(rng.choice([1e-3, 1e-5])))
        depth = 1
    return batch, shape, layer, depth, kind


def test_200_random_single_layers_match_keras(rng):
    worst = {}
    for i in range(200):
        batch, shape, layer, depth, kind = single_layer_case(rng, i)
        km = keras_model(shape, layer)
        randomize(km, rng)
        x = rng.normal(0, 1, (batch,) + shape).astype(np.float32)
        expected = np.asarray(km(x))
        qm = qd.from_keras(km)
        for path in ("fast", "reference"):
            ours = qm(x, path=path)
            assert ours.shape == expected.shape, (i, kind)
            mag = magnitude(qm, x)
            if kind == "rnn":
                # Each step's sums carry float32 rounding (<= depth * u * |products|), which the
                # recurrent matrix can carry into later steps; allow (depth + 2) * u per step over
                # all T steps relative to the largest magnitude, plus 4 ulps of the result.
                t = shape[0]
                tol = (depth + 2) * U * t * (1 + np.abs(expected).max()) + 4 * U * np.abs(expected)
            else:
                # Classical summation bound (depth + 2) * u * sum|x*w| (TF and we may add in any
                # order; for batch norm, depth 1 plus the terms of x * inv + (beta - mean * inv)),
                # plus 4 ulps of the magnitude for TF's tanh/sigmoid/rsqrt approximations (slopes <= 1).
                tol = (depth + 6) * U * mag + 4 * U * np.abs(expected) + 1e-30
            err = np.abs(ours - expected)
            assert np.all(err <= tol), (i, kind, path, float(err.max()), layer.get_config())
            worst[kind] = max(worst.get(kind, 0.0), float((err / np.maximum(tol, 1e-30)).max()))
    print("worst error / tolerance per kind:", worst)


def test_canonical_examples_match_keras():
    dense = keras_model((1,), keras.layers.Dense(1, use_bias=False))
    dense.set_weights([np.array([[1.5]], np.float32)])
    assert qd.from_keras(dense)(np.array([[2.0]], np.float32)).tolist() == [[3.0]]
    conv = keras_model((5, 5, 1), keras.layers.Conv2D(1, (3, 3), use_bias=False))
    conv.set_weights([np.ones((3, 3, 1, 1), np.float32)])
    y = qd.from_keras(conv)(np.ones((1, 5, 5, 1), np.float32))
    assert y.shape == (1, 3, 3, 1) and np.all(y == 9.0)
    assert np.array_equal(y, np.asarray(conv(np.ones((1, 5, 5, 1), np.float32))))
    rnn = keras_model((5, 1), keras.layers.SimpleRNN(4, use_bias=False))
    rnn.set_weights([np.ones((1, 4), np.float32), np.ones((4, 4), np.float32)])
    x = np.ones((1, 5, 1), np.float32)
    ours, theirs = qd.from_keras(rnn)(x), np.asarray(rnn(x))
    # h_t = tanh(1 + 4 h_{t-1}): saturates at 1 - O(1e-7); TF's tanh approximation may differ by ulps.
    assert np.allclose(ours, theirs, rtol=0, atol=4 * U) and ours[0, 0] > 0.999


def random_stack(rng, i):
    if i % 3 == 2:   # recurrent stacks
        t, f = int(rng.integers(2, 10)), int(rng.integers(1, 6))
        layers = [keras.layers.SimpleRNN(int(rng.integers(2, 9)), return_sequences=True),
                  keras.layers.SimpleRNN(int(rng.integers(2, 9)), return_sequences=bool(i % 2),
                                         go_backwards=bool(i % 4 == 1))]
        if not layers[-1].return_sequences:
            layers.append(keras.layers.Dense(int(rng.integers(1, 6)), activation="sigmoid"))
        return (t, f), layers
    shape = (int(rng.integers(6, 12)), int(rng.integers(6, 12)), int(rng.integers(1, 4)))
    layers = [keras.layers.Conv2D(int(rng.integers(2, 6)), 3, padding="same"),
              keras.layers.BatchNormalization(), keras.layers.ReLU(max_value=6.0 if i % 2 else None),
              keras.layers.DepthwiseConv2D(3, strides=int(rng.integers(1, 3)), padding="valid",
                                           depth_multiplier=int(rng.integers(1, 3))),
              keras.layers.Activation(str(rng.choice(["relu", "tanh"]))),
              keras.layers.Conv2D(4, 1, activation="relu", dilation_rate=1),
              keras.layers.Flatten(), keras.layers.Dense(int(rng.integers(2, 8)))]
    return shape, layers


def test_50_random_stacks_through_from_keras(rng):
    for i in range(50):
        shape, layers = random_stack(rng, i)
        km = keras_model(shape, *layers)
        randomize(km, rng, scale=0.3)
        x = rng.normal(0, 1, (int(rng.integers(1, 4)),) + shape).astype(np.float32)
        expected = np.asarray(km(x))
        ours = qd.from_keras(km)(x)
        # Float32 rounding differences (summation order, TF's activation approximations) pass
        # through every layer; after 5-8 layers of O(1) values they stay below 1e-5 absolute.
        assert np.allclose(ours, expected, rtol=1e-5, atol=1e-5), (i, float(np.abs(ours - expected).max()))


def test_invariants(rng):
    x = rng.normal(size=(3, 1, 1, 7)).astype(np.float32)
    w = rng.normal(size=(7, 5)).astype(np.float32)
    b = rng.normal(size=5).astype(np.float32)
    conv = qd.ops.conv2d(x, w.reshape(1, 1, 7, 5), b, path="reference")
    assert np.array_equal(conv.reshape(3, 5), qd.ops.dense(x.reshape(3, 7), w, b, path="reference"))
    seq = rng.normal(size=(4, 1, 3)).astype(np.float32)
    k, r = rng.normal(size=(3, 6)).astype(np.float32), rng.normal(size=(6, 6)).astype(np.float32)
    states = qd.ops.simple_rnn(seq, k, r, b[:1].repeat(6))
    assert np.array_equal(states[:, 0], qd.ops.dense(seq[:, 0], k, b[:1].repeat(6), activation="tanh"))
    # 16-bit fake quantization everywhere stays close to float: each point adds <= scale/2 of
    # rounding (scale = range / 65535), so a 4-layer model stays within 1e-3 of float here.
    m = qd.Sequential([qd.layers.Conv2D(4, 3, activation="relu"), qd.layers.Flatten(), qd.layers.Dense(3)],
                      input_shape=(6, 6, 2), seed=1)
    xs = rng.normal(size=(8, 6, 6, 2)).astype(np.float32)
    cfg = qd.QuantConfig(weights=dict(bits=16, symmetric=True, granularity="per_channel"),
                         activations=dict(bits=16), bias=dict(bits=16, symmetric=True), state=dict(bits=16))
    qm = m.quantize(cfg, calibration=xs)
    assert np.abs(qm(xs) - m(xs)).max() < 1e-3 * np.abs(m(xs)).max()


def test_bad_input_names_the_layer(rng):
    m = qd.Sequential([qd.layers.Conv2D(4, 3, name="c1"), qd.layers.Flatten(), qd.layers.Dense(2, name="head")],
                      input_shape=(5, 5, 2))
    with pytest.raises(qd.ShapeError, match=r"expected input \(batch, 5, 5, 2\), got \(1, 5, 5\)"):
        m(np.zeros((1, 5, 5), np.float32))
    with pytest.raises(qd.ShapeError, match=r"expected input \(batch, 5, 5, 2\), got \(1, 5, 5, 3\)"):
        m(np.zeros((1, 5, 5, 3), np.float32))
    with pytest.raises(qd.ShapeError, match="conv2d 'c1': the batch is empty"):
        m(np.zeros((0, 5, 5, 2), np.float32))
    with pytest.raises(qd.DTypeError, match="must be float32"):
        m(np.zeros((1, 5, 5, 2)))
    with pytest.raises(qd.ShapeError, match="conv2d 'big': the kernel spans 7 rows .* only 5 under VALID"):
        qd.Sequential([qd.layers.Conv2D(1, 7, name="big")], input_shape=(5, 5, 1))
    with pytest.raises(qd.ConfigError, match="conv2d 'z': strides must be positive"):
        qd.Sequential([qd.layers.Conv2D(1, 3, strides=0, name="z")], input_shape=(5, 5, 1))
    with pytest.raises(qd.ShapeError, match="dense 'd': the input's last axis has 3 features but the kernel expects 4"):
        qd.ops.dense(np.zeros((2, 3), np.float32), np.zeros((4, 2), np.float32), name="d")
    with pytest.raises(qd.ShapeError, match="the input has 3 channels but the kernel"):
        qd.ops.conv2d(np.zeros((1, 4, 4, 3), np.float32), np.zeros((3, 3, 2, 1), np.float32))
    km = keras_model((4,), keras.layers.Dense(2), keras.layers.LayerNormalization(name="ln"))
    with pytest.raises(qd.UnsupportedError, match="layer 'ln' of type LayerNormalization is not supported"):
        qd.from_keras(km)


def test_save_load_and_weights_round_trip(rng, tmp_path):
    m = qd.Sequential([qd.layers.SimpleRNN(5, return_sequences=True), qd.layers.SimpleRNN(3), qd.layers.Dense(2)],
                      input_shape=(4, 2), seed=7)
    x = rng.normal(size=(3, 4, 2)).astype(np.float32)
    m.save(tmp_path / "m.npz")
    m2 = qd.Sequential.load(tmp_path / "m.npz")
    assert np.array_equal(m2(x), m(x))
    assert qd.Sequential([qd.layers.Dense(3)], input_shape=(2,), seed=7).get_weights()["dense_0/kernel"].tolist() == \
        qd.Sequential([qd.layers.Dense(3)], input_shape=(2,), seed=7).get_weights()["dense_0/kernel"].tolist()
    (tmp_path / "bad.npz").write_bytes(b"not a zip file")
    with pytest.raises(qd.DataError, match="not a qdrift model file"):
        qd.Sequential.load(tmp_path / "bad.npz")
