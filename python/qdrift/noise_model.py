"""Analytic noise model behind qd.compare(predict=True): every quantizer injects independent noise
of a variance set by its step and the observed values, and each layer carries the variance of
its input noise forward (linear maps exactly, activations by their local slope).

Per element, a quantizer with step D (per tensor or per channel) and range [lo, hi] adds
  D^2/12   in range, round-to-nearest (D^2/6 stochastic, D^2/3 floor: the second moment of the
           rounding error), and 0 for exact zeros, which every affine grid holds;
  (x - clip(x, lo, hi))^2   outside the range (clipping, from the observed float values x);
  2^(2 (floor(log2|x|) - m)) / 12   for a float format with m mantissa bits (overflow and
           subnormals are not modelled).
The observed values are the float model's at that point (weights, biases, taps, RNN states).
Output quantizers are where a backend requantizes, so their rounding term is the requantization
rounding. Propagation, with V the per-element noise variance of a layer's input x:
  linear y = x W + b:  Var y = V (W^2) + (x^2) Var(W) + Var(b)    (independent noise: exact)
  activation f:        Var f(z) = f'(z)^2 Var z                   (local slope at the float z)
  SimpleRNN:           the same per step, with the state's own variance fed back through U^2.
The model ignores correlations between noises, second-order terms (noise times weight noise)
and noise that pushes values across a ReLU's kink, so it predicts within a factor, not exactly.
"""
from __future__ import annotations

import json

import numpy as np

from . import _core
from .layers import Activation, BatchNormalization, Conv2D, Dense, DepthwiseConv2D, Flatten, Reshape, SimpleRNN

MANTISSA_BITS = {"fp16": 10, "bf16": 7, "fp8_e4m3": 3, "fp8_e5m2": 2}
ROUNDING_SECOND_MOMENT = {"half_even": 1 / 12, "half_away": 1 / 12, "half_up": 1 / 12, "stochastic": 1 / 6,
                          "floor": 1 / 3}


