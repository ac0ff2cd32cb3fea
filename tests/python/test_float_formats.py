"""qd.cast / to_bits / from_bits against numpy (fp16) and ml_dtypes (bf16, fp8): exhaustive over
every bit pattern of each format, and 10^6 random float32 values per format."""
import ml_dtypes
import numpy as np
import pytest

import qdrift as qd

FORMATS = {
    "fp16": (np.float16, np.uint16),
    "bf16": (ml_dtypes.bfloat16, np.uint16),
    "fp8_e4m3": (ml_dtypes.float8_e4m3fn, np.uint8),
    "fp8_e5m2": (ml_dtypes.float8_e5m2, np.uint8),
}


def oracle_cast(x, fmt):
    dtype, bits = FORMATS[fmt]
    with np.errstate(over="ignore", invalid="ignore"):
        y = x.astype(dtype)
    return y.astype(np.float32), y.view(bits)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_bit_pattern_decodes_and_round_trips(fmt):
    dtype, bits_t = FORMATS[fmt]
    patterns = np.arange(np.iinfo(bits_t).max + 1, dtype=np.int64).astype(bits_t)
    ours = qd.from_bits(patterns, fmt)
    theirs = patterns.view(dtype).astype(np.float32)
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    assert np.array_equal(ours.view(np.uint32)[~np.isnan(ours)], theirs.view(np.uint32)[~np.isnan(theirs)])
    # Every non-NaN pattern encodes back to itself (signed zeros included).
    keep = ~np.isnan(ours)
    assert np.array_equal(qd.to_bits(ours[keep], fmt), patterns[keep])
    assert np.array_equal(qd.cast(ours, fmt), ours, equal_nan=True)


def random_float32(rng, fmt, n=1_000_000):
    """Uniform bit patterns (NaN, Inf, subnormals of every kind), values spread over the
    format's range, and exact ties between neighbouring codes."""
    dtype, bits_t = FORMATS[fmt]
    fmax = float(ml_dtypes.finfo(dtype).max)
    tiny = float(ml_dtypes.finfo(dtype).smallest_subnormal)
    a = rng.integers(0, 2 ** 32, n // 4, dtype=np.uint64).astype(np.uint32).view(np.float32)
    b = np.sign(rng.normal(size=n // 4)) * np.exp(rng.uniform(np.log(tiny / 4), np.log(fmax * 1.2), n // 4))
    codes = rng.integers(0, np.iinfo(bits_t).max, n // 4).astype(bits_t)
    with np.errstate(invalid="ignore", over="ignore"):
        lo = codes.view(dtype).astype(np.float64)
        hi = (codes + 1).astype(bits_t).view(dtype).astype(np.float64)
        mid = (lo + hi) / 2        # exact ties between neighbouring codes (exact in float32)
        c = rng.normal(0, fmax / 8, n - 3 * (n // 4))
        return np.concatenate([a, b.astype(np.float32), mid.astype(np.float32), c.astype(np.float32)])


@pytest.mark.parametrize("fmt", FORMATS)
def test_random_float32_values_round_like_the_oracle(rng, fmt):
    x = random_float32(rng, fmt)
    y, bits = oracle_cast(x, fmt)
    ours = qd.cast(x, fmt)
    assert np.array_equal(ours, y, equal_nan=True)
    ours_bits = qd.to_bits(x, fmt)
    nan = np.isnan(x)
    assert np.array_equal(ours_bits[~nan], bits[~nan])
    # NaN stays NaN, sign kept (payload rules differ by oracle and are not part of the contract).
    assert np.isnan(qd.from_bits(ours_bits[nan], fmt)).all()
    assert np.array_equal(ours_bits[nan] >> (8 * ours_bits.itemsize - 1), bits[nan] >> (8 * bits.itemsize - 1))


def test_overflow_rules():
    big = np.array([65519.99, 65520.0, 1e30, -1e30], np.float32)
    assert qd.cast(big, "fp16").tolist() == [65504.0, np.inf, np.inf, -np.inf]
    e4 = qd.cast(np.array([448.0, 464.0, 465.0, np.inf], np.float32), "fp8_e4m3")
    assert e4[0] == 448.0 and e4[1] == 448.0 and np.isnan(e4[2]) and np.isnan(e4[3])   # no inf in e4m3fn
    assert qd.cast(np.array([61439.0, 61440.0], np.float32), "fp8_e5m2").tolist() == [57344.0, np.inf]
    assert qd.cast(np.array([1e-8], np.float32), "fp16")[0] == np.float32(np.float16(1e-8))


def test_bad_arguments():
    x = np.ones(3, np.float32)
    with pytest.raises(qd.ConfigError, match="unknown float format 'fp8'"):
        qd.cast(x, "fp8")
    with pytest.raises(qd.DTypeError, match="cast: x must have dtype float32, got float64"):
        qd.cast(x.astype(np.float64), "fp16")
    with pytest.raises(qd.DTypeError, match="from_bits: bits must have dtype uint8"):
        qd.from_bits(np.zeros(3, np.uint16), "fp8_e4m3")
