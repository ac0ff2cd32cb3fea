"""The fast int8 FULLY_CONNECTED / CONV_2D / DEPTHWISE kernels against the reference loops, bit for
bit (every requantization method, tile-edge shapes, zero points, saturation, groups, empty dims),
and the modelled accumulator (issue #5) against a NumPy step-by-step oracle and hand-computed cases."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import qdrift as qd  # noqa: E402
from qdrift import _core  # noqa: E402
from qdrift.tflite_kernels import output_stage  # noqa: E402
from test_from_tflite import convert  # noqa: E402
from test_tflite_kernels import run_litert  # noqa: E402

METHODS = ("gemmlowp", "single", "ruy", "int64", "xnnpack", "double_rha")
EDGE = (1, 2, 3, 4, 5, 7, 8, 9, 10, 15, 16, 17, 31, 32, 33, 63, 64, 65)


def random_stage(rng, method, channels, depth):
    """Output-stage kwargs; multipliers sized so outputs span the int8 range and also saturate."""
    per_channel = bool(rng.integers(2))
    n = channels if per_channel else 1
    # |acc| ~ 128 * 128 * sqrt(depth); scales around 127 / that, and up to 30x larger (saturation).
    typical = 127.0 / (128 * 128 * np.sqrt(max(depth, 1)))
    real = typical * np.exp(rng.uniform(np.log(0.05), np.log(30.0), n))
    stage = dict(method=method, zero_point=int(rng.choice([-128, 0, 127, int(rng.integers(-128, 128))])))
    lo = int(rng.integers(-128, 0)) if rng.integers(4) == 0 else -128
    stage.update(act_min=lo, act_max=int(rng.integers(lo, 128)) if rng.integers(4) == 0 else 127)
    if method in ("xnnpack", "double_rha"):
        stage["scale"] = real
    else:
        if method == "int64":   # shift <= 7
            real = np.minimum(real, 100.0)
        ms = [_core.quantize_multiplier(float(v)) for v in real]
        stage.update(m=np.array([m for m, _ in ms], np.int32), shift=np.array([s for _, s in ms], np.int32))
    if rng.integers(3) == 0:   # a tail of channels with another rule of the same kind
        kinds = ("xnnpack", "double_rha") if method in ("xnnpack", "double_rha") else ("gemmlowp", "single", "ruy")
        stage.update(tail_from=int(rng.integers(0, channels + 1)), tail_method=str(rng.choice(kinds)))
    return stage


def int8(rng, shape):
    return rng.integers(-128, 128, shape).astype(np.int8)


def bias_for(rng, n):
    return None if rng.integers(5) == 0 else rng.integers(-40000, 40000, n).astype(np.int32)


@pytest.mark.parametrize("method", METHODS)
def test_fully_connected_fast_equals_reference(rng, method):
    for trial in range(40):
        batch = int(rng.choice((0, 1, 2, 3, 4, 5, 9, 64, 65)))
        i, o = int(rng.choice(EDGE + (0, 127, 128, 129, 300))), int(rng.choice(EDGE + (0,)))
        x, w, b = int8(rng, (batch, i)), int8(rng, (o, i)), bias_for(rng, o)
        zp = int(rng.choice([-128, 0, 127, int(rng.integers(-128, 128))]))
        stage = random_stage(rng, method, o, i)
        ref = _core.fully_connected_int8(x, w, b, zp, path="reference", **stage)
        fast = _core.fully_connected_int8(x, w, b, zp, path="fast", **stage)
        assert np.array_equal(fast, ref), dict(trial=trial, batch=batch, i=i, o=o, zp=zp, stage=stage)
    # A leading batch of several dims, and the default path (auto = fast).
    x = int8(rng, (2, 3, 17))
    w, stage = int8(rng, (5, 17)), random_stage(rng, method, 5, 17)
    assert np.array_equal(_core.fully_connected_int8(x, w, None, 3, **stage),
                          _core.fully_connected_int8(x, w, None, 3, path="reference", **stage))


def random_conv(rng):
    depthwise = rng.integers(3) == 0
    groups = 1
    if depthwise:
        c = int(rng.choice((1, 2, 3, 8, 15, 16, 17, 33, 64)))
        groups, o = c, c * int(rng.choice((1, 1, 2, 3)))
    else:
        groups = int(rng.choice((1, 1, 1, 2, 4)))
        c, o = groups * int(rng.choice((1, 2, 3, 5, 8, 16, 17))), groups * int(rng.choice((1, 2, 3, 4, 5, 8, 17)))
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    strides = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    dilation = (1, 1) if rng.integers(2) else (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    padding = str(rng.choice(["same", "valid"]))
    h = int(rng.integers((kh - 1) * dilation[0] + 1, 12))
    w = int(rng.integers((kw - 1) * dilation[1] + 1, 12))
    n = int(rng.choice((1, 1, 2, 3)))
    return (n, h, w, c), (kh, kw, c // groups, o), dict(strides=strides, dilation=dilation, padding=padding,
                                                        groups=groups)


@pytest.mark.parametrize("method", METHODS)
def test_conv2d_fast_equals_reference(rng, method):
    for trial in range(30):
        x_shape, k_shape, geo = random_conv(rng)
        x, f, b = int8(rng, x_shape), int8(rng, k_shape), bias_for(rng, k_shape[3])
        zp = int(rng.choice([-128, 0, 127, int(rng.integers(-128, 128))]))
        stage = random_stage(rng, method, k_shape[3], k_shape[0] * k_shape[1] * k_shape[2])
        ref = _core.conv2d_int8(x, f, b, zp, path="reference", **geo, **stage)
        fast = _core.conv2d_int8(x, f, b, zp, path="fast", **geo, **stage)
        assert np.array_equal(fast, ref), dict(trial=trial, x=x_shape, k=k_shape, zp=zp, geo=geo, stage=stage)


def test_conv2d_fast_special_cases(rng):
    stage = dict(method="gemmlowp", m=np.int32(1 << 30), shift=np.int32(-8), zero_point=3)
    cases = [
        ((2, 5, 6, 64), (1, 1, 64, 33), dict()),                               # 1x1: rows read straight from x
        ((1, 9, 9, 65), (3, 3, 65, 64), dict(padding="same")),                 # depth 585 = 9 * 64 + 9
        ((1, 4, 4, 1), (3, 3, 1, 7), dict(padding="same")),                    # one input channel, 7 outputs
        ((1, 1, 1, 3), (1, 1, 3, 2), dict()),                                  # size-1 image
        ((1, 6, 6, 8), (3, 3, 1, 16), dict(groups=8, strides=(2, 1))),          # depthwise multiplier 2
        ((1, 3, 3, 16), (3, 3, 16, 0), dict()),                                # no output channels
    ]
    for x_shape, k_shape, geo in cases:
        x, f = int8(rng, x_shape), int8(rng, k_shape)
        for zp in (-128, 0, 127):
            ref = _core.conv2d_int8(x, f, None, zp, path="reference", **geo, **stage)
            assert np.array_equal(_core.conv2d_int8(x, f, None, zp, path="fast", **geo, **stage), ref), (x_shape, k_shape)


def test_fast_falls_back_where_int32_could_overflow(rng):
    """Weights whose sums could leave int32 (and an input zero point outside int8 for a padded
    conv) send the fast path to the reference, so the results stay the reference's."""
    i = 70000
    x, w = np.full((1, i), 127, np.int8), np.full((2, i), -128, np.int8)
    stage = dict(method="double_rha", scale=1e-6)
    ref, count = _core.fully_connected_int8(x, w, None, -128, path="reference", accumulator={}, **stage)
    fast, count_fast = _core.fully_connected_int8(x, w, None, -128, path="fast", accumulator={}, **stage)
    assert np.array_equal(fast, ref) and count == count_fast > 0
    # Depth 70000 with weights in {-1, 0, 1}: the crude bound fails, the per-channel one holds,
    # so the fast kernels run (and count no overflow).
    x, w = int8(rng, (3, i)), rng.integers(-1, 2, (4, i)).astype(np.int8)
    stage = dict(method="gemmlowp", m=np.int32(1 << 30), shift=np.int32(-6))   # x 2^-7: outputs spread over int8
    y, count = _core.fully_connected_int8(x, w, None, 5, path="fast", accumulator={}, **stage)
    assert count == 0 and np.array_equal(y, _core.fully_connected_int8(x, w, None, 5, path="reference", **stage))
    assert len(np.unique(y)) > 6, y   # 12 outputs, not all saturated
    x, f = int8(rng, (1, 5, 5, 4)), int8(rng, (3, 3, 4, 2))
    for zp in (-300, 500):
        args = dict(padding="same", method="gemmlowp", m=np.int32(1 << 30), shift=np.int32(-10))
        assert np.array_equal(_core.conv2d_int8(x, f, None, zp, path="fast", **args),
                              _core.conv2d_int8(x, f, None, zp, path="reference", **args))


