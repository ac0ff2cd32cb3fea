"""qd.Quantizer end to end: static and dynamic calibration, every granularity, float formats,
stochastic rounding, the TFLite formula; checked against NumPy restatements and torch."""
import json

import numpy as np
import pytest
import torch

import qdrift as qd


def numpy_fake_quant(x, scale, zp, qmin, qmax):
    """torch's element rule in NumPy float32 (scale/zp broadcast against x)."""
    inv = (np.float32(1) / scale).astype(np.float32)
    q = np.clip(np.rint((x * inv).astype(np.float32)) + zp, qmin, qmax)
    return ((q - zp).astype(np.float32) * scale).astype(np.float32)


def test_static_per_tensor_matches_torch_observer_and_fake_quant(rng):
    x1 = rng.normal(0.5, 2, 10_000).astype(np.float32)
    x2 = rng.normal(-1, 1, 10_000).astype(np.float32)
    q = qd.Quantizer(bits=8)
    q.observe(x1)
    q.observe(x2)
    obs = torch.ao.quantization.MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_affine)
    obs(torch.from_numpy(x1))
    obs(torch.from_numpy(x2))
    scale, zp = obs.calculate_qparams()
    assert float(q.params.scale) == float(scale) and int(q.params.zero_point) == int(zp)
    assert np.array_equal(q.fake_quant(x2), qd.fake_quant(x2, float(scale), int(zp), -128, 127))
    codes = q.quantize(x2)
    assert codes.dtype == np.int32 and codes.min() >= -128 and codes.max() <= 127
    # The integer path and fake quant agree exactly after dequantization.
    assert np.array_equal(q.dequantize(codes), q.fake_quant(x2))


def test_per_group_matches_numpy(rng):
    w = rng.normal(0, 1, (6, 64)).astype(np.float32)
    q = qd.Quantizer(bits=4, symmetric=True, granularity="per_group", axis=1, group_size=16, mode="dynamic")
    p = q.params_for(w)
    assert p.scale.shape == (6, 4) and p.granularity == "per_group"
    groups = w.reshape(6, 4, 16)
    amax = np.abs(groups).max(axis=2)
    scale = np.maximum((amax / np.float32(7.5)).astype(np.float32), np.finfo(np.float32).eps)
    assert np.array_equal(p.scale, scale)
    expected = numpy_fake_quant(groups, scale[:, :, None], 0, -8, 7).reshape(6, 64)
    assert np.array_equal(q.fake_quant(w), expected)


def test_per_channel_with_identical_channels_equals_per_tensor(rng):
    row = rng.normal(0, 1, 50).astype(np.float32)
    x = np.tile(row, (8, 1))
    pt = qd.Quantizer(mode="dynamic")
    pc = qd.Quantizer(mode="dynamic", granularity="per_channel", axis=0)
    assert np.array_equal(pt.fake_quant(x), pc.fake_quant(x))


def test_dynamic_takes_parameters_from_each_input(rng):
    q = qd.Quantizer(mode="dynamic", symmetric=True)
    a = rng.normal(0, 1, 100).astype(np.float32)
    assert float(q.params_for(a).scale) == pytest.approx(np.abs(a).max() / 127.5, rel=1e-6)
    assert float(q.params_for(a * 10).scale) == pytest.approx(np.abs(a).max() * 10 / 127.5, rel=1e-6)


def test_every_width_sign_and_narrow_range_round_trips_its_codes():
    # All codes -> dequantize -> quantize gives the codes back (exhaustive per configuration).
    for bits in range(2, 17):
        for signed in (True, False):
            for narrow in (True, False):
                q = qd.Quantizer(bits=bits, signed=signed, narrow_range=narrow)
                q.observe(np.array([-3.0, 5.0], np.float32))
                codes = np.arange(q.qmin, q.qmax + 1, dtype=np.int32)
                assert np.array_equal(q.quantize(q.dequantize(codes)), codes), (bits, signed, narrow)


