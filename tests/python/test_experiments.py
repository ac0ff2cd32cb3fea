"""Experiment configs and sweeps: the strict reader's JSON pointers, schema/README/reader sync,
point construction against a hand-built oracle, determinism, Dask == local, kill -9 resume."""
import copy
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jsonschema
import numpy as np
import pytest

import qdrift as qd
from qdrift import experiments
from qdrift.sweep import expand

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.json") if p.name != "experiment.schema.json")
SCHEMA = json.loads((ROOT / "configs" / "experiment.schema.json").read_text())

BASE = {"name": "tiny", "seed": 3,
        "model": {"input_shape": [6, 2],
                  "layers": [{"type": "simple_rnn", "units": 4, "return_sequences": True, "name": "rnn"},
                             {"type": "dense", "units": 2, "name": "head"}]},
        "data": {"kind": "normal", "batch": 4},
        "quant": {"weights": {"bits": 4, "symmetric": True, "granularity": "per_channel"},
                  "activations": {"bits": 8}, "state": {"bits": 8}}}


def with_(path, value, base=BASE):
    """BASE with the value at a slash path set (a missing leaf is created; value None deletes)."""
    c = copy.deepcopy(base)
    keys = [int(k) if k.isdigit() else k for k in path.strip("/").split("/")]
    node = c
    for k in keys[:-1]:
        node = node[k]
    if value is DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return c


DELETE = object()
# A training point small enough for a test: 64 training digits, 2 + 1 epochs.
TRAIN = {"name": "tiny_train", "seed": 3,
         "model": {"input_shape": [8, 8],
                   "layers": [{"type": "simple_rnn", "units": 8, "name": "rnn"},
                              {"type": "dense", "units": 10, "name": "head"}]},
         "data": {"kind": "digits", "batch": 40, "train_batch": 64, "calibration_batch": 32},
         "quant": {"weights": {"bits": 4, "symmetric": True}, "activations": {"bits": 8}, "state": {"bits": 8}},
         "train": {"pretrain": {"epochs": 2, "batch_size": 16, "optimizer": {"kind": "adam", "lr": 0.01}},
                   "epochs": 1, "batch_size": 16, "optimizer": {"kind": "sgd", "lr": 0.05, "momentum": 0.5},
                   "loss": "cross_entropy", "lsq": True}}
CONV = {"model": {"input_shape": [5, 5, 1], "layers": [{"type": "conv2d", "filters": 4, "kernel_size": 3}]}}

