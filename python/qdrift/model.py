"""qd.Sequential: an ordered list of named layers, run in float or under fake quantization, with
taps on every layer output and every RNN step; calibration with qd.QuantConfig; save/load."""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import _core
from .layers import (LAYER_TYPES, BatchNormalization, Conv2D, Dense, DepthwiseConv2D, Layer, LayerQuant, SimpleRNN,
                     _fq)
from .quantizer import Quantizer

POINTS = ("weights", "activations", "bias", "state")


@dataclass
class QuantConfig:
    """Which quantizer sits at each quantization point.

    weights:     kernels (Dense/Conv2D kernel, depthwise kernel, RNN kernel and recurrent kernel)
    activations: the model input and every layer's output
    bias:        biases (None keeps them float, as most integer backends use a wider bias)
    state:       an RNN's hidden state at every time step
    overrides:   {layer name: {point: spec or None}} replaces the defaults for one layer
    fold_batch_norm: fold BatchNormalization into the preceding Dense/Conv layer before
                 quantizing its weights (what the TFLite converter does)

    A spec is a dict of qd.Quantizer keywords; None leaves the point in float. Weights default
    to per-channel over the output-channel axis unless the spec sets granularity.
    """
    weights: Optional[dict] = field(default_factory=lambda: dict(bits=8, symmetric=True, narrow_range=True,
                                                                 granularity="per_channel"))
    activations: Optional[dict] = field(default_factory=lambda: dict(bits=8))
    bias: Optional[dict] = None
    state: Optional[dict] = None
    overrides: dict = field(default_factory=dict)
    fold_batch_norm: bool = True

    def spec(self, layer_name, point):
        over = self.overrides.get(layer_name, {})
        unknown = set(over) - set(POINTS)
        if unknown:
            raise _core.ConfigError(f"/overrides/{layer_name}: unknown quantization point(s) {sorted(unknown)}; "
                                    f"expected {', '.join(POINTS)}")
        return over[point] if point in over else getattr(self, point)


def _weight_quantizer(spec, weight_name, weight):
    spec = dict(spec)
    if spec.get("granularity", "per_tensor") == "per_channel" and "axis" not in spec:
        # Output channels: the last axis of Keras kernels; depthwise kernels' last two axes
        # (C, multiplier) are flattened into output channels by the converter; use C * M here.
        spec["axis"] = -1
    if weight_name == "depthwise_kernel" and spec.get("granularity") == "per_channel":
        weight = weight.reshape(weight.shape[:2] + (1, -1))
    return _frozen_on(Quantizer(**spec), weight), weight.shape


def _frozen_on(q, constant):
    """A quantizer for a constant tensor: static ones observe it once and freeze."""
    if q.observes:
        q.observe(np.ascontiguousarray(constant))
        q.freeze()
    return q


def _observes(q):
    return isinstance(q, Quantizer) and q.observes


def _tap_name(layer):
    # A layer with a BN folded in outputs what the BN did: its tap carries the BN's name.
    return getattr(layer, "folded", [layer.name])[-1]


class _ReshapedQuantizer:
    """Quantizes a weight through a reshaped view (depthwise kernels per output channel)."""

    def __init__(self, quantizer, view_shape):
        self.quantizer, self.view_shape = quantizer, view_shape

    def fake_quant(self, x):
        return self.quantizer.fake_quant(np.ascontiguousarray(x.reshape(self.view_shape))).reshape(x.shape)


