"""Training and quantization-aware training: losses, optimizers (torch's definitions), layer
backward passes over the C++ kernels, QAT fake quantizers (straight-through or LSQ), batch-norm
folding during QAT (PyTorch's ConvBn scheme), `fit` / `evaluate`, and parameter export (JSON,
optionally in AIMET's encodings layout).

Which definitions, exactly:
  * SGD(momentum, weight_decay) is torch.optim.SGD (dampening 0, no Nesterov): weight decay is an
    L2 term added to the gradient, g += wd * p; buf = m * buf + g (buf = g on the first step).
  * Adam(weight_decay) is torch.optim.Adam: L2 added to the gradient. AdamW is torch.optim.AdamW:
    decoupled decay, p *= 1 - lr * wd, before the Adam step.
  * Weight decay applies to every layer weight (kernels, biases, BN gamma/beta), as torch's
    default single parameter group does; never to LSQ scales / zero points.
  * BatchNormalization trains with batch statistics (biased variance to normalize, the unbiased
    one for the running average, momentum 0.1: torch's BatchNorm2d rules, on Keras' epsilon).
  * During QAT a BN that follows a linear Dense/Conv is folded as torch.ao.nn.intrinsic.qat
    ConvBn2d does: the weight is scaled by gamma / sqrt(running_var + eps) and fake-quantized,
    the convolution output divided back by that factor, and the BN then runs in training mode
    on batch statistics. At inference the folded weight and bias use the running statistics.
  * Weights' fake-quant ranges follow the current weights each step (TF QAT's last-value rule);
    activations' and RNN states' follow a moving-average min/max observer (torch's QAT default,
    averaging constant 0.01 unless the spec says otherwise); LSQ learns scale and zero point
    (torch._LearnableFakeQuantize with gradient scaling 1 / sqrt(numel * qmax)).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field

import numpy as np

from . import _core
from .layers import (Activation, BatchNormalization, Conv2D, Dense, DepthwiseConv2D, Flatten, Layer, LayerQuant,
                     Reshape, SimpleRNN)
from .quantizer import Quantizer

BN_MOMENTUM = 0.1   # torch's default; Keras' momentum=0.99 is torch's 0.01


# ---- losses ------------------------------------------------------------------------------------

def mse_loss(pred, target):
    """torch.nn.MSELoss (mean over every element) -> (loss, dloss/dpred)."""
    pred = np.asarray(pred, np.float32)
    target = np.asarray(target, np.float64)
    if target.size != pred.size:
        raise _core.ShapeError(f"mse: the target has shape {target.shape} but the prediction {pred.shape}")
    diff = pred.astype(np.float64) - target.reshape(pred.shape)
    return float(np.mean(diff ** 2)), (2.0 * diff / diff.size).astype(np.float32)


def cross_entropy_loss(logits, labels):
    """torch.nn.CrossEntropyLoss on logits (N, classes) and integer labels (N,), mean over the
    batch -> (loss, dloss/dlogits). Log-softmax in float64 (stable: max subtracted)."""
    z = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    if z.ndim != 2 or labels.shape != (z.shape[0],):
        raise _core.ShapeError(f"cross_entropy: expected logits (N, classes) and labels (N,), got {z.shape} and "
                               f"{labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= z.shape[1]:
        raise _core.DataError(f"cross_entropy: labels must be integers in [0, {z.shape[1]})")
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = z.shape[0]
    grad = np.exp(logp)
    grad[np.arange(n), labels] -= 1.0
    return float(-logp[np.arange(n), labels].mean()), (grad / n).astype(np.float32)


LOSSES = {"mse": mse_loss, "cross_entropy": cross_entropy_loss}


def _loss_fn(loss):
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise _core.ConfigError(f"loss: unknown loss '{loss}'; expected one of {', '.join(LOSSES)}")
    return LOSSES[loss]


# ---- optimizers ----------------------------------------------------------------------------------

class SGD:
    """torch.optim.SGD(lr, momentum, weight_decay): L2 weight decay added to the gradient."""

    def __init__(self, lr=0.01, momentum=0.0, weight_decay=0.0):
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.state = {}

    def update(self, name, p, g, decay=True):
        g = g + np.float32(self.weight_decay) * p if (decay and self.weight_decay) else g
        if self.momentum:
            buf = self.state.get(name)
            buf = g.copy() if buf is None else np.float32(self.momentum) * buf + g
            self.state[name] = buf
            g = buf
        return (p - np.float32(self.lr) * g).astype(np.float32)


class Adam:
    """torch.optim.Adam (decoupled=False: L2 added to the gradient) or torch.optim.AdamW
    (decoupled=True: p *= 1 - lr * wd before the step), with torch's update order."""

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
        self.lr, self.betas, self.eps = float(lr), tuple(float(b) for b in betas), float(eps)
        self.weight_decay, self.decoupled = float(weight_decay), bool(decoupled)
        self.state = {}

    def update(self, name, p, g, decay=True):
        b1, b2 = self.betas
        if decay and self.weight_decay:
            if self.decoupled:
                p = p * np.float32(1.0 - self.lr * self.weight_decay)
            else:
                g = g + np.float32(self.weight_decay) * p
        step, m, v = self.state.get(name, (0, np.zeros_like(p), np.zeros_like(p)))
        step += 1
        m = m + (g - m) * np.float32(1.0 - b1)            # exp_avg.lerp_(grad, 1 - beta1)
        v = v * np.float32(b2) + g * g * np.float32(1.0 - b2)
        self.state[name] = (step, m, v)
        bc1, bc2 = 1.0 - b1 ** step, 1.0 - b2 ** step
        denom = np.sqrt(v) / np.float32(np.sqrt(bc2)) + np.float32(self.eps)
        return (p - np.float32(self.lr / bc1) * (m / denom)).astype(np.float32)


