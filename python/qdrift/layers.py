"""Layers in Keras layouts (NHWC; Dense kernel (in, units); Conv2D kernel (KH, KW, C/groups, filters);
DepthwiseConv2D kernel (KH, KW, C, multiplier); SimpleRNN kernel (F, U), recurrent kernel (U, U)).

Each layer owns float32 weights and computes through the C++ ops. `forward` takes an optional
`LayerQuant` (the quantizers of that layer's points) so the same code runs float and fake-quantized.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import _core

ACTIVATIONS = ("linear", "relu", "relu6", "tanh", "sigmoid")


def _pair(v, what):
    if isinstance(v, int):
        v = (v, v)
    v = tuple(int(a) for a in v)
    if len(v) != 2:
        raise _core.ConfigError(f"{what} must be an int or a pair, got {v}")
    return v


def _activation(a):
    name = "linear" if a is None else str(a)
    if name not in ACTIVATIONS:
        raise _core.ConfigError(f"activation: unknown activation '{name}'; expected one of {', '.join(ACTIVATIONS)}")
    return name


# ---- deterministic initializers (numpy, from a seed) --------------------------------------
def _fans(shape):
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


def initialize(name, shape, rng):
    fan_in, fan_out = _fans(shape) if len(shape) >= 2 else (shape[0], shape[0])
    if name == "zeros":
        w = np.zeros(shape)
    elif name == "ones":
        w = np.ones(shape)
    elif name == "glorot_uniform":
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        w = rng.uniform(-limit, limit, shape)
    elif name == "he_normal":
        w = rng.normal(0, np.sqrt(2.0 / fan_in), shape)
    elif name == "orthogonal":
        a = rng.normal(size=(max(shape[0], shape[1]), min(shape[0], shape[1])))
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))
        w = q if shape[0] >= shape[1] else q.T
    else:
        raise _core.ConfigError(f"initializer: unknown '{name}'; expected glorot_uniform, he_normal, orthogonal, zeros, ones")
    return np.ascontiguousarray(w, dtype=np.float32)


@dataclass
class LayerQuant:
    """The quantizers of one layer's quantization points (None = that point stays float)."""
    input: Optional[object] = None
    output: Optional[object] = None
    weights: dict = field(default_factory=dict)   # weight name -> Quantizer
    bias: Optional[object] = None
    state: Optional[object] = None                # RNN hidden state, every step


def _fq(q, x):
    return x if q is None else q.fake_quant(np.ascontiguousarray(x, dtype=np.float32))


class Layer:
    """Base layer: `weights` is an ordered dict name -> float32 array (Keras get_weights order)."""
    kind = "layer"

    def __init__(self, name=None):
        self.name = name
        self.weights = {}
        self.input_shape = None    # without the batch axis
        self.output_shape = None

    def build(self, input_shape, rng):
        self.input_shape = tuple(input_shape)
        self.output_shape = tuple(self.compute_output_shape(self.input_shape))

    def compute_output_shape(self, input_shape):
        return input_shape

    def config(self):
        return {}

    def weight_quant_names(self):
        """Weights that take the `weights` quantizer (kernels); biases take `bias`."""
        return [k for k in self.weights if k in ("kernel", "depthwise_kernel", "recurrent_kernel")]

    def quantized_weights(self, q: Optional[LayerQuant]):
        if q is None:
            return self.weights
        out = {}
        for k, w in self.weights.items():
            quantizer = q.bias if k == "bias" else q.weights.get(k)
            out[k] = _fq(quantizer, w)
        return out

    def forward(self, x, q=None, path="auto", taps=None):
        raise NotImplementedError

    def _check_input(self, x):
        if tuple(x.shape[1:]) != self.input_shape:
            raise _core.ShapeError(f"{self.kind} '{self.name}': expected input (batch, "
                                   f"{', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise _core.ShapeError(f"{self.kind} '{self.name}': the batch is empty")

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r}, output_shape={self.output_shape})"