class Sequential:
    """An ordered list of named layers with a fixed input shape (batch axis excluded).

    >>> m = qd.Sequential([qd.layers.Conv2D(8, 3, activation="relu"), qd.layers.Flatten(), qd.layers.Dense(10)],
    ...                   input_shape=(28, 28, 1), seed=0)
    >>> y = m(x)                       # float reference
    >>> y, taps = m(x, taps=True)      # every layer's output (and RNN states) by name
    """

    def __init__(self, layers, input_shape, seed=0, name="sequential", build=True):
        self.layers = list(layers)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.seed, self.name = int(seed), name
        self.quant: dict = {}            # layer name -> LayerQuant (empty for a float model)
        self.input_quantizer = None
        names = set()
        for i, layer in enumerate(self.layers):
            if layer.name is None:
                layer.name = f"{layer.kind}_{i}"
            if layer.name in names:
                raise _core.ConfigError(f"Sequential: duplicate layer name '{layer.name}'")
            names.add(layer.name)
        if build:
            self._build()

    def _build(self):
        shape = self.input_shape
        for i, layer in enumerate(self.layers):
            layer.build(shape, np.random.default_rng([self.seed, i]))
            shape = layer.output_shape

    @property
    def output_shape(self):
        return self.layers[-1].output_shape if self.layers else self.input_shape

    def layer(self, name) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named '{name}'; layers: {[l.name for l in self.layers]}")

    # ---- running -------------------------------------------------------------------------
    def __call__(self, x, taps=False, path="auto"):
        x = np.asarray(x)
        if x.dtype != np.float32:
            raise _core.DTypeError(f"{self.name}: the input must be float32, got {x.dtype}")
        if tuple(x.shape[1:]) != self.input_shape:
            raise _core.ShapeError(f"{self.name}: expected input (batch, {', '.join(map(str, self.input_shape))}), "
                                   f"got {tuple(x.shape)}")
        x = np.ascontiguousarray(x)
        tapped = {} if taps else None
        x = _fq(self.input_quantizer, x)
        if tapped is not None:
            tapped["input"] = x
        for layer in self.layers:
            q = self.quant.get(layer.name)
            x = layer.forward(x, q=q, path=path, taps=tapped)
            x = _fq(q.output if q else None, x)
            if tapped is not None:
                tapped[_tap_name(layer)] = x
        return (x, tapped) if taps else x

    def predict(self, x, batch_size=256, path="auto"):
        return np.concatenate([self(x[i:i + batch_size], path=path) for i in range(0, len(x), batch_size)])

    # ---- weights ----------------------------------------------------------------------------
    def get_weights(self):
        return {f"{layer.name}/{k}": v.copy() for layer in self.layers for k, v in layer.weights.items()}

    def set_weights(self, weights):
        for key, value in weights.items():
            layer_name, _, weight_name = key.partition("/")
            layer = self.layer(layer_name)
            if weight_name not in layer.weights:
                raise KeyError(f"layer '{layer_name}' has no weight '{weight_name}'; it has {list(layer.weights)}")
            value = np.asarray(value, dtype=np.float32)
            if value.shape != layer.weights[weight_name].shape:
                raise _core.ShapeError(f"{key}: expected shape {layer.weights[weight_name].shape}, got {value.shape}")
            layer.weights[weight_name] = np.ascontiguousarray(value)

    def summary(self):
        lines = [f"Sequential '{self.name}'  input {self.input_shape}",
                 f"{'layer':<24}{'type':<22}{'output':<20}{'params':>10}  quantized points"]
        total = 0
        for layer in self.layers:
            params = sum(int(v.size) for v in layer.weights.values())
            total += params
            q = self.quant.get(layer.name)
            points = [] if q is None else ([f"w:{k}" for k in q.weights] + [p for p in ("bias", "state", "output")
                                                                              if getattr(q, p) is not None])
            lines.append(f"{layer.name:<24}{type(layer).__name__:<22}{str(layer.output_shape):<20}{params:>10}  "
                         f"{', '.join(points) or '-'}")
        lines.append(f"total parameters: {total}")
        return "\n".join(lines)

    # ---- save / load (npz of weights + JSON of the architecture) ----------------------------
    def save(self, path):
        arch = dict(format_version=1, name=self.name, seed=self.seed, input_shape=self.input_shape,
                    layers=[dict(type=type(l).__name__, name=l.name, config=l.config()) for l in self.layers])
        np.savez(path, __architecture__=np.array(json.dumps(arch)), **self.get_weights())

    @classmethod
    def load(cls, path):
        try:
            data = np.load(path, allow_pickle=False)
            arch = json.loads(str(data["__architecture__"]))
        except (OSError, KeyError, ValueError) as e:
            raise _core.DataError(f"load: {path} is not a qdrift model file ({e})") from None
        layers = []
        for i, spec in enumerate(arch.get("layers", [])):
            if spec.get("type") not in LAYER_TYPES:
                raise _core.DataError(f"load: /layers/{i}/type '{spec.get('type')}' is not a qdrift layer")
            layers.append(LAYER_TYPES[spec["type"]](name=spec["name"], **spec["config"]))
        model = cls(layers, arch["input_shape"], seed=arch.get("seed", 0), name=arch.get("name", "sequential"))
        model.set_weights({k: data[k] for k in data.files if k != "__architecture__"})
        return model

    # ---- quantization -------------------------------------------------------------------------
    def quantize(self, config: QuantConfig = None, calibration=None, batch_size=256, qat=False, lsq=False):
        """A fake-quantized copy: weights quantized (after BN folding), activation and state
        quantizers calibrated on `calibration` (float model's values, like the TFLite converter).

        qat=True gives a trainable fake-quant model instead (train it with .fit): straight-through
        gradients, BN folded as torch's QAT ConvBn does, activation ranges from moving-average
        observers (initialized on `calibration` when given); lsq=True learns the weight and
        activation scales / zero points (LSQ). See qdrift.training."""
        config = config or QuantConfig()
        unknown = set(config.overrides) - {l.name for l in self.layers}
        if unknown:
            raise _core.ConfigError(f"/overrides: no layer named {sorted(unknown)}")
        if qat or lsq:
            from .training import make_qat_model
            return make_qat_model(self, config, calibration=calibration, lsq=lsq, batch_size=batch_size)
        qm = copy.deepcopy(self)
        qm.quant, qm.input_quantizer = {}, None
        if config.fold_batch_norm:
            qm._fold_batch_norms()
        for layer in qm.layers:
            q = LayerQuant()
            wspec = config.spec(layer.name, "weights")
            for wname in layer.weight_quant_names():
                if wspec is not None:
                    quantizer, view_shape = _weight_quantizer(wspec, wname, layer.weights[wname])
                    q.weights[wname] = quantizer if view_shape == layer.weights[wname].shape else \
                        _ReshapedQuantizer(quantizer, view_shape)
            bspec = config.spec(layer.name, "bias")
            if bspec is not None and "bias" in layer.weights:
                q.bias = _frozen_on(Quantizer(**bspec), layer.weights["bias"])
            aspec = config.spec(layer.name, "activations")
            q.output = Quantizer(**aspec) if aspec is not None else None
            sspec = config.spec(layer.name, "state")
            q.state = Quantizer(**sspec) if sspec is not None and isinstance(layer, SimpleRNN) else None
            qm.quant[layer.name] = q
        qm.input_quantizer = Quantizer(**config.activations) if config.activations is not None else None
        qm._calibrate(calibration, batch_size)
        return qm

    def _calibrate(self, calibration, batch_size):
        """Observe the float model's activations (and RNN states) at every static point."""
        needs = [q for q in [self.input_quantizer] + [p for lq in self.quant.values() for p in (lq.output, lq.state)]
                 if _observes(q)]
        if not needs:
            return
        if calibration is None:
            raise _core.ConfigError("quantize: static activation/state quantizers need calibration data "
                                    "(calibration=...), or use mode='dynamic'")
        calibration = np.ascontiguousarray(calibration, dtype=np.float32)
        float_model = copy.copy(self)
        float_model.quant, float_model.input_quantizer = {}, None
        for i in range(0, len(calibration), batch_size):
            _, taps = float_model(calibration[i:i + batch_size], taps=True)
            if _observes(self.input_quantizer):
                self.input_quantizer.observe(taps["input"])
            for layer in self.layers:
                lq = self.quant[layer.name]
                if _observes(lq.output):
                    lq.output.observe(taps[_tap_name(layer)])
                if _observes(lq.state):
                    lq.state.observe(taps[f"{layer.name}/states"])
        for q in needs:
            q.freeze()

    # ---- quantizer selection (analysis: attribution, isolated and local error) ------------------
    def quantizer_names(self):
        """Every active quantizer, in running order: "input", "<layer>/weights/<weight>",
        "<layer>/bias", "<layer>/state", "<layer>/output"."""
        names = ["input"] if self.input_quantizer is not None else []
        for layer in self.layers:
            q = self.quant.get(layer.name)
            if q is None:
                continue
            names += [f"{layer.name}/weights/{k}" for k in q.weights]
            names += [f"{layer.name}/{p}" for p in ("bias", "state", "output") if getattr(q, p) is not None]
        return names

    def with_quantizers(self, keep):
        """A copy sharing this model's layers and (calibrated) quantizers in which only the
        quantizers named in `keep` (see quantizer_names) are active; the rest run in float."""
        keep = set(keep)
        unknown = keep - set(self.quantizer_names())
        if unknown:
            raise _core.ConfigError(f"with_quantizers: no quantizer named {sorted(unknown)}; "
                                    f"this model has {self.quantizer_names()}")
        m = copy.copy(self)
        m.input_quantizer = self.input_quantizer if "input" in keep else None
        m.quant = {}
        for name, q in self.quant.items():
            # replace() keeps any other LayerQuant fields as they are.
            m.quant[name] = dataclasses.replace(
                q, weights={k: v for k, v in q.weights.items() if f"{name}/weights/{k}" in keep},
                **{p: getattr(q, p) if f"{name}/{p}" in keep else None for p in ("bias", "state", "output")})
        return m

    def run_layer(self, name, x, taps=None, path="auto"):
        """One layer with its quantizers (weights, bias, state, output) on the input x, as the
        full run computes it; `taps` (a dict) receives the layer's extra taps (RNN states)."""
        layer = self.layer(name)
        q = self.quant.get(name)
        y = layer.forward(np.ascontiguousarray(x, dtype=np.float32), q=q, path=path, taps=taps)
        return _fq(q.output if q else None, y)

    def _fold_batch_norms(self):
        kept = []
        for layer in self.layers:
            prev = kept[-1] if kept else None
            foldable = isinstance(layer, BatchNormalization) and isinstance(prev, (Dense, Conv2D, DepthwiseConv2D)) \
                and prev.activation == "linear"
            if not foldable:
                kept.append(layer)
                continue
            kname = "depthwise_kernel" if isinstance(prev, DepthwiseConv2D) else "kernel"
            kernel = prev.weights[kname]
            flat = kernel.reshape(kernel.shape[:2] + (1, -1)) if kname == "depthwise_kernel" else kernel
            w = layer.weights
            k2, b2 = _core.fold_batch_norm(np.ascontiguousarray(flat), prev.weights.get("bias"), w["gamma"], w["beta"],
                                           w["moving_mean"], w["moving_variance"], layer.epsilon)
            prev.weights[kname] = k2.reshape(kernel.shape)
            prev.weights["bias"] = b2
            prev.use_bias = True
            prev.output_shape = layer.output_shape
            # The folded BN's name now points at the merged layer's output for taps.
            prev.folded = getattr(prev, "folded", []) + [layer.name]
        self.layers = kept

    # ---- training (qdrift.training) ------------------------------------------------------------
    def fit(self, x, y, epochs=1, batch_size=32, validation_data=None, loss="cross_entropy", optimizer=None,
            seed=None, shuffle=True, verbose=True, path="auto"):
        """Train in place (float, or QAT for a quantize(..., qat=True) model) -> training.History.
        optimizer: qdrift.training.SGD / Adam or {"kind": "sgd"|"adam"|"adamw", "lr": ...}."""
        from .training import fit
        return fit(self, x, y, epochs=epochs, batch_size=batch_size, validation_data=validation_data, loss=loss,
                   optimizer=optimizer, seed=seed, shuffle=shuffle, verbose=verbose, path=path)

    def evaluate(self, x, y, loss="cross_entropy", batch_size=256, path="auto"):
        """Inference loss (and accuracy for cross-entropy) -> {"loss": ..., "accuracy": ...}."""
        from .training import evaluate
        return evaluate(self, x, y, loss=loss, batch_size=batch_size, path=path)

    def export_encodings(self, path=None, layout="qdrift"):
        """Every quantization point's parameters as JSON (layout "qdrift" or "aimet")."""
        from .training import export_encodings
        return export_encodings(self, path=path, layout=layout)