def make_optimizer(spec):
    """An optimizer from an instance or a config dict {kind: sgd|adam|adamw, lr, momentum,
    weight_decay, betas, eps} (the experiment config's train/optimizer section)."""
    if spec is None:
        return Adam()
    if isinstance(spec, (SGD, Adam)):
        return spec
    spec = dict(spec)
    kind = spec.pop("kind", "adam")
    allowed = {"sgd": {"lr", "momentum", "weight_decay"}, "adam": {"lr", "betas", "eps", "weight_decay"},
               "adamw": {"lr", "betas", "eps", "weight_decay"}}
    if kind not in allowed:
        raise _core.ConfigError(f"/train/optimizer/kind: unknown optimizer '{kind}'; expected sgd, adam, adamw")
    unknown = set(spec) - allowed[kind]
    if unknown:
        raise _core.ConfigError(f"/train/optimizer: unknown key(s) {sorted(unknown)} for {kind}")
    if kind == "sgd":
        return SGD(**spec)
    return Adam(decoupled=kind == "adamw", **spec)


# ---- QAT fake quantizers -------------------------------------------------------------------------

def _view(x, view_shape):
    return np.ascontiguousarray(x if view_shape is None else x.reshape(view_shape), dtype=np.float32)


class ObservedFakeQuant:
    """Straight-through fake quantization with observed ranges (a qd.Quantizer underneath).

    weight=True: the range follows the tensor itself at every call (dynamic); else a static
    observer that observes every training batch (and calibration data) and not at inference.
    `view_shape` quantizes through a reshaped view (depthwise kernels per output channel)."""

    learnable = False

    def __init__(self, spec, weight=False, view_shape=None):
        spec = dict(spec)
        if weight:
            spec["mode"] = "dynamic"
        elif spec.get("mode", "static") == "static":
            spec.setdefault("observer", "moving_average")
        self.spec, self.weight, self.view_shape = spec, weight, view_shape
        self.quantizer = Quantizer(**spec)
        self.observes = self.quantizer.observes
        self.observing = False
        self.observed = False

    def fake_quant(self, x):
        """Inference (and calibration while `observing`)."""
        v = _view(x, self.view_shape)
        if self.observing and self.observes and not self.quantizer.frozen:
            self.quantizer.observe(v)
            self.observed = True
        return self.quantizer.fake_quant(v).reshape(np.shape(x))

    def forward(self, x):
        """Training: observe this batch, fake-quantize -> (y, mask)."""
        v = _view(x, self.view_shape)
        if self.observes and not self.quantizer.frozen:   # a frozen observer keeps its range
            self.quantizer.observe(v)
            self.observed = True
        y, mask = self.quantizer.fake_quant(v, return_mask=True)
        return y.reshape(np.shape(x)), mask.reshape(np.shape(x))

    def backward(self, mask, dy):
        return np.where(mask, dy, np.float32(0)).astype(np.float32)

    def params_for(self, x):
        if self.observes:
            return self.quantizer.params
        return self.quantizer.params_for(_view(x, self.view_shape))


