"""One experiment point: read a config with the strict C++ reader, build the model, the data and
the quantized candidate from its normalized form, run both and measure (DESIGN.md §5)."""
from __future__ import annotations

import hashlib
import json
import os
import pathlib

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
        from sklearn.datasets import load_digits   # bundled with scikit-learn: no download
        x = load_digits().data / 16.0               # 1797 8x8 images, pixels 0..16 -> [0, 1]
        x = x[np.random.default_rng([seed, SHUFFLE_STREAM]).permutation(len(x))]
        return _rows(x, data_cfg, shape, "/data (digits)")
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


# ---- one point ----------------------------------------------------------------------------------
def run_normalized(cfg: dict) -> dict:
    """Run one normalized point config: {"metrics": the output's metrics, "curves": qd.compare's
    report as plain records (per layer, per RNN step, growth fits, ...)}."""
    from .analysis import compare
    if "train" in cfg:
        raise _core.UnsupportedError("/train: the PTQ-vs-QAT training arms are not in this build; the section "
                                     "is validated only")
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
