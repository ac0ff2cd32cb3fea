"""qd.Sequential quantization: which points get quantized, overrides, BN folding arithmetic,
calibration rules and taps."""
import numpy as np
import pytest

import qdrift as qd


def cnn(seed=0):
    return qd.Sequential([qd.layers.Conv2D(6, 3, padding="same", name="conv"), qd.layers.BatchNormalization(name="bn"),
                          qd.layers.ReLU(name="relu"), qd.layers.Flatten(name="flat"), qd.layers.Dense(4, name="head")],
                         input_shape=(6, 6, 2), seed=seed)


def test_fold_batch_norm_is_the_float32_formula(rng):
    k = rng.normal(size=(3, 3, 2, 6)).astype(np.float32)
    b = rng.normal(size=6).astype(np.float32)
    g, be, m = (rng.normal(size=6).astype(np.float32) for _ in range(3))
    v = rng.uniform(0.1, 2, 6).astype(np.float32)
    k2, b2 = qd.ops.fold_batch_norm(k, b, g, be, m, v, 1e-3)
    mult = (g / np.sqrt(v + np.float32(1e-3))).astype(np.float32)       # all float32, as the converter folds
    assert np.array_equal(k2, (k * mult).astype(np.float32))
    assert np.array_equal(b2, (b * mult + (be - m * mult)).astype(np.float32))


def test_folded_model_matches_float_and_quantizes_the_folded_weights(rng):
    m = cnn()
    m.set_weights({"bn/gamma": rng.uniform(0.5, 2, 6), "bn/moving_variance": rng.uniform(0.1, 3, 6),
                   "bn/moving_mean": rng.normal(size=6), "bn/beta": rng.normal(size=6)})
    x = rng.normal(size=(5, 6, 6, 2)).astype(np.float32)
    no_quant = qd.QuantConfig(weights=None, activations=None)
    folded = m.quantize(no_quant)
    assert [l.name for l in folded.layers] == ["conv", "relu", "flat", "head"]
    # Folding reorders float32 arithmetic only: within 1e-5 of the unfolded model.
    assert np.allclose(folded(x), m(x), rtol=1e-5, atol=1e-5)
    q4 = m.quantize(qd.QuantConfig(weights=dict(bits=4, symmetric=True, granularity="per_channel"), activations=None))
    w = q4.quant["conv"].weights["kernel"].fake_quant(q4.layer("conv").weights["kernel"])
    for c in range(6):   # at most 2^4 distinct values per output channel
        assert len(np.unique(w[..., c])) <= 16


def test_overrides_and_disabled_points(rng):
    m = cnn()
    x = rng.normal(size=(8, 6, 6, 2)).astype(np.float32)
    cfg = qd.QuantConfig(overrides={"head": {"weights": dict(bits=2, symmetric=True, granularity="per_channel"),
                                             "activations": None}})
    qm = m.quantize(cfg, calibration=x)
    head = qm.quant["head"]
    assert head.output is None
    assert '"bits":2' in head.weights["kernel"].spec_json().replace(" ", "")
    assert qm.quant["conv"].output is not None
    with pytest.raises(qd.ConfigError, match="/overrides: no layer named \\['nope'\\]"):
        m.quantize(qd.QuantConfig(overrides={"nope": {}}), calibration=x)
    with pytest.raises(qd.ConfigError, match="unknown quantization point"):
        m.quantize(qd.QuantConfig(overrides={"head": {"weight": None}}), calibration=x)
    with pytest.raises(qd.ConfigError, match="need calibration data"):
        m.quantize(qd.QuantConfig())
    dyn = m.quantize(qd.QuantConfig(activations=dict(bits=8, mode="dynamic")))   # no calibration needed
    assert np.isfinite(dyn(x)).all()


def test_rnn_state_is_quantized_every_step(rng):
    m = qd.Sequential([qd.layers.SimpleRNN(6, return_sequences=True, name="rnn")], input_shape=(7, 3), seed=2)
    x = rng.normal(size=(4, 7, 3)).astype(np.float32)
    qm = m.quantize(qd.QuantConfig(weights=None, activations=None, state=dict(bits=4)), calibration=x)
    _, taps = qm(x, taps=True)
    states = taps["rnn/states"]
    p = qm.quant["rnn"].state.params
    codes = states / float(p.scale) + int(p.zero_point)
    assert np.allclose(codes, np.round(codes), atol=1e-3)        # every step's state sits on the 4-bit grid
    assert len(np.unique(np.round(codes))) <= 16
    _, float_taps = m(x, taps=True)
    assert float_taps["rnn/states"].shape == (4, 7, 6)


def test_initializers_are_deterministic():
    a, b, c = cnn(seed=3).get_weights(), cnn(seed=3).get_weights(), cnn(seed=4).get_weights()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["conv/kernel"], c["conv/kernel"])
    w = qd.Sequential([qd.layers.SimpleRNN(5)], input_shape=(3, 2)).get_weights()["simple_rnn_0/recurrent_kernel"]
    assert np.allclose(w @ w.T, np.eye(5), atol=1e-6)              # orthogonal recurrent kernel