class LSQFakeQuant:
    """Learned step size quantization (Esser et al. 2020) as torch._LearnableFakeQuantize runs it:
    learnable float32 scale and zero point (per tensor, or per channel on `axis`), forward
    through the rounded, clamped zero point; gradients from qd.fake_quant_lsq_backward with
    grad_factor = 1 / sqrt(numel * qmax). Initialized from min/max of the first data seen.
    Symmetric specs keep the zero point fixed."""

    learnable = True

    def __init__(self, spec, weight=False, view_shape=None):
        spec = {k: v for k, v in dict(spec).items() if k not in ("observer", "mode")}
        self.spec, self.weight, self.view_shape = spec, weight, view_shape
        self._init_quantizer = Quantizer(**spec)   # min/max observer: the first data's range
        self.qmin, self.qmax = self._init_quantizer.qmin, self._init_quantizer.qmax
        self.symmetric = bool(spec.get("symmetric", False))
        self.axis = spec.get("axis", -1) if spec.get("granularity", "per_tensor") == "per_channel" else None
        self.scale = self.zero_point = None
        self.grads = {}
        self.observing = False

    @property
    def observed(self):
        return self.scale is not None

    def _init(self, v):
        if self.scale is None:
            self._init_quantizer.observe(v)
            p = self._init_quantizer.params
            self.scale = np.atleast_1d(np.asarray(p.scale, np.float32)).copy()
            self.zero_point = np.atleast_1d(np.asarray(p.zero_point, np.float32)).copy()

    def _zp_int(self):
        # torch rounds the float zero point to nearest-even and clamps it to the code range.
        return np.clip(np.rint(self.zero_point), self.qmin, self.qmax).astype(np.int32)

    def _args(self):
        self.scale = np.maximum(self.scale, np.float32(np.finfo(np.float32).eps))   # torch clamps to eps
        s, z = self.scale, self._zp_int()
        return (s, z) if self.axis is not None else (float(s[0]), int(z[0]))

    def fake_quant(self, x):
        v = _view(x, self.view_shape)
        if self.observing or self.scale is None:
            self._init(v)
        s, z = self._args()
        axis = None if self.axis is None else self.axis % v.ndim
        return _core.fake_quant(v, s, z, self.qmin, self.qmax, axis).reshape(np.shape(x))

    def forward(self, x):
        v = _view(x, self.view_shape)
        self._init(v)
        return self.fake_quant(x), v

    def backward(self, v, dy):
        s, z = self._args()
        axis = None if self.axis is None else self.axis % v.ndim
        gf = float(1.0 / np.sqrt(v.size * self.qmax))
        dx, ds, dz = _core.fake_quant_lsq_backward(v, _view(dy, v.shape), s, z, self.qmin, self.qmax, axis,
                                                   grad_factor=gf)
        self.grads["scale"] = self.grads.get("scale", 0) + np.atleast_1d(ds).astype(np.float32)
        if not self.symmetric:
            self.grads["zero_point"] = self.grads.get("zero_point", 0) + np.atleast_1d(dz).astype(np.float32)
        return dx.reshape(np.shape(dy))

    def params_for(self, x):
        s, z = self._args()
        axis = None
        if self.axis is not None:
            axis = self.axis % (len(self.view_shape) if self.view_shape else np.ndim(x))
        return _core.QuantParams(s, z, self.qmin, self.qmax, axis)


def _qforward(q, x):
    """Training forward through an optional QAT quantizer -> (y, ctx)."""
    if q is None:
        return x, None
    return q.forward(x)


def _qbackward(q, ctx, dy):
    return dy if q is None else q.backward(ctx, dy)


# ---- batch norm (training mode) and the QAT folding layer ----------------------------------------

def batch_norm_train(x, gamma, beta, eps):
    """Training-mode BN over every axis but the last -> (y, cache, batch mean, unbiased var)."""
    xd = x.astype(np.float64).reshape(-1, x.shape[-1])
    m = xd.shape[0]
    mean = xd.mean(axis=0)
    var = xd.var(axis=0)
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat = (xd - mean) * inv_std
    y = (xhat * gamma + beta).astype(np.float32).reshape(x.shape)
    unbiased = var * m / max(m - 1, 1)
    return y, (xhat, inv_std, gamma), mean, unbiased


def batch_norm_train_backward(cache, dy):
    """-> (dx, dgamma, dbeta) of batch_norm_train."""
    xhat, inv_std, gamma = cache
    d = dy.astype(np.float64).reshape(xhat.shape)
    m = xhat.shape[0]
    dbeta = d.sum(axis=0)
    dgamma = (d * xhat).sum(axis=0)
    dxhat = d * gamma
    dx = inv_std / m * (m * dxhat - dxhat.sum(axis=0) - xhat * (dxhat * xhat).sum(axis=0))
    return dx.astype(np.float32).reshape(dy.shape), dgamma.astype(np.float32), dbeta.astype(np.float32)


def _update_running(w, mean, unbiased):
    mom = BN_MOMENTUM
    w["moving_mean"] = ((1 - mom) * w["moving_mean"].astype(np.float64) + mom * mean).astype(np.float32)
    w["moving_variance"] = ((1 - mom) * w["moving_variance"].astype(np.float64) + mom * unbiased).astype(np.float32)


