"""qdrift.tflite_compare: the real converter per profile, LiteRT per path (op resolver pinned) vs
qd.from_tflite per tensor, the int8 quantizer placement, the dynamic-range threshold helpers and
the mechanism table."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import qdrift as qd  # noqa: E402
from qdrift import tflite_compare as tc  # noqa: E402

L = keras.layers


def canonical_dense():
    km = keras.Sequential([keras.Input((1,)), L.Dense(1, use_bias=False, name="dense")])
    km.set_weights([np.array([[1.5]], np.float32)])
    return km


def small_cnn(rng):
    km = keras.Sequential([keras.Input((6, 6, 3)), L.Conv2D(8, 3, padding="same", name="conv"),
                           L.BatchNormalization(name="bn"), L.ReLU(name="relu"), L.Flatten(name="flatten"),
                           L.Dense(5, name="head")])
    km.set_weights([rng.normal(0, 0.4, w.shape).astype(np.float32) if i not in (5,) else
                    rng.uniform(0.5, 2.0, w.shape).astype(np.float32)        # index 5: BN moving variance
                    for i, w in enumerate(km.get_weights())])
    return km


def test_canonical_dense_every_profile_equals_litert():
    """Dense(1) kernel 1.5 on 2.0, calibrated on the input itself: every profile and path gives 3.0
    exactly (the calibrated ranges put 2.0 and 3.0 on the top code; dynamic range and float16 keep
    the weight float / exact), and every tensor qdrift computes equals LiteRT's."""
    km, x = canonical_dense(), np.array([[2.0]], np.float32)
    for profile in tc.PROFILES:
        c = tc.compare_tflite(km, profile, x, calibration=x, reference=np.asarray(km(x)))
        assert c.table.equal.all(), (profile, c.table[~c.table.equal])
        assert set(c.table.kernels) == set(tc.RESOLVERS)
        for k in tc.RESOLVERS:
            assert np.array_equal(c.qdrift[k], c.litert[k]) and np.all(c.litert[k] == 3.0), (profile, k, c.litert[k])
        assert (c.table[c.table.output].max_abs_err == 0).all()
    consts = tc.constants_table(qd.from_tflite(tc.convert_keras(km, "tflite_dynamic")))
    assert consts.to_dict("records") == [dict(op="FULLY_CONNECTED", role="weights", tensor=consts.tensor[0],
                                              dtype="float32", elements=1)]


def test_intermediate_tensors_equal_on_int8_and_dynamic(rng):
    """A conv + BN + ReLU + dense model: LiteRT's preserved intermediate tensors (reference and
    builtin) and the output (all paths) equal qdrift's, int8 and dynamic range; in the dynamic file
    the 216-weight conv stays float32 and the 1440-weight dense is int8 (the 1024 threshold)."""
    km = small_cnn(rng)
    x = rng.normal(size=(3, 6, 6, 3)).astype(np.float32)
    cal = rng.normal(size=(16, 6, 6, 3)).astype(np.float32)
    for profile in ("tflite_int8", "tflite_dynamic"):
        c = tc.compare_tflite(km, profile, x, calibration=cal)
        assert c.table.equal.all(), (profile, c.table[~c.table.equal])
        per_path = c.table.groupby("kernels").size()
        assert per_path["reference"] > 3 and per_path["builtin"] == per_path["reference"] and per_path["xnnpack"] == 1
    consts = tc.constants_table(c.model)
    weights = consts[consts.role == "weights"].set_index("elements")["dtype"].to_dict()
    assert weights == {216: "float32", 1440: "int8"}, consts
    qm = qd.from_keras(km).quantize(qd.QuantConfig(weights=dict(tc.INT8_WEIGHTS), activations=None))
    assert tc.dynamic_weight_names(qm) == ["head/weights/kernel"]


