"""One experiment point: read a config with the strict C++ reader, build the model, the data and
the quantized candidate from its normalized form, run both and measure (DESIGN.md §5)."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import pathlib
import threading

import numpy as np

from . import _core, layers
from .model import QuantConfig, Sequential

EVAL_STREAM, CALIBRATION_STREAM, SHUFFLE_STREAM = 0, 1, 2   # data RNG streams: default_rng([seed, stream])


def load_text(config):
    """(JSON text, base folder for relative data paths) of a path, a JSON string or a dict."""
    if isinstance(config, dict):
        return json.dumps(config), os.getcwd()
    if isinstance(config, os.PathLike) or (isinstance(config, str) and not config.lstrip().startswith("{")):
        path = pathlib.Path(config)
        try:
            text = path.read_text()
        except OSError as e:
            raise _core.ConfigError(f"{path}: cannot read the config ({e.strerror})") from None
        return text, str(path.resolve().parent)
    return str(config), os.getcwd()


def parse(config, base_dir=None) -> dict:
    """The normalized config (every key present, defaults filled) of a path, JSON text or dict.
    Unknown keys, wrong types and bad values raise qd.ConfigError naming the JSON pointer.
    Relative data paths resolve against base_dir (default: the config file's folder, else the
    current folder)."""
    text, folder = load_text(config)
    return json.loads(_core.parse_experiment(text, str(base_dir or folder)))


def point_key(normalized_text: str) -> str:
    """The identity of a point: a hash of its normalized config text."""
    return hashlib.sha256(normalized_text.encode()).hexdigest()[:20]


# ---- model ------------------------------------------------------------------------------------
def build_model(model_cfg: dict, seed: int) -> Sequential:
    init = model_cfg["init"]
    built = []
    for spec in model_cfg["layers"]:
        kind, name = spec["type"], spec["name"]
        if kind == "dense":
            layer = layers.Dense(spec["units"], activation=spec["activation"], use_bias=spec["use_bias"],
                                 kernel_initializer=init["kernel"], bias_initializer=init["bias"], name=name)
        elif kind == "conv2d":
            layer = layers.Conv2D(spec["filters"], tuple(spec["kernel_size"]), strides=tuple(spec["strides"]),
                                  padding=spec["padding"], dilation_rate=tuple(spec["dilation_rate"]),
                                  groups=spec["groups"], activation=spec["activation"], use_bias=spec["use_bias"],
                                  kernel_initializer=init["kernel"], bias_initializer=init["bias"], name=name)
        elif kind == "depthwise_conv2d":
            layer = layers.DepthwiseConv2D(tuple(spec["kernel_size"]), strides=tuple(spec["strides"]),
                                           padding=spec["padding"], depth_multiplier=spec["depth_multiplier"],
                                           dilation_rate=tuple(spec["dilation_rate"]), activation=spec["activation"],
                                           use_bias=spec["use_bias"], depthwise_initializer=init["kernel"],
                                           bias_initializer=init["bias"], name=name)
        elif kind == "simple_rnn":
            layer = layers.SimpleRNN(spec["units"], activation=spec["activation"], use_bias=spec["use_bias"],
                                     return_sequences=spec["return_sequences"], go_backwards=spec["go_backwards"],
                                     kernel_initializer=init["kernel"], recurrent_initializer=init["recurrent"],
                                     bias_initializer=init["bias"], name=name)
        elif kind == "batch_normalization":
            layer = layers.BatchNormalization(epsilon=spec["epsilon"], name=name)
        elif kind == "activation":
            layer = layers.Activation(spec["activation"], name=name)
        elif kind == "flatten":
            layer = layers.Flatten(name=name)
        elif kind == "reshape":
            layer = layers.Reshape(tuple(spec["target_shape"]), name=name)
        else:  # the C++ reader accepts exactly the types above
            raise _core.UnsupportedError(f"layer type '{kind}'")
        built.append(layer)
    model = Sequential(built, model_cfg["input_shape"], seed=seed)
    if model_cfg["weights"]:
        current = model.get_weights()
        model.set_weights({k: np.full(current[k].shape, v, np.float32) for k, v in model_cfg["weights"].items()})
    return model


# ---- data -------------------------------------------------------------------------------------
def _rows(x, cfg, input_shape, where):
    n, m = cfg["batch"], cfg["calibration_batch"]
    if x.ndim == 0 or len(x) < max(n, m):
        raise _core.ConfigError(f"{where}: has {0 if x.ndim == 0 else len(x)} samples; /data/batch and "
                                f"/data/calibration_batch need {max(n, m)}")
    if int(np.prod(x.shape[1:])) != int(np.prod(input_shape)):
        raise _core.ConfigError(f"{where}: samples of shape {x.shape[1:]} do not fit /model/input_shape "
                                f"{list(input_shape)}")
    x = np.ascontiguousarray(x.reshape((len(x),) + tuple(input_shape)), dtype=np.float32)
    return x[:n], x[len(x) - m:]


def digits(seed) -> tuple:
    """scikit-learn's bundled digits (no download), shuffled by default_rng([seed, 2]):
    (1797 images as rows of 64 pixels / 16 in [0, 1], their labels 0..9)."""
    from sklearn.datasets import load_digits
    data = load_digits()
    order = np.random.default_rng([seed, SHUFFLE_STREAM]).permutation(len(data.target))
    return data.data[order] / 16.0, data.target[order].astype(np.int64)


def make_data(data_cfg: dict, input_shape) -> tuple:
    """(evaluation inputs, calibration inputs), float32, deterministic from the data seed.
    Synthetic kinds draw the two sets from independent streams; files and digits take the first
    `batch` rows for evaluation and the last `calibration_batch` rows for calibration."""
    kind, seed, shape = data_cfg["kind"], data_cfg["seed"], tuple(input_shape)
    n, m = data_cfg["batch"], data_cfg["calibration_batch"]
    if kind in ("normal", "uniform", "constant"):
        def draw(stream, count):
            rng = np.random.default_rng([seed, stream])
            if kind == "normal":
                x = rng.normal(data_cfg["mean"], data_cfg["std"], (count,) + shape)
            elif kind == "uniform":
                x = rng.uniform(data_cfg["low"], data_cfg["high"], (count,) + shape)
            else:
                x = np.full((count,) + shape, data_cfg["value"])
            return np.ascontiguousarray(x, dtype=np.float32)
        return draw(EVAL_STREAM, n), draw(CALIBRATION_STREAM, m)
    if kind == "digits":
        return _rows(digits(seed)[0], data_cfg, shape, "/data (digits)")
    try:
        if kind == "npy":
            x = np.load(data_cfg["path"], allow_pickle=False)
        else:
            with np.load(data_cfg["path"], allow_pickle=False) as archive:
                names = archive.files
                x = archive[data_cfg["key"]] if data_cfg["key"] in names else None
    except (OSError, ValueError) as e:
        raise _core.ConfigError(f"/data/path: cannot read {data_cfg['path']} ({e})") from None
    if x is None:
        raise _core.ConfigError(f"/data/key: '{data_cfg['key']}' is not in {data_cfg['path']}; it has {names}")
    return _rows(np.asarray(x), data_cfg, shape, "/data/path")


# ---- quantized candidate ----------------------------------------------------------------------
def quant_config(quant_cfg: dict) -> QuantConfig:
    return QuantConfig(weights=quant_cfg["weights"], activations=quant_cfg["activations"], bias=quant_cfg["bias"],
                       state=quant_cfg["state"], overrides=quant_cfg["overrides"],
                       fold_batch_norm=quant_cfg["fold_batch_norm"])


class _OnKernels:
    """A converted TFLite model run on one LiteRT kernel path, in the run(x, taps) form qd.compare takes."""

    def __init__(self, tflite_model, kernels):
        self.tflite_model, self.kernels = tflite_model, kernels

    def run(self, x, taps=False):
        return self.tflite_model.run(x, kernels=self.kernels, taps=taps)


def candidate(model: Sequential, quant_cfg: dict, x_cal):
    """The quantized model for the config's profile: a fake-quantized qd.Sequential, or the TFLite
    converter's model (qd.convert) on the chosen kernel path."""
    if quant_cfg["profile"] == "fake":
        return model.quantize(quant_config(quant_cfg), calibration=x_cal)
    from .convert import convert   # the TFLite converter emulation
    return _OnKernels(convert(model, profile=quant_cfg["profile"], calibration=x_cal), quant_cfg["kernels"])


