"""Fixed-point requantization against an exact big-integer oracle (Python ints), and the
§10 vectors of shared/reference/tflite-semantics.md."""
import numpy as np
import pytest

import qdrift as qd

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1
ROWS, CHANNELS = 1000, 1000          # 10^6 (accumulator, multiplier) pairs per method


# ---- exact rounding of n / d (d > 0) on numpy object arrays of Python ints ----------------
def rhu(n, d):                         # ties toward +inf
    return (2 * n + d) // (2 * d)


def rha(n, d):                         # ties away from zero
    mag = (2 * np.abs(n) + d) // (2 * d)
    return np.where(n < 0, -mag, mag)


def wrap32(v):
    return ((v + 2 ** 31) % 2 ** 32) - 2 ** 31


def as_int(a):
    return np.array([int(v) for v in np.ravel(a)], dtype=object).reshape(np.shape(a))


def oracle(method, acc, m, shift):
    acc, m, shift = as_int(acc), as_int(m), as_int(shift)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    pow2 = np.vectorize(lambda e: 2 ** int(e), otypes=[object])
    if method == "gemmlowp":
        x = wrap32(acc * pow2(left))
        high = rhu(x * m, 2 ** 31)
        high = np.where((x == INT32_MIN) & (m == INT32_MIN), INT32_MAX, high)  # SRDHM saturation
        return rha(high, pow2(right))
    if method == "single":
        return wrap32(rhu(acc * m, pow2(31 - shift)))
    if method == "ruy":
        x = wrap32(acc * pow2(left))
        return rhu(wrap32(rhu(x * m, 2 ** 31)), pow2(right))
    if method == "int64":
        reduced = np.where(m < 0x7FFF0000, rhu(m, 2 ** 16), 0x7FFF)
        return wrap32(rhu(acc * reduced, pow2(15 - shift)))
    raise AssertionError(method)


def random_pairs(rng, wide=False):
    """acc: (ROWS, CHANNELS); one multiplier per channel, log-uniform over 2^-40..2^4, plus
    exact-tie multipliers (m = 2^30) and accumulators at the int32 edges."""
    kind = rng.integers(0, 4, (ROWS, CHANNELS))
    acc = np.where(kind == 0, rng.integers(INT32_MIN, INT32_MAX, (ROWS, CHANNELS), endpoint=True),
                   rng.integers(-2 ** 16, 2 ** 16, (ROWS, CHANNELS)))
    acc = np.where(kind == 1, rng.integers(-64, 64, (ROWS, CHANNELS)), acc)
    edges = np.array([INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX])
    acc = np.where(kind == 2, rng.choice(edges, (ROWS, CHANNELS)), acc)
    if wide:
        acc = np.where(rng.random((ROWS, CHANNELS)) < 0.5, rng.integers(-2 ** 46, 2 ** 46, (ROWS, CHANNELS)), acc)
    ms, shifts = [], []
    for c in range(CHANNELS):
        if c % 10 == 0:
            m, s = 2 ** 30, int(rng.integers(-31, 1))        # M = 2^(s-1): every odd acc is a tie
        else:
            m, s = qd.quantize_multiplier(float(2.0 ** rng.uniform(-40, 4)))
        ms.append(m)
        shifts.append(min(s, 7 if wide else 30))
    return acc, np.array(ms, np.int32), np.array(shifts, np.int32)


@pytest.mark.parametrize("method", ["gemmlowp", "single", "ruy"])
def test_fixed_point_methods_equal_the_big_integer_oracle(rng, method):
    acc, m, shift = random_pairs(rng)
    ours = qd.requantize(acc.astype(np.int32), m, shift, method=method)
    expected = oracle(method, acc, np.broadcast_to(m, acc.shape), np.broadcast_to(shift, acc.shape))
    assert np.array_equal(ours, expected.astype(np.int64))


def test_int64_method_equals_the_big_integer_oracle(rng):
    acc, m, shift = random_pairs(rng, wide=True)
    ours = qd.requantize(acc.astype(np.int64), m, shift, method="int64")
    expected = oracle("int64", acc, np.broadcast_to(m, acc.shape), np.broadcast_to(shift, acc.shape))
    assert np.array_equal(ours, expected.astype(np.int64))


def test_xnnpack_equals_numpy_float32(rng):
    acc, _, _ = random_pairs(rng)
    acc = acc.astype(np.int32)
    scale = (2.0 ** rng.uniform(-20, 2, CHANNELS)).astype(np.float32)
    scale[::10] = 0.5                        # exact ties for odd accumulators
    zp, qmin, qmax = -5, -128, 127
    ours = qd.requantize(acc, scale=scale, method="xnnpack", zero_point=zp, qmin=qmin, qmax=qmax)
    y = acc.astype(np.float32) * scale       # IEEE float32 product, like the kernel
    y = np.clip(y, np.float32(qmin - zp), np.float32(qmax - zp))
    assert np.array_equal(ours, np.rint(y).astype(np.int64) + zp)


def test_double_rha_equals_exact_rounding_of_the_double_product(rng):
    acc, _, _ = random_pairs(rng)
    acc = acc.astype(np.int32)
    scale = 2.0 ** rng.uniform(-20, 0, CHANNELS)
    scale[::10] = 0.5
    ours = qd.requantize(acc, scale=scale, method="double_rha", zero_point=3, qmin=-32768, qmax=32767)
    prod = acc.astype(np.float64) * scale
    t = np.trunc(prod)
    rounded = t + np.sign(prod) * (np.abs(prod - t) >= 0.5)   # prod - t is exact
    assert np.array_equal(ours, np.clip(rounded + 3, -32768, 32767).astype(np.int64))


