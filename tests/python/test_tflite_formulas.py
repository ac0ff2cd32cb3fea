"""The TFLite converter's formulas (shared/reference/tflite-semantics.md §2.3-§2.7) against an
independent NumPy restatement (float32 steps in np.float32, double steps in float64) on 10^5+
random ranges, weights and biases, plus the worked examples of §2.3 and §10 items 6-7."""
import numpy as np
import pytest
import torch

import qdrift as qd

f32, f64 = np.float32, np.float64
hx = float.fromhex
INT32_MAX, INT64_MAX = 2 ** 31 - 1, 2 ** 63 - 1


def rha(v):
    """Round half away from zero, exact on float64 (v - trunc(v) is exact)."""
    v = np.asarray(v, f64)
    t = np.trunc(v)
    return t + np.sign(v) * (np.abs(v - t) >= 0.5)


# ---- the converter's formulas, restated in NumPy ----------------------------------------------
def np_activation_int8(mn, mx):
    """MLIR ConvertStatsToQDQs + DownCastScale (legacy_float_scale), vectorized."""
    rmin = np.minimum(np.asarray(mn, f32).astype(f64), 0.0)
    rmax = np.maximum(np.asarray(mx, f32).astype(f64), 0.0)
    narrow = np.abs(rmax - rmin) < 1e-6                       # TensorRangeSanityCheck
    rmin, rmax = np.where(narrow, rmin - 1e-6, rmin), np.where(narrow, rmax + 1e-6, rmax)
    scale = (rmax.astype(f32) - rmin.astype(f32)) / f32(255)  # float32 all the way
    zp_f = (-128.0 - rmin / scale.astype(f64)).astype(f32)    # double, narrowed to float
    zp = np.where(zp_f < -128, -128, np.where(zp_f > 127, 127, rha(zp_f)))
    return scale, zp.astype(np.int64)


def np_activation_int16(mn, mx):
    """Old quantizer GetSymmetricQuantizationParams, float32."""
    lo, hi = np.minimum(f32(mn), f32(0)), np.maximum(f32(mx), f32(0))
    return np.maximum(np.abs(hi), np.abs(lo)) / f32(32767)


def np_weights(w, per_channel, axis, scheme):
    """§2.4 (MLIR legacy per channel, toco per tensor), §2.6 (old quantizer), §2.7 (double)."""
    moved = np.moveaxis(w, axis, 0) if per_channel else w.reshape(1, -1)
    flat = moved.reshape(moved.shape[0], -1)
    m = np.abs(flat).max(axis=1, initial=f32(0))
    m_eff = np.where(2 * m.astype(f64) > 1e-6, m.astype(f64), 5e-7)     # ExpandVerySmallRange
    mlir_scale = (f32(2) * m_eff.astype(f32)) / f32(254)                 # DownCastScale
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if scheme == "dynamic":
            scale_d = m_eff / 127.0
            scale = scale_d.astype(f32)
            q = rha(flat.astype(f64) / scale_d[:, None])
        elif scheme == "ptq" and per_channel:
            scale = mlir_scale
            inv = (1.0 / scale.astype(f64)).astype(f32)
            q = rha(flat * inv[:, None])
        else:                         # toco / old quantizer: f32(127 / m); zero range handled below
            scale = mlir_scale if scheme == "ptq" else np.where(m == 0, f32(1), m / f32(127))
            if scheme == "int16x8" and per_channel:
                scale = m / f32(127)
            inv = np.where(m == 0, f32(0), f32(127) / m)
            q = np.where(m[:, None] == 0, 0, rha(flat * inv[:, None]))
    q = np.clip(q, -127, 127).astype(np.int8).reshape(moved.shape)
    return scale.astype(f32), (np.moveaxis(q, 0, axis) if per_channel else q.reshape(w.shape))