# (config, the JSON pointer the ConfigError must start with)
MALFORMED = [
    (with_("/modle", {}), "/modle"),                                                        # unknown key
    (with_("/model/layers/0/unit", 3), "/model/layers/0/unit"),
    (with_("/data/stdd", 1.0), "/data/stdd"),
    (with_("/quant/weights/bitz", 4), "/quant/weights/bitz"),
    (with_("/data/low", -1.0), "/data/low"),                                               # key of another kind
    (with_("/model/layers/1/return_sequences", True), "/model/layers/1/return_sequences"),  # key of another type
    (with_("/model/layers/0/type", "simple_rn"), "/model/layers/0/type"),                  # enum typos
    (with_("/quant/weights/granularity", "per_chanel"), "/quant/weights/granularity"),
    (with_("/quant/profile", "tflite_int9"), "/quant/profile"),
    (with_("/data/kind", "gaussian"), "/data/kind"),
    (with_("/model/layers/1/activation", "gelu"), "/model/layers/1/activation"),
    (with_("/analysis", {"metrics": ["sqnr"]}), "/analysis/metrics/0"),
    (with_("/quant/weights/bits", "8"), "/quant/weights/bits"),                            # wrong types
    (with_("/model/layers/0/units", 4.5), "/model/layers/0/units"),
    (with_("/model/layers", {"type": "dense"}), "/model/layers"),
    (with_("/data/batch", True), "/data/batch"),
    (with_("/name", 7), "/name"),
    (with_("/quant/weights/bits", -4), "/quant/weights/bits"),                             # bad values
    (with_("/quant/state/bits", 1), "/quant/state/bits"),
    (with_("/model/layers/0/units", 0), "/model/layers/0/units"),
    (with_("/model/input_shape", [6, -2]), "/model/input_shape/1"),
    (with_("/model/input_shape", []), "/model/input_shape"),
    (with_("/model/layers", []), "/model/layers"),
    (with_("/model/layers/1/name", "rnn"), "/model/layers/1/name"),                        # duplicate name
    (with_("/model/layers/1/name", "a/b"), "/model/layers/1/name"),
    (with_("/data/std", -1.0), "/data/std"),
    (with_("/data/batch", 0), "/data/batch"),
    (with_("/seed", -1), "/seed"),
    (with_("/format_version", 2), "/format_version"),
    (with_("/model", DELETE), "/model"),                                                   # missing required
    (with_("/model/layers/1/units", DELETE), "/model/layers/1/units"),
    (with_("/data", {"kind": "npy", "path": "no/such/file.npy"}), "/data/path"),            # missing data file
    (with_("/data", {"kind": "npz", "path": "missing.npz"}), "/data/path"),
    (with_("/data", {"kind": "npy", "path": "data.csv"}), "/data/path"),
    (with_("/data", {"kind": "npy"}), "/data/path"),
    (with_("/data", {"kind": "digits", "batch": 2000}), "/data/batch"),
    (with_("/quant/overrides", {"haed": {"weights": None}}), "/quant/overrides/haed"),
    (with_("/quant/overrides", {"head": {"weight": None}}), "/quant/overrides/head/weight"),
    (with_("/quant/overrides", {"head": {"weights": {"granularity": "per_group"}}}),
     "/quant/overrides/head/weights/group_size"),
    (with_("/quant", {"profile": "tflite_int8", "weights": {"bits": 8}}), "/quant/weights"),
    (with_("/quant", {"profile": "tflite_int8", "kernels": "xnpack"}), "/quant/kernels"),
    (with_("/analysis", {"metrics": ["mse", "mse"]}), "/analysis/metrics/1"),
    (with_("/train", {"loss": "l2"}), "/train/loss"),
    (with_("/train", {"optimizer": {"kind": "sgd", "momentum": 1.0}}), "/train/optimizer/momentum"),
    (with_("/train", {"arms": []}), "/train/arms"),
    (with_("/train/pretrain/epoch", 3, TRAIN), "/train/pretrain/epoch"),                  # the training keys
    (with_("/train/metric", "accuracy", TRAIN), "/train/metric"),
    (with_("/train/pretrain/optimizer/kind", "adamw", TRAIN), "/train/pretrain/optimizer/kind"),
    (with_("/train/pretrain/optimizer/lr", 0, TRAIN), "/train/pretrain/optimizer/lr"),
    (with_("/train/pretrain/epochs", 0, TRAIN), "/train/pretrain/epochs"),
    (with_("/train/pretrain", [2], TRAIN), "/train/pretrain"),
    (with_("/train/lsq", "yes", TRAIN), "/train/lsq"),
    (with_("/train/pretrain/optimizer/momentum", 0.9, TRAIN), "/train/pretrain/optimizer/momentum"),  # adam
    (with_("/train/arms", ["qat", "float"], TRAIN), "/train/arms/1"),
    (with_("/train", {}), "/data/kind"),                                                   # needs labels
    (with_("/quant", {"profile": "tflite_int8"}, TRAIN), "/quant/profile"),                # QAT is fake quant
    (with_("/data/train_batch", 1797 - 39, TRAIN), "/data/train_batch"),                   # overlaps evaluation
    (with_("/data/train_batch", 0, TRAIN), "/data/train_batch"),
    (with_("/data/calibration_batch", 65, TRAIN), "/data/calibration_batch"),              # outside training rows
    (with_("/data/train_batch", 64), "/data/train_batch"),                                 # digits only
    (with_("/model/weights", {"head/kernal": 1.0}), "/model/weights/head~1kernal"),
    (with_("/model/weights", {"dense/kernel": 1.0}), "/model/weights/dense~1kernel"),
    (dict(CONV, model=dict(CONV["model"], layers=[dict(CONV["model"]["layers"][0], groups=3)])),
     "/model/layers/0/groups"),
    (dict(CONV, model=dict(CONV["model"], layers=[dict(CONV["model"]["layers"][0], kernel_size=[3])])),
     "/model/layers/0/kernel_size"),
    (with_("/sweep", {"quant/weights/bits": [4]}), "/sweep/quant~1weights~1bits"),         # bad grid pointers
    (with_("/sweep", {"/quant~2x": [4]}), "/sweep/~1quant~02x"),                   # "~" escapes as "~0"
    (with_("/sweep", {"/seed": []}), "/sweep/~1seed"),
    (with_("/sweep", {"/seed": 1}), "/sweep/~1seed"),
    (with_("/sweep", [1]), "/sweep"),
    (with_("/sweep", {"/quant/weights/bits": [4, 1]}), "/sweep/~1quant~1weights~1bits/1"),
    (with_("/sweep", {"/quant/weights/bitz": [4]}), "/sweep/~1quant~1weights~1bitz/0"),
    (with_("/sweep", {"/model/layers/5/units": [4]}), "/sweep/~1model~1layers~15~1units/0"),
    (with_("/sweep", {"/model/layers/x/units": [4]}), "/sweep/~1model~1layers~1x~1units/0"),
    (with_("/sweep", {"/name/x": ["a"]}), "/sweep/~1name~1x/0"),
    (with_("/sweep", {"/sweep/x": [1]}), "/sweep/~1sweep~1x/0"),
    (with_("/sweep", {"/quant": [{}], "/quant/weights/bits": [4]}), "/sweep/~1quant~1weights~1bits"),
    (with_("/sweep", {"/data/kind": ["npy"]}), "/sweep/~1data~1kind/0"),
]