# ---- accumulator modelling ------------------------------------------------------------------

def numpy_accumulate(bias, products, bits, overflow):
    """Oracle: start at bias, add products[..., k] for k ascending, in a `bits`-wide accumulator.
    Returns (final values, number of steps whose exact result left the range)."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    acc = np.zeros(products.shape[:-1], dtype=object)
    count = 0
    for step in [np.broadcast_to(bias, acc.shape).astype(object)] + [products[..., k].astype(object)
                                                                     for k in range(products.shape[-1])]:
        exact = acc + step
        out = (exact < lo) | (exact > hi)
        count += int(np.count_nonzero(out))
        if overflow == "wrap":
            acc = (exact - lo) % (1 << bits) + lo
        else:
            acc = np.minimum(np.maximum(exact, lo), hi)
    return acc.astype(np.int64), count


def test_sixteen_bit_accumulator_by_hand():
    """Four products of 127 * (127 - (-128)) = 32385 in a 16-bit accumulator:
    wrap:      32385, 64770 -> -766 (overflow), 31619, 64004 -> -1532 (overflow): 2 overflows;
    saturate:  32385, 32767 (overflow), 32767 (overflow), 32767 (overflow): 3 overflows.
    True sum 129540. With scale 1/1024 (double_rha): 126.5 -> 127, -1.496 -> -1, 31.999 -> 32."""
    x, w = np.full((1, 4), 127, np.int8), np.full((1, 4), 127, np.int8)
    stage = dict(method="double_rha", scale=1 / 1024)
    for path in ("reference", "fast"):
        y, n = _core.fully_connected_int8(x, w, None, -128, path=path, accumulator=dict(bits=16, overflow="wrap"),
                                          **stage)
        assert (y.tolist(), n) == ([[-1]], 2)
        y, n = _core.fully_connected_int8(x, w, None, -128, path=path,
                                          accumulator=dict(bits=16, overflow="saturate"), **stage)
        assert (y.tolist(), n) == ([[32]], 3)
        y, n = _core.fully_connected_int8(x, w, None, -128, path=path, accumulator=dict(bits=32), **stage)
        assert (y.tolist(), n) == ([[127]], 0)
    # The same as a 2x2 conv over a 2x2 image of 127s, SAME padding: the top-left output sees all
    # four taps (2 wraps), the others fewer (padding taps are skipped): 1, 1 and 0 more overflows.
    y, n = _core.conv2d_int8(np.full((1, 2, 2, 1), 127, np.int8), np.full((2, 2, 1, 1), 127, np.int8), None, -128,
                             padding="same", accumulator=dict(bits=16, overflow="wrap"), **stage)
    # top-left: -1532; top-right and bottom-left: 64770 -> -766; bottom-right: 32385.
    assert n == 4 and y.ravel().tolist() == [-1, -1, -1, 32]


@pytest.mark.parametrize("overflow", ["wrap", "saturate"])
def test_accumulator_equals_numpy_oracle(rng, overflow):
    for trial in range(12):
        bits = int(rng.choice([8, 12, 16, 20, 24, 33]))
        batch, i, o = int(rng.integers(1, 4)), int(rng.integers(0, 40)), int(rng.integers(1, 6))
        x, w = int8(rng, (batch, i)), int8(rng, (o, i))
        b = rng.integers(-(1 << (bits - 2)), 1 << (bits - 2), o).astype(np.int32)
        zp = int(rng.integers(-128, 128))
        products = w[None, :, :].astype(np.int64) * (x[:, None, :].astype(np.int64) - zp)   # (batch, o, i)
        final, count = numpy_accumulate(b[None, :], products, bits, overflow)
        scale = rng.uniform(1e-4, 1e-2, o)
        expected = qd.requantize(final, scale=scale, method="double_rha", zero_point=1, qmin=-128, qmax=127)
        y, n = _core.fully_connected_int8(x, w, b, zp, method="double_rha", scale=scale, zero_point=1,
                                          accumulator=dict(bits=bits, overflow=overflow))
        assert n == count and np.array_equal(y, expected.astype(np.int8)), dict(trial=trial, bits=bits, i=i)


def test_wide_accumulators_give_the_exact_sum():
    """70000 taps of -128 * 255 overflow int32 (wrapping in the default accumulator) but not int64."""
    i = 70000
    x, w = np.full((1, i), 127, np.int8), np.full((1, i), -128, np.int8)
    exact = -128 * 255 * i
    wrapped = (exact + (1 << 31)) % (1 << 32) - (1 << 31)
    stage = dict(method="double_rha", scale=1e-7)
    y64, n64 = _core.fully_connected_int8(x, w, None, -128, accumulator=dict(bits=64), **stage)
    y32, n32 = _core.fully_connected_int8(x, w, None, -128, accumulator=dict(bits=32), **stage)
    assert n64 == 0 and int(y64[0, 0]) == max(-128, round(exact * 1e-7))
    assert n32 >= 1 and int(y32[0, 0]) == int(np.clip(np.round(wrapped * 1e-7), -128, 127))


def test_accumulator_errors():
    x, w = np.zeros((1, 2), np.int8), np.zeros((1, 2), np.int8)
    for acc, match in ((dict(bits=1), "bits must be in"), (dict(bits=65), "bits must be in"),
                       (dict(overflow="clip"), "unknown overflow rule 'clip'"), (dict(width=8), "unknown accumulator key"),
                       ([16], "must be a dict")):
        with pytest.raises(qd.ConfigError, match=match):
            _core.fully_connected_int8(x, w, None, 0, method="double_rha", scale=1.0, accumulator=acc)
    with pytest.raises(qd.ConfigError, match="unknown path"):
        _core.conv2d_int8(np.zeros((1, 2, 2, 1), np.int8), np.zeros((1, 1, 1, 1), np.int8), None, 0,
                          method="double_rha", scale=1.0, path="quick")


def test_builtin_depthwise_rounds_simd_blocks_like_ruy(rng):
    """LiteRT's x86 builtin DEPTHWISE_CONV_2D: output channels in whole blocks of 8 follow the ruy
    rule, the O % 8 left over the gemmlowp rule. Bit-exact against the interpreter, fast and
    reference paths; gemmlowp everywhere (the rule qdrift used before) misses some outputs."""
    for channels, multiplier in ((10, 2), (12, 1), (3, 3)):
        shape = (1, 24, 24, channels)
        km = keras.Sequential([keras.Input(shape[1:]), keras.layers.DepthwiseConv2D(3, padding="same",
                                                                                    depth_multiplier=multiplier)])
        km.set_weights([rng.normal(0, 0.1, v.shape).astype(np.float32) for v in km.get_weights()])
        flatbuffer = convert(km, rng.normal(size=(8,) + shape[1:]).astype(np.float32), True)
        tm = qd.from_tflite(flatbuffer)
        x = rng.integers(-128, 128, shape).astype(np.int8)
        _, expected = run_litert(flatbuffer, "builtin", x)
        for path in ("fast", "reference"):
            assert np.array_equal(tm.run(x, kernels="builtin", path=path), expected), (channels, multiplier, path)
        (op,) = [o for o in tm.ops if o.name == "DEPTHWISE_CONV_2D"]
        t_in, w, t_out = (tm.tensors[i] for i in op.inputs[:2] + op.outputs[:1])
        stage = output_stage("depthwise", "builtin", t_in.scale[0], w.scale, t_out.scale[0], int(t_out.zero_point[0]),
                             groups=channels)
        assert stage["tail_from"] == channels * multiplier // 8 * 8
        stage.update(method="gemmlowp", tail_from=None)
        gemmlowp = _core.conv2d_int8(x, np.ascontiguousarray(w.data.reshape(3, 3, 1, -1)), tm.tensors[op.inputs[2]].data,
                                     int(t_in.zero_point[0]), padding="same", groups=channels, **stage)
        # Measured with the default seed: 20, 19 and 9 of the 11520, 6912 and 5184 outputs differ.
        assert np.count_nonzero(gemmlowp != expected) > 0, (channels, multiplier)


def test_tflite_model_accumulator_counts_per_layer(rng):
    """int32 (the real kernels' accumulator) gives LiteRT's bits and no overflows; a 10-bit one
    overflows in every compute layer and changes the output."""
    km = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
                           keras.layers.Flatten(), keras.layers.Dense(5)])
    km.set_weights([rng.normal(0, 0.5, v.shape).astype(np.float32) for v in km.get_weights()])
    flatbuffer = convert(km, rng.normal(size=(8, 6, 6, 3)).astype(np.float32), True)
    tm = qd.from_tflite(flatbuffer)
    x = rng.integers(-128, 128, (2, 6, 6, 3)).astype(np.int8)
    for kernels in ("reference", "builtin", "xnnpack"):
        _, expected = run_litert(flatbuffer, kernels, x)
        y, counts = tm.run(x, kernels=kernels, accumulator=dict(bits=32, overflow="wrap"))
        assert np.array_equal(y, expected) and np.array_equal(tm.run(x, kernels=kernels, path="reference"), expected)
        assert len(counts) == 2 and set(counts.values()) == {0}, counts
    y10, counts = tm.run(x, kernels="builtin", accumulator=dict(bits=10, overflow="saturate"))
    assert all(n > 0 for n in counts.values()) and not np.array_equal(y10, expected), counts
