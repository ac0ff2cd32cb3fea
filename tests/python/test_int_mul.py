"""Integer MUL (int8 and int16x8) against LiteRT on every kernel path, bit for bit: converter-made
MUL files whose parameters are overwritten at random (exact ties, multipliers above 1, saturation,
zero points, fused RELU / RELU6), and unfolded BatchNormalization (MUL + ADD) from qd.convert equal
to the real converter's file, to its calibrator's ranges and to LiteRT's outputs."""
import numpy as np
import pytest
import tensorflow as tf

import qdrift as qd
from converter_oracle import L, calibrated_ranges, compare_models, convert_with_tf, keras, patch_tensors, \
    randomize_weights
from test_tflite_kernels import RESOLVERS, run_litert

CHANNELS = 7
TRIALS = 40          # per (profile, fused activation)
_ACT = {"linear": lambda v: v, "relu": tf.nn.relu, "relu6": tf.nn.relu6}


def _mul_file(profile, activation, rng):
    """A converter-made file holding one MUL(x, c) with a (C,) constant and the fused activation."""
    c = rng.normal(size=CHANNELS).astype(np.float32)
    fn = _ACT[activation]
    km = keras.Sequential([keras.Input((CHANNELS,)), L.Lambda(lambda x: fn(x * c))])
    cal = (2 * rng.normal(size=(4, CHANNELS))).astype(np.float32)
    io = "int8" if profile == "tflite_int8" else "int16"
    flatbuffer, _ = convert_with_tf(km, profile, cal, inference_io=io)
    (op,) = qd.from_tflite(flatbuffer).ops
    assert op.name == "MUL" and op.options["activation"] == {"linear": 0, "relu": 1, "relu6": 3}[activation]
    return flatbuffer, op


def _scales(rng, trial):
    """(s_a, s_b, s_out) with a random ratio s_a s_b / s_out in [2^-14, 2^3]; every third trial
    powers of two with the exact ratio 2^k (ties on every path: acc * 2^k ends in .5); every
    third random s_a, s_b with s_out = f32(s_a s_b) / 2^k, whose float32 ratio is exactly 2^k
    (ties) and whose double ratio is not."""
    k = int(rng.integers(-6, 2))
    if trial % 3 == 0:
        ea, eb = int(rng.integers(-10, -1)), int(rng.integers(-10, -1))
        return 2.0 ** ea, 2.0 ** eb, 2.0 ** (ea + eb - k)
    sa, sb = np.float32(2.0 ** rng.uniform(-12, 0)), np.float32(2.0 ** rng.uniform(-12, 0))
    if trial % 3 == 1:
        return float(sa), float(sb), float(np.float32(sa * sb) / np.float32(2.0 ** k))
    return float(sa), float(sb), float(np.float32(sa * sb / 2.0 ** rng.uniform(-14, 3)))