def test_at_least_30_malformed_configs():
    assert len(MALFORMED) >= 30


@pytest.mark.parametrize("config,pointer", MALFORMED, ids=[p for _, p in MALFORMED])
def test_malformed_config_names_the_pointer(config, pointer):
    with pytest.raises(qd.ConfigError) as e:
        experiments.parse(config)
    assert str(e.value).startswith(pointer + ": "), f"expected {pointer!r}, got: {e.value}"


def test_invalid_json_and_combination_errors():
    with pytest.raises(qd.ConfigError, match=r"^/: invalid JSON"):
        experiments.parse('{"model": ')
    for text in ('{"seed": 1e999}', '{"model": 22e2222}'):   # nlohmann's out_of_range, found by the fuzzer
        with pytest.raises(qd.ConfigError, match=r"^/: invalid JSON"):
            experiments.parse(text)
    with pytest.raises(qd.ConfigError, match=r"^/: invalid JSON"):
        qd._core.Quantizer('{"bits": 1e999}')
    # Each value is valid alone; only the point (entropy, 16 bits) needs more bins than 2048.
    config = with_("/sweep", {"/quant/activations/observer": ["minmax", "entropy"], "/quant/activations/bits": [8, 16]})
    experiments.parse(config)
    with pytest.raises(qd.ConfigError, match=r"^/quant/activations/bins: .*\(in sweep point .*entropy"):
        expand(config)


def test_defaults_match_the_python_api():
    c = experiments.parse(BASE)
    assert c["quant"]["bias"] is None and c["quant"]["fold_batch_norm"] is True
    default = experiments.parse(with_("/quant", {}))["quant"]
    assert default["weights"] == json.loads(qd.Quantizer(**qd.QuantConfig().weights).spec_json())
    assert default["activations"] == json.loads(qd.Quantizer(**qd.QuantConfig().activations).spec_json())
    assert default["state"] is None and default["bias"] is None
    assert c["data"]["seed"] == 3 and c["data"]["calibration_batch"] == 4
    assert [l["name"] for l in experiments.parse(CONV)["model"]["layers"]] == ["conv2d_0"]


# ---- schema and README stay in sync with the reader ---------------------------------------------
MAPS = {"/model/weights", "/quant/overrides", "/sweep"}                      # user-named keys
SPECS = {"/quant/weights", "/quant/activations", "/quant/bias", "/quant/state"}   # quantizer specs