# ---- PTQ vs QAT training arms (the "train" section) ----------------------------------------------
def metric_names(cfg: dict) -> list:
    """A point's metric names in their fixed order (the DataFrame's columns): the config's
    /analysis/metrics, or with a "train" section per arm: accuracy, loss (and the metrics)."""
    if "train" not in cfg:
        return list(cfg["analysis"]["metrics"])
    return ["float_accuracy", "float_loss"] + [f"{arm}_{m}" for arm in cfg["train"]["arms"]
                                               for m in ["accuracy", "loss"] + cfg["analysis"]["metrics"]]


def labelled_data(data_cfg: dict, input_shape) -> dict:
    """The digits rows of a training point: evaluation (first `batch`), training (last
    `train_batch`) and calibration (last `calibration_batch`, inside the training rows), with
    labels, float32 inputs in `input_shape`."""
    x, y = digits(data_cfg["seed"])
    n, k, m = data_cfg["batch"], data_cfg["train_batch"], data_cfg["calibration_batch"]
    x_eval, _ = _rows(x[:n], dict(data_cfg, calibration_batch=0), input_shape, "/data (digits)")
    x_train, x_cal = _rows(x[len(x) - k:], dict(data_cfg, batch=k), input_shape, "/data (digits)")
    return dict(x_eval=x_eval, y_eval=y[:n], x_train=x_train, y_train=y[len(y) - k:], x_cal=x_cal)