class BatchNormFolded(Layer):
    """A Dense / Conv2D / DepthwiseConv2D (linear) with the following BatchNormalization folded
    in for QAT (torch's ConvBn scheme, see the module docstring). Weights: the inner layer's
    kernel (and bias) plus gamma, beta, moving_mean, moving_variance."""
    kind = "batch_norm_folded"

    def __init__(self, inner, bn):
        super().__init__(inner.name)
        self.inner, self.bn_name, self.epsilon = inner, bn.name, bn.epsilon
        self.kname = "depthwise_kernel" if isinstance(inner, DepthwiseConv2D) else "kernel"
        self.weights = dict(inner.weights)
        self.weights.update(bn.weights)
        self.input_shape, self.output_shape = inner.input_shape, bn.output_shape
        self.activation = "linear"
        self.folded = getattr(inner, "folded", []) + [bn.name]

    def config(self):
        return dict(inner=self.inner.config(), epsilon=self.epsilon)

    def weight_quant_names(self):
        return [self.kname]

    def _factor(self):
        w = self.weights
        std = np.sqrt(w["moving_variance"] + np.float32(self.epsilon)).astype(np.float32)
        return (w["gamma"] / std).astype(np.float32), std

    def folded_weights(self):
        """Kernel and bias with the running statistics folded in (what inference and export use)."""
        w = self.weights
        f, _ = self._factor()
        kernel = (w[self.kname].reshape(-1, f.size) * f).reshape(w[self.kname].shape).astype(np.float32)
        b = w.get("bias", np.zeros_like(f))
        return kernel, (w["beta"] + (b - w["moving_mean"]) * f).astype(np.float32)

    def _run(self, x, kernel, bias, path):
        inner = self.inner
        inner.weights = {self.kname: kernel, **({"bias": bias} if bias is not None else {})}
        try:
            return inner.forward(x, path=path)
        finally:
            inner.weights = {}

    def forward(self, x, q=None, path="auto", taps=None):
        self._check_input(x)
        kernel, bias = self.folded_weights()
        wq = q.weights.get(self.kname) if q is not None else None
        kernel = wq.fake_quant(kernel) if wq is not None else kernel
        return self._run(x, kernel, bias, path)


# ---- layer training: forward with a cache, backward into gradients -------------------------------

def _weights_fq(layer, lq, names):
    """Fake-quantized weights for a training step -> (weights dict, contexts)."""
    out, ctx = dict(layer.weights), {}
    for k in names:
        q = lq.weights.get(k) if lq is not None else None
        if q is not None:
            out[k], ctx[k] = q.forward(layer.weights[k])
    if lq is not None and lq.bias is not None and "bias" in out:
        out["bias"], ctx["bias"] = lq.bias.forward(layer.weights["bias"])
    return out, ctx


def _weights_bq(layer, lq, ctx, grads):
    """Straight-through / LSQ backward of the weight quantizers, in place on `grads`."""
    for k, c in ctx.items():
        q = lq.bias if k == "bias" else lq.weights[k]
        grads[k] = q.backward(c, grads[k])


def _linear_forward(layer, x, w, path):
    if isinstance(layer, Dense):
        return _core.dense(x, w["kernel"], w.get("bias"), path=path, name=layer.name)
    if isinstance(layer, DepthwiseConv2D):
        return _core.depthwise_conv2d(x, w["depthwise_kernel"], w.get("bias"), strides=layer.strides,
                                      padding=layer.padding, dilation=layer.dilation_rate, path=path, name=layer.name)
    return _core.conv2d(x, w["kernel"], w.get("bias"), strides=layer.strides, padding=layer.padding,
                        dilation=layer.dilation_rate, groups=layer.groups, path=path, name=layer.name)


def _linear_backward(layer, x, w, dz, use_bias, path):
    if isinstance(layer, Dense):
        return _core.dense_backward(x, w["kernel"], dz, use_bias=use_bias, path=path, name=layer.name)
    if isinstance(layer, DepthwiseConv2D):
        return _core.depthwise_conv2d_backward(x, w["depthwise_kernel"], dz, strides=layer.strides,
                                               padding=layer.padding, dilation=layer.dilation_rate,
                                               use_bias=use_bias, path=path, name=layer.name)
    return _core.conv2d_backward(x, w["kernel"], dz, strides=layer.strides, padding=layer.padding,
                                 dilation=layer.dilation_rate, groups=layer.groups, use_bias=use_bias, path=path,
                                 name=layer.name)


def _linear_layer_forward(layer, x, lq, path):
    kname = "depthwise_kernel" if isinstance(layer, DepthwiseConv2D) else "kernel"
    w, ctx = _weights_fq(layer, lq, [kname])
    y = _core.activation(_linear_forward(layer, x, w, path), layer.activation)
    return y, (x, w, ctx, y, kname)