@pytest.mark.parametrize("profile", ["tflite_int8", "tflite_int16x8"])
def test_mul_kernel_equals_litert_on_every_path(rng, profile):
    """int8: reference and builtin rescale (a - zp_a)(b - zp_b) by gemmlowp's
    MultiplyByQuantizedMultiplier with the float32 multiplier f32(f32(s_a s_b) / s_out); XNNPACK by
    RNE(f32(acc) * f32(f32(s_a s_b) / s_out)). int16: the gemmlowp rule on every path (XNNPACK
    takes no int16 op). Exhaustive input codes per channel, random constants and zero points."""
    dtype = np.int8 if profile == "tflite_int8" else np.int16
    lim = np.iinfo(dtype)
    ties = saturated = path_differs = clamped = double_differs = 0
    for activation in _ACT:
        flatbuffer, op = _mul_file(profile, activation, rng)
        (ia, ib), (io,) = op.inputs, op.outputs
        for trial in range(TRIALS):
            sa, sb, so = _scales(rng, trial)
            b = rng.integers(lim.min, lim.max + 1, CHANNELS).astype(dtype)
            b[trial % CHANNELS] = lim.min if trial % 2 else lim.max
            edits = {ia: dict(scale=sa), ib: dict(scale=sb, data=b), io: dict(scale=so)}
            zps = (0, 0, 0)
            if dtype == np.int8:
                zps = tuple(int(v) for v in rng.integers(-128, 128, 3))
                for i, z in zip((ia, ib, io), zps):
                    edits[i]["zero_point"] = z
            f = patch_tensors(flatbuffer, edits)
            tm = qd.from_tflite(f)
            if dtype == np.int8:
                x = np.repeat(np.arange(-128, 128, dtype=np.int8)[:, None], CHANNELS, 1)   # every code
            else:
                x = rng.integers(lim.min, lim.max + 1, (256, CHANNELS)).astype(dtype)
                x[:2] = [[lim.min], [lim.max]]
            acc = (x.astype(np.int64) - zps[0]) * (b.astype(np.int64) - zps[1])
            exact = acc * float(np.float32(np.float32(sa) * np.float32(sb)) / np.float32(so))   # the kernels' ratio
            ties += int(trial % 3 != 2 and np.any(exact % 1 == 0.5))
            got = {}
            for kernels in RESOLVERS:
                _, expected = run_litert(f, kernels, x)
                got[kernels] = tm.run(x, kernels=kernels)
                assert np.array_equal(got[kernels], expected), \
                    (profile, activation, trial, kernels, (sa, sb, so), zps, b, np.argwhere(got[kernels] != expected)[:5])
            if activation == "linear":
                # The same rule with the multiplier computed in double, as tflite-semantics.md's
                # other ops do, is a different answer on some files: the float32 product matters.
                m, shift = qd.quantize_multiplier(sa * sb / so)
                doubled = qd.requantize(acc.astype(np.int32), m, shift, method="gemmlowp", zero_point=zps[2],
                                        qmin=int(lim.min), qmax=int(lim.max))
                double_differs += int(not np.array_equal(doubled, got["reference"]))
            saturated += int(np.any((got["reference"] == lim.min) | (got["reference"] == lim.max)))
            path_differs += int(not np.array_equal(got["reference"], got["xnnpack"]))
            unclamped = np.clip(np.round(exact) + zps[2], lim.min, lim.max)
            clamped += int(activation != "linear" and np.any(got["reference"] > unclamped + 1))
    print(f"{profile} MUL: {3 * TRIALS} files; with ties {ties}, saturating {saturated}, fused clamp biting "
          f"{clamped}, XNNPACK's rule differing from the reference's {path_differs}, a double multiplier's "
          f"{double_differs}")
    assert ties >= TRIALS and saturated >= TRIALS and clamped >= TRIALS // 2, (ties, saturated, clamped)
    assert double_differs >= 3, double_differs
    if dtype == np.int8:
        assert path_differs >= TRIALS // 2, path_differs     # XNNPACK's rule is a different one
    else:
        assert path_differs == 0, path_differs


def test_mul_bindings_reject_bad_arguments():
    a = np.zeros(3, np.int8)
    with pytest.raises(qd.ShapeError, match="broadcast"):
        qd._core.mul_int8(a, np.zeros(2, np.int8), 0.1, 0, 0.1, 0, 0.1, 0)
    with pytest.raises(qd.ConfigError, match="kernel"):
        qd._core.mul_int8(a, a, 0.1, 0, 0.1, 0, 0.1, 0, kernel="ruy")
    with pytest.raises(qd.ConfigError, match="scales"):
        qd._core.mul_int8(a, a, 0.1, 0, 0.0, 0, 0.1, 0)
    with pytest.raises(qd.ConfigError, match="scales"):
        qd._core.mul_int16(a.astype(np.int16), a.astype(np.int16), 0.1, np.inf, 0.1)