def train_targets(labels, loss: str):
    """fit/evaluate targets: the labels for cross-entropy, one-hot float32 rows for mse."""
    return labels if loss == "cross_entropy" else np.eye(10, dtype=np.float32)[labels]


def fit_phase(model: Sequential, x, y, phase: dict, loss: str, seed: int):
    """One training phase of the config (Sequential.fit; the batch order from the seed)."""
    opt = {k: v for k, v in phase["optimizer"].items() if not (k == "momentum" and phase["optimizer"]["kind"] != "sgd")}
    return model.fit(x, y, epochs=phase["epochs"], batch_size=phase["batch_size"], loss=loss, optimizer=opt,
                     seed=seed, verbose=False)


_FLOAT_CACHE, _FLOAT_LOCKS, _FLOAT_GUARD, _FLOAT_CACHE_SIZE = {}, {}, threading.Lock(), 8


def float_models(cfg: dict, data: dict) -> tuple:
    """(pretrained, float arm = pretrained + the arms' fine-tuning), both float. Points that differ
    only in /quant share them (a bits sweep pretrains once per seed): a small per-process cache,
    keyed by everything the two depend on, computed once per key even on several threads. The
    training is deterministic, so a cached pair is bit for bit the pair a fresh run gives."""
    t = cfg["train"]
    key = json.dumps([cfg["model"], cfg["data"], cfg["seed"], t["pretrain"], t["loss"],
                      {k: t[k] for k in ("epochs", "batch_size", "optimizer")}], sort_keys=True)
    with _FLOAT_GUARD:
        lock = _FLOAT_LOCKS.setdefault(key, threading.Lock())
    with lock:
        with _FLOAT_GUARD:
            pair = _FLOAT_CACHE.get(key)
        if pair is None:
            y = train_targets(data["y_train"], t["loss"])
            pretrained = build_model(cfg["model"], cfg["seed"])
            fit_phase(pretrained, data["x_train"], y, t["pretrain"], t["loss"], cfg["seed"])
            trained = copy.deepcopy(pretrained)
            fit_phase(trained, data["x_train"], y, t, t["loss"], cfg["seed"])
            pair = (pretrained, trained)
            with _FLOAT_GUARD:
                while len(_FLOAT_CACHE) >= _FLOAT_CACHE_SIZE:   # drop the oldest
                    oldest = next(iter(_FLOAT_CACHE))
                    del _FLOAT_CACHE[oldest]
                    _FLOAT_LOCKS.pop(oldest, None)
                _FLOAT_CACHE[key] = pair
    return copy.deepcopy(pair[0]), copy.deepcopy(pair[1])   # the arms train and quantize their own copies