def reader_pointers(value, at=""):
    """Generalized pointers (array index -> *) of a normalized config, down to specs and maps."""
    if at in MAPS or at in SPECS or not isinstance(value, (dict, list)) or \
            (isinstance(value, list) and not any(isinstance(v, dict) for v in value)):
        return {at}
    items = value.items() if isinstance(value, dict) else (("*", v) for v in value)
    return set().union(*(reader_pointers(v, f"{at}/{k}") for k, v in items))


def schema_node(node):
    while "$ref" in node:
        node = SCHEMA["$defs"][node["$ref"].split("/")[-1]]
    return node


def schema_pointers(node, at=""):
    node = schema_node(node)
    if at in MAPS or at in SPECS:
        return {at}
    if "properties" in node:
        return set().union(*(schema_pointers(v, f"{at}/{k}") for k, v in node["properties"].items()))
    if node.get("type") == "array" and "properties" in schema_node(node.get("items", {})):
        return schema_pointers(node["items"], f"{at}/*")
    return {at}


def every_key_config(tmp_path):
    """Configs that together make the reader write every key it accepts."""
    np.save(tmp_path / "x.npy", np.zeros((4, 6, 2), np.float32))
    np.savez(tmp_path / "x.npz", x=np.zeros((4, 6, 2), np.float32))
    layers = [{"type": t} for t in ("flatten", "batch_normalization")] + [
        {"type": "dense", "units": 2}, {"type": "conv2d", "filters": 2, "kernel_size": 1},
        {"type": "depthwise_conv2d", "kernel_size": 1}, {"type": "simple_rnn", "units": 2},
        {"type": "activation", "activation": "relu"}, {"type": "reshape", "target_shape": [2]}]
    full = dict(with_("/model/layers", layers), sweep={"/seed": [0, 1]})
    out = [full] + [with_("/data", {"kind": k, **extra}, full) for k, extra in
                    [("uniform", {}), ("constant", {}), ("digits", {}),
                     ("npy", {"path": str(tmp_path / "x.npy")}), ("npz", {"path": str(tmp_path / "x.npz")})]]
    return out + [with_("/quant", {"profile": "tflite_int8"}, full), dict(with_("/data", {"kind": "digits"}, full),
                                                                          train={})]


def test_schema_and_readme_list_exactly_the_reader_keys(tmp_path):
    accepted = set().union(*(reader_pointers(experiments.parse(c)) for c in every_key_config(tmp_path)))
    assert accepted == schema_pointers(SCHEMA)
    readme = (ROOT / "configs" / "README.md").read_text()
    assert accepted == set(re.findall(r"^\| `(/[^`]*)` \|", readme, flags=re.M))
    spec_keys = set(schema_node(SCHEMA["$defs"]["quant_spec"])["properties"])
    assert spec_keys == set(json.loads(qd.Quantizer().spec_json()))


def test_normalized_configs_validate_against_the_schema(tmp_path):
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for c in every_key_config(tmp_path) + [json.loads(p.read_text()) for p in CONFIGS]:
        validator.validate(c)
        validator.validate(experiments.parse(c))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_configs_validate(path):
    jsonschema.Draft202012Validator(SCHEMA).validate(json.loads(path.read_text()))
    normalized = experiments.parse(path)
    assert experiments.parse(normalized) == normalized              # normalizing is idempotent
    _, points = expand(path)
    assert len(points) == int(np.prod([len(v) for v in normalized["sweep"].values()]))


def test_sweep_into_a_section_left_out_reads_back_normalized():
    """A sweep over /quant/state/mode with no "state" section: the reader creates it; the
    normalized config (where the absent section is null) reads back unchanged (found by the
    fuzzer: the second read raised 'is null, not an object or array')."""
    c = copy.deepcopy(BASE)
    c["quant"].pop("state", None)
    c["sweep"] = {"/quant/state/mode": ["static", "dynamic"]}
    normalized = experiments.parse(c)
    assert experiments.parse(normalized) == normalized
    _, points = expand(normalized)
    assert [json.loads(p.normalized)["quant"]["state"]["mode"] for p in points] == ["static", "dynamic"]


