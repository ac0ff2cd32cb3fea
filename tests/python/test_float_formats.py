"""qd.cast / to_bits / from_bits bit for bit against numpy (fp16) and ml_dtypes (bf16, fp8): every
bit pattern of each format, and over 10^6 float32 values per format. NaN bits are compared too:
qdrift reproduces each oracle's NaN sign and payload rules (see quantizers/src/float_format.cpp)."""
import ml_dtypes
import numpy as np
import pytest

import qdrift as qd

# format name -> (oracle dtype, code dtype). ml_dtypes has no float16; numpy's is the oracle.
FORMATS = {
    "fp16": (np.float16, np.uint16),
    "bf16": (ml_dtypes.bfloat16, np.uint16),
    "fp8_e4m3": (ml_dtypes.float8_e4m3fn, np.uint8),
    "fp8_e5m2": (ml_dtypes.float8_e5m2, np.uint8),
}


def oracle_cast(x, fmt):
    """(x rounded to the format, as float32; its bit patterns) from numpy / ml_dtypes."""
    dtype, bits_t = FORMATS[fmt]
    with np.errstate(over="ignore", invalid="ignore"):
        y = x.astype(dtype)
    return y.astype(np.float32), y.view(bits_t)


def all_patterns(fmt):
    bits_t = FORMATS[fmt][1]
    return np.arange(np.iinfo(bits_t).max + 1, dtype=np.int64).astype(bits_t)