def _linear_layer_backward(layer, cache, dy, lq, path):
    x, w, ctx, y, kname = cache
    dz = _core.activation_backward(y, dy, layer.activation)
    dx, dk, db = _linear_backward(layer, x, w, dz, "bias" in w, path)
    grads = {kname: dk}
    if db is not None:
        grads["bias"] = db
    _weights_bq(layer, lq, ctx, grads)
    return dx, grads


def _folded_forward(layer, x, lq, path, training=True):
    w = layer.weights
    f, std = layer._factor()
    scaled = (w[layer.kname].reshape(-1, f.size) * f).reshape(w[layer.kname].shape).astype(np.float32)
    q = lq.weights.get(layer.kname) if lq is not None else None
    wq, qctx = _qforward(q, scaled)
    conv = layer._run(x, wq, None, path)
    orig = (conv / f).astype(np.float32)
    if "bias" in w:
        orig = orig + w["bias"]
    y, bn_cache, mean, unbiased = batch_norm_train(orig, w["gamma"], w["beta"], layer.epsilon)
    if training:
        _update_running(w, mean, unbiased)
    return y, (x, f, std, wq, qctx, conv, bn_cache)


def _folded_backward(layer, cache, dy, lq, path):
    x, f, std, wq, qctx, conv, bn_cache = cache
    w = layer.weights
    dorig, dgamma, dbeta = batch_norm_train_backward(bn_cache, dy)
    axes = tuple(range(dorig.ndim - 1))
    grads = {"beta": dbeta}
    if "bias" in w:
        grads["bias"] = dorig.sum(axis=axes).astype(np.float32)
    # orig = conv * std / gamma: d/dgamma = -orig_conv / gamma, with orig_conv = conv / f.
    dgamma = dgamma - (dorig.astype(np.float64) * conv / (f * w["gamma"])).sum(axis=axes)
    dconv = (dorig / f).astype(np.float32)
    inner = layer.inner
    dx, dwq, _ = _linear_backward(inner, x, {layer.kname: wq}, dconv, False, path)
    q = lq.weights.get(layer.kname) if lq is not None else None
    dscaled = _qbackward(q, qctx, dwq)
    flat = dscaled.reshape(-1, f.size).astype(np.float64)
    grads[layer.kname] = (flat * f).reshape(dscaled.shape).astype(np.float32)
    # scaled = W * gamma / std (std from buffers, no gradient, as in torch).
    dgamma = dgamma + (flat * w[layer.kname].reshape(-1, f.size)).sum(axis=0) / std
    grads["gamma"] = dgamma.astype(np.float32)
    return dx, grads


def _bn_forward(layer, x, lq, path, training=True):
    w = layer.weights
    y, cache, mean, unbiased = batch_norm_train(x, w["gamma"], w["beta"], layer.epsilon)
    if training:
        _update_running(w, mean, unbiased)
    return y, cache


def _bn_backward(layer, cache, dy, lq, path):
    dx, dgamma, dbeta = batch_norm_train_backward(cache, dy)
    return dx, {"gamma": dgamma, "beta": dbeta}


def _rnn_forward(layer, x, lq, path):
    w, ctx = _weights_fq(layer, lq, ["kernel", "recurrent_kernel"])
    state_q = lq.state if lq is not None else None
    if state_q is None:
        states = _core.simple_rnn(x, w["kernel"], w["recurrent_kernel"], w.get("bias"), activation=layer.activation,
                                  go_backwards=layer.go_backwards, path=path, name=layer.name)
        activated = masks = None
    else:
        n, t, _ = x.shape
        h = np.zeros((n, layer.units), np.float32)
        order = range(t - 1, -1, -1) if layer.go_backwards else range(t)
        states, activated = (np.empty((n, t, layer.units), np.float32) for _ in range(2))
        masks = np.empty((n, t, layer.units), np.float32)
        for step, src in enumerate(order):
            z = _core.dense(np.ascontiguousarray(x[:, src]), w["kernel"], w.get("bias"), path=path, name=layer.name)
            a = _core.activation(z + _core.dense(h, w["recurrent_kernel"], path=path, name=layer.name),
                                 layer.activation)
            h, mask = state_q.forward(a)
            activated[:, step], states[:, step], masks[:, step] = a, h, mask
    y = states if layer.return_sequences else np.ascontiguousarray(states[:, -1])
    return y, (x, w, ctx, states, activated, masks)


def _rnn_backward(layer, cache, dy, lq, path):
    x, w, ctx, states, activated, masks = cache
    if layer.return_sequences:
        dstates = np.ascontiguousarray(dy, dtype=np.float32)
    else:
        dstates = np.zeros_like(states)
        dstates[:, -1] = dy
    dx, dk, dr, db, _ = _core.simple_rnn_backward(
        x, w["kernel"], w["recurrent_kernel"], states, dstates, activated=activated, state_mask=masks,
        activation=layer.activation, go_backwards=layer.go_backwards, use_bias="bias" in w, path=path,
        name=layer.name)
    grads = {"kernel": dk, "recurrent_kernel": dr}
    if db is not None:
        grads["bias"] = db
    _weights_bq(layer, lq, ctx, grads)
    return dx, grads


