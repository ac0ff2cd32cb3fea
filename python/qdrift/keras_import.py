"""qd.from_keras: a Keras 3 Sequential (or Functional chain) as a qd.Sequential with the same weights."""
from __future__ import annotations

import numpy as np

from . import _core, layers as L
from .model import Sequential


def _activation_name(config, layer):
    a = config.get("activation", "linear")
    if isinstance(a, dict):   # a serialized activation object
        a = a.get("config", {}).get("name", a.get("class_name"))
    a = "linear" if a in (None, "linear") else a
    if a not in L.ACTIVATIONS:
        raise _core.UnsupportedError(f"from_keras: layer '{layer.name}' uses activation '{a}'; "
                                     f"supported: {', '.join(L.ACTIVATIONS)}")
    return a


def _convert(layer):
    cls = type(layer).__name__
    c = layer.get_config()
    w = [np.ascontiguousarray(v, dtype=np.float32) for v in layer.get_weights()]
    name = layer.name
    if c.get("data_format", "channels_last") != "channels_last":
        raise _core.UnsupportedError(f"from_keras: layer '{name}' uses data_format={c['data_format']}; "
                                     "qdrift computes in NHWC (channels_last)")
    if cls == "Dense":
        q = L.Dense(c["units"], activation=_activation_name(c, layer), use_bias=c["use_bias"], name=name)
        names = ["kernel", "bias"]
    elif cls == "Conv2D":
        q = L.Conv2D(c["filters"], c["kernel_size"], strides=c["strides"], padding=c["padding"],
                     dilation_rate=c["dilation_rate"], groups=c.get("groups", 1),
                     activation=_activation_name(c, layer), use_bias=c["use_bias"], name=name)
        names = ["kernel", "bias"]
    elif cls == "DepthwiseConv2D":
        q = L.DepthwiseConv2D(c["kernel_size"], strides=c["strides"], padding=c["padding"],
                              depth_multiplier=c["depth_multiplier"], dilation_rate=c["dilation_rate"],
                              activation=_activation_name(c, layer), use_bias=c["use_bias"], name=name)
        names = ["depthwise_kernel", "bias"]
    elif cls == "SimpleRNN":
        if c.get("return_state") or c.get("stateful"):
            raise _core.UnsupportedError(f"from_keras: SimpleRNN '{name}' with return_state/stateful is not supported")
        q = L.SimpleRNN(c["units"], activation=_activation_name(c, layer), use_bias=c["use_bias"],
                        return_sequences=c["return_sequences"], go_backwards=c["go_backwards"], name=name,
                        unroll=c.get("unroll", False))
        names = ["kernel", "recurrent_kernel", "bias"]
    elif cls == "BatchNormalization":
        axis = c.get("axis", -1)
        axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
        rank = len(layer.input.shape) if hasattr(layer, "input") else None
        if axis != -1 and (rank is None or axis != rank - 1):
            raise _core.UnsupportedError(f"from_keras: BatchNormalization '{name}' normalizes axis {axis}; "
                                         "only the last (channel) axis is supported")
        q = L.BatchNormalization(epsilon=c["epsilon"], name=name)
        names = (["gamma"] if c.get("scale", True) else []) + (["beta"] if c.get("center", True) else []) + \
            ["moving_mean", "moving_variance"]
    elif cls == "Activation":
        q = L.Activation(_activation_name(c, layer), name=name)
        names = []
    elif cls == "ReLU":
        if c.get("negative_slope", 0.0) or c.get("threshold", 0.0):
            raise _core.UnsupportedError(f"from_keras: ReLU '{name}' with negative_slope/threshold is not supported")
        q = L.ReLU(max_value=c.get("max_value"), name=name)
        names = []
    elif cls == "Flatten":
        q, names = L.Flatten(name=name), []
    elif cls == "Reshape":
        q, names = L.Reshape(c["target_shape"], name=name), []
    else:
        raise _core.UnsupportedError(f"from_keras: layer '{name}' of type {cls} is not supported "
                                     "(supported: Dense, Conv2D, DepthwiseConv2D, SimpleRNN, BatchNormalization, "
                                     "Activation, ReLU, Flatten, Reshape, InputLayer)")
    return q, dict(zip(names, w))   # without a bias, Keras lists one weight fewer: zip drops it


def from_keras(model, seed=0):
    """Convert a Keras 3 model whose layers form a chain (Sequential or a linear Functional
    model) into qd.Sequential with identical weights. Unsupported layers raise UnsupportedError."""
    shape = tuple(model.input_shape[1:])
    if any(d is None for d in shape):
        raise _core.ShapeError(f"from_keras: the input shape {model.input_shape} must be fully defined "
                               "(besides the batch axis)")
    converted, weights = [], {}
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        q, w = _convert(layer)
        converted.append(q)
        weights.update({f"{q.name}/{k}": v for k, v in w.items()})
    qm = Sequential(converted, shape, seed=seed, name=model.name)
    qm.set_weights(weights)
    return qm