class Dense(Layer):
    kind = "dense"

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", name=None):
        super().__init__(name)
        self.units, self.activation, self.use_bias = int(units), _activation(activation), bool(use_bias)
        self.kernel_initializer, self.bias_initializer = kernel_initializer, bias_initializer

    def compute_output_shape(self, s):
        if len(s) < 1:
            raise _core.ShapeError(f"dense '{self.name}': needs an input with a feature axis")
        return s[:-1] + (self.units,)

    def build(self, input_shape, rng):
        super().build(input_shape, rng)
        self.weights = {"kernel": initialize(self.kernel_initializer, (input_shape[-1], self.units), rng)}
        if self.use_bias:
            self.weights["bias"] = initialize(self.bias_initializer, (self.units,), rng)

    def config(self):
        return dict(units=self.units, activation=self.activation, use_bias=self.use_bias)

    def forward(self, x, q=None, path="auto", taps=None):
        self._check_input(x)
        w = self.quantized_weights(q)
        return _core.dense(x, w["kernel"], w.get("bias"), activation=self.activation, path=path, name=self.name)


class Conv2D(Layer):
    kind = "conv2d"

    def __init__(self, filters, kernel_size, strides=1, padding="valid", dilation_rate=1, groups=1, activation=None,
                 use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros", name=None):
        super().__init__(name)
        self.filters, self.kernel_size = int(filters), _pair(kernel_size, "kernel_size")
        self.strides, self.dilation_rate = _pair(strides, "strides"), _pair(dilation_rate, "dilation_rate")
        self.padding, self.groups = str(padding).lower(), int(groups)
        self.activation, self.use_bias = _activation(activation), bool(use_bias)
        self.kernel_initializer, self.bias_initializer = kernel_initializer, bias_initializer

    def _kernel_shape(self, channels):
        if self.groups <= 0 or channels % self.groups or self.filters % self.groups:
            raise _core.ShapeError(f"conv2d '{self.name}': {channels} input channels and {self.filters} filters "
                                   f"do not split into {self.groups} groups")
        return self.kernel_size + (channels // self.groups, self.filters)

    def compute_output_shape(self, s):
        if len(s) != 3:
            raise _core.ShapeError(f"conv2d '{self.name}': expects (H, W, C) inputs, got {s}")
        probe = np.zeros((1,) + tuple(s), np.float32)
        k = np.zeros(self._kernel_shape(s[2]), np.float32)
        return _core.conv2d(probe, k, strides=self.strides, padding=self.padding, dilation=self.dilation_rate,
                            groups=self.groups, name=self.name).shape[1:]

    def build(self, input_shape, rng):
        super().build(input_shape, rng)
        self.weights = {"kernel": initialize(self.kernel_initializer, self._kernel_shape(input_shape[2]), rng)}
        if self.use_bias:
            self.weights["bias"] = initialize(self.bias_initializer, (self.filters,), rng)

    def config(self):
        return dict(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides, padding=self.padding,
                    dilation_rate=self.dilation_rate, groups=self.groups, activation=self.activation,
                    use_bias=self.use_bias)

    def forward(self, x, q=None, path="auto", taps=None):
        self._check_input(x)
        w = self.quantized_weights(q)
        return _core.conv2d(x, w["kernel"], w.get("bias"), strides=self.strides, padding=self.padding,
                            dilation=self.dilation_rate, groups=self.groups, activation=self.activation, path=path,
                            name=self.name)


class DepthwiseConv2D(Layer):
    kind = "depthwise_conv2d"

    def __init__(self, kernel_size, strides=1, padding="valid", depth_multiplier=1, dilation_rate=1,
                 activation=None, use_bias=True, depthwise_initializer="glorot_uniform", bias_initializer="zeros",
                 name=None):
        super().__init__(name)
        self.kernel_size, self.strides = _pair(kernel_size, "kernel_size"), _pair(strides, "strides")
        self.dilation_rate, self.padding = _pair(dilation_rate, "dilation_rate"), str(padding).lower()
        self.depth_multiplier, self.activation = int(depth_multiplier), _activation(activation)
        self.use_bias = bool(use_bias)
        self.depthwise_initializer, self.bias_initializer = depthwise_initializer, bias_initializer

    def compute_output_shape(self, s):
        if len(s) != 3:
            raise _core.ShapeError(f"depthwise_conv2d '{self.name}': expects (H, W, C) inputs, got {s}")
        probe = np.zeros((1,) + tuple(s), np.float32)
        k = np.zeros(self.kernel_size + (s[2], self.depth_multiplier), np.float32)
        return _core.depthwise_conv2d(probe, k, strides=self.strides, padding=self.padding,
                                      dilation=self.dilation_rate, name=self.name).shape[1:]

    def build(self, input_shape, rng):
        super().build(input_shape, rng)
        shape = self.kernel_size + (input_shape[2], self.depth_multiplier)
        self.weights = {"depthwise_kernel": initialize(self.depthwise_initializer, shape, rng)}
        if self.use_bias:
            self.weights["bias"] = initialize(self.bias_initializer, (input_shape[2] * self.depth_multiplier,), rng)

    def config(self):
        return dict(kernel_size=self.kernel_size, strides=self.strides, padding=self.padding,
                    depth_multiplier=self.depth_multiplier, dilation_rate=self.dilation_rate,
                    activation=self.activation, use_bias=self.use_bias)

    def forward(self, x, q=None, path="auto", taps=None):
        self._check_input(x)
        w = self.quantized_weights(q)
        return _core.depthwise_conv2d(x, w["depthwise_kernel"], w.get("bias"), strides=self.strides,
                                      padding=self.padding, dilation=self.dilation_rate, activation=self.activation,
                                      path=path, name=self.name)


class SimpleRNN(Layer):
    """unroll only tells qd.convert which graph the TFLite converter writes for the layer: True
    (qdrift's default) the unrolled chain every profile supports, False (Keras's default) the
    WHILE loop, which qd.convert emits for tflite_dynamic and tflite_fp16 only. qdrift's own
    forward pass is the same either way."""
    kind = "simple_rnn"

    def __init__(self, units, activation="tanh", use_bias=True, return_sequences=False, go_backwards=False,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 name=None, unroll=True):
        super().__init__(name)
        self.units, self.activation, self.use_bias = int(units), _activation(activation), bool(use_bias)
        self.return_sequences, self.go_backwards = bool(return_sequences), bool(go_backwards)
        self.unroll = bool(unroll)
        self.kernel_initializer, self.recurrent_initializer = kernel_initializer, recurrent_initializer
        self.bias_initializer = bias_initializer

    def compute_output_shape(self, s):
        if len(s) != 2:
            raise _core.ShapeError(f"simple_rnn '{self.name}': expects (time, features) inputs, got {s}")
        return (s[0], self.units) if self.return_sequences else (self.units,)

    def build(self, input_shape, rng):
        super().build(input_shape, rng)
        self.weights = {"kernel": initialize(self.kernel_initializer, (input_shape[1], self.units), rng),
                        "recurrent_kernel": initialize(self.recurrent_initializer, (self.units, self.units), rng)}
        if self.use_bias:
            self.weights["bias"] = initialize(self.bias_initializer, (self.units,), rng)

    def config(self):
        return dict(units=self.units, activation=self.activation, use_bias=self.use_bias,
                    return_sequences=self.return_sequences, go_backwards=self.go_backwards, unroll=self.unroll)

    def forward(self, x, q=None, path="auto", taps=None, initial_state=None):
        self._check_input(x)
        w = self.quantized_weights(q)
        if q is None or q.state is None:
            states = _core.simple_rnn(x, w["kernel"], w["recurrent_kernel"], w.get("bias"), initial_state=initial_state,
                                      activation=self.activation, go_backwards=self.go_backwards, path=path,
                                      name=self.name)
        else:
            states = self._quantized_steps(x, w, q.state, initial_state, path)
        if taps is not None:
            taps[f"{self.name}/states"] = states
        return states if self.return_sequences else np.ascontiguousarray(states[:, -1])

    def _quantized_steps(self, x, w, state_q, initial_state, path):
        """One step at a time so the hidden state is quantized before it feeds the next step."""
        n, t, _ = x.shape
        h = np.zeros((n, self.units), np.float32) if initial_state is None else initial_state
        order = range(t - 1, -1, -1) if self.go_backwards else range(t)
        states = np.empty((n, t, self.units), np.float32)
        for step, src in enumerate(order):
            z = _core.dense(np.ascontiguousarray(x[:, src]), w["kernel"], w.get("bias"), path=path, name=self.name)
            h = _core.activation(z + _core.dense(h, w["recurrent_kernel"], path=path, name=self.name), self.activation)
            h = _fq(state_q, h)
            states[:, step] = h
        return states

    def step(self, x_t, h, w, path="auto"):
        """One step before state quantization: act(x_t @ kernel + bias + h @ recurrent_kernel) with
        the weights w (e.g. quantized_weights(q)); the same arithmetic as the quantized run."""
        z = _core.dense(np.ascontiguousarray(x_t), w["kernel"], w.get("bias"), path=path, name=self.name)
        return _core.activation(z + _core.dense(np.ascontiguousarray(h), w["recurrent_kernel"], path=path,
                                                name=self.name), self.activation)


class BatchNormalization(Layer):
    kind = "batch_normalization"

    def __init__(self, epsilon=1e-3, name=None):
        super().__init__(name)
        self.epsilon = float(epsilon)

    def build(self, input_shape, rng):
        super().build(input_shape, rng)
        c = input_shape[-1]
        self.weights = {"gamma": np.ones(c, np.float32), "beta": np.zeros(c, np.float32),
                        "moving_mean": np.zeros(c, np.float32), "moving_variance": np.ones(c, np.float32)}

    def config(self):
        return dict(epsilon=self.epsilon)

    def forward(self, x, q=None, path="auto", taps=None):
        self._check_input(x)
        w = self.weights
        return _core.batch_norm(x, w["gamma"], w["beta"], w["moving_mean"], w["moving_variance"], self.epsilon)


class Activation(Layer):
    kind = "activation"

    def __init__(self, activation, name=None):
        super().__init__(name)
        self.activation = _activation(activation)

    def config(self):
        return dict(activation=self.activation)

    def forward(self, x, q=None, path="auto", taps=None):
        self._check_input(x)
        return _core.activation(x, self.activation)


class ReLU(Activation):
    """Keras ReLU with max_value None (relu) or 6 (relu6)."""
    kind = "relu"

    def __init__(self, max_value=None, name=None):
        if max_value not in (None, 6, 6.0):
            raise _core.UnsupportedError(f"ReLU '{name}': max_value={max_value} (only None and 6 are supported)")
        super().__init__("relu" if max_value is None else "relu6", name)

    def config(self):
        return dict(max_value=None if self.activation == "relu" else 6.0)


class Flatten(Layer):
    kind = "flatten"

    def compute_output_shape(self, s):
        return (int(np.prod(s)),)

    def forward(self, x, q=None, path="auto", taps=None):
        self._check_input(x)
        return np.ascontiguousarray(x.reshape(x.shape[0], -1))


class Reshape(Layer):
    kind = "reshape"

    def __init__(self, target_shape, name=None):
        super().__init__(name)
        self.target_shape = tuple(int(d) for d in target_shape)

    def compute_output_shape(self, s):
        if int(np.prod(s)) != int(np.prod(self.target_shape)):
            raise _core.ShapeError(f"reshape '{self.name}': cannot reshape {s} to {self.target_shape}")
        return self.target_shape

    def config(self):
        return dict(target_shape=self.target_shape)

    def forward(self, x, q=None, path="auto", taps=None):
        self._check_input(x)
        return np.ascontiguousarray(x.reshape((x.shape[0],) + self.target_shape))


LAYER_TYPES = {cls.__name__: cls for cls in (Dense, Conv2D, DepthwiseConv2D, SimpleRNN, BatchNormalization,
                                             Activation, ReLU, Flatten, Reshape)}