# ---- one point: the same numbers as the model built by hand ---------------------------------------
def test_point_equals_hand_built_model():
    r = experiments.run(BASE)
    model = qd.Sequential([qd.layers.SimpleRNN(4, return_sequences=True, name="rnn"),
                           qd.layers.Dense(2, name="head")], input_shape=(6, 2), seed=3)
    x = np.random.default_rng([3, 0]).normal(0.0, 1.0, (4, 6, 2)).astype(np.float32)
    x_cal = np.random.default_rng([3, 1]).normal(0.0, 1.0, (4, 6, 2)).astype(np.float32)
    spec = lambda **kw: json.loads(qd.Quantizer(**kw).spec_json())   # noqa: E731
    qm = model.quantize(qd.QuantConfig(weights=spec(bits=4, symmetric=True, granularity="per_channel"),
                                       activations=spec(bits=8), state=spec(bits=8)), calibration=x_cal)
    y, yq = np.float64(model(x)), np.float64(qm(x))
    oracle = {"sqnr_db": 10 * np.log10(np.sum(y ** 2) / np.sum((yq - y) ** 2)), "mse": np.mean((yq - y) ** 2),
              "max_abs": np.max(np.abs(yq - y))}
    assert r["metrics"].keys() == oracle.keys()
    for name, value in oracle.items():   # rtol: the C++ metric kernels sum in another order than NumPy
        assert np.isclose(r["metrics"][name], value, rtol=1e-12, atol=0), (name, r["metrics"][name], value)
    report = qd.compare(model, qm, x).to_dict()
    report.pop("meta")
    assert r["curves"] == json.loads(json.dumps(report))
    assert {row["layer"] for row in report["timesteps"]} >= {"rnn"}     # per-step curves of the RNN


def test_data_sources(tmp_path):
    from sklearn.datasets import load_digits
    x = np.arange(5 * 12, dtype=np.float32).reshape(5, 12)
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "b.npz", inputs=x)
    shape = (6, 2)
    for data in [{"kind": "npy", "path": "a.npy"}, {"kind": "npz", "path": "b.npz", "key": "inputs"}]:
        cfg = experiments.parse(with_("/data", dict(data, batch=3, calibration_batch=2)), base_dir=tmp_path)
        ev, cal = experiments.make_data(cfg["data"], shape)
        assert np.array_equal(ev, x[:3].reshape(3, 6, 2)) and np.array_equal(cal, x[3:].reshape(2, 6, 2))
    with pytest.raises(qd.ConfigError, match=r"^/data/path: has 5 samples"):
        experiments.make_data(dict(cfg["data"], batch=6), shape)
    with pytest.raises(qd.ConfigError, match=r"^/data/key: 'x' is not in"):
        experiments.make_data(dict(cfg["data"], key="x"), shape)
    digits = experiments.parse(with_("/data", {"kind": "digits", "batch": 10, "seed": 5},
                                     with_("/model/input_shape", [8, 8, 1])))
    ev, cal = experiments.make_data(digits["data"], (8, 8, 1))
    order = np.random.default_rng([5, 2]).permutation(1797)
    oracle = load_digits().data.astype(np.float32) / np.float32(16)   # pixels 0..16 (exact in float32)
    assert np.array_equal(ev.reshape(10, 64), oracle[order[:10]])
    assert np.array_equal(cal.reshape(10, 64), oracle[order[-10:]])


def test_canonical_weights_and_constant_data():
    c = experiments.parse(ROOT / "configs" / "tflite_canonical_dense.json")
    model = experiments.build_model(c["model"], c["seed"])
    x, _ = experiments.make_data(c["data"], model.input_shape)
    assert np.array_equal(model(x), np.array([[3.0]], np.float32))   # kernel 1.5, input 2.0
    c = experiments.parse(ROOT / "configs" / "tflite_canonical_conv.json")
    model = experiments.build_model(c["model"], c["seed"])
    x, _ = experiments.make_data(c["data"], model.input_shape)
    assert np.array_equal(model(x), np.full((1, 3, 3, 1), 9.0, np.float32))


