"""Bad input gives a clear, typed exception naming the argument; NaN/Inf follow the documented rule."""
import numpy as np
import pytest

import qdrift as qd


def test_exception_hierarchy():
    assert issubclass(qd.ConfigError, qd.Error) and issubclass(qd.ConfigError, ValueError)
    assert issubclass(qd.ShapeError, qd.Error) and issubclass(qd.ShapeError, ValueError)
    assert issubclass(qd.DataError, qd.Error) and issubclass(qd.DataError, ValueError)
    assert issubclass(qd.DTypeError, qd.Error) and issubclass(qd.DTypeError, TypeError)
    assert issubclass(qd.UnsupportedError, qd.Error) and issubclass(qd.UnsupportedError, NotImplementedError)


X = np.linspace(-1, 1, 24, dtype=np.float32).reshape(4, 6)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(bits=1), qd.ConfigError, "/bits: bits must be in [2, 16], got 1"),
    (dict(bits=17), qd.ConfigError, "/bits: bits must be in [2, 16], got 17"),
    (dict(bits="8"), qd.ConfigError, "/bits: expected an integer"),
    (dict(granularity="per_chanel"), qd.ConfigError, "/granularity: unknown value 'per_chanel'"),
    (dict(rounding="nearest"), qd.ConfigError, "/rounding: unknown value 'nearest'"),
    (dict(obsever="minmax"), qd.ConfigError, "/obsever: unknown key 'obsever'"),
    (dict(granularity="per_group"), qd.ConfigError, "/group_size: per_group quantization needs group_size > 0"),
])
def test_bad_quantizer_specs(kwargs, error, message):
    with pytest.raises(error) as e:
        qd.Quantizer(**kwargs)
    assert message in str(e.value)


def test_axis_and_group_size_errors_name_the_problem():
    q = qd.Quantizer(granularity="per_channel", axis=2)
    with pytest.raises(qd.ShapeError, match="axis 2 is out of range for a tensor of rank 2"):
        q.observe(X)
    q = qd.Quantizer(granularity="per_group", axis=1, group_size=4)
    with pytest.raises(qd.ShapeError, match="group_size 4 does not divide axis 1 of length 6"):
        q.observe(X)
    with pytest.raises(qd.ShapeError, match="axis 5 is out of range"):
        qd.fake_quant(X, [0.1] * 6, 0, -128, 127, axis=5)
    with pytest.raises(qd.ShapeError, match="scale has 6 entries; pass axis="):
        qd.fake_quant(X, [0.1] * 6, 0, -128, 127)
    with pytest.raises(qd.ShapeError, match="axis 0 of the input"):
        qd.fake_quant(X, [0.1] * 6, 0, -128, 127, axis=0)


@pytest.mark.parametrize("scale", [0.0, -0.5, float("nan"), float("inf"), 1e-45])
def test_bad_scales(scale):
    with pytest.raises(qd.ConfigError, match=r"scale\[0\]"):
        qd.fake_quant(X, scale, 0, -128, 127)


def test_bad_zero_points_and_ranges():
    with pytest.raises(qd.ConfigError, match=r"zero_point\[0\] = 300 is outside \[qmin, qmax\] = \[-128, 127\]"):
        qd.fake_quant(X, 0.1, 300, -128, 127)
    with pytest.raises(qd.DTypeError, match="zero_point must be an integer"):
        qd.fake_quant(X, 0.1, 0.5, -128, 127)
    with pytest.raises(qd.ConfigError, match=r"qmin \(5\) must be less than qmax \(5\)"):
        qd.fake_quant(X, 0.1, 5, 5, 5)


def test_wrong_dtype_and_layout_name_the_argument():
    with pytest.raises(qd.DTypeError, match="fake_quant: x must have dtype float32, got float64"):
        qd.fake_quant(X.astype(np.float64), 0.1, 0, -128, 127)
    with pytest.raises(TypeError, match="x must be a numpy array"):
        qd.fake_quant([1.0, 2.0], 0.1, 0, -128, 127)
    with pytest.raises(qd.ShapeError, match="fake_quant: x must be C-contiguous"):
        qd.fake_quant(X.T, 0.1, 0, -128, 127)
    with pytest.raises(qd.DTypeError, match="grad must have dtype float32"):
        qd.fake_quant_backward(X, X.astype(np.float16), 0.1, 0, -128, 127)
    with pytest.raises(qd.ShapeError, match=r"grad has shape \(6, 4\) but x has \(4, 6\)"):
        qd.fake_quant_backward(X, np.ascontiguousarray(X.T), 0.1, 0, -128, 127)
    with pytest.raises(qd.DTypeError, match="Quantizer.observe: x must have dtype float32"):
        qd.Quantizer().observe(X.astype(np.int32))


def test_state_errors():
    q = qd.Quantizer()
    with pytest.raises(qd.ConfigError, match="observed no data yet"):
        q.fake_quant(X)
    q.observe(X)
    q.freeze()
    with pytest.raises(qd.ConfigError, match="frozen"):
        q.observe(X)
    with pytest.raises(qd.ConfigError, match="dynamic quantizer"):
        qd.Quantizer(mode="dynamic").observe(X)
    pc = qd.Quantizer(granularity="per_channel", axis=1)
    pc.observe(X)
    with pytest.raises(qd.ShapeError, match="had 6"):
        pc.observe(np.ones((4, 5), np.float32))


def test_nan_and_inf_rule():
    """NaN -> NaN (mask 0); +-Inf -> the end codes (mask 0); quantize maps NaN to the zero
    point; observers reject NaN/Inf with DataError naming the index."""
    x = np.array([np.nan, np.inf, -np.inf, 0.3, -0.0], dtype=np.float32)
    y, mask = qd.fake_quant(x, 0.1, 3, -128, 127, return_mask=True)
    assert np.isnan(y[0])
    assert y[1] == np.float32(0.1) * (127 - 3) and y[2] == np.float32(0.1) * (-128 - 3)
    assert mask.tolist() == [False, False, False, True, True]
    assert np.signbit(y[4]) == False  # noqa: E712  (-0 becomes +0, as torch's integer code does)
    q = qd.Quantizer(mode="dynamic")
    with pytest.raises(qd.DataError, match="NaN"):
        q.quantize(x)
    static = qd.Quantizer()
    static.observe(np.array([-1.0, 1.0], np.float32))
    assert static.quantize(x).tolist()[:3] == [int(static.params.zero_point), 127, -128]
    with pytest.raises(qd.DataError):
        static.observe(np.array([1.0, np.inf], np.float32))