# ---- shared/reference/tflite-semantics.md §10 ----------------------------------------------
def test_vector_1_negative_tie_in_the_second_rounding():
    m, s = qd.quantize_multiplier(0.25)
    assert (m, s) == (2 ** 30, -1)
    acc = np.array([-2, 2, -6, -10], np.int32)
    assert qd.requantize(acc, m, s, method="gemmlowp").tolist() == [-1, 1, -2, -3]
    assert qd.requantize(acc, m, s, method="single").tolist() == [0, 1, -1, -2]
    assert qd.requantize(acc, m, s, method="ruy").tolist() == [0, 1, -1, -2]
    assert qd.requantize(acc, scale=0.25, method="xnnpack").tolist() == [0, 0, -2, -2]
    assert qd.requantize(acc, scale=0.25, method="double_rha").tolist() == [-1, 1, -2, -3]


def test_vector_2_double_rounding_error_at_small_shift():
    m, s = qd.quantize_multiplier(0.3)
    assert (m, s) == (1288490189, -1)
    acc = np.array([1, 8, -8], np.int32)
    assert qd.requantize(acc, m, s, method="gemmlowp").tolist() == [1, 3, -3]
    assert qd.requantize(acc, m, s, method="single").tolist() == [0, 2, -2]


def test_vector_3_issue_25087():
    m, s = qd.quantize_multiplier(0.0014402703931141053)
    assert (m, s) == (1583594044, -9)
    acc = np.array([7984], np.int32)
    assert qd.requantize(acc, m, s, method="gemmlowp").tolist() == [12]
    assert qd.requantize(acc, m, s, method="single").tolist() == [11]


def test_vector_4_quantize_multiplier_edges():
    assert qd.quantize_multiplier(1 - 2.0 ** -33) == (1073741824, 1)
    assert qd.quantize_multiplier(2.0 ** -32) == (2 ** 30, -31)
    assert qd.quantize_multiplier(0.75 * 2.0 ** -31) == (1610612736, -31)
    assert qd.quantize_multiplier(2.0 ** -34) == (0, 0)
    assert qd.quantize_multiplier(0.0) == (0, 0)
    m, s = qd.quantize_multiplier(3.0)
    assert (m, s) == (1610612736, 2)
    assert qd.requantize(np.array([100], np.int32), m, s).tolist() == [300]
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(qd.ConfigError, match="quantize_multiplier"):
            qd.quantize_multiplier(bad)


def test_vector_5_saturation_and_clamps():
    # The largest magnitudes: INT32_MIN * INT32_MAX / 2^31 (SRDHM's own saturation case,
    # INT32_MIN * INT32_MIN, needs a negative multiplier and is covered by the C++ tests).
    big = np.array([INT32_MIN, INT32_MAX], np.int32)
    assert qd.requantize(big, INT32_MAX, 0).tolist() == [INT32_MIN + 1, INT32_MAX - 1]
    # A left shift wraps in int32 before the high multiply, as the kernels' x * (1 << left) does.
    assert qd.requantize(np.array([2 ** 30], np.int32), 2 ** 30, 2, method="gemmlowp").tolist() == [0]
    acc = np.array([-1000, 1000], np.int32)
    assert qd.requantize(acc, 2 ** 30, 0, zero_point=5, qmin=-128, qmax=127).tolist() == [-128, 127]
    # Output clamp after adding the zero point.
    assert qd.requantize(np.array([250], np.int32), 2 ** 30, 0, zero_point=-5, qmin=-128, qmax=127).tolist() == [120]


def test_vector_15_int64_reduced_multiplier():
    # m >= 0x7FFF0000 reduces to 0x7FFF; below it, to round(m / 2^16).
    acc = np.array([2 ** 40, -(2 ** 40) + 1, 12345], np.int64)
    ours = qd.requantize(acc, 0x7FFF8000, -10, method="int64")
    assert ours.tolist() == [int(v) for v in oracle("int64", acc, np.full(3, 0x7FFF8000), np.full(3, -10))]
    with pytest.raises(qd.DataError, match="2\\^47"):
        qd.requantize(np.array([2 ** 47], np.int64), 2 ** 30, 0, method="int64")


def test_bad_arguments_name_themselves():
    acc = np.array([1, 2], np.int32)
    with pytest.raises(qd.ConfigError, match="unknown method 'double'"):
        qd.requantize(acc, 2 ** 30, 0, method="double")
    with pytest.raises(qd.ConfigError, match="takes scale=, not m/shift"):
        qd.requantize(acc, 2 ** 30, 0, method="xnnpack")
    with pytest.raises(qd.ConfigError, match="needs both m and shift"):
        qd.requantize(acc, 2 ** 30)
    with pytest.raises(qd.ConfigError, match="needs shift in \\[-31, 30\\]"):
        qd.requantize(acc, 2 ** 30, 31)
    with pytest.raises(qd.ShapeError, match="m has 3 entries but acc's last axis has 2"):
        qd.requantize(acc, [2 ** 30] * 3, 0)
    with pytest.raises(qd.DTypeError, match="acc must have dtype int32"):
        qd.requantize(acc.astype(np.float32), 2 ** 30, 0)