def test_int8_config_places_quantizers_like_the_converter(rng):
    """Conv (linear) -> BN -> ReLU: the BN folds and the ReLU fuses, so the only activation quantizer
    there is the ReLU's; Flatten keeps its input's parameters; the head's output is quantized. The
    fake-quant model then has one quantizer per int8 activation tensor of the real file, and its output
    is within one output step of the integer run on every sample (bias and requantization rounding)."""
    km = small_cnn(rng)
    mq = qd.from_keras(km)
    cal = rng.normal(size=(32, 6, 6, 3)).astype(np.float32)
    qm = mq.quantize(tc.int8_config(mq), calibration=cal)
    assert qm.quantizer_names() == ["input", "conv/weights/kernel", "relu/output", "head/weights/kernel",
                                    "head/output"]
    x = rng.normal(size=(8, 6, 6, 3)).astype(np.float32)
    flatbuffer = tc.convert_keras(km, "tflite_int8", calibration=cal)
    tm = qd.from_tflite(flatbuffer)
    y_int = tc.run_litert(flatbuffer, x)
    assert np.array_equal(tc.run_qdrift(tm, x), y_int)
    written = {o for op in tm.ops for o in op.outputs}
    assert sum(tm.tensors[i].dtype == np.int8 for i in written) == 4   # input, relu, flatten (= relu's), head
    out = next(op for op in tm.ops if op.name == "DEQUANTIZE")
    step = float(tm.tensors[out.inputs[0]].scale[0])
    # The converter's calibrator and qdrift see the same float ranges up to float32 summation order,
    # so the output step agrees to 1e-5 relative (the scales come from the same formula).
    assert abs(float(np.ravel(qm.quant["head"].output.params.scale)[0]) - step) <= 1e-5 * step
    assert np.abs(qm(x) - y_int).max() <= step * 1.001     # one output code (+ float32 dequantization)
    assert not tc.int8_config(mq, weights=False, activations=False, state=False).weights


def test_batch_one_rnn_runs_sample_by_sample():
    """The unrolled SimpleRNN file fixes batch 1: run_litert / run_qdrift feed the samples one at a
    time, concatenate the outputs and stack the taps; int8 saturates the canonical state at 127/128."""
    km = keras.Sequential([keras.Input((5, 1), batch_size=1), L.SimpleRNN(4, use_bias=False, unroll=True)])
    km.set_weights([np.ones((1, 4), np.float32), np.ones((4, 4), np.float32)])
    x = np.concatenate([np.ones((1, 5, 1)), np.full((1, 5, 1), 0.5)]).astype(np.float32)
    c = tc.compare_tflite(km, "tflite_int8", x, calibration=x)
    assert c.table.equal.all()
    assert c.litert["reference"].shape == (2, 4) and np.all(c.litert["reference"][0] == 127 / 128)
    assert all(s[0] == 2 for s in c.table["shape"])       # every tap stacked over the 2 samples


def test_mechanism_table_and_helpers():
    ref = np.zeros(4)
    steps = [("a", np.full(4, 1.0)), ("b", np.full(4, 2.0)), ("c", np.full(4, 1.5))]
    t = tc.mechanism_table(steps, ref)
    assert t["mse"].tolist() == [1.0, 4.0, 2.25]
    assert t["increment"].tolist() == [1.0, 3.0, -1.75]
    assert t["share"].sum() == pytest.approx(1.0, abs=1e-15)
    assert (tc.mechanism_table([("a", ref)], ref)["share"] == 0).all()     # no error at all: shares 0
    one = np.float32(1)
    assert tc.ulps(one, np.nextafter(one, np.float32(2))) == 1 and tc.ulps(np.float32(-0.0), np.float32(0.0)) == 0


def test_bad_arguments():
    km = canonical_dense()
    with pytest.raises(qd.ConfigError, match="unknown profile 'int8'"):
        tc.convert_keras(km, "int8")
    with pytest.raises(qd.ConfigError, match="needs calibration data"):
        tc.convert_keras(km, "tflite_int16x8")
    with pytest.raises(qd.ConfigError, match="unknown kernels 'fast'"):
        tc.run_litert(tc.convert_keras(km, "tflite_float"), np.ones((1, 1), np.float32), "fast")