def u32(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_bit_pattern_decodes_and_round_trips(fmt):
    dtype = FORMATS[fmt][0]
    patterns = all_patterns(fmt)
    ours = qd.from_bits(patterns, fmt)
    theirs = patterns.view(dtype).astype(np.float32)
    assert ours.dtype == np.float32 and ours.shape == patterns.shape
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    # Bit for bit, NaNs too: fp16 and bf16 keep the NaN payload, fp8 NaNs decode to +-0x7FC00000.
    assert np.array_equal(u32(ours), u32(theirs))
    # Every non-NaN pattern encodes back to itself (signed zeros and infinities included) ...
    keep = ~np.isnan(ours)
    assert np.array_equal(qd.to_bits(ours[keep], fmt), patterns[keep])
    # ... and NaN patterns encode like the oracle encodes the decoded NaN.
    nan_codes = qd.to_bits(ours[~keep], fmt)
    assert np.array_equal(nan_codes, oracle_cast(ours[~keep], fmt)[1])
    # Values of the format are fixed points of cast; NaNs cast like the oracle casts them (bf16
    # and e5m2 drop the payload on the way in).
    cast = qd.cast(ours, fmt)
    assert np.array_equal(u32(cast[keep]), u32(theirs[keep]))
    assert np.array_equal(u32(cast), u32(oracle_cast(ours, fmt)[0]))


def random_float32(rng, fmt, n=1_000_000):
    """Uniform bit patterns (NaN, Inf, subnormals of every kind), log-uniform magnitudes over the
    format's range (tiny / 4 .. 1.2 * max, both signs), exact ties between neighbouring codes
    and their float32 neighbours, and normal values of scale max / 8."""
    dtype, bits_t = FORMATS[fmt]
    fmax = float(ml_dtypes.finfo(dtype).max)
    tiny = float(ml_dtypes.finfo(dtype).smallest_subnormal)
    q = n // 4
    a = rng.integers(0, 2**32, q, dtype=np.uint64).astype(np.uint32).view(np.float32)
    top = min(fmax * 1.2, float(np.finfo(np.float32).max))   # bf16's max * 1.2 is past float32's
    with np.errstate(over="ignore"):
        b = (rng.choice([-1.0, 1.0], q) * np.exp(rng.uniform(np.log(tiny / 4), np.log(top), q))).astype(np.float32)
    codes = rng.integers(0, np.iinfo(bits_t).max, q // 3).astype(bits_t)
    with np.errstate(invalid="ignore", over="ignore"):
        lo = codes.view(dtype).astype(np.float64)
        hi = (codes + 1).astype(bits_t).view(dtype).astype(np.float64)
        mid = ((lo + hi) / 2).astype(np.float32)   # exact ties between neighbouring codes
    mid = np.concatenate([mid, np.nextafter(mid, np.float32(np.inf)), np.nextafter(mid, np.float32(-np.inf))])
    c = rng.normal(0, fmax / 8, n - 2 * q - mid.size).astype(np.float32)
    return np.concatenate([a, b, mid, c])


@pytest.mark.parametrize("fmt", FORMATS)
def test_random_float32_values_round_like_the_oracle(rng, fmt):
    x = random_float32(rng, fmt)
    assert x.size >= 1_000_000
    y, bits = oracle_cast(x, fmt)
    ours = qd.cast(x, fmt)
    assert np.array_equal(ours, y, equal_nan=True)
    ours_bits = qd.to_bits(x, fmt)
    assert ours_bits.dtype == bits.dtype
    nan = np.isnan(x)
    assert np.array_equal(ours_bits[~nan], bits[~nan])
    # NaN stays NaN with its sign, and with the oracle's exact bit pattern (payload rules included).
    assert np.isnan(ours[nan]).all()
    assert np.array_equal(ours_bits[nan], bits[nan])
    assert np.array_equal(u32(ours), u32(y))


def test_overflow_and_nan_rules():
    big = np.array([65519.99, 65520.0, 1e30, -1e30, np.inf], np.float32)
    assert qd.cast(big, "fp16").tolist() == [65504.0, np.inf, np.inf, -np.inf, np.inf]
    # e4m3fn has no inf: past max (after rounding; 464 is a tie that rounds to 448) is NaN, sign kept.
    e4 = np.array([448.0, 464.0, 465.0, np.inf, -np.inf, -1e30], np.float32)
    assert qd.to_bits(e4, "fp8_e4m3").tolist() == [0x7E, 0x7E, 0x7F, 0x7F, 0xFF, 0xFF]
    assert qd.cast(np.array([61439.0, 61440.0], np.float32), "fp8_e5m2").tolist() == [57344.0, np.inf]
    assert qd.cast(np.array([3.3961773e38, 3.3961775e38], np.float32), "bf16").tolist() == [3.3895313892515355e38, np.inf]
    assert qd.cast(np.array([1e-8, 3e-8], np.float32), "fp16").tolist() == [0.0, 2.0**-24]
    neg_zero = qd.cast(np.array([-1e-30], np.float32), "fp8_e5m2")
    assert neg_zero[0] == 0.0 and np.signbit(neg_zero[0])
    snan = np.array([0x7F800001, 0xFFC00000], np.uint32).view(np.float32)
    assert qd.to_bits(snan, "fp16").tolist() == [0x7C01, 0xFE00]   # numpy: truncated payload, never inf
    assert qd.to_bits(snan, "bf16").tolist() == [0x7FC0, 0xFFC0]   # ml_dtypes: quiet NaN, sign kept
    assert qd.to_bits(snan, "fp8_e4m3").tolist() == [0x7F, 0xFF]
    assert qd.to_bits(snan, "fp8_e5m2").tolist() == [0x7E, 0xFE]


def test_shapes_are_kept():
    x = np.linspace(-3, 3, 24, dtype=np.float32).reshape(2, 3, 4)
    for fmt in FORMATS:
        assert qd.cast(x, fmt).shape == (2, 3, 4)
        bits = qd.to_bits(x, fmt)
        assert bits.shape == (2, 3, 4)
        assert qd.from_bits(bits, fmt).shape == (2, 3, 4)
        assert qd.cast(np.zeros(0, np.float32), fmt).shape == (0,)
        assert qd.cast(np.array(1.5, np.float32), fmt).shape == ()


def test_bad_arguments():
    x = np.ones(3, np.float32)
    for name in ["fp8", "int", "FP16", ""]:
        with pytest.raises(qd.ConfigError, match=f"unknown float format '{name}'; expected one of "
                                                 "fp16, bf16, fp8_e4m3, fp8_e5m2"):
            qd.cast(x, name)
    with pytest.raises(ValueError):   # ConfigError is a ValueError
        qd.to_bits(x, "int")
    with pytest.raises(TypeError, match="cast: x must have dtype float32, got float64"):
        qd.cast(x.astype(np.float64), "fp16")
    with pytest.raises(qd.DTypeError, match="to_bits: x must be a numpy array of float32"):
        qd.to_bits([1.0, 2.0], "bf16")
    with pytest.raises(qd.DTypeError, match="from_bits: bits must have dtype uint8"):
        qd.from_bits(np.zeros(3, np.uint16), "fp8_e4m3")
    with pytest.raises(qd.DTypeError, match="from_bits: bits must have dtype uint16"):
        qd.from_bits(np.zeros(3, np.uint8), "bf16")
    with pytest.raises(qd.ShapeError, match="cast: x must be C-contiguous"):
        qd.cast(np.ones((4, 4), np.float32)[:, ::2], "fp16")