def np_bias(b, input_scale, weight_scales, bits):
    """SymmetricBiasQuantize: int32 with the double product narrowed (MLIR legacy), int64 with
    the float product (old quantizer); inverse f32(1.0 / scale); SafeCast; clamp to +-max."""
    s_w = np.broadcast_to(np.asarray(weight_scales, f32), b.shape)
    if bits == 32:
        scale = (f64(f32(input_scale)) * s_w.astype(f64)).astype(f32)
    else:
        scale = f32(input_scale) * s_w
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        inv = np.where(scale == 0, f32(0), (1.0 / scale.astype(f64)).astype(f32))
        r = rha(b * inv)
    r = np.where(np.isnan(r), 0.0, r)                         # SafeCast: NaN -> 0
    big = np.abs(r) >= 2.0 ** (bits - 1)                      # saturates, then +-max
    q = np.where(big, 0.0, r).astype(np.int64)
    q[big] = np.sign(r[big]).astype(np.int64) * (2 ** (bits - 1) - 1)
    return q.astype(np.int32 if bits == 32 else np.int64)


# ---- §2.3 worked examples and §10 item 6 ------------------------------------------------------
@pytest.mark.parametrize("mn, mx, scale, zp", [
    (-1.0, 2.0, hx("0x1.818182p-7"), -43),
    (0.5, 2.0, hx("0x1.010102p-7"), -128),          # min > 0: widened to [0, 2]
    (-2.0, -0.5, hx("0x1.010102p-7"), 127),         # zp_f = 126.999985
    (-1.0, 1.0, hx("0x1.010102p-7"), -1),           # zp_f = -0.50000757, a near-tie
    (0.0, 6.0, hx("0x1.818182p-6"), -128),
    (-1.23638105, 1.29596567, hx("0x1.45695ap-7"), -4),   # legacy float gives -4 where double gives -3
    (0.0, 0.0, hx("0x1.0d7cf6p-27"), 0),            # constant tensor: widened by +-1e-6
    (-1e-7, 0.0, hx("0x1.1af66ap-27"), 6),
])
def test_activation_int8_worked_examples(mn, mx, scale, zp):
    s, z = qd.tflite.activation_params_int8(mn, mx)
    assert (s, z) == (scale, zp)
    ref_scale, ref_zp = np_activation_int8([mn], [mx])
    assert (s, z) == (float(ref_scale[0]), int(ref_zp[0]))


def test_activation_int8_legacy_differs_from_double():
    mn, mx = f32(-1.23638105), f32(1.29596567)
    double_zp = round(-128 - f64(mn) / ((f64(mx) - f64(mn)) / 255))
    assert double_zp == -3 and qd.tflite.activation_params_int8(mn, mx)[1] == -4


def random_ranges(rng, n):
    """Ranges across scales, sign patterns, near-empty widths and near-tie zero points."""
    a = rng.normal(0, 1, n) * 10.0 ** rng.uniform(-8, 3, n)
    b = a + np.abs(rng.normal(0, 1, n)) * 10.0 ** rng.uniform(-9, 3, n)
    kind = rng.integers(0, 4, n)
    b = np.where(kind == 1, np.abs(b), b)            # min < 0 < max likelier
    a = np.where(kind == 2, 0.0, a)                  # ReLU outputs
    return np.minimum(a, b).astype(f32), np.maximum(a, b).astype(f32)


def test_activation_int8_vs_numpy_on_random_ranges(rng):
    mn, mx = random_ranges(rng, 100_000)
    ours = np.array([qd.tflite.activation_params_int8(a, b) for a, b in zip(mn.tolist(), mx.tolist())])
    scale, zp = np_activation_int8(mn, mx)
    assert np.array_equal(ours[:, 0], scale.astype(f64))
    assert np.array_equal(ours[:, 1], zp)


def test_activation_int16_vs_numpy_on_random_ranges(rng):
    mn, mx = random_ranges(rng, 100_000)
    ours = np.array([qd.tflite.activation_params_int16(a, b) for a, b in zip(mn.tolist(), mx.tolist())])
    assert np.array_equal(ours[:, 0], np_activation_int16(mn, mx).astype(f64))
    assert not ours[:, 1].any()
    assert qd.tflite.activation_params_int16(0.0, 0.0) == (0.0, 0)       # no zero-range guard


