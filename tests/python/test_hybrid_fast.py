"""The fast hybrid (dynamic-range) FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D kernels against the
reference loops, bit for bit (float32 bit patterns, so -0.0 vs 0.0 counts), on every LiteRT path's
rules: randomized shapes around the GEMM's tile edges (batch 0 / 1 / many, size-1 dims, depths not
a multiple of 64), groups and depthwise multipliers, strides, dilation, SAME / VALID, symmetric and
asymmetric input quantization, all-zero rows and images (scale 1), huge, tiny and subnormal
values, fused activation ranges; and TFLiteModel.run(path=...) on a converted dynamic-range model."""
import numpy as np
import pytest

from qdrift import _core

KERNELS = ("reference", "builtin", "xnnpack", "tf_builtin")
EDGE = (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65)


def same_bits(a, b):
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def random_floats(rng, shape, rows_axis_size=None):
    """Inputs of one of several kinds; rows (the leading axis) may be zeroed one by one."""
    kind = int(rng.integers(7))
    if kind == 0:
        x = rng.normal(size=shape) * 10.0 ** rng.uniform(-3, 3)
    elif kind == 1:   # all positive, far from zero: the asymmetric zero point sits at -128
        x = rng.uniform(2.0, 3.0, shape)
    elif kind == 2:   # all negative
        x = -rng.uniform(0.0, 5.0, shape)
    elif kind == 3:   # huge and tiny magnitudes mixed
        x = rng.normal(size=shape) * 10.0 ** rng.choice([-38, -30, 0, 30, 37], shape)
    elif kind == 4:   # subnormals only
        x = rng.normal(size=shape) * 1e-40
    elif kind == 5:   # halves of small integers: ties after scaling by 127 / 127 or 255 / 255
        x = rng.integers(-254, 255, shape) / 2.0
    else:             # sparse
        x = rng.normal(size=shape) * (rng.uniform(size=shape) < 0.1)
    x = x.astype(np.float32)
    if len(shape) and shape[0] and rng.integers(3) == 0:   # some rows / images all zero
        x[rng.uniform(size=shape[0]) < 0.5] = 0.0
    if x.size and rng.integers(10) == 0:
        x[...] = 0.0
    return x


def random_epilogue(rng, out):
    per_channel = bool(rng.integers(4))
    scale = (rng.uniform(0.5, 2.0, out if per_channel else 1) * 10.0 ** rng.uniform(-5, -1)).astype(np.float32)
    if per_channel and out > 1 and rng.integers(4) == 0:
        scale[:] = scale[0]   # per-channel but all equal: conv.cc's per-tensor (symmetric) branch
    bias = None if rng.integers(4) == 0 else rng.normal(0, 2.0, out).astype(np.float32)
    lo, hi = [(-np.inf, np.inf), (0.0, np.inf), (0.0, 6.0), (-1.0, 1.0)][int(rng.integers(4))]
    return scale, bias, dict(lo=lo, hi=hi)


@pytest.mark.parametrize("kernels", KERNELS)
def test_fully_connected_fast_equals_reference(rng, kernels):
    for trial in range(60):
        batch = int(rng.choice((0, 1, 1, 2, 3, 4, 5, 9, 64, 65, 130)))
        n_in = int(rng.choice(EDGE + (0, 127, 128, 129, 300, 1000)))
        out = int(rng.choice(EDGE + (0, 100)))
        x = random_floats(rng, (batch, n_in))
        w = rng.integers(-127, 128, (out, n_in)).astype(np.int8)
        if rng.integers(5) == 0:
            w[rng.uniform(size=w.shape) < 0.5] = -128   # weights at the int8 edge too
        scale, bias, act = random_epilogue(rng, out)
        asym = bool(rng.integers(2))
        args = (x, w, scale, bias)
        kw = dict(kernels=kernels, asymmetric_inputs=asym, **act)
        ref = _core.fully_connected_hybrid(*args, path="reference", **kw)
        fast = _core.fully_connected_hybrid(*args, path="fast", **kw)
        assert same_bits(fast, ref), dict(trial=trial, batch=batch, n_in=n_in, out=out, asym=asym, act=act,
                                          scales=scale.size, bias=bias is not None)
        assert same_bits(_core.fully_connected_hybrid(*args, **kw), fast)   # default path = fast


