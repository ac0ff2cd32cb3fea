"""The TFLite converter's formulas (shared/reference/tflite-semantics.md §2.3-§2.7) against an
independent NumPy restatement (float32 steps in np.float32, double steps in float64), plus the
worked examples of §2.3 and §10 items 6-7."""
import numpy as np
import pytest

import qdrift as qd

f32 = np.float32


def rha(v):                                   # round half away from zero, exact on float64
    t = np.trunc(v)
    return t + np.sign(v) * (np.abs(v - t) >= 0.5)


def np_activation_int8(mn, mx):
    rmin, rmax = min(float(mn), 0.0), max(float(mx), 0.0)
    if abs(rmax - rmin) < 1e-6:
        rmin, rmax = rmin - 1e-6, rmax + 1e-6
    scale = f32(f32(f32(rmax) - f32(rmin)) / f32(255.0))
    zp_f = f32(-128.0 - rmin / float(scale))
    zp = -128 if zp_f < -128 else 127 if zp_f > 127 else int(rha(float(zp_f)))
    return float(scale), zp


@pytest.mark.parametrize("mn, mx, scale, zp", [
    (-1.0, 2.0, 0.0117647061, -43),
    (0.5, 2.0, 0.00784313772, -128),
    (-2.0, -0.5, 0.00784313772, 127),
    (-1.0, 1.0, 0.00784313772, -1),          # zp_f = -0.50000757: a near-tie
    (0.0, 6.0, 0.0235294122, -128),
    (-1.23638105, 1.29596567, None, -4),     # legacy float gives -4 where double gives -3
])
def test_activation_int8_worked_examples(mn, mx, scale, zp):
    s, z = qd.tflite.activation_params_int8(mn, mx)
    if scale is not None:
        assert s == pytest.approx(scale, rel=1e-8)
    assert z == zp
    assert (s, z) == np_activation_int8(f32(mn), f32(mx))


def test_activation_int8_vs_numpy_on_random_ranges(rng):
    for _ in range(20_000):
        a, b = sorted(rng.normal(0, 10 ** rng.uniform(-4, 2), 2).astype(np.float32))
        assert qd.tflite.activation_params_int8(a, b) == np_activation_int8(a, b)
    # A constant tensor is widened by +-1e-6.
    assert qd.tflite.activation_params_int8(0.0, 0.0) == np_activation_int8(f32(0), f32(0))


def test_activation_int16():
    s, z = qd.tflite.activation_params_int16(-3.0, 1.5)
    assert (s, z) == (float(f32(3.0) / f32(32767)), 0)


def np_weights(w, per_channel, axis, scheme):
    """Independent restatement of §2.4 / §2.6 / §2.7."""
    moved = np.moveaxis(w, axis, 0) if per_channel else w.reshape(1, -1)
    m = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1).astype(np.float32)
    flat = moved.reshape(moved.shape[0], -1)
    if scheme == "ptq" and per_channel:
        m_exp = np.where(f32(2) * m <= f32(1e-6), f32(5e-7), m).astype(np.float32)
        scale = ((f32(2) * m_exp) / f32(254)).astype(np.float32)
        inv = (1.0 / scale.astype(np.float64)).astype(np.float32)
        q = rha((flat * inv[:, None]).astype(np.float32).astype(np.float64))
    elif scheme in ("ptq", "int16x8"):
        scale = np.where(m == 0, f32(1), m / f32(127)).astype(np.float32)
        with np.errstate(divide="ignore"):
            inv = np.where(m == 0, f32(1), f32(127) / m).astype(np.float32)
        q = np.where(m[:, None] == 0, 0, rha((flat * inv[:, None]).astype(np.float32).astype(np.float64)))
    else:  # dynamic: double division by the double scale m / 127
        scale_d = m.astype(np.float64) / 127.0
        scale = np.where(m == 0, f32(1), scale_d.astype(np.float32))
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(m[:, None] == 0, 0, rha(flat.astype(np.float64) / scale_d[:, None]))
    q = np.clip(q, -127, 127).astype(np.int8).reshape(moved.shape)
    q = np.moveaxis(q, 0, axis) if per_channel else q.reshape(w.shape)
    return scale, q


@pytest.mark.parametrize("scheme", ["ptq", "int16x8", "dynamic"])
@pytest.mark.parametrize("per_channel, axis, shape", [(True, 0, (16, 3, 3, 8)), (True, 3, (1, 3, 3, 32)),
                                                     (False, 0, (64, 48))])
def test_weights_vs_numpy(rng, scheme, per_channel, axis, shape):
    for trial in range(10):
        w = (rng.normal(0, 1, shape) * 10.0 ** rng.uniform(-3, 1)).astype(np.float32)
        if trial == 0:
            np.moveaxis(w, axis, 0)[0] = 0.0                 # an all-zero channel
        if trial == 1:                                        # exact .5 ties: max |w| = 127
            w = rng.integers(-254, 255, shape).astype(np.float32) / 2
            w.flat[0] = 127.0
        scales, values = qd.tflite.quantize_weights(w, per_channel, axis, scheme)
        exp_scales, exp_values = np_weights(w, per_channel, axis, scheme)
        assert np.array_equal(scales, exp_scales)
        assert np.array_equal(values, exp_values)


def test_weight_ties_round_away_from_zero():
    # §10 item 7: max |w| = 127 gives scale 1.0; 2.5 -> 3, -2.5 -> -3, 0.5 -> 1 (torch gives 2, -2, 0).
    w = np.array([[127.0, 2.5, -2.5, 0.5]], np.float32)
    scales, values = qd.tflite.quantize_weights(w, True, 0, "ptq")
    assert scales.tolist() == [1.0] and values.tolist() == [[127, 3, -3, 1]]
    assert qd.fake_quant(w, 1.0, 0, -127, 127).tolist() == [[127, 2, -2, 0]]


def test_bias_int32_and_int64(rng):
    b = rng.normal(0, 2, 32).astype(np.float32)
    s_in, s_w = f32(0.0123), rng.uniform(1e-4, 1e-2, 32).astype(np.float32)
    q32 = qd.tflite.quantize_bias_int32(b, s_in, s_w)
    scale = (np.float64(s_in) * s_w.astype(np.float64)).astype(np.float32)
    inv = (1.0 / scale.astype(np.float64)).astype(np.float32)
    assert np.array_equal(q32, rha((b * inv).astype(np.float64)).astype(np.int32))
    q64 = qd.tflite.quantize_bias_int64(b, s_in, s_w)
    scale = (s_in * s_w).astype(np.float32)
    inv = (1.0 / scale.astype(np.float64)).astype(np.float32)
    assert np.array_equal(q64, rha((b * inv).astype(np.float64)).astype(np.int64))
    # Clamped to +-INT32_MAX, never INT32_MIN.
    huge = qd.tflite.quantize_bias_int32(np.array([1e30, -1e30], np.float32), 1e-3, [1e-3])
    assert huge.tolist() == [2 ** 31 - 1, -(2 ** 31 - 1)]


def test_bad_input():
    with pytest.raises(qd.DataError, match="weight 1 is nan"):
        qd.tflite.quantize_weights(np.array([1.0, np.nan], np.float32), False, 0, "ptq")
    with pytest.raises(qd.ConfigError, match="unknown scheme"):
        qd.tflite.quantize_weights(np.ones(3, np.float32), False, 0, "fp16")
    with pytest.raises(qd.DataError, match="min <= max"):
        qd.tflite.activation_params_int8(2.0, 1.0)