def _bn_models(rng):
    """BatchNormalization that the converter does not fold: alone, first (before a Conv2D), after
    a tanh Dense, after a relu Dense / Conv2D (its MUL runs in place over the relu's buffer, so the
    calibrator's relu range covers the product), before a sigmoid, before Flatten -> Dense, after
    another unfolded one, after a dilated convolution, and with a relu / relu6 (fused into the ADD)
    after it."""
    specs = [((5,), [L.BatchNormalization()]),
             ((1,), [L.BatchNormalization(epsilon=1e-5)]),
             ((4, 4, 3), [L.BatchNormalization(epsilon=1e-5), L.Conv2D(2, 2)]),
             ((6,), [L.Dense(4, activation="tanh"), L.BatchNormalization()]),
             ((6,), [L.Dense(5, activation="relu"), L.BatchNormalization(), L.Activation("tanh")]),
             ((6, 5, 2), [L.Conv2D(3, 2, padding="same", activation="relu"), L.BatchNormalization(),
                          L.Activation("sigmoid"), L.Flatten(), L.Dense(2)]),
             ((6, 5, 2), [L.Conv2D(3, 2, padding="same", activation="relu6"), L.BatchNormalization(), L.Flatten(),
                          L.Dense(2)]),
             # two unfolded in a row stay two MUL + ADD pairs; after a dilated convolution (whose
             # bias is an ADD of its own, or absent) the BatchNormalization is not folded either
             ((6,), [L.Dense(5, activation="relu"), L.BatchNormalization(), L.BatchNormalization(epsilon=1e-5)]),
             ((7, 7, 2), [L.Conv2D(3, 3, dilation_rate=2, padding="same"), L.BatchNormalization()]),
             ((7, 7, 2), [L.Conv2D(3, 3, dilation_rate=2, padding="valid", activation="relu", use_bias=True),
                          L.BatchNormalization(), L.Flatten(), L.Dense(3)]),
             ((7, 6, 2), [L.DepthwiseConv2D(3, dilation_rate=2, padding="same", use_bias=False),
                          L.BatchNormalization(), L.Activation("sigmoid")]),
             # a relu / relu6 after it fuses into the ADD
             ((6,), [L.Dense(5, activation="tanh"), L.BatchNormalization(), L.ReLU(), L.BatchNormalization(),
                     L.Activation("relu6")])]
    for shape, layers in specs:
        km = keras.Sequential([keras.Input(shape)] + layers)
        randomize_weights(km, rng)
        yield km


@pytest.mark.parametrize("profile", ["tflite_int8", "tflite_int16x8"])
def test_unfolded_batch_norm_full_integer(rng, profile):
    """MUL(x, m) + ADD(shift), both constants quantized like activations over their own
    [min, max] (int8 asymmetric per tensor, int16 symmetric): the converter's file exactly from
    the calibrator's ranges; qdrift's own calibration equals those ranges exactly (in-place MUL and
    ADD widen their input 0, except the graph input and the graph output); LiteRT's outputs on
    every kernel path."""
    for km in _bn_models(rng):
        shape = km.input_shape[1:]
        cal = rng.normal(size=(5,) + shape).astype(np.float32)
        flatbuffer, calibrated = convert_with_tf(km, profile, cal)
        by_qdrift = qd.convert(km, profile, calibration=cal)
        ranges = calibrated_ranges(calibrated, by_qdrift)
        ours = qd.convert(km, profile, ranges=ranges)
        assert "MUL" in [op.name for op in ours.ops]
        compare_models(ours, qd.from_tflite(flatbuffer), (km.name, profile))
        compare_models(by_qdrift, ours, (km.name, profile, "own calibration"))
        x = rng.normal(size=(3,) + shape).astype(np.float32)
        for kernels in RESOLVERS:
            _, expected = run_litert(flatbuffer, kernels, x)
            assert np.array_equal(ours.run(x, kernels=kernels), expected), (km.name, profile, kernels)


@pytest.mark.parametrize("profile", ["tflite_dynamic", "tflite_fp16"])
def test_unfolded_batch_norm_chains_float_profiles(rng, profile):
    """The chains (the last five models: after an unfolded BatchNormalization or a dilated
    convolution, with a fused relu; the others are in test_convert.py) on the float-weight
    profiles (float MUL + ADD): the converter's file bit for bit and LiteRT's outputs on every path."""
    for km in list(_bn_models(rng))[-5:]:
        shape = km.input_shape[1:]
        flatbuffer, _ = convert_with_tf(km, profile)
        ours = qd.convert(km, profile)
        compare_models(ours, qd.from_tflite(flatbuffer), (km.name, profile))
        x = rng.normal(size=(2,) + shape).astype(np.float32)
        for kernels in RESOLVERS:
            _, expected = run_litert(flatbuffer, kernels, x)
            assert np.array_equal(ours.run(x, kernels=kernels), expected), (km.name, profile, kernels)