def random_conv(rng):
    kind = int(rng.integers(4))
    if kind == 0:    # depthwise: one input channel per group, multiplier m
        c = int(rng.choice((1, 2, 3, 4, 5, 8, 9, 16, 17)))
        groups, o, depthwise = c, c * int(rng.choice((1, 1, 2, 3))), True
    elif kind == 1:  # grouped (more than one input channel per group) or one input channel per group
        groups = int(rng.choice((2, 3, 4)))
        c, o, depthwise = groups * int(rng.choice((1, 2, 3, 5))), groups * int(rng.choice((1, 2, 3, 5))), False
    else:
        c, o, groups, depthwise = int(rng.choice(EDGE[:12])), int(rng.choice(EDGE[:14])), 1, False
    k = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    strides = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    if rng.integers(3) == 0:   # XNNPACK's 1x1 stride-1 conv runs as FC (per-pixel quantization)
        k, strides = (1, 1), (1, 1)
    padding = str(rng.choice(["same", "valid"]))
    h = int(rng.integers(1, 10)) + (k[0] - 1) * dilation[0]
    w = int(rng.integers(1, 10)) + (k[1] - 1) * dilation[1]
    n = int(rng.choice((1, 1, 2, 3)))
    return dict(n=n, h=h, w=w, c=c, o=o, k=k, groups=groups, depthwise=depthwise,
                geometry=dict(strides=strides, padding=padding, dilation=dilation, groups=groups))


