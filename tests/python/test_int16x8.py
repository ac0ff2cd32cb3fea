"""The int16x8 profile (int16 activations, int8 per-channel weights, int64 or int32 biases):
qd.from_tflite(file).run(x, kernels=k) equals the real LiteRT interpreter bit for bit on every
kernel path, for random Keras models converted by the real TFLite converter; and what the paths
really compute differently on the same files (XNNPACK takes no int16 op; the builtin path differs
from the reference in QUANTIZE and in int32-bias FC/conv)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from ai_edge_litert import interpreter as litert  # noqa: E402

import qdrift as qd  # noqa: E402
from qdrift import _core  # noqa: E402
from test_tflite_kernels import RESOLVERS, run_litert  # noqa: E402


def convert_int16x8(km, calibration, bias="int64", int16_io=False, batch=1):
    """The real converter, int16x8 profile; calibration samples in batches of `batch`."""
    conv = tf.lite.TFLiteConverter.from_keras_model(km)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([calibration[i:i + batch]] for i in range(0, len(calibration), batch))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    if bias == "int32":
        conv._experimental_full_integer_quantization_bias_type = tf.int32
    if int16_io:
        conv.inference_input_type = tf.int16
        conv.inference_output_type = tf.int16
    return conv.convert()


def random_layers(rng, kind):
    """(input shape, Keras layers) for one random model of `kind`."""
    act = lambda: str(rng.choice(["linear", "relu", "relu6"]))  # noqa: E731
    if kind == "dense":
        shape = (int(rng.integers(1, 40)),)
        return shape, [keras.layers.Dense(int(rng.integers(1, 24)), activation=act()),
                       keras.layers.Dense(int(rng.integers(1, 12)), activation=str(rng.choice(["tanh", "sigmoid",
                                                                                                "linear"])))]
    if kind == "rnn":
        shape = (int(rng.integers(1, 6)), int(rng.integers(1, 5)))
        return shape, [keras.layers.SimpleRNN(int(rng.integers(1, 10)), unroll=True)]
    shape = (int(rng.integers(3, 10)), int(rng.integers(3, 10)), int(rng.integers(1, 6)))
    dilation = int(rng.choice([1, 1, 2]))
    common = dict(strides=1 if dilation > 1 else int(rng.integers(1, 3)), dilation_rate=dilation,
                  padding=str(rng.choice(["same", "valid"])), activation=act())
    k = int(rng.integers(1, 4))
    if dilation > 1:   # a VALID kernel must fit: effective size (k - 1) * d + 1
        k = min(k, (min(shape[:2]) - 1) // dilation + 1)
    if kind == "conv":
        groups = int(rng.choice([1, 1, 2])) if shape[2] % 2 == 0 else 1
        return shape, [keras.layers.Conv2D(groups * int(rng.integers(1, 4)), k, groups=groups, **common)]
    return shape, [keras.layers.DepthwiseConv2D(k, depth_multiplier=int(rng.integers(1, 3)), **common)]


def random_model(rng, kind, batch):
    """A random Keras model; unrolled RNNs get a static batch (a dynamic one builds the zero state
    with SHAPE/FILL ops at run time)."""
    shape, layers = random_layers(rng, kind)
    km = keras.Sequential([keras.Input(shape, batch_size=batch if kind == "rnn" else None), *layers])
    km.set_weights([rng.normal(0, float(rng.uniform(0.2, 1.0)), w.shape).astype(np.float32)
                    for w in km.get_weights()])
    return shape, km


def outputs_on_every_path(flatbuffer, x):
    """LiteRT's output and qdrift's, per path; asserts they are equal."""
    tm = qd.from_tflite(flatbuffer)
    outs = {}
    for kernels in RESOLVERS:
        _, expected = run_litert(flatbuffer, kernels, x)
        ours = tm.run(x, kernels=kernels)
        assert ours.dtype == expected.dtype
        assert np.array_equal(ours, expected), (kernels, np.abs(ours.astype(np.float64) - expected).max())
        outs[kernels] = expected
    return outs


def random_input(rng, shape, batch, int16_io):
    if int16_io:
        return rng.integers(-32768, 32768, (batch,) + shape).astype(np.int16)
    return (rng.normal(size=(batch,) + shape) * rng.uniform(0.5, 1.5)).astype(np.float32)


def stack_layers(rng, bias):
    """Conv -> (depthwise: int64 only, LiteRT rejects int32-bias depthwise) -> Dense(tanh | sigmoid) -> Dense."""
    shape = (int(rng.integers(4, 8)), int(rng.integers(4, 8)), int(rng.integers(1, 4)))
    layers = [keras.layers.Conv2D(int(rng.integers(2, 5)), 3, padding="same", activation="relu")]
    if bias == "int64":
        layers.append(keras.layers.DepthwiseConv2D(3, strides=2, activation="relu6"))
    layers += [keras.layers.Flatten(), keras.layers.Dense(int(rng.integers(2, 9)), activation=str(rng.choice(
        ["tanh", "sigmoid"]))), keras.layers.Dense(3)]
    return shape, layers


MODELS_PER_CASE = 12
CASES = [(kind, bias) for kind in ("dense", "conv", "depthwise", "rnn", "stack") for bias in ("int64", "int32")
         if (kind, bias) != ("depthwise", "int32")]


@pytest.mark.parametrize("kind,bias", CASES)
def test_random_int16x8_models_equal_litert_on_every_path(rng, kind, bias):
    """Random models (shapes, strides, padding, dilation, groups, fused RELU/RELU6, tanh/sigmoid,
    unrolled SimpleRNN, batch 1-3), half with float input/output (QUANTIZE/DEQUANTIZE), half with
    int16 input/output: qdrift equals LiteRT on each path, and XNNPACK equals builtin (it takes no
    int16 op, so the default interpreter runs the builtin kernels)."""
    for trial in range(MODELS_PER_CASE):
        batch = int(rng.integers(1, 4))
        if kind == "stack":
            shape, layers = stack_layers(rng, bias)
            km = keras.Sequential([keras.Input(shape), *layers])
            km.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in km.get_weights()])
        else:
            shape, km = random_model(rng, kind, batch)
        int16_io = trial % 2 == 1
        calibration = rng.normal(size=(8 * batch,) + shape).astype(np.float32)
        flatbuffer = convert_int16x8(km, calibration, bias=bias, int16_io=int16_io,
                                     batch=batch if kind == "rnn" else 1)
        x = random_input(rng, shape, batch, int16_io)
        outs = outputs_on_every_path(flatbuffer, x)
        assert np.array_equal(outs["xnnpack"], outs["builtin"]), (kind, bias, trial)


def test_int32_bias_depthwise_is_rejected_by_litert_and_by_qdrift(rng):
    """The converter writes an int32 bias for an int16 DEPTHWISE_CONV_2D when asked, but LiteRT's
    Prepare accepts only int64 there; qdrift refuses the file the same way instead of guessing."""
    km = keras.Sequential([keras.Input((5, 5, 2)), keras.layers.DepthwiseConv2D(3)])
    flatbuffer = convert_int16x8(km, rng.normal(size=(4, 5, 5, 2)).astype(np.float32), bias="int32")
    x = rng.normal(size=(1, 5, 5, 2)).astype(np.float32)
    for kernels in RESOLVERS:
        with pytest.raises(RuntimeError, match="bias->type != kTfLiteInt64"):
            run_litert(flatbuffer, kernels, x)
        with pytest.raises(qd.UnsupportedError, match="int32 bias"):
            qd.from_tflite(flatbuffer).run(x, kernels=kernels)


def cancelling_model(rng, kind):
    """Weights whose columns sum to ~0, calibrated on near-constant inputs: the outputs are small,
    so the output multipliers are large (right shifts of 1-3) and the rounding rules disagree often."""
    if kind == "dense":
        km = keras.Sequential([keras.Input((16,)), keras.layers.Dense(24)])
        shape = (16,)
    else:
        groups = 2 if kind == "grouped" else 1
        km = keras.Sequential([keras.Input((8, 8, 8)), keras.layers.Conv2D(12, 3, groups=groups)])
        shape = (8, 8, 8)
    w = rng.normal(0, 1, km.get_weights()[0].shape).astype(np.float32)
    w -= w.mean(axis=tuple(range(w.ndim - 1)), keepdims=True)
    km.set_weights([w, rng.normal(0, 0.01, km.get_weights()[1].shape).astype(np.float32)])

    def sample(n):
        base = rng.normal(size=(n,) + (1,) * len(shape))
        return (base + 0.01 * rng.normal(size=(n,) + shape)).astype(np.float32)
    return km, sample


@pytest.mark.parametrize("kind", ["dense", "conv", "grouped"])
def test_which_paths_differ_on_the_same_file(rng, kind):
    """Measured on ai-edge-litert 2.3: with int64 bias the reference and builtin paths agree bit
    for bit (FC: RHA((double)acc * M) on both; conv: the 16-bit reduced multiplier on both); with
    int32 bias the builtin FC and ungrouped conv run ruy (two round-half-up steps) while the
    reference runs RHA in double (FC) or gemmlowp double rounding (conv); grouped conv falls back to
    the reference kernel. XNNPACK equals builtin throughout."""
    km, sample = cancelling_model(rng, kind)
    for bias in ("int64", "int32"):
        flatbuffer = convert_int16x8(km, sample(32), bias=bias, int16_io=True)
        t_in = qd.from_tflite(flatbuffer).input_details
        x = np.clip(np.round(sample(40) / t_in["scale"][0]), -32768, 32767).astype(np.int16)
        for row in x[:8]:      # batch 1 too: no custom GEMV for int16, the same ruy kernel
            outputs_on_every_path(flatbuffer, row[np.newaxis])
        outs = outputs_on_every_path(flatbuffer, x)
        assert np.array_equal(outs["xnnpack"], outs["builtin"])
        differ = int(np.sum(outs["reference"] != outs["builtin"]))
        if bias == "int32" and kind != "grouped":
            # 5-25% of the outputs with right shifts of 1-3 (a negative tie every 2^(n+1) values).
            assert differ > outs["reference"].size // 50, (kind, bias, differ)
        else:
            assert differ == 0, (kind, bias, differ)


def test_quantize_rounding_and_extremes(rng):
    """float -> int16 QUANTIZE: the reference divides and rounds half away; the builtin kernel (NEON
    code through NEON_2_SSE on x86) multiplies by f32(1/s) and rounds half to even in blocks of 8,
    and divides in double with half-away rounding for the n % 8 tail. +inf, NaN and values beyond
    int32 become INT32_MIN in the float->int conversion, so they quantize to -32768 on every path."""
    km = keras.Sequential([keras.Input((13,)), keras.layers.Dense(13)])
    flatbuffer = convert_int16x8(km, rng.normal(size=(8, 13)).astype(np.float32))
    tm = qd.from_tflite(flatbuffer)
    quantize = tm.ops[0]
    scale = np.float32(tm.tensors[quantize.outputs[0]].scale[0])
    # Exact ties k + 0.5 (RHA and RNE disagree on even k) at every position, plus random values.
    ties = ((np.arange(-6, 7) + 0.5) * np.float64(scale)).astype(np.float32)
    x = np.concatenate([np.tile(ties, (3, 1)), rng.normal(size=(200, 13)).astype(np.float32)])
    x[0, :7] = [np.inf, -np.inf, np.nan, 1e10, -1e10, 3e4, 1e30]
    codes = {}
    for kernels in RESOLVERS:
        it = litert.Interpreter(model_content=flatbuffer, experimental_preserve_all_tensors=True,
                                experimental_op_resolver_type=getattr(litert.OpResolverType, RESOLVERS[kernels]))
        it.resize_tensor_input(it.get_input_details()[0]["index"], x.shape)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        expected = it.get_tensor(quantize.outputs[0])
        ours = _core.quantize_int16(x, float(scale), 0, rule="reference" if kernels == "reference" else "neon_blocks")
        assert np.array_equal(ours, expected), kernels
        assert list(ours[0, :7]) == [-32768, -32768, -32768, -32768, -32768, 32767, -32768]
        codes[kernels] = ours
    x[0, :7] = 0   # the FC's int64 sums stay in range once the extremes are gone
    outputs_on_every_path(flatbuffer, x)   # end to end, with the QUANTIZE inside
    assert np.array_equal(codes["builtin"], codes["xnnpack"])
    flat_ref, flat_builtin = codes["reference"].ravel(), codes["builtin"].ravel()
    blocked = np.arange(flat_ref.size) < flat_ref.size - flat_ref.size % 8
    assert np.any(flat_ref[blocked] != flat_builtin[blocked])          # RNE vs RHA on ties in the blocks
    assert np.array_equal(flat_ref[~blocked], flat_builtin[~blocked])  # the tail rounds half away too


@pytest.mark.parametrize("function", ["tanh", "sigmoid"])
def test_tanh_and_logistic_every_int16_input(rng, function):
    """All 65536 int16 inputs through a lone TANH / LOGISTIC: both TFLite kernels run the
    interpolated sigmoid table of reference_integer_ops (not the gemmlowp fixed-point reference,
    not LUTPopulateInt16), for any input scale that is not a power of two. A power-of-two input
    scale takes the table with multiplier 3 << shift on the reference path, and gemmlowp's 16-bit
    fixed-point tanh / logistic (input read as Q3.12) on the builtin path. "Power of two" is CheckedLog2's
    1e-3 tolerance in log2, so a calibrated range of exactly +-8.0 (scale 8/32767, 0.003% above
    2^-12) counts, and so does +-16.0 for tanh (its shift may be 0 or 1; logistic's only 0)."""
    x = np.arange(-32768, 32768, dtype=np.int16).reshape(1, -1)
    km = keras.Sequential([keras.Input((x.size,)), keras.layers.Activation(function)])
    pot_limits = (8.0, 32767 / 4096, 16.0) if function == "tanh" else (8.0, 32767 / 4096)
    for limit in (0.3, 2.5, float(rng.uniform(1, 7.9)), 16.0, *pot_limits):
        calibration = rng.uniform(-limit, limit, (3, x.size)).astype(np.float32)
        calibration[0, 0] = limit            # the calibrated range is exactly [-limit, limit]
        flatbuffer = convert_int16x8(km, calibration, int16_io=True)
        tm = qd.from_tflite(flatbuffer)
        scale = float(tm.input_details["scale"][0])
        # The converter's int16 activation scale, max(|min|, |max|) / 32767 (tflite-semantics.md §2.6).
        assert scale == qd.tflite.activation_params_int16(float(calibration.min()), limit)[0], limit
        power_of_two = _core.int16_table_input("tanh" if function == "tanh" else "logistic", scale)[2]
        assert power_of_two == (limit in pot_limits), (limit, scale)
        if not power_of_two:
            outputs_on_every_path(flatbuffer, x)
            continue
        outs = outputs_on_every_path(flatbuffer, x)
        assert np.sum(outs["builtin"] != outs["reference"]) > 0   # two different algorithms


def test_sigmoid_table_is_sigmoid():
    """LiteRT's table holds sigmoid(i / 24) in 0.16 fixed point, tuned within 1.2 LSB (it is not any
    one rounding of the formula: round-half-up misses 44 of the 256 entries)."""
    table = _core.sigmoid_table_uint16().astype(np.float64)
    exact = 65536 / (1 + np.exp(-np.arange(256) / 24))
    assert np.abs(table - exact).max() < 1.2
    assert table[0] == 32768 and table[-1] == 65535 and np.all(np.diff(table) >= 0)


def test_canonical_examples(rng):
    """DESIGN.md's three examples under int16x8, calibrated on a few random inputs: Dense(1) with
    kernel 1.5 on 2.0, an all-ones 3x3 conv on a 5x5 image of ones, and SimpleRNN(4) all-ones over
    5 steps of ones (unrolled: FC, FC, ADD, TANH per step). qdrift equals LiteRT on every path,
    with int64 and int32 bias. Calibrated on the random inputs alone, the dense input 2.0 lies
    beyond the calibrated range and saturates (the answer is 1.5 * max(calibration), not 3.0);
    with the example input in the calibration set, the results are within int16 rounding of float."""
    dense = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    dense.set_weights([np.array([[1.5]], np.float32)])
    conv = keras.Sequential([keras.Input((5, 5, 1)), keras.layers.Conv2D(1, 3, use_bias=False)])
    conv.set_weights([np.ones((3, 3, 1, 1), np.float32)])
    rnn = keras.Sequential([keras.Input((5, 1), batch_size=1),
                            keras.layers.SimpleRNN(4, use_bias=False, unroll=True)])
    rnn.set_weights([np.ones((1, 4), np.float32), np.ones((4, 4), np.float32)])
    for km, x in ((dense, np.array([[2.0]], np.float32)), (conv, np.ones((1, 5, 5, 1), np.float32)),
                  (rnn, np.ones((1, 5, 1), np.float32))):
        random_calibration = rng.uniform(0, 1.5, (4,) + x.shape[1:]).astype(np.float32)
        for bias in ("int64", "int32"):
            outs = outputs_on_every_path(convert_int16x8(km, random_calibration, bias=bias), x)
            if km is dense:   # saturated at the calibrated maximum, to int16 rounding
                assert abs(float(outs["reference"][0, 0]) - 1.5 * random_calibration.max()) < 1e-3
            outs = outputs_on_every_path(convert_int16x8(km, np.concatenate([random_calibration, x]), bias=bias), x)
            # Float answers 3.0, 9.0, ~1.0: each of input, weight and output rounding is at most
            # half a step of range / 32767 (weights: range / 127), so 1e-3 relative covers them.
            assert np.allclose(outs["reference"], np.asarray(km(x)), rtol=1e-3, atol=1e-4), \
                (km.name, bias, outs["reference"].ravel()[:4])


@pytest.mark.parametrize("kind", ["dense", "conv", "grouped"])
def test_per_tensor_weights(rng, kind):
    """_experimental_disable_per_channel: one weight scale (the builtin per-tensor FC multiplier
    uses the float32 product s_in * s_w); bit-exact on every path with both bias types.
    (Per-tensor int16x8 depthwise does not convert: the old quantizer fails on its axis 3.)"""
    km, sample = cancelling_model(rng, kind)
    for bias in ("int64", "int32"):
        conv = tf.lite.TFLiteConverter.from_keras_model(km)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        calibration = sample(16)
        conv.representative_dataset = lambda: ([calibration[i:i + 1]] for i in range(len(calibration)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        conv._experimental_disable_per_channel = True
        if bias == "int32":
            conv._experimental_full_integer_quantization_bias_type = tf.int32
        flatbuffer = conv.convert()
        tm = qd.from_tflite(flatbuffer)
        assert all(t.scale.size == 1 for t in tm.tensors if t.dtype == np.int8)
        outputs_on_every_path(flatbuffer, sample(20))


def test_add_with_fused_relu_and_broadcasting(rng):
    """int16 ADD (inputs << 15, gemmlowp rescaling; the converter writes pot_scale_int16 = false) with
    a fused RELU / RELU6 (Keras Add + ReLU fuses) and a broadcast (batch, n) + (batch, 1) operand."""
    fused = set()
    for trial in range(6):
        n = int(rng.integers(1, 40))
        inp = keras.Input((n,))
        s = keras.layers.Add()([keras.layers.Dense(n)(inp), keras.layers.Dense(n)(inp)])
        s = [keras.layers.ReLU(), keras.layers.ReLU(6.0), keras.layers.Identity()][trial % 3](s)
        km = keras.Model(inp, keras.layers.Add()([s, keras.layers.Dense(1)(inp)]))
        km.set_weights([rng.normal(0, 1, w.shape).astype(np.float32) for w in km.get_weights()])
        flatbuffer = convert_int16x8(km, rng.normal(size=(8, n)).astype(np.float32))
        fused |= {op.options["activation"] for op in qd.from_tflite(flatbuffer).ops if op.name == "ADD"}
        outputs_on_every_path(flatbuffer, (2 * rng.normal(size=(3, n))).astype(np.float32))
    assert fused == {0, 1, 3}   # none, RELU, RELU6 all occurred


def test_dilated_conv_data_movement_int16_and_int8(rng):
    """A dilated Conv2D converts to SPACE_TO_BATCH_ND -> CONV_2D -> BATCH_TO_SPACE_ND (the padding
    moves into SPACE_TO_BATCH_ND, filled with the zero point). The data movement is the same for
    any dtype, so int8 files with dilation run too."""
    from test_from_tflite import convert as convert_int8
    for trial in range(4):
        km = keras.Sequential([keras.Input((9, 8, 3)), keras.layers.Conv2D(4, 3, dilation_rate=int(rng.integers(2, 4)),
                                                                          padding=str(rng.choice(["same", "valid"])))])
        km.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in km.get_weights()])
        calibration = rng.normal(size=(8, 9, 8, 3)).astype(np.float32) + 0.5 * trial   # int8: zero point != 0
        for flatbuffer in (convert_int16x8(km, calibration), convert_int8(km, calibration, False)):
            names = [op.name for op in qd.from_tflite(flatbuffer).ops]
            assert "SPACE_TO_BATCH_ND" in names and "BATCH_TO_SPACE_ND" in names
            outputs_on_every_path(flatbuffer, rng.normal(size=(2, 9, 8, 3)).astype(np.float32))


def test_out_of_range_requantization_gives_the_bottom_code():
    """A Dense whose output never left 0 in calibration gets a subnormal int16 output scale
    (FLT_MIN / 32767: the calibrator's max starts at FLT_MIN, the old quantizer has no zero-range
    guard), so at run time acc * M is far beyond int32. LiteRT's cast gives INT32_MIN there (x86's
    integer indefinite), clamped to -32768 -- for a positive product too; saturating would give
    +32767. Measured on every path; qdrift's double_rha requantization does the same."""
    for sign in (1.0, -1.0):
        km = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
        km.set_weights([np.array([[sign], [0.0]], np.float32)])
        cal = np.stack([np.zeros(8), np.linspace(-1, 1, 8)], 1).astype(np.float32)   # output always 0
        flatbuffer = convert_int16x8(km, cal)
        tm = qd.from_tflite(flatbuffer)
        x = np.array([[1.0, 0.0]], np.float32)
        for kernels in RESOLVERS:
            _, expected = run_litert(flatbuffer, kernels, x)
            assert expected.ravel()[0] == np.float32(-32768 * np.float32(tm.tensors[2].scale[0])), expected
            assert np.array_equal(tm.run(x, kernels=kernels), expected), (sign, kernels)