def _act_forward(layer, x, lq, path):
    y = _core.activation(x, layer.activation)
    return y, y


def _act_backward(layer, y, dy, lq, path):
    return _core.activation_backward(y, np.ascontiguousarray(dy, dtype=np.float32), layer.activation), {}


def _reshape_forward(layer, x, lq, path):
    return layer.forward(x), x.shape


def _reshape_backward(layer, shape, dy, lq, path):
    return np.ascontiguousarray(dy.reshape(shape)), {}


def _train_ops(layer):
    if isinstance(layer, BatchNormFolded):
        return _folded_forward, _folded_backward
    if isinstance(layer, (Dense, Conv2D, DepthwiseConv2D)):
        return _linear_layer_forward, _linear_layer_backward
    if isinstance(layer, SimpleRNN):
        return _rnn_forward, _rnn_backward
    if isinstance(layer, BatchNormalization):
        return _bn_forward, _bn_backward
    if isinstance(layer, Activation):
        return _act_forward, _act_backward
    if isinstance(layer, (Flatten, Reshape)):
        return _reshape_forward, _reshape_backward
    raise _core.UnsupportedError(f"training: layer '{layer.name}' ({type(layer).__name__}) has no backward pass")


def forward_backward(model, x, y, loss="cross_entropy", path="auto"):
    """One training forward and backward pass -> (loss, output, grads) with grads keyed
    "layer/weight" and "layer/<point>/<param>" for learnable quantizer parameters. Batch-norm
    running statistics and activation observers update as in a training step."""
    loss_fn = _loss_fn(loss)
    x = np.ascontiguousarray(x, dtype=np.float32)
    out, ictx = _qforward(model.input_quantizer, x)
    caches = []
    for layer in model.layers:
        lq = model.quant.get(layer.name)
        fwd, _ = _train_ops(layer)
        h, cache = fwd(layer, out, lq, path)
        out, octx = _qforward(lq.output if lq is not None else None, np.ascontiguousarray(h, dtype=np.float32))
        caches.append((layer, lq, cache, octx))
    value, d = loss_fn(out, y)
    grads = {}
    for layer, lq, cache, octx in reversed(caches):
        d = _qbackward(lq.output if lq is not None else None, octx, d)
        _, bwd = _train_ops(layer)
        d, g = bwd(layer, cache, np.ascontiguousarray(d, dtype=np.float32), lq, path)
        for k, v in g.items():
            grads[f"{layer.name}/{k}"] = v
    _qbackward(model.input_quantizer, ictx, d)
    for name, q in _quantizers(model):
        if getattr(q, "learnable", False):
            for k, v in q.grads.items():
                grads[f"{name}/{k}"] = v
            q.grads = {}
    return value, out, grads


def _quantizers(model):
    """(export name, quantizer) for every quantization point of a model."""
    if model.input_quantizer is not None:
        yield "input", model.input_quantizer
    for layer in model.layers:
        lq = model.quant.get(layer.name)
        if lq is None:
            continue
        for k, q in lq.weights.items():
            yield f"{layer.name}/{k}", q
        for point in ("bias", "state", "output"):
            q = getattr(lq, point)
            if q is not None:
                yield f"{layer.name}/{point}", q


def apply_gradients(model, grads, optimizer):
    """One optimizer step on every layer weight and learnable quantizer parameter."""
    for layer in model.layers:
        for k in layer.weights:
            key = f"{layer.name}/{k}"
            if key in grads:
                layer.weights[k] = np.ascontiguousarray(optimizer.update(key, layer.weights[k], grads[key]))
    for name, q in _quantizers(model):
        if getattr(q, "learnable", False) and q.scale is not None:
            q.scale = optimizer.update(f"{name}/scale", q.scale, grads.get(f"{name}/scale", 0 * q.scale), decay=False)
            if not q.symmetric:
                q.zero_point = optimizer.update(f"{name}/zero_point", q.zero_point,
                                                grads.get(f"{name}/zero_point", 0 * q.zero_point), decay=False)


# ---- fit / evaluate ------------------------------------------------------------------------------

@dataclass
class History:
    """Per-epoch metrics, like Keras' History.history: {"loss": [...], "accuracy": [...], ...}."""
    history: dict = field(default_factory=dict)

    def append(self, **values):
        for k, v in values.items():
            self.history.setdefault(k, []).append(float(v))


def _accuracy(out, y):
    return float(np.mean(np.argmax(out, axis=1) == np.asarray(y)))