def _f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def noise_variance(q, values, what="quantizer"):
    """Per-element variance (float64, the shape of values) of the noise quantizer q adds to
    `values` under the model above; 0 for q None."""
    values = np.asarray(values, np.float64)
    if q is None:
        return np.zeros(values.shape)
    if hasattr(q, "view_shape"):   # a weight quantized through a reshaped view (depthwise kernels)
        return noise_variance(q.quantizer, values.reshape(q.view_shape), what).reshape(values.shape)
    spec = json.loads(q.spec_json())
    if spec["format"] != "int":
        m = MANTISSA_BITS[spec["format"]]
        mag = np.abs(values)
        ulp = np.exp2(np.floor(np.log2(np.where(mag > 0, mag, 1.0))) - m)
        return np.where(mag > 0, ulp * ulp / 12, 0.0)
    if spec["granularity"] == "per_group":
        raise _core.UnsupportedError(f"predict: {what} is per_group; the noise model covers per_tensor and "
                                     f"per_channel quantizers")
    if spec["mode"] == "dynamic":   # parameters from the values themselves, as each run computes them
        from .quantizer import Quantizer
        probe = Quantizer(**{**spec, "mode": "static"})
        probe.observe(_f32(values))
        probe.freeze()
        params = probe.params
    else:
        params = q.params
    shape = [1] * values.ndim
    scale = np.asarray(params.scale, np.float64)
    zp = np.asarray(params.zero_point, np.float64)
    if params.axis is not None and scale.size > 1:
        shape[params.axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    lo, hi = scale * (params.qmin - zp), scale * (params.qmax - zp)
    clipped = (values - np.clip(values, lo, hi)) ** 2
    rounding = np.where(values == 0, 0.0, scale * scale * ROUNDING_SECOND_MOMENT[spec["rounding"]])
    return np.where((values >= lo) & (values <= hi), rounding, clipped)


def _relu_gain(z, v):
    """E[(relu(z + n) - relu(z))^2] / Var(n) for Gaussian n of variance v: the squared slope of
    ReLU averaged over the noise. Near the kink (|z| ~ sigma) the clamp at 0 removes part of the
    noise, which the local slope (1 or 0) misses. With a = z / sigma:
      a >= 0:  Phi(a) - a phi(a) + a^2 (1 - Phi(a))      (noise below -z is cut to -z)
      a <  0:  (1 + a^2) Phi(a) + a phi(a)               (only noise above |z| passes)"""
    from math import erf, sqrt
    z, v = np.asarray(z, np.float64), np.broadcast_to(np.asarray(v, np.float64), np.shape(z))
    sigma = np.sqrt(v)
    a = np.divide(z, sigma, out=np.where(z > 0, np.inf, -np.inf), where=sigma > 0)
    af = np.where(np.isfinite(a), a, 0.0)
    cdf = 0.5 * (1 + np.vectorize(erf, otypes=[np.float64])(af / sqrt(2))) if af.size else af
    pdf = np.exp(-af * af / 2) / np.sqrt(2 * np.pi)
    gain = np.where(af >= 0, cdf - af * pdf + af * af * (1 - cdf), (1 + af * af) * cdf + af * pdf)
    return np.where(np.isfinite(a), gain, (z > 0).astype(np.float64))


def _slope2(activation, z, v=None):
    """f'(z)^2 at the float pre-activation z (for ReLU, averaged over the noise of variance v)."""
    z = np.asarray(z, np.float64)
    if activation == "linear":
        return np.ones(z.shape)
    if activation == "relu":
        return (z > 0).astype(np.float64) if v is None else _relu_gain(z, v)
    if activation == "relu6":
        return ((z > 0) & (z < 6)).astype(np.float64)
    if activation == "tanh":
        return (1 - np.tanh(z) ** 2) ** 2
    if activation == "sigmoid":
        s = 1 / (1 + np.exp(-z))
        return (s * (1 - s)) ** 2
    raise _core.UnsupportedError(f"predict: no slope for activation '{activation}'")


def _linear(layer, x, kernel, bias=None):
    """The layer's linear map (no activation) with another kernel, e.g. W^2 applied to variances."""
    x, kernel = _f32(x), _f32(kernel)
    bias = None if bias is None else _f32(bias)
    if isinstance(layer, Dense):
        return _core.dense(x, kernel, bias, name=layer.name)
    if isinstance(layer, DepthwiseConv2D):
        return _core.depthwise_conv2d(x, kernel, bias, strides=layer.strides, padding=layer.padding,
                                      dilation=layer.dilation_rate, name=layer.name)
    return _core.conv2d(x, kernel, bias, strides=layer.strides, padding=layer.padding, dilation=layer.dilation_rate,
                        groups=layer.groups, name=layer.name)


def _weighted(layer, q, x, v):
    """Variance of a Dense/Conv output before its activation, and its float pre-activation."""
    kname = "depthwise_kernel" if isinstance(layer, DepthwiseConv2D) else "kernel"
    kernel, bias = layer.weights[kname], layer.weights.get("bias")
    var_w = noise_variance(q.weights.get(kname) if q else None, kernel, f"{layer.name}/weights/{kname}")
    out = _linear(layer, v, kernel ** 2).astype(np.float64)
    if np.any(var_w):
        out += _linear(layer, np.square(x), var_w)
    if bias is not None and q is not None and q.bias is not None:
        out += noise_variance(q.bias, bias, f"{layer.name}/bias")
    # The fast conv kernels can leave -1e-19 where every term is >= 0: clamp before sqrt.
    return np.maximum(out, 0.0), _linear(layer, x, kernel, bias)


def _rnn(layer, q, x, v, states):
    """Per-step variance of a SimpleRNN's hidden state (batch, time, units)."""
    w = layer.weights
    var_k = noise_variance(q.weights.get("kernel") if q else None, w["kernel"], f"{layer.name}/weights/kernel")
    var_u = noise_variance(q.weights.get("recurrent_kernel") if q else None, w["recurrent_kernel"],
                           f"{layer.name}/weights/recurrent_kernel")
    var_b = noise_variance(q.bias if q else None, w["bias"], f"{layer.name}/bias") if "bias" in w else 0.0
    state_q = q.state if q else None
    k2, u2 = _f32(w["kernel"] ** 2), _f32(w["recurrent_kernel"] ** 2)
    n, t, _ = x.shape
    order = list(range(t - 1, -1, -1)) if layer.go_backwards else list(range(t))
    vh = np.zeros((n, layer.units))
    out = np.empty((n, t, layer.units))
    for step, src in enumerate(order):
        h_prev = states[:, step - 1] if step > 0 else np.zeros((n, layer.units), np.float32)
        lin = _core.dense(_f32(v[:, src]), k2) + _core.dense(_f32(vh), u2) + var_b
        lin = lin + _core.dense(_f32(np.square(x[:, src])), _f32(var_k)) + _core.dense(_f32(np.square(h_prev)),
                                                                                        _f32(var_u))
        h = np.asarray(states[:, step], np.float64)
        # f'(z) from the float output h = f(z): tanh' = 1 - h^2, sigmoid' = h (1 - h).
        slope2 = {"tanh": (1 - h * h) ** 2, "sigmoid": (h * (1 - h)) ** 2, "relu": (h > 0).astype(np.float64),
                  "linear": np.ones(h.shape)}.get(layer.activation)
        if slope2 is None:
            raise _core.UnsupportedError(f"predict: SimpleRNN '{layer.name}' activation '{layer.activation}'")
        vh = slope2 * lin + noise_variance(state_q, h, f"{layer.name}/state")
        out[:, step] = vh
    return out


def _same_grid(a, b):
    """True when quantizer a maps every value on b's grid to itself (same static spec and params):
    then a adds no noise (e.g. an output quantizer after a Flatten of quantized values)."""
    if a is None or b is None or not (getattr(a, "observes", False) and getattr(b, "observes", False)):
        return False
    if a.spec_json() != b.spec_json():
        return False
    pa, pb = a.params, b.params
    return (pa.qmin, pa.qmax, pa.axis) == (pb.qmin, pb.qmax, pb.axis) and \
        np.array_equal(pa.scale, pb.scale) and np.array_equal(pa.zero_point, pb.zero_point)


def predict(candidate, x, ref_taps):
    """Predicted per-layer MSE of a fake-quantized Sequential on inputs x, given the float taps.
    Returns (rows {layer, predicted_mse, predicted_sqnr_db}, {"<rnn>/states": per-step MSE})."""
    def row(name, v):
        mse = float(np.mean(v))
        power = float(np.mean(np.square(np.asarray(ref_taps[name], np.float64))))
        sqnr = float("inf") if mse == 0 else (float("-inf") if power == 0 else 10 * np.log10(power / mse))
        return dict(layer=name, predicted_mse=mse, predicted_sqnr_db=sqnr)

    v = noise_variance(candidate.input_quantizer, x, "input")
    rows, steps = [row("input", v)], {}
    prev, grid = "input", candidate.input_quantizer   # grid: the quantizer v's values were last put on
    for layer in candidate.layers:
        q = candidate.quant.get(layer.name)
        name = getattr(layer, "folded", [layer.name])[-1]
        xin = ref_taps[prev]
        # Only shape layers keep values on the grid they arrived on; an RNN's states are on its
        # state quantizer's grid.
        grid = grid if isinstance(layer, (Flatten, Reshape)) else (q.state if isinstance(layer, SimpleRNN) and q
                                                                   else None)
        if isinstance(layer, (Dense, Conv2D, DepthwiseConv2D)):
            lin, z = _weighted(layer, q, xin, v)
            v = _slope2(layer.activation, z, lin) * lin
        elif isinstance(layer, SimpleRNN):
            states = ref_taps[f"{layer.name}/states"]
            vs = _rnn(layer, q, xin, v, states)
            steps[f"{layer.name}/states"] = vs.mean(axis=(0, 2))
            rows.append(row(f"{layer.name}/states", vs))
            v = vs if layer.return_sequences else vs[:, -1]
        elif isinstance(layer, BatchNormalization):
            w = layer.weights
            v = v * (w["gamma"].astype(np.float64) ** 2 / (w["moving_variance"].astype(np.float64) + layer.epsilon))
        elif isinstance(layer, Activation):
            v = _slope2(layer.activation, xin, v) * v
        elif isinstance(layer, (Flatten, Reshape)):
            v = v.reshape((v.shape[0],) + tuple(layer.output_shape))
        else:
            raise _core.UnsupportedError(f"predict: no noise model for {type(layer).__name__} '{layer.name}'")
        if q is not None and q.output is not None and not _same_grid(q.output, grid):
            v = v + noise_variance(q.output, ref_taps[name], f"{layer.name}/output")
        grid = q.output if q is not None and q.output is not None else grid
        rows.append(row(name, v))
        prev = name
    return rows, steps