def test_train_defaults():
    c = experiments.parse(with_("/train", {}, with_("/data", {"kind": "digits", "batch": 97})))
    phase = {"epochs": 1, "batch_size": 32, "optimizer": {"kind": "sgd", "lr": 0.01, "momentum": 0.0,
                                                          "weight_decay": 0.0}}
    assert c["train"] == dict(phase, pretrain=phase, loss="mse", lsq=False, arms=["ptq", "qat"])
    assert c["data"]["train_batch"] == 1700 and c["data"]["calibration_batch"] == 97   # the rest of the 1797


# ---- training points: the same numbers as training.py called by hand -------------------------------
def hand_trained(config, bits, loss):
    """The float, PTQ and QAT arms of TRAIN built and trained by hand with qd's public API."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    order = np.random.default_rng([3, 2]).permutation(1797)              # the data seed's shuffle stream
    x = (digits.data[order] / 16.0).astype(np.float32).reshape(-1, 8, 8)
    y = digits.target[order]
    x_ev, y_ev, x_tr, y_tr, x_cal = x[:40], y[:40], x[-64:], y[-64:], x[-32:]
    target = (lambda t: t) if loss == "cross_entropy" else (lambda t: np.eye(10, dtype=np.float32)[t])
    model = qd.Sequential([qd.layers.SimpleRNN(8, name="rnn"), qd.layers.Dense(10, name="head")],
                          input_shape=(8, 8), seed=3)
    model.fit(x_tr, target(y_tr), epochs=2, batch_size=16, loss=loss, optimizer={"kind": "adam", "lr": 0.01,
              "weight_decay": 0.0}, seed=3, verbose=False)
    trained = copy.deepcopy(model)
    sgd = {"kind": "sgd", "lr": 0.05, "momentum": 0.5, "weight_decay": 0.0}
    trained.fit(x_tr, target(y_tr), epochs=1, batch_size=16, loss=loss, optimizer=sgd, seed=3, verbose=False)
    spec = lambda **kw: json.loads(qd.Quantizer(**kw).spec_json())   # noqa: E731
    qc = qd.QuantConfig(weights=spec(bits=bits, symmetric=True), activations=spec(bits=8), state=spec(bits=8))
    ptq = trained.quantize(qc, calibration=x_cal)
    qat = model.quantize(qc, qat=True, lsq=True, calibration=x_cal)
    qat.fit(x_tr, target(y_tr), epochs=1, batch_size=16, loss=loss, optimizer=sgd, seed=3, verbose=False)
    out = {}
    for arm, m in [("float", trained), ("ptq", ptq), ("qat", qat)]:
        r = m.evaluate(x_ev, target(y_ev), loss=loss)
        out[f"{arm}_loss"] = r["loss"]
        out[f"{arm}_accuracy"] = float(np.mean(np.argmax(m.predict(x_ev), axis=1) == y_ev))
        if arm != "float":
            y_f, y_q = np.float64(trained.predict(x_ev)), np.float64(m.predict(x_ev))
            out[f"{arm}_mse"] = float(np.mean((y_q - y_f) ** 2))
    return out


def test_training_points_equal_training_by_hand(tmp_path):
    config = with_("/analysis", {"metrics": ["mse"]},
                   with_("/sweep", {"/quant/weights/bits": [3, 8], "/train/loss": ["cross_entropy", "mse"]}, TRAIN))
    df = qd.sweep(config, out=tmp_path, threads=2, progress=False)
    assert list(df.columns) == ["index", "key", "/quant/weights/bits", "/train/loss", "float_accuracy", "float_loss",
                                "ptq_accuracy", "ptq_loss", "ptq_mse", "qat_accuracy", "qat_loss", "qat_mse", "curves"]
    for _, row in df.iterrows():
        oracle = hand_trained(config, row["/quant/weights/bits"], row["/train/loss"])
        for name, value in oracle.items():
            if name.endswith("_mse"):   # rtol: the C++ metric kernels sum in another order than NumPy
                assert np.isclose(row[name], value, rtol=1e-12, atol=0), (name, row[name], value)
            else:                      # the same training, bit for bit
                assert row[name] == value, (name, row["/quant/weights/bits"], row["/train/loss"], row[name], value)
        assert set(row["curves"]) == {"ptq", "qat"}
    assert df["float_loss"].nunique() == 2 and (df["float_accuracy"] >= 0.2).all()   # 10 classes: chance is 0.1
    # Resuming reads the same rows back; a fresh process-wide cache gives the same bits.
    assert qd.sweep(config, out=tmp_path, resume=True, progress=False).drop(columns="curves").equals(
        df.drop(columns="curves"))
    experiments._FLOAT_CACHE.clear()
    one = qd.sweep(config, threads=1, progress=False)
    assert one.drop(columns="curves").equals(df.drop(columns="curves"))
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        dask = qd.sweep(config, executor="dask", scheduler=client, out=tmp_path / "dask.jsonl", progress=False)
    assert lines_by_key(tmp_path / "dask.jsonl") == lines_by_key(tmp_path / "tiny_train.jsonl")


# ---- sweeps ---------------------------------------------------------------------------------------
GRID = with_("/sweep", {"/quant/weights/bits": [3, 4, 8], "/quant/activations/mode": ["static", "dynamic"],
                        "/seed": [0, 1]})


def lines_by_key(path):
    lines = pathlib.Path(path).read_text().splitlines()
    keys = [json.loads(l)["key"] for l in lines]
    assert len(keys) == len(set(keys)), "duplicate points in the results file"
    return {k: l for k, l in zip(keys, lines)}


def test_sweep_is_deterministic_across_threads(tmp_path):
    one = qd.sweep(GRID, out=tmp_path / "one.jsonl", threads=1, progress=False)
    two = qd.sweep(GRID, out=tmp_path / "two.jsonl", threads=2, progress=False)
    assert len(one) == 12 and list(one["index"]) == list(range(12))
    assert lines_by_key(tmp_path / "one.jsonl") == lines_by_key(tmp_path / "two.jsonl")
    assert one.drop(columns="curves").equals(two.drop(columns="curves"))
    assert sorted(one.columns) == sorted(["index", "key", "/quant/activations/mode", "/quant/weights/bits", "/seed",
                                          "sqnr_db", "mse", "max_abs", "curves"])
    # More bits, less error: a sanity check on the columns' meaning (same seed and mode).
    s = one.set_index(["/seed", "/quant/activations/mode", "/quant/weights/bits"])["mse"]
    assert (s.xs(3, level=2) > s.xs(8, level=2)).all()


def test_dask_executor_equals_local(tmp_path):
    from distributed import Client, LocalCluster
    local = qd.sweep(GRID, out=tmp_path / "local.jsonl", progress=False)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        dask = qd.sweep(GRID, executor="dask", scheduler=client, out=tmp_path / "dask.jsonl", progress=False)
    assert lines_by_key(tmp_path / "local.jsonl") == lines_by_key(tmp_path / "dask.jsonl")
    assert local.drop(columns="curves").equals(dask.drop(columns="curves"))


def test_resume_skips_finished_points_and_cuts_a_torn_line(tmp_path):
    out = tmp_path / "r.jsonl"
    full = qd.sweep(GRID, out=out, progress=False)
    reference = lines_by_key(out)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:5]) + lines[5][:40])       # five finished points and a torn sixth
    with pytest.raises(qd.ConfigError, match="^out: .* already has results"):
        qd.sweep(GRID, out=out, progress=False)
    resumed = qd.sweep(GRID, out=out, resume=True, progress=False)
    assert lines_by_key(out) == reference
    assert out.read_text().splitlines()[:5] == [l.rstrip("\n") for l in lines[:5]]   # kept, not rerun
    assert resumed.drop(columns="curves").equals(full.drop(columns="curves"))
    out.write_text(lines[0] + "garbage\n" + lines[1])
    with pytest.raises(qd.DataError, match=r"r.jsonl:2: not a JSON line"):
        qd.sweep(GRID, out=out, resume=True, progress=False)


def test_a_failing_point_stops_the_sweep_and_names_itself(tmp_path):
    np.save(tmp_path / "two.npy", np.zeros((2, 6, 2), np.float32))   # a valid file with too few samples
    config = with_("/sweep", {"/seed": list(range(6))}, with_("/data", {"kind": "npy", "path": str(tmp_path / "two.npy")}))
    with pytest.raises(qd.ConfigError, match=r"^/data/path: has 2 samples.*\(sweep point \d: \{\"/seed\": \d\}\)"):
        qd.sweep(config, out=tmp_path, threads=2, progress=False)
    assert (tmp_path / "tiny.jsonl").read_text() == ""


def _cli(*args, **kw):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen([sys.executable, "-m", "qdrift", *args], env=env, **kw)


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path):
    # Big enough that the sweep is still running when the first points are on disk.
    config = with_("/sweep", {"/quant/weights/bits": [2, 3, 4, 5, 6, 7, 8, 9, 10, 12],
                              "/quant/activations/bits": [4, 6, 8, 10, 12, 16], "/seed": [0]},
                   with_("/model/input_shape", [40, 8], with_("/data/batch", 32)))
    (tmp_path / "c.json").write_text(json.dumps(config))
    killed = tmp_path / "killed"
    proc = _cli("sweep", str(tmp_path / "c.json"), "--out", str(killed), "--threads", "2", "--no-progress",
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    results = killed / "tiny.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists() and results.read_bytes().count(b"\n") >= 5:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    finished = results.read_bytes().count(b"\n")
    assert 5 <= finished < 60, f"{finished} points were on disk at the kill; the test needs an unfinished sweep"
    resume = _cli("sweep", str(tmp_path / "c.json"), "--out", str(killed), "--resume", "--no-progress",
                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert resume.wait(timeout=300) == 0, resume.stderr.read().decode()
    qd.sweep(config, out=tmp_path / "clean", progress=False)
    assert lines_by_key(results) == lines_by_key(tmp_path / "clean" / "tiny.jsonl")   # all 60, bit for bit


def test_cli_validate_and_run(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(with_("/quant/weights/granularity", "per_chanel")))
    proc = _cli("validate", str(bad), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "ConfigError: /quant/weights/granularity: unknown value 'per_chanel'" in err.decode()
    good = tmp_path / "good.json"
    good.write_text(json.dumps(GRID))
    proc = _cli("validate", str(good), stdout=subprocess.PIPE)
    assert proc.communicate(timeout=60)[0].decode().strip().endswith("valid ('tiny', 12 points)")
    proc = _cli("run", str(good), "--json", stdout=subprocess.PIPE)
    assert json.loads(proc.communicate(timeout=60)[0])["metrics"] == experiments.run(GRID)["metrics"]


@pytest.mark.parametrize("name", ["dense", "conv", "rnn"])
def test_canonical_tflite_points_are_qd_convert_on_each_kernel_path(name):
    path = ROOT / "configs" / f"tflite_canonical_{name}.json"
    df = qd.sweep(path, progress=False)
    c = experiments.parse(path)
    model = experiments.build_model(c["model"], c["seed"])
    x, x_cal = experiments.make_data(c["data"], model.input_shape)
    y = np.float64(model(x))
    profiles = [q["profile"] for q in df["/quant"]]
    assert {"tflite_int8", "tflite_int16x8", "tflite_dynamic", "tflite_fp16"} <= set(profiles)
    for _, row in df.iterrows():
        if row["/quant"]["profile"] == "fake":
            continue
        tm = qd.convert(model, profile=row["/quant"]["profile"], calibration=x_cal)
        err = np.float64(tm.run(x, kernels=row["/quant"]["kernels"])) - y
        # rtol: the C++ metric kernels sum in another order than NumPy (exact for these 1..36 elements
        # in practice; the bound is what the summation order allows).
        assert np.isclose(row["mse"], np.mean(err ** 2), rtol=1e-12, atol=0), (name, row["/quant"])
        assert row["max_abs"] == np.max(np.abs(err)), (name, row["/quant"])