# ---- weights ----------------------------------------------------------------------------------
def random_weights(rng, shape, axis, trial):
    w = (rng.normal(0, 1, shape) * 10.0 ** rng.uniform(-3, 1)).astype(f32)
    channels = np.moveaxis(w, axis, 0)
    if trial % 4 == 1:                                # a zero, a tiny and a just-kept channel
        channels[0] = 0.0
        channels[1] *= f32(1e-7) / np.abs(channels[1]).max()
        channels[2] *= f32(5.2e-7) / np.abs(channels[2]).max()
    if trial % 4 == 2:                                # exact .5 ties: max |w| = 127, scale 1
        w[...] = rng.integers(-254, 255, shape).astype(f32) / 2
        np.moveaxis(w, axis, 0)[:, 0] = 127.0
    if trial % 4 == 3:                                # the float32 values nearest k + 1/2 steps
        m = np.abs(channels).reshape(channels.shape[0], -1).max(axis=1)
        k = rng.integers(-127, 127, channels.shape).astype(f64) + 0.5
        channels[...] = (k * (m.astype(f64) / 127).reshape((-1,) + (1,) * (channels.ndim - 1))).astype(f32)
        channels[(slice(None),) + (0,) * (channels.ndim - 1)] = m   # keeps each channel's max |w|
    return w


@pytest.mark.parametrize("scheme", ["ptq", "int16x8", "dynamic"])
@pytest.mark.parametrize("per_channel, axis, shape", [(True, 0, (16, 3, 3, 8)), (True, 3, (1, 7, 7, 32)),
                                                     (True, -1, (40, 24)), (False, 0, (64, 48))])
def test_weights_vs_numpy(rng, scheme, per_channel, axis, shape):
    total = 0
    for trial in range(120):
        w = random_weights(rng, shape, axis, trial)
        if not per_channel and trial % 4 == 1:
            w = (w * 0 if trial % 8 == 1 else w * f32(1e-9)).astype(f32)   # zero / tiny tensors
        scales, values = qd.tflite.quantize_weights(w, per_channel, axis, scheme)
        exp_scales, exp_values = np_weights(w, per_channel, axis, scheme)
        assert scales.dtype == np.float32 and values.dtype == np.int8 and values.shape == w.shape
        assert np.array_equal(scales, exp_scales), (scheme, trial)
        assert np.array_equal(values, exp_values), (scheme, trial)
        total += w.size
    assert total >= 100_000


def test_zero_and_tiny_ranges():
    expanded = hx("0x1.0e8c94p-28")                         # f32(2 f32(5e-7) / 254) = f32(1e-6 / 254)
    zero = np.zeros((2, 3), f32)
    for scheme in ("ptq", "dynamic"):
        for per_channel in (True, False):
            scales, values = qd.tflite.quantize_weights(zero, per_channel, 0, scheme)
            assert scales.tolist() == [expanded] * (2 if per_channel else 1) and not values.any()
    assert qd.tflite.quantize_weights(zero, True, 0, "int16x8")[0].tolist() == [0.0, 0.0]
    assert qd.tflite.quantize_weights(zero, False, 0, "int16x8")[0].tolist() == [1.0]
    # Per tensor (PTQ) the file's scale is expanded but toco's codes use max|w| itself.
    tiny = np.array([1e-8, -0.5e-8], f32)
    scales, values = qd.tflite.quantize_weights(tiny, False, 0, "ptq")
    assert scales.tolist() == [expanded] and values.tolist() == [127, -64]
    assert qd.tflite.quantize_weights(tiny, True, 0, "ptq")[1].tolist() == [3, -1]


def test_vector_7_weight_ties_round_away_from_zero():
    # max |w| = 127 gives scale 1.0: TFLite 3, -3, 1 where torch's fake quant gives 2, -2, 0.
    w = np.array([[127.0, 2.5, -2.5, 0.5]], f32)
    for scheme in ("ptq", "int16x8", "dynamic"):
        scales, values = qd.tflite.quantize_weights(w, True, 0, scheme)
        assert scales.tolist() == [1.0] and values.tolist() == [[127, 3, -3, 1]]
    fq = torch.fake_quantize_per_tensor_affine(torch.from_numpy(w), 1.0, 0, -127, 127)
    assert fq.tolist() == [[127.0, 2.0, -2.0, 0.0]]