@pytest.mark.parametrize("kernels", KERNELS)
def test_conv2d_fast_equals_reference(rng, kernels):
    for trial in range(60):
        p = random_conv(rng)
        x = random_floats(rng, (p["n"], p["h"], p["w"], p["c"]))
        f = rng.integers(-128, 128, p["k"] + (p["c"] // p["groups"], p["o"])).astype(np.int8)
        scale, bias, act = random_epilogue(rng, p["o"])
        kw = dict(kernels=kernels, depthwise=p["depthwise"], **p["geometry"], **act)
        ref = _core.conv2d_hybrid(x, f, scale, bias, path="reference", **kw)
        fast = _core.conv2d_hybrid(x, f, scale, bias, path="fast", **kw)
        assert same_bits(fast, ref), dict(trial=trial, act=act, scales=scale.size, bias=bias is not None, conv=p)


@pytest.mark.parametrize("kernels", KERNELS)
def test_conv2d_fast_larger_shapes(rng, kernels):
    """A few layers of realistic width: several GEMM chunks of 64 pixels, depths of 64 and more."""
    for c, o, k, groups, depthwise, strides in [(32, 32, 3, 1, False, 1), (64, 48, 3, 1, False, 2),
                                                 (48, 40, 1, 1, False, 1), (24, 24, 3, 24, True, 1),
                                                 (16, 32, 3, 16, True, 2), (32, 16, 3, 2, False, 1)]:
        x = random_floats(rng, (2, 13, 11, c))
        f = rng.integers(-128, 128, (k, k, c // groups, o)).astype(np.int8)
        scale, bias, act = random_epilogue(rng, o)
        kw = dict(kernels=kernels, depthwise=depthwise, strides=(strides, strides), padding="same", groups=groups,
                  **act)
        ref = _core.conv2d_hybrid(x, f, scale, bias, path="reference", **kw)
        assert same_bits(_core.conv2d_hybrid(x, f, scale, bias, **kw), ref), (c, o, k, groups, depthwise, strides)


def test_empty_images():
    """An image with no rows or columns under SAME padding gives an empty output on both paths
    (the reference used to divide by the empty image's size)."""
    for shape in ((2, 0, 3, 4), (1, 3, 0, 4)):
        x, f, s = np.ones(shape, np.float32), np.ones((3, 3, 4, 2), np.int8), np.ones(2, np.float32)
        for path in ("reference", "fast"):
            for kernels in KERNELS:
                y = _core.conv2d_hybrid(x, f, s, None, kernels=kernels, padding="same", path=path)
                assert y.shape == shape[:3] + (2,), (shape, path, kernels)
                y = _core.conv2d_f32(x, f.astype(np.float32), None, kernels=kernels, padding="same", path=path)
                assert y.shape == shape[:3] + (2,), (shape, path, kernels)


def test_path_argument_is_checked():
    x, w, s = np.ones((1, 4), np.float32), np.ones((2, 4), np.int8), np.ones(2, np.float32)
    with pytest.raises(_core.ConfigError, match="path: unknown path 'quick'"):
        _core.fully_connected_hybrid(x, w, s, None, kernels="builtin", path="quick")
    with pytest.raises(_core.ConfigError, match="path: unknown path"):
        _core.conv2d_hybrid(np.ones((1, 3, 3, 4), np.float32), np.ones((1, 1, 4, 2), np.int8), s, None,
                            kernels="builtin", path="")


def test_model_run_path(rng):
    """TFLiteModel.run(path=...) reaches the hybrid kernels: a converted dynamic-range model (FC,
    CONV_2D and DEPTHWISE_CONV_2D with int8 weights) gives the same bits on both paths."""
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import qdrift as qd
    from test_dynamic_fp16 import convert

    L = keras.layers
    km = keras.Sequential([keras.Input((9, 9, 16)), L.Conv2D(16, 3, padding="same", activation="relu"),
                           L.DepthwiseConv2D(3, depth_multiplier=8), L.Flatten(), L.Dense(40)])
    km.set_weights([rng.normal(0, 0.2, v.shape).astype(np.float32) for v in km.get_weights()])
    tm = qd.from_tflite(convert(km, "dynamic"))
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= {op.name for op in tm.ops}
    assert sum(t.data is not None and t.data.dtype == np.int8 for t in tm.tensors) >= 3   # all three hybrid
    x = rng.normal(size=(3, 9, 9, 16)).astype(np.float32)
    for kernels in ("reference", "builtin", "xnnpack"):
        ref = tm.run(x, kernels=kernels, path="reference")
        assert same_bits(tm.run(x, kernels=kernels), ref), kernels


def float_weights(rng, shape):
    w = rng.normal(size=shape).astype(np.float32)
    if rng.integers(3) == 0:   # exact zeros of both signs: the chains' signed-zero rules show
        w[rng.uniform(size=shape) < 0.3] = -0.0
        w[rng.uniform(size=shape) < 0.2] = 0.0
    return w


@pytest.mark.parametrize("kernels", KERNELS)
def test_fully_connected_f32_fast_equals_reference(rng, kernels):
    """float32 FC: the output channels' chains in vector lanes vs the reference loops (builtin:
    outputs in the GEMM's sequential tiles and in its edge tiles; matrix-vector products)."""
    for trial in range(60):
        batch = int(rng.choice((0, 1, 2, 3, 4, 5, 8, 9, 17, 33, 70)))
        n_in, out = int(rng.choice(EDGE + (0, 100))), int(rng.choice(EDGE + (0, 40, 100)))
        x = random_floats(rng, (batch, n_in))
        w = float_weights(rng, (out, n_in))
        bias = None if rng.integers(4) == 0 else rng.normal(size=out).astype(np.float32)
        _, _, act = random_epilogue(rng, out)
        ref = _core.fully_connected_f32(x, w, bias, kernels=kernels, path="reference", **act)
        fast = _core.fully_connected_f32(x, w, bias, kernels=kernels, **act)
        assert same_bits(fast, ref), dict(trial=trial, batch=batch, n_in=n_in, out=out, act=act)


@pytest.mark.parametrize("kernels", KERNELS)
def test_conv2d_f32_fast_equals_reference(rng, kernels):
    """float32 CONV_2D / DEPTHWISE_CONV_2D: im2col + the builtin GEMM's orders, and the per-tap
    chains (reference, XNNPACK's fma from the bias and its column-first depthwise order, builtin
    depthwise), over the same randomized geometries as the hybrid test."""
    for trial in range(50):
        p = random_conv(rng)
        if rng.integers(3) == 0:
            p["o"] = p["groups"] * int(rng.choice((8, 12, 17))) if not p["depthwise"] else p["o"]
        x = random_floats(rng, (p["n"], p["h"], p["w"], p["c"]))
        f = float_weights(rng, p["k"] + (p["c"] // p["groups"], p["o"]))
        bias = None if rng.integers(4) == 0 else rng.normal(size=p["o"]).astype(np.float32)
        _, _, act = random_epilogue(rng, p["o"])
        kw = dict(kernels=kernels, depthwise=p["depthwise"], **p["geometry"], **act)
        ref = _core.conv2d_f32(x, f, bias, path="reference", **kw)
        fast = _core.conv2d_f32(x, f, bias, **kw)
        assert same_bits(fast, ref), dict(trial=trial, act=act, conv=p)
    for c, o, k, groups, depthwise in [(32, 40, 3, 1, False), (16, 16, 3, 16, True), (8, 24, 3, 8, True),
                                       (24, 36, 3, 3, False)]:   # realistic widths: whole blocks of 32 lanes
        x = random_floats(rng, (2, 9, 10, c))
        f = float_weights(rng, (k, k, c // groups, o))
        kw = dict(kernels=kernels, depthwise=depthwise, padding="same", groups=groups)
        assert same_bits(_core.conv2d_f32(x, f, None, **kw), _core.conv2d_f32(x, f, None, path="reference", **kw)), \
            (c, o, k, groups, depthwise)