def evaluate(model, x, y, loss="cross_entropy", batch_size=256, path="auto"):
    """Inference-mode loss (and accuracy for cross-entropy) over (x, y)."""
    loss_fn = _loss_fn(loss)
    out = model.predict(np.ascontiguousarray(x, dtype=np.float32), batch_size=batch_size, path=path)
    value, _ = loss_fn(out, y)
    result = {"loss": value}
    if loss == "cross_entropy":
        result["accuracy"] = _accuracy(out, y)
    return result


def fit(model, x, y, epochs=1, batch_size=32, validation_data=None, loss="cross_entropy", optimizer=None, seed=None,
        shuffle=True, verbose=True, path="auto"):
    """Train `model` in place (minibatch, the order shuffled by seed per epoch) -> History.

    Deterministic for a seed: the same seed, data and model give the same weights bit for bit.
    loss: "mse" | "cross_entropy" (logits + integer labels) | callable(pred, y) -> (loss, dpred).
    optimizer: SGD / Adam instance or {kind, lr, ...} dict (default Adam(1e-3)).
    """
    from tqdm import tqdm   # the text bar: no widget dependency in notebooks

    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.asarray(y)
    if len(x) != len(y):
        raise _core.ShapeError(f"fit: x has {len(x)} samples but y has {len(y)}")
    if batch_size <= 0 or epochs < 0:
        raise _core.ConfigError(f"fit: batch_size must be positive and epochs non-negative, got {batch_size}, {epochs}")
    optimizer = make_optimizer(optimizer)
    seed = model.seed if seed is None else int(seed)
    history = History()
    for q in (q for _, q in _quantizers(model)):
        q.observing = False
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(len(x)) if shuffle else np.arange(len(x))
        total = correct = 0.0
        bar = tqdm(range(0, len(x), batch_size), desc=f"epoch {epoch + 1}/{epochs}", disable=not verbose,
                   leave=False)
        for start in bar:
            idx = order[start:start + batch_size]
            value, out, grads = forward_backward(model, x[idx], y[idx], loss=loss, path=path)
            apply_gradients(model, grads, optimizer)
            total += value * len(idx)
            if loss == "cross_entropy":
                correct += _accuracy(out, y[idx]) * len(idx)
            bar.set_postfix(loss=f"{value:.4f}")
        metrics = {"loss": total / len(x)}
        if loss == "cross_entropy":
            metrics["accuracy"] = correct / len(x)
        if validation_data is not None:
            v = evaluate(model, validation_data[0], validation_data[1], loss=loss, path=path)
            metrics.update({f"val_{k}": val for k, val in v.items()})
        history.append(**metrics)
        if verbose:
            print(f"epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return history


# ---- QAT model -----------------------------------------------------------------------------------

def _fake_quant_for(spec, weight, view_shape=None, lsq=False):
    cls = LSQFakeQuant if lsq else ObservedFakeQuant
    return cls(spec, weight=weight, view_shape=view_shape)


def _weight_spec(spec, kname, kernel):
    spec = dict(spec)
    view = None
    if spec.get("granularity", "per_tensor") == "per_channel":
        spec.setdefault("axis", -1)   # output channels: the last axis of Keras kernels
        if kname == "depthwise_kernel":
            view = kernel.shape[:2] + (1, kernel.shape[2] * kernel.shape[3])
    return spec, view


def make_qat_model(model, config, calibration=None, lsq=False, batch_size=256):
    """A trainable fake-quant copy of `model` (see Sequential.quantize(..., qat=True))."""
    qm = copy.deepcopy(model)
    qm.quant, qm.input_quantizer = {}, None
    if config.fold_batch_norm:
        kept = []
        for layer in qm.layers:
            prev = kept[-1] if kept else None
            if isinstance(layer, BatchNormalization) and isinstance(prev, (Dense, Conv2D, DepthwiseConv2D)) \
                    and prev.activation == "linear":
                kept[-1] = BatchNormFolded(prev, layer)
            else:
                kept.append(layer)
        qm.layers = kept
    for layer in qm.layers:
        q = LayerQuant()
        wspec = config.spec(layer.name, "weights")
        if wspec is not None:
            for kname in layer.weight_quant_names():
                spec, view = _weight_spec(wspec, kname, layer.weights[kname])
                q.weights[kname] = _fake_quant_for(spec, True, view, lsq)
        bspec = config.spec(layer.name, "bias")
        if bspec is not None and "bias" in layer.weights and not isinstance(layer, BatchNormFolded):
            q.bias = ObservedFakeQuant(bspec, weight=True)
        aspec = config.spec(layer.name, "activations")
        q.output = _fake_quant_for(aspec, False, None, lsq) if aspec is not None else None
        sspec = config.spec(layer.name, "state")
        q.state = ObservedFakeQuant(sspec) if sspec is not None and isinstance(layer, SimpleRNN) else None
        qm.quant[layer.name] = q
    if config.activations is not None:
        qm.input_quantizer = _fake_quant_for(config.activations, False, None, lsq)
    qm.qat = True
    if calibration is not None:
        calibrate(qm, calibration, batch_size)
    return qm


def calibrate(qm, x, batch_size=256):
    """Initialize activation / state ranges (and LSQ scales) by observing x through the model."""
    quantizers = [q for _, q in _quantizers(qm)]
    for q in quantizers:
        q.observing = True
    try:
        qm.predict(np.ascontiguousarray(x, dtype=np.float32), batch_size=batch_size)
    finally:
        for q in quantizers:
            q.observing = False


# ---- export --------------------------------------------------------------------------------------

def _tensor_for(model, name):
    """The tensor a weight quantizer acts on (folded for BatchNormFolded), or None."""
    layer_name, _, point = name.partition("/")
    if point in ("output", "state", "") or layer_name == "input":
        return None
    layer = model.layer(layer_name)
    if isinstance(layer, BatchNormFolded):
        return layer.folded_weights()[0 if point == layer.kname else 1]
    return layer.weights["bias" if point == "bias" else point]


def _params(q, tensor):
    if isinstance(q, (ObservedFakeQuant, LSQFakeQuant)):
        return q.params_for(tensor)
    inner = getattr(q, "quantizer", q)            # qd.Quantizer, or the PTQ reshaped-view wrapper
    if tensor is None or inner.frozen:
        return inner.params
    view = getattr(q, "view_shape", tensor.shape)
    return inner.params_for(np.ascontiguousarray(tensor.reshape(view)))


def _bits(qmin, qmax):
    return int(np.round(np.log2(qmax - qmin + 1)))


def export_encodings(model, path=None, layout="qdrift"):
    """The quantization parameters of every point -> dict (and JSON file when `path` is given).

    layout="qdrift": {"format_version", "model", "activations": {...}, "params": {...}}, each
    entry {bits, qmin, qmax, axis, scale[], zero_point[], min[], max[], learnable}.
    layout="aimet": AIMET's encodings file: {"version", "activation_encodings", "param_encodings"},
    each tensor a list (one per channel) of {bitwidth, dtype, is_symmetric, max, min, offset,
    scale}, with AIMET's unsigned-code convention real = scale * (q_u + offset), q_u in
    [0, 2^bits - 1]: offset = lowest full-range code - zero_point (-2^(bits-1) signed, 0 unsigned),
    min = scale * offset, max = scale * (offset + 2^bits - 1), is_symmetric "True"/"False" (strings,
    as AIMET writes them).
    Dynamic activation quantizers have no fixed parameters to export (ConfigError).
    """
    if layout not in ("qdrift", "aimet"):
        raise _core.ConfigError(f"export_encodings: layout must be 'qdrift' or 'aimet', got '{layout}'")
    acts, params = {}, {}
    for name, q in _quantizers(model):
        tensor = _tensor_for(model, name)
        p = _params(q, tensor)
        scale = np.atleast_1d(np.asarray(p.scale, np.float64)).ravel()
        zp = np.atleast_1d(np.asarray(p.zero_point, np.int64)).ravel()
        entry = dict(bits=_bits(p.qmin, p.qmax), qmin=int(p.qmin), qmax=int(p.qmax), axis=p.axis,
                     scale=scale.tolist(), zero_point=zp.tolist(), min=(scale * (p.qmin - zp)).tolist(),
                     max=(scale * (p.qmax - zp)).tolist(), learnable=bool(getattr(q, "learnable", False)))
        spec = getattr(q, "spec", None)
        entry["symmetric"] = bool(spec.get("symmetric", False)) if isinstance(spec, dict) else \
            bool(json.loads(getattr(q, "quantizer", q).spec_json())["symmetric"])
        (acts if tensor is None else params)[name] = entry
    if layout == "qdrift":
        result = {"format_version": 1, "model": model.name, "activations": acts, "params": params}
    else:
        def aimet(e):
            # AIMET's offset counts from the full code range's lowest code; a narrow range's
            # dropped code (-2^(b-1)) stays representable in its min, as AIMET writes it.
            lowest = -(1 << (e["bits"] - 1)) if e["qmin"] < 0 else 0
            offset = [lowest - z for z in e["zero_point"]]
            span = (1 << e["bits"]) - 1
            return [dict(bitwidth=e["bits"], dtype="int", is_symmetric=str(e["symmetric"]),
                         max=s * (o + span), min=s * o, offset=int(o), scale=s)
                    for s, o in zip(e["scale"], offset)]
        result = {"version": "0.6.1", "activation_encodings": {k: aimet(e) for k, e in acts.items()},
                  "param_encodings": {k: aimet(e) for k, e in params.items()}}
    if path is not None:
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
    return result