def test_stochastic_rounding_is_seeded_and_unbiased():
    x = np.full(200_000, 0.3, np.float32)
    x[0] = 1.0   # fixes the scale at 1/127.5, so 0.3 sits at code 38.25
    a = qd.Quantizer(rounding="stochastic", seed=1, mode="dynamic", symmetric=True)
    b = qd.Quantizer(rounding="stochastic", seed=1, mode="dynamic", symmetric=True)
    c = qd.Quantizer(rounding="stochastic", seed=2, mode="dynamic", symmetric=True)
    ya, yb, yc = a.fake_quant(x), b.fake_quant(x), c.fake_quant(x)
    assert np.array_equal(ya, yb) and not np.array_equal(ya, yc)
    # Mean of the rounded values is the input, within 5 binomial standard deviations.
    s = float(a.params_for(x).scale)
    assert abs(ya[1:].astype(np.float64).mean() - 0.3) < 5 * s * 0.5 / np.sqrt(x.size)


def test_float_format_quantizer_is_a_cast(rng):
    x = rng.normal(0, 100, 1000).astype(np.float32)
    q = qd.Quantizer(format="bf16")
    assert np.array_equal(q.fake_quant(x), qd.cast(x, "bf16"))
    assert np.array_equal(q.dequantize(q.quantize(x)), qd.cast(x, "bf16"))


def test_tflite_formula_quantizer_uses_the_converter_formulas(rng):
    act = rng.normal(0.3, 1.5, 5000).astype(np.float32)
    q = qd.Quantizer(formula="tflite")
    q.observe(act)
    scale, zp = qd.tflite.activation_params_int8(float(act.min()), float(act.max()))
    assert float(q.params.scale) == scale and int(q.params.zero_point) == zp
    w = rng.normal(0, 0.2, (16, 3, 3, 8)).astype(np.float32)
    qw = qd.Quantizer(formula="tflite", symmetric=True, narrow_range=True, granularity="per_channel", axis=0,
                      mode="dynamic")
    scales, values = qd.tflite.quantize_weights(w, True, 0, "ptq")
    assert np.array_equal(qw.params_for(w).scale, scales)
    assert np.array_equal(qw.quantize(w), values.astype(np.int32))


def test_spec_round_trips_through_json():
    q = qd.Quantizer(bits=4, observer="percentile", percentile=99.9)
    spec = json.loads(q.spec_json())
    assert spec["bits"] == 4 and spec["observer"] == "percentile" and spec["percentile"] == 99.9
    assert json.loads(qd.Quantizer(**spec).spec_json()) == spec


def test_metrics_against_numpy(rng):
    ref = rng.normal(size=1000).astype(np.float32)
    x = ref + rng.normal(0, 0.01, 1000).astype(np.float32)
    d = x.astype(np.float64) - ref
    assert qd.metrics.mse(ref, x) == pytest.approx(np.mean(d ** 2), rel=1e-12)
    assert qd.metrics.sqnr_db(ref, x) == pytest.approx(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum(d ** 2)),
                                                       rel=1e-12)
    assert qd.metrics.max_abs(ref, x) == np.abs(d).max()
    assert qd.metrics.sqnr_db(ref, ref) == float("inf")


@pytest.mark.parametrize("bits", [4, 8])
def test_unsigned_symmetric_zero_point_matches_torch(rng, bits):
    x = rng.normal(0.5, 1, 1000).astype(np.float32)
    q = qd.Quantizer(bits=bits, signed=False, symmetric=True)
    q.observe(x)
    kw = {} if bits == 8 else dict(quant_min=0, quant_max=(1 << bits) - 1)   # torch: 128 only for its default range
    obs = torch.ao.quantization.MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_symmetric, **kw)
    obs(torch.from_numpy(x))
    scale, zp = obs.calculate_qparams()
    assert int(q.params.zero_point) == int(zp) and float(q.params.scale) == float(scale)
