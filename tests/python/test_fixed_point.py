"""Requantization against exact references written with Python integers (big-integer / rational
arithmetic; numpy float32 for XNNPACK), 10^6 random (accumulator, multiplier) pairs per method,
and the §10 vectors of shared/reference/tflite-semantics.md. Replay with QDRIFT_TEST_SEED."""
import math

import numpy as np
import pytest

import qdrift as qd

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1
ROWS, CHANNELS = 10, 100_000        # 10^6 pairs per method, 10^5 distinct multipliers


# ---- exact rounding of n / d (d > 0) on Python ints or numpy object arrays of them ---------
def rhu(n, d):                         # ties toward +inf
    return (2 * n + d) // (2 * d)


def rha(n, d):                         # ties away from zero
    mag = (2 * abs(n) + d) // (2 * d)
    return np.where(n < 0, -mag, mag) if isinstance(n, np.ndarray) else (-mag if n < 0 else mag)


def rne(n, d):                         # ties to even
    q, r = divmod(n, d)
    return q + ((2 * r > d) | ((2 * r == d) & (q % 2 == 1)))


def wrap32(v):
    return ((v + 2 ** 31) % 2 ** 32) - 2 ** 31


def objects(a):
    """A numpy object array of Python ints (exact arithmetic, vectorized)."""
    return np.asarray(a, dtype=np.int64).astype(object)


pow2 = np.frompyfunc(lambda e: 2 ** int(e), 1, 1)


# ---- the kernels' arithmetic, restated from the definitions (tflite-semantics.md §3) --------
def oracle_fixed(method, acc, m, shift):
    acc, m, shift = objects(acc), objects(m), objects(shift)
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    if method == "gemmlowp":          # SRDHM (RHU, saturating) then RoundingDivideByPOT (RHA)
        x = wrap32(acc * pow2(left))
        high = np.where((x == INT32_MIN) & (m == INT32_MIN), INT32_MAX, rhu(x * m, 2 ** 31))
        return rha(high, pow2(right))
    if method == "single":            # RHU of the exact product, truncated to int32
        return wrap32(rhu(acc * m, pow2(31 - shift)))
    if method == "ruy":               # RHU high multiply truncated to int32, then RHU shift
        x = wrap32(acc * pow2(left))
        return rhu(wrap32(rhu(x * m, 2 ** 31)), pow2(right))
    if method == "int64":             # 16-bit multiplier RHU(m / 2^16) (or 0x7FFF), one RHU
        reduced = np.where(m < 0x7FFF0000, rhu(m, 2 ** 16), 0x7FFF)
        return wrap32(rhu(acc * reduced, pow2(15 - shift)))
    raise AssertionError(method)


def _double_rha_one(acc, num, log2_den):
    """RHA(fl64(fl64(acc) * scale)) with scale = num / 2^log2_den, all in integers."""
    def to_double(n, e):              # n * 2^e rounded to 53 significant bits, ties to even
        extra = abs(n).bit_length() - 53
        return (n, e) if extra <= 0 else (rne(n, 2 ** extra), e + extra)
    n, e = to_double(acc, 0)
    n, e = to_double(n * num, e - log2_den)
    return n * 2 ** e if e >= 0 else rha(n, 2 ** -e)


def oracle_double_rha(acc, scale, zero_point, qmin, qmax):
    """scale: one double per element of acc's last axis."""
    ratios = [float(s).as_integer_ratio() for s in scale]
    num = np.array([r[0] for r in ratios], dtype=object)
    log2_den = np.array([r[1].bit_length() - 1 for r in ratios], dtype=object)
    q = np.frompyfunc(_double_rha_one, 3, 1)(objects(acc), num, log2_den)
    # The kernel's int32 cast, as x86 executes it: out of range -> INT32_MIN
    q = np.where((q >= INT32_MIN) & (q <= INT32_MAX), q, INT32_MIN)
    return np.clip(q + zero_point, qmin, qmax)


def oracle_xnnpack(acc, scale, zero_point, qmin, qmax):
    y = acc.astype(np.float32) * np.asarray(scale, np.float32)     # IEEE float32 product
    y = np.clip(y, np.float32(qmin - zero_point), np.float32(qmax - zero_point))
    return np.clip(np.rint(y).astype(np.int64) + zero_point, qmin, qmax)


def oracle_quantize_multiplier(M):
    if M == 0:
        return 0, 0
    q, shift = math.frexp(M)
    q_fixed = rha(int(q * 2 ** 53), 2 ** 22)        # q * 2^31, exactly, rounded half away
    if q_fixed == 2 ** 31:
        q_fixed, shift = 2 ** 30, shift + 1
    return (0, 0) if shift < -31 else (q_fixed, shift)