# ---- bias -------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [32, 64])
def test_bias_vs_numpy(rng, bits):
    fn = qd.tflite.quantize_bias_int32 if bits == 32 else qd.tflite.quantize_bias_int64
    n = 1000
    for trial in range(100):
        s_in = f32(10.0 ** rng.uniform(-6, 0))
        s_w = (10.0 ** rng.uniform(-6, 0, n)).astype(f32)
        if trial % 5 == 1:                                       # powers of two: exact ties below
            s_in, s_w = f32(2.0 ** -rng.integers(0, 20)), (2.0 ** -rng.integers(0, 20, n)).astype(f32)
        s_w[:3] = [0.0, 2.0 ** -149 / s_in if trial == 0 else 1e-3, 1e-3]
        b = (rng.normal(0, 1, n) * 10.0 ** rng.uniform(-6, 12, n)).astype(f32)
        scale = (f64(s_in) * s_w.astype(f64)).astype(f32)
        ties = rng.integers(-10 ** 6, 10 ** 6, n) + 0.5           # b * inv = k + 1/2 where exact
        b[::7] = (ties[::7] * scale[::7].astype(f64)).astype(f32)
        per_channel = trial % 2 == 0
        weight_scales = s_w if per_channel else s_w[5]
        ours = fn(b, s_in, weight_scales)
        assert np.array_equal(ours, np_bias(b, s_in, weight_scales, bits)), trial


def test_bias_edges():
    b = np.array([1.0, -2.5, 0.1875, -0.1875, 0.0, 1e30, -1e30], f32)
    assert qd.tflite.quantize_bias_int32(b, 0.5, 0.25).tolist() == [8, -20, 2, -2, 0, INT32_MAX, -INT32_MAX]
    assert qd.tflite.quantize_bias_int64(b, 0.5, [0.25]).tolist() == [8, -20, 2, -2, 0, INT64_MAX, -INT64_MAX]
    # A subnormal bias scale: 1 / scale overflows to inf, 0 * inf = NaN -> 0.
    around_zero = np.array([1.0, 0.0, -1.0], f32)
    assert qd.tflite.quantize_bias_int32(around_zero, 1e-30, 1e-15).tolist() == [INT32_MAX, 0, -INT32_MAX]


def test_bad_input():
    with pytest.raises(qd.DataError, match="weight 1 is nan"):
        qd.tflite.quantize_weights(np.array([1.0, np.nan], f32), False, 0, "ptq")
    with pytest.raises(qd.DataError, match="weight 0 is inf"):
        qd.tflite.quantize_weights(np.array([np.inf, 1.0], f32), True, 0, "dynamic")
    with pytest.raises(qd.ConfigError, match="unknown scheme 'fp16'"):
        qd.tflite.quantize_weights(np.ones(3, f32), False, 0, "fp16")
    with pytest.raises(qd.DTypeError, match="w must have dtype float32"):
        qd.tflite.quantize_weights(np.ones(3), False, 0, "ptq")
    with pytest.raises(qd.ShapeError, match="w must be C-contiguous"):
        qd.tflite.quantize_weights(np.ones((4, 4), f32)[:, ::2], True, 0, "ptq")
    with pytest.raises(qd.ShapeError):
        qd.tflite.quantize_weights(np.ones((4, 4), f32), True, 2, "ptq")
    with pytest.raises(qd.DataError, match="min <= max"):
        qd.tflite.activation_params_int8(2.0, 1.0)
    with pytest.raises(qd.DataError, match="overflows float32"):
        qd.tflite.activation_params_int8(-3e38, 3e38)
    with pytest.raises(qd.ShapeError, match="3 biases but 2 weight scales"):
        qd.tflite.quantize_bias_int32(np.ones(3, f32), 1.0, [1.0, 2.0])
    with pytest.raises(qd.ConfigError, match="weight_scales must be"):
        qd.tflite.quantize_bias_int64(np.ones(3, f32), 1.0, [[1.0]])
    with pytest.raises(qd.ConfigError, match="input_scale must be finite"):
        qd.tflite.quantize_bias_int32(np.ones(3, f32), float("nan"), 1.0)
    with pytest.raises(qd.DataError, match="bias 0 is nan"):
        qd.tflite.quantize_bias_int32(np.array([np.nan], f32), 1.0, 1.0)