def run_training(cfg: dict) -> dict:
    """A point with a "train" section: pretrain in float, then the arms on the same budget --
    float: `train.epochs` more in float; ptq: that float model quantized (calibrated on the
    training rows); qat: the pretrained model quantized with qat=True (lsq per the config) and
    trained `train.epochs`. Metrics per arm: "<arm>_accuracy", "<arm>_loss" on the evaluation
    rows, and for ptq/qat the output's qd.compare metrics against the float arm ("<arm>_<metric>");
    curves: {arm: qd.compare report}."""
    from .analysis import compare
    t, a = cfg["train"], cfg["analysis"]
    data = labelled_data(cfg["data"], cfg["model"]["input_shape"])
    pretrained, trained = float_models(cfg, data)
    y_eval = train_targets(data["y_eval"], t["loss"])

    def scores(model):
        result = model.evaluate(data["x_eval"], y_eval, loss=t["loss"])
        if "accuracy" not in result:   # mse against one-hot labels: the same argmax accuracy
            result["accuracy"] = float(np.mean(np.argmax(model.predict(data["x_eval"]), axis=1) == data["y_eval"]))
        return {"accuracy": result["accuracy"], "loss": result["loss"]}

    metrics = {f"float_{k}": v for k, v in scores(trained).items()}
    curves = {}
    for arm in t["arms"]:
        if arm == "ptq":
            qm = trained.quantize(quant_config(cfg["quant"]), calibration=data["x_cal"])
        else:
            qm = pretrained.quantize(quant_config(cfg["quant"]), qat=True, lsq=t["lsq"], calibration=data["x_cal"])
            fit_phase(qm, data["x_train"], train_targets(data["y_train"], t["loss"]), t, t["loss"], cfg["seed"])
        metrics.update({f"{arm}_{k}": v for k, v in scores(qm).items()})
        report = compare(trained, qm, data["x_eval"], isolated=a["isolated"], attribution=a["attribution"],
                         predict=a["predict"], per_timestep=a["per_timestep"]).to_dict()
        report.pop("meta", None)
        output = next(r for r in report["layers"] if r["layer"] == report["output"] and r["mode"] == "accumulated")
        metrics.update({f"{arm}_{m}": output[m] for m in a["metrics"]})
        curves[arm] = report
    return {"metrics": metrics, "curves": curves}


# ---- one point ----------------------------------------------------------------------------------
def run_normalized(cfg: dict) -> dict:
    """Run one normalized point config: {"metrics": the output's metrics, "curves": qd.compare's
    report as plain records (per layer, per RNN step, growth fits, ...)}; a "train" section runs
    the PTQ/QAT arms instead (run_training)."""
    from .analysis import compare
    if "train" in cfg:
        return run_training(cfg)
    model = build_model(cfg["model"], cfg["seed"])
    x, x_cal = make_data(cfg["data"], model.input_shape)
    cand = candidate(model, cfg["quant"], x_cal)
    a = cfg["analysis"]
    fake = cfg["quant"]["profile"] == "fake"
    report = compare(model, cand, x, isolated=a["isolated"] and fake, attribution=a["attribution"],
                     predict=a["predict"], per_timestep=a["per_timestep"]).to_dict()
    report.pop("meta", None)   # describes the run (batch, candidate type), already in the config
    output = next(r for r in report["layers"] if r["layer"] == report["output"] and r["mode"] == "accumulated")
    return {"metrics": {m: output[m] for m in a["metrics"]}, "curves": report}


def run_point_text(normalized_text: str) -> dict:
    """A sweep worker's job (a plain function of text, so Dask can ship it)."""
    return run_normalized(json.loads(normalized_text))


def run(config) -> dict:
    """Run a config's base point (its sweep ignored): the normalized config, metrics and curves."""
    text, base_dir = load_text(config)
    normalized = _core.experiment_point(text, "{}", base_dir)
    return dict(key=point_key(normalized), config=json.loads(normalized), **run_point_text(normalized))