def assert_same(ours, expected, **context):
    """array_equal, and on failure the first mismatches with every parameter that made them."""
    ours, expected = np.asarray(ours), np.asarray(expected).astype(np.int64)
    bad = np.flatnonzero(ours.ravel() != expected.ravel())
    lines = [f"  [{i}] ours={ours.ravel()[i]} expected={expected.ravel()[i]} " +
             " ".join(f"{k}={np.broadcast_to(v, ours.shape).ravel()[i]}" for k, v in context.items())
             for i in bad[:8]]
    assert bad.size == 0, f"{bad.size} of {ours.size} differ:\n" + "\n".join(lines)


# ---- random data ------------------------------------------------------------------------------
def random_accs(rng, shape, wide=False):
    """Uniform int32, small, and edge accumulators (plus, when wide, int64 values up to 2^47)."""
    kind = rng.integers(0, 5, shape)
    acc = rng.integers(INT32_MIN, INT32_MAX, shape, endpoint=True)
    acc = np.where(kind == 1, rng.integers(-2 ** 16, 2 ** 16, shape), acc)
    acc = np.where(kind == 2, rng.integers(-64, 65, shape), acc)
    edges = np.array([INT32_MIN, INT32_MIN + 1, -2 ** 30, -1, 0, 1, 2 ** 30, INT32_MAX - 1, INT32_MAX])
    acc = np.where(kind == 3, rng.choice(edges, shape), acc)
    if wide:
        acc = np.where(kind == 4, rng.integers(-2 ** 47, 2 ** 47, shape), acc)
        acc[0, :4] = [-2 ** 47, 2 ** 47 - 1, -2 ** 47 + 1, 2 ** 46]
    return acc


def random_multipliers(rng):
    """Per channel: M log-uniform over 2^-40..2^4 through qd.quantize_multiplier (shift <= 5,
    and below 2^-32 flushed to (0, 0)), and every 10th channel an exact-tie construction
    m = odd * 2^(30 - b) with odd in [2^b, 2^(b+1))."""
    M = 2.0 ** rng.uniform(-40, 4, CHANNELS)
    pairs = [qd.quantize_multiplier(float(v)) for v in M]
    m = np.array([p[0] for p in pairs], np.int64)
    shift = np.array([p[1] for p in pairs], np.int64)
    tie = np.zeros(CHANNELS, bool)
    tie[::10] = True
    b = rng.integers(0, 5, CHANNELS)
    odd = rng.integers(2 ** b, 2 ** (b + 1)) | 1
    m = np.where(tie, odd << (30 - b), m)
    shift = np.where(tie, rng.integers(-26, 1, CHANNELS), shift)
    return m, shift, tie, b


def tie_accs(rng, acc, shift, tie, b):
    """In the tie channels acc = (2j + 1) * 2^(right + b): acc * m / 2^(31 + right) is then a
    half-integer, so every rounding step of every method meets an exact tie."""
    unit = np.where(tie, 2 ** (np.maximum(-shift, 0) + b), 1)   # <= 2^30
    limit = 2 ** 31 // (2 * unit)
    j = rng.integers(-limit, limit, acc.shape)                # |(2j + 1) * unit| < 2^31
    return np.where(tie, (2 * j + 1) * unit, acc)


def test_quantize_multiplier_equals_the_exact_reference(rng):
    M = np.concatenate([2.0 ** rng.uniform(-45, 40, 20_000), rng.uniform(0, 1, 20_000),
                        [1 - 2.0 ** -33, 1 - 2.0 ** -32, 1 - 2.0 ** -31, 2.0 ** -32, 2.0 ** -33, 5e-324, 0.0]])
    for v in M:
        assert qd.quantize_multiplier(float(v)) == oracle_quantize_multiplier(float(v)), v


@pytest.mark.parametrize("method", ["gemmlowp", "single", "ruy"])
def test_fixed_point_methods_equal_the_big_integer_reference(rng, method):
    m, shift, tie, b = random_multipliers(rng)
    acc = tie_accs(rng, random_accs(rng, (ROWS, CHANNELS)), shift, tie, b)
    ours = qd.requantize(acc.astype(np.int32), m, shift, method=method)
    assert ours.dtype == np.int32 and ours.shape == acc.shape
    expected = oracle_fixed(method, acc, np.broadcast_to(m, acc.shape), np.broadcast_to(shift, acc.shape))
    assert_same(ours, expected, acc=acc, m=m, shift=shift)


def test_int64_method_equals_the_big_integer_reference(rng):
    m, shift, tie, b = random_multipliers(rng)
    acc = tie_accs(rng, random_accs(rng, (ROWS, CHANNELS), wide=True), shift, tie, b)
    ours = qd.requantize(acc, m, shift, method="int64")
    expected = oracle_fixed("int64", acc, np.broadcast_to(m, acc.shape), np.broadcast_to(shift, acc.shape))
    assert_same(ours, expected, acc=acc, m=m, shift=shift)


def random_scales_and_accs(rng, shape):
    """Scales log-uniform over 2^-40..2^4; every 10th channel 2^-k with accumulators
    (2j + 1) * 2^(k - 1), so acc * scale is an exact tie (exact in float32 too: |acc| < 2^24)."""
    scale = 2.0 ** rng.uniform(-40, 4, CHANNELS)
    k = rng.integers(1, 20, CHANNELS // 10)
    scale[::10] = 2.0 ** -k.astype(float)
    acc = random_accs(rng, shape)
    j = rng.integers(-2 ** (23 - k), 2 ** (23 - k), (shape[0], k.size))
    acc[:, ::10] = (2 * j + 1) * 2 ** (k - 1)
    return scale, acc


@pytest.mark.parametrize("zero_point, qmin, qmax", [(-5, -128, 127), (0, None, None), (3, -32768, 32767)])
def test_xnnpack_equals_numpy_float32(rng, zero_point, qmin, qmax):
    scale, acc = random_scales_and_accs(rng, (ROWS, CHANNELS))
    scale = scale.astype(np.float32)
    ours = qd.requantize(acc.astype(np.int32), scale=scale, method="xnnpack", zero_point=zero_point, qmin=qmin,
                         qmax=qmax)
    lo, hi = (INT32_MIN if qmin is None else qmin), (INT32_MAX if qmax is None else qmax)
    assert_same(ours, oracle_xnnpack(acc, scale, zero_point, lo, hi), acc=acc, scale=scale)


@pytest.mark.parametrize("wide", [False, True])
def test_double_rha_equals_the_rational_reference(rng, wide):
    scale, acc = random_scales_and_accs(rng, (ROWS, CHANNELS))
    if wide:                          # int64 accumulators (reference FC int16x8), past 2^53
        acc = np.where(rng.random(acc.shape) < 0.5, rng.integers(-2 ** 62, 2 ** 62, acc.shape), acc)
    ours = qd.requantize(acc if wide else acc.astype(np.int32), scale=scale, method="double_rha", zero_point=3,
                         qmin=-32768, qmax=32767)
    assert_same(ours, oracle_double_rha(acc, scale, 3, -32768, 32767), acc=acc, scale=scale)


# ---- shared/reference/tflite-semantics.md §10 --------------------------------------------------
def all_methods(acc, M):
    m, s = qd.quantize_multiplier(M)
    acc = np.asarray(acc, np.int32)
    return {method: qd.requantize(acc, m, s, method=method).tolist() for method in ("gemmlowp", "single", "ruy")} | {
        "int64": qd.requantize(acc.astype(np.int64), m, s, method="int64").tolist(),
        "xnnpack": qd.requantize(acc, scale=M, method="xnnpack").tolist(),
        "double_rha": qd.requantize(acc, scale=M, method="double_rha").tolist()}


def test_vector_1_negative_tie_in_the_second_rounding():
    assert qd.quantize_multiplier(0.25) == (2 ** 30, -1)
    assert all_methods([-2, 2, -6, -10], 0.25) == {
        "gemmlowp": [-1, 1, -2, -3], "single": [0, 1, -1, -2], "ruy": [0, 1, -1, -2], "int64": [0, 1, -1, -2],
        "xnnpack": [0, 0, -2, -2], "double_rha": [-1, 1, -2, -3]}


def test_negative_ties_per_method():
    # M = 2^-3: the high multiply is exact, acc / 8 = -0.5, -1.5, -2.5, 2.5.
    assert all_methods([-4, -12, -20, 20], 0.125) == {
        "gemmlowp": [-1, -2, -3, 3], "single": [0, -1, -2, 3], "ruy": [0, -1, -2, 3], "int64": [0, -1, -2, 3],
        "xnnpack": [0, -2, -2, 2], "double_rha": [-1, -2, -3, 3]}


def test_vector_2_double_rounding_error_at_small_shift():
    assert qd.quantize_multiplier(0.3) == (1288490189, -1)
    got = all_methods([1, 8, -8], 0.3)
    assert got["gemmlowp"] == [1, 3, -3] and got["ruy"] == [1, 3, -2]
    assert got["single"] == got["int64"] == got["double_rha"] == got["xnnpack"] == [0, 2, -2]


def test_vector_3_issue_25087():
    assert qd.quantize_multiplier(0.0014402703931141053) == (1583594044, -9)
    got = all_methods([7984], 0.0014402703931141053)
    assert got["gemmlowp"] == got["ruy"] == [12]
    assert got["single"] == got["double_rha"] == [11]


def test_vector_4_quantize_multiplier_edges():
    assert qd.quantize_multiplier(1 - 2.0 ** -33) == (2 ** 30, 1)
    assert qd.quantize_multiplier(2.0 ** -32) == (2 ** 30, -31)
    assert qd.quantize_multiplier(0.75 * 2.0 ** -31) == (1610612736, -31)
    assert qd.quantize_multiplier(2.0 ** -33) == (0, 0)
    assert qd.quantize_multiplier(0.0) == (0, 0)
    assert qd.quantize_multiplier(3.0) == (1610612736, 2)
    got = all_methods([100, -100], 3.0)
    assert all(v == [300, -300] for v in got.values()), got
    # A flushed multiplier maps every accumulator to the zero point.
    m, s = qd.quantize_multiplier(2.0 ** -34)
    assert qd.requantize(np.array([INT32_MIN, INT32_MAX], np.int32), m, s, zero_point=9).tolist() == [9, 9]
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(qd.ConfigError, match="quantize_multiplier"):
            qd.quantize_multiplier(bad)


def test_vector_5_saturation_wrapping_and_clamps():
    big = np.array([INT32_MIN, INT32_MAX], np.int32)
    for method in ("gemmlowp", "single", "ruy"):
        assert qd.requantize(big, INT32_MAX, 0, method=method).tolist() == [-INT32_MAX, INT32_MAX - 1]
    # shift -31: (2^31 - 1) * 2^30 / 2^62 just below 1/2; -2^31 * 2^30 / 2^62 = -1/2 exactly.
    assert qd.requantize(big, 2 ** 30, -31, method="gemmlowp").tolist() == [-1, 1]
    assert qd.requantize(big, 2 ** 30, -31, method="ruy").tolist() == [0, 1]
    assert qd.requantize(big, 2 ** 30, -31, method="single").tolist() == [0, 0]
    # A left shift wraps in int32 before the high multiply; single rounding wraps only its result.
    x = np.array([2 ** 30, 2 ** 29 + 1, -(2 ** 29) - 1], np.int32)
    assert qd.requantize(x, 2 ** 30, 2, method="gemmlowp").tolist() == [0, -1073741822, 1073741822]
    assert qd.requantize(x, 2 ** 30, 2, method="ruy").tolist() == [0, -1073741822, 1073741822]
    assert qd.requantize(x, 2 ** 30, 2, method="single").tolist() == [INT32_MIN, 1073741826, -1073741826]
    # + zero point, then the output clamp.
    acc = np.array([-1000, 1000, 244, -264, -266], np.int32)
    for method in ("gemmlowp", "single", "ruy"):
        assert qd.requantize(acc, 2 ** 30, 0, method=method, zero_point=5, qmin=-128,
                             qmax=127).tolist() == [-128, 127, 127, -127, -128]
    assert qd.requantize(acc, scale=0.5, method="xnnpack", zero_point=5, qmin=-128,
                         qmax=127).tolist() == [-128, 127, 127, -127, -128]


def test_vector_15_int64_accumulators():
    m, s = qd.quantize_multiplier(0.3)
    acc = np.array([10 ** 7, -10 ** 7, INT32_MAX], np.int64)
    assert qd.requantize(acc, m, s, method="int64").tolist() == [3000031, -3000031, 644251648]
    assert qd.requantize(acc.astype(np.int32), m, s, method="gemmlowp").tolist() == [3000000, -3000000, 644245094]
    # m >= 0x7FFF0000 reduces to 0x7FFF.
    big = np.array([2 ** 40, -(2 ** 40) + 1, 12345], np.int64)
    for mult in (0x7FFF0000, 0x7FFF8000, INT32_MAX):
        assert qd.requantize(big, mult, -10, method="int64").tolist() == oracle_fixed(
            "int64", big, np.full(3, mult), np.full(3, -10)).tolist()
    assert qd.requantize(big, 0x7FFF8000, -10, method="int64")[0] == 32767 * 32768
    assert qd.requantize(np.array([-(2 ** 47)], np.int64), 2 ** 30, -20, method="int64").tolist() == [-(2 ** 26)]
    with pytest.raises(qd.DataError, match="2\\^47"):
        qd.requantize(np.array([2 ** 47], np.int64), 2 ** 30, 0, method="int64")


def test_per_channel_along_the_last_axis():
    acc = np.arange(-12, 12, dtype=np.int32).reshape(2, 3, 4)
    M = np.array([0.25, 0.3, 1.5, 2.0 ** -20])
    m, s = zip(*(qd.quantize_multiplier(v) for v in M))
    ours = qd.requantize(acc, np.array(m), np.array(s), method="gemmlowp")
    for c in range(4):
        assert ours[..., c].tolist() == qd.requantize(np.ascontiguousarray(acc[..., c]), m[c], s[c]).tolist()
    assert np.array_equal(qd.requantize(acc, scale=M, method="double_rha"),
                          qd.requantize(acc, scale=list(M), method="double_rha"))
    assert qd.requantize(np.array(7, np.int32), 2 ** 30, 0).tolist() == 4       # 0-d accumulators


def test_bad_arguments_name_themselves():
    acc = np.array([1, 2], np.int32)
    cases = [
        (dict(m=2 ** 30, shift=0, method="double"), qd.ConfigError, "unknown method 'double'"),
        (dict(m=2 ** 30, method="xnnpack", scale=0.5), qd.ConfigError, "xnnpack takes scale=, not m"),
        (dict(shift=0, method="double_rha", scale=0.5), qd.ConfigError, "double_rha takes scale=, not shift"),
        (dict(method="xnnpack"), qd.ConfigError, "xnnpack needs scale="),
        (dict(m=2 ** 30, shift=0, scale=0.5), qd.ConfigError, "not scale"),
        (dict(shift=0), qd.ConfigError, "needs m"),
        (dict(m=2 ** 30), qd.ConfigError, "needs shift"),
        (dict(m=2.0 ** 30, shift=0), qd.ConfigError, "m must be an integer"),
        (dict(m=2 ** 31, shift=0), qd.ConfigError, "m = 2147483648 does not fit int32"),
        (dict(m=2 ** 30, shift=31), qd.ConfigError, "needs shift in \\[-31, 30\\], got 31"),
        (dict(m=-1, shift=0), qd.ConfigError, "multiplier must be >= 0"),
        (dict(m=2 ** 30, shift=0, method="single", qmin=3, qmax=2), qd.ConfigError, "qmin \\(3\\) must be <= qmax"),
        (dict(m=2 ** 30, shift=0, zero_point=2 ** 31), qd.ConfigError, "zero_point = 2147483648 does not fit"),
        (dict(m=2 ** 30, shift=0, qmax=2 ** 40), qd.ConfigError, "qmax = 1099511627776 does not fit"),
        (dict(scale="a", method="xnnpack"), qd.ConfigError, "scale must be a real number"),
        (dict(scale=-1.0, method="xnnpack"), qd.ConfigError, "finite scale >= 0"),
        (dict(scale=[[0.5]], method="xnnpack"), qd.ConfigError, "scale must be a scalar or a 1-D"),
        (dict(m=[2 ** 30] * 3, shift=0), qd.ShapeError, "m has 3 entries but acc's last axis has 2"),
        (dict(m=2 ** 30, shift=[0, 0, 0]), qd.ShapeError, "shift has 3 entries"),
    ]
    for kwargs, error, message in cases:
        m, shift = kwargs.pop("m", None), kwargs.pop("shift", None)
        with pytest.raises(error, match=message):
            qd.requantize(acc, m, shift, **kwargs)
    with pytest.raises(qd.DTypeError, match="acc must have dtype int32"):
        qd.requantize(acc.astype(np.float32), 2 ** 30, 0)
    with pytest.raises(qd.DTypeError, match="acc must have dtype int32"):
        qd.requantize(acc.astype(np.int64), 2 ** 30, 0, method="ruy")
    with pytest.raises(qd.DTypeError, match="acc must have dtype int64"):
        qd.requantize(acc, 2 ** 30, 0, method="int64")
    with pytest.raises(qd.DTypeError, match="acc must be a numpy array"):
        qd.requantize([1, 2], 2 ** 30, 0)
    with pytest.raises(qd.ShapeError, match="acc must be C-contiguous"):
        qd.requantize(np.zeros((4, 4), np.int32)[:, ::2], 2 ** 30, 0)
    assert issubclass(qd.ConfigError, ValueError) and issubclass(qd.DTypeError, TypeError)
