"""Training and QAT against PyTorch 2.13 autograd (the oracle): every op's gradients on random
geometries, fake quantization (STE, LSQ) against torch's fake-quant ops, batch norm in training
mode and torch's QAT ConvBn2d folding, SGD / Adam / AdamW trajectories, fit determinism, export."""
import json

import numpy as np
import pytest
import torch
import torch.ao.nn.intrinsic.qat as nniqat
import torch.ao.quantization as tq
import torch.nn.functional as F

import qdrift as qd
from qdrift import training as T

L = qd.layers
PATHS = ["reference", "fast"]
pytestmark = pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")

# float32 gradients are sums of many products computed in a different order than torch's:
# compare relative to the tensor's largest magnitude. 2e-5 is ~170 float32 ulps at that
# magnitude, above the ~depth * 2^-24 rounding bound for the sizes below and far below the
# O(1) relative error of a wrong index, a dropped tap or a missing term.
REL = 2e-5


@pytest.fixture(autouse=True)
def torch_native_conv():
    """torch's oneDNN (mkldnn) CPU convolution returns wrong values for some strided geometries,
    e.g. a (1, 1, 5, 3) input, a 3x2 kernel, stride (1, 3): one output row comes out ~1e-30
    instead of 0.1 (TF 2.21's oneDNN conv agrees with it, NumPy and torch's native kernel do
    not). The oracle is torch's native kernel: mkldnn off for these tests."""
    with torch.backends.mkldnn.flags(enabled=False):
        yield


def close(ours, theirs, rel=REL, what=""):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs {theirs.shape}"
    scale = max(float(np.max(np.abs(theirs))) if theirs.size else 0.0, 1e-30)
    err = float(np.max(np.abs(ours.astype(np.float64) - theirs))) if theirs.size else 0.0
    assert err <= rel * scale, f"{what}: max error {err:.3g} > {rel:g} * {scale:.3g}"


def tt(a, grad=True):
    return torch.tensor(np.asarray(a), dtype=torch.float32, requires_grad=grad)


def randn(rng, *shape):
    return rng.normal(size=shape).astype(np.float32)


# ---- ops ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("activation", ["linear", "relu", "relu6", "tanh", "sigmoid"])
def test_dense_and_activation_gradients_vs_torch(rng, path, activation):
    for _ in range(5):
        n, i, o = (int(v) for v in rng.integers(1, 40, 3))
        x, w, b = randn(rng, n, i), randn(rng, i, o), randn(rng, o)
        x *= 2   # reach relu6's upper kink region
        y = qd.ops.activation(qd.ops.dense(x, w, b, path=path), activation)
        dy = randn(rng, n, o)
        dz = qd.ops.activation_backward(y, dy, activation)
        dx, dw, db = qd.ops.dense_backward(x, w, dz, path=path)
        xt, wt, bt = tt(x), tt(w), tt(b)
        fn = {"linear": lambda v: v, "relu": F.relu, "relu6": F.relu6, "tanh": torch.tanh,
              "sigmoid": torch.sigmoid}[activation]
        yt = fn(xt @ wt + bt)
        yt.backward(torch.from_numpy(dy))
        what = f"dense {n}x{i}x{o} {activation} {path}"
        close(y, yt, what=what + " y")
        close(dx, xt.grad, what=what + " dx")
        close(dw, wt.grad, what=what + " dw")
        close(db, bt.grad, what=what + " db")


def tf_same_pads(size, k, stride, dilation):
    eff = (k - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


def random_conv_case(rng, trial):
    groups = [1, 2, int(rng.integers(1, 5))][trial % 3]
    cg = 1 if trial % 4 == 0 else int(rng.integers(1, 5))
    og = int(rng.integers(1, 4))
    kh, kw = (int(v) for v in rng.integers(1, 4, 2))
    sh, sw = (int(v) for v in rng.integers(1, 4, 2))
    dh, dw = (2 if trial % 5 == 0 else 1), (2 if trial % 7 == 0 else 1)
    padding = "same" if trial % 2 else "valid"
    h, w = (kh - 1) * dh + int(rng.integers(1, 8)), (kw - 1) * dw + int(rng.integers(1, 8))
    n = int(rng.integers(1, 4))
    return dict(n=n, h=h, w=w, groups=groups, cg=cg, og=og, k=(kh, kw), s=(sh, sw), d=(dh, dw), padding=padding)


def torch_conv(xt, kt_keras, c, groups):
    """TF-semantics conv in torch: NHWC -> NCHW, explicit asymmetric SAME padding."""
    x = xt.permute(0, 3, 1, 2)
    if c["padding"] == "same":
        pt, pb = tf_same_pads(c["h"], c["k"][0], c["s"][0], c["d"][0])
        pl, pr = tf_same_pads(c["w"], c["k"][1], c["s"][1], c["d"][1])
        x = F.pad(x, (pl, pr, pt, pb))
    # torch's native (slow) conv kernel needs contiguous operands; .contiguous() is differentiable.
    y = F.conv2d(x.contiguous(), kt_keras.permute(3, 2, 0, 1).contiguous(), None, stride=c["s"], dilation=c["d"], groups=groups)
    return y.permute(0, 2, 3, 1)


@pytest.mark.parametrize("path", PATHS)
def test_conv2d_gradients_vs_torch_random_geometries(rng, path):
    for trial in range(40):
        c = random_conv_case(rng, trial)
        x = randn(rng, c["n"], c["h"], c["w"], c["cg"] * c["groups"])
        k = randn(rng, c["k"][0], c["k"][1], c["cg"], c["og"] * c["groups"])
        b = randn(rng, c["og"] * c["groups"])
        y = qd.ops.conv2d(x, k, b, strides=c["s"], padding=c["padding"], dilation=c["d"], groups=c["groups"],
                          path=path)
        dy = randn(rng, *y.shape)
        dx, dk, db = qd.ops.conv2d_backward(x, k, dy, strides=c["s"], padding=c["padding"], dilation=c["d"],
                                            groups=c["groups"], path=path)
        xt, kt, bt = tt(x), tt(k), tt(b)
        yt = torch_conv(xt, kt, c, c["groups"]) + bt
        yt.backward(torch.from_numpy(dy))
        what = f"conv2d {c} {path}"
        close(y, yt, what=what + " y")
        close(dx, xt.grad, what=what + " dx")
        close(dk, kt.grad, what=what + " dkernel")
        close(db, bt.grad, what=what + " dbias")


@pytest.mark.parametrize("path", PATHS)
def test_depthwise_gradients_vs_torch(rng, path):
    for trial in range(20):
        c = random_conv_case(rng, trial)
        ch, mult = int(rng.integers(1, 6)), int(rng.integers(1, 4))
        x = randn(rng, c["n"], c["h"], c["w"], ch)
        k = randn(rng, c["k"][0], c["k"][1], ch, mult)
        y = qd.ops.depthwise_conv2d(x, k, None, strides=c["s"], padding=c["padding"], dilation=c["d"], path=path)
        dy = randn(rng, *y.shape)
        dx, dk, db = qd.ops.depthwise_conv2d_backward(x, k, dy, strides=c["s"], padding=c["padding"],
                                                      dilation=c["d"], use_bias=False, path=path)
        assert db is None
        xt, kt = tt(x), tt(k)
        grouped = kt.reshape(c["k"][0], c["k"][1], 1, ch * mult)   # Keras' channel order c * M + m
        yt = torch_conv(xt, grouped, c, ch)
        yt.backward(torch.from_numpy(dy))
        what = f"depthwise {c} C={ch} M={mult} {path}"
        close(y, yt, what=what + " y")
        close(dx, xt.grad, what=what + " dx")
        close(dk, kt.grad, what=what + " dkernel")


def torch_rnn(xt, kt, rt, bt, h0t, act, backwards, state_fq=None):
    fn = {"tanh": torch.tanh, "relu": F.relu, "sigmoid": torch.sigmoid, "linear": lambda v: v}[act]
    steps = range(xt.shape[1] - 1, -1, -1) if backwards else range(xt.shape[1])
    h, out = h0t, []
    for src in steps:
        h = fn(xt[:, src] @ kt + bt + h @ rt)
        if state_fq is not None:
            h = torch.fake_quantize_per_tensor_affine(h, *state_fq)
        out.append(h)
    return torch.stack(out, 1)


@pytest.mark.parametrize("path", PATHS)
def test_simple_rnn_bptt_vs_torch(rng, path):
    for trial in range(12):
        n, t, f, u = int(rng.integers(1, 5)), int(rng.integers(1, 9)), int(rng.integers(1, 7)), int(rng.integers(1, 9))
        act = ["tanh", "relu", "sigmoid", "linear"][trial % 4]
        backwards = trial % 3 == 1
        x, k, r, b, h0 = randn(rng, n, t, f), randn(rng, f, u) * 0.5, randn(rng, u, u) * 0.3, randn(rng, u), \
            randn(rng, n, u)
        states = qd.ops.simple_rnn(x, k, r, b, initial_state=h0, activation=act, go_backwards=backwards, path=path)
        dstates = randn(rng, n, t, u)
        dx, dk, dr, db, dh0 = qd.ops.simple_rnn_backward(x, k, r, states, dstates, initial_state=h0, activation=act,
                                                         go_backwards=backwards, path=path)
        xt, kt, rt, bt, h0t = tt(x), tt(k), tt(r), tt(b), tt(h0)
        st = torch_rnn(xt, kt, rt, bt, h0t, act, backwards)
        st.backward(torch.from_numpy(dstates))
        # BPTT chains t steps of float32 rounding in both implementations: 1e-4 relative.
        what = f"rnn n={n} t={t} f={f} u={u} {act} backwards={backwards} {path}"
        close(states, st, rel=1e-5, what=what + " states")
        for ours, theirs, name in [(dx, xt.grad, "dx"), (dk, kt.grad, "dkernel"), (dr, rt.grad, "drecurrent"),
                                   (db, bt.grad, "dbias"), (dh0, h0t.grad, "dh0")]:
            close(ours, theirs, rel=1e-4, what=f"{what} {name}")


def test_simple_rnn_with_quantized_state_vs_torch(rng):
    """A 4-bit state quantizer between steps: the layer's QAT forward/backward (activations
    before the quantizer, the straight-through mask) against torch's fake-quant in the loop."""
    n, t, f, u = 3, 6, 5, 7
    layer = L.SimpleRNN(u, return_sequences=True, name="rnn")
    layer.build((t, f), rng)
    layer.weights["bias"] = randn(rng, u) * 0.3
    x = randn(rng, n, t, f)
    q = T.ObservedFakeQuant(dict(bits=4, observer="minmax"))
    q.quantizer.observe(np.array([-0.6, 0.7], np.float32))   # a range that clips some states
    q.quantizer.freeze()
    lq = L.LayerQuant(state=q)
    y, cache = T._rnn_forward(layer, x, lq, "auto")
    dy = randn(rng, n, t, u)
    dx, grads = T._rnn_backward(layer, cache, dy, lq, "auto")
    p = q.quantizer.params
    w = layer.weights
    xt, kt, rt, bt = tt(x), tt(w["kernel"]), tt(w["recurrent_kernel"]), tt(w["bias"])
    st = torch_rnn(xt, kt, rt, bt, torch.zeros(n, u), "tanh", False,
                   state_fq=(float(p.scale), int(p.zero_point), p.qmin, p.qmax))
    st.backward(torch.from_numpy(dy))
    assert 0 < (cache[5] == 0).mean() < 0.5, "the range must clip some states"
    # Forward values are fake-quantized: equal codes, so exact up to float32 rounding of one
    # dense step (a flipped code would differ by a whole step of 0.087).
    close(y, st, rel=1e-5, what="states")
    for ours, theirs, name in [(dx, xt.grad, "dx"), (grads["kernel"], kt.grad, "dkernel"),
                               (grads["recurrent_kernel"], rt.grad, "drecurrent"), (grads["bias"], bt.grad, "dbias")]:
        close(ours, theirs, rel=1e-4, what=name)   # BPTT over 6 steps, as above


def test_batch_norm_training_vs_torch(rng):
    x = randn(rng, 4, 5, 3, 6) * 3 + 1
    gamma, beta = randn(rng, 6), randn(rng, 6)
    layer = L.BatchNormalization(epsilon=1e-3, name="bn")
    layer.build((5, 3, 6), rng)
    layer.weights.update(gamma=gamma, beta=beta, moving_mean=randn(rng, 6), moving_variance=np.abs(randn(rng, 6)) + 0.5)
    rm, rv = layer.weights["moving_mean"].copy(), layer.weights["moving_variance"].copy()
    y, cache = T._bn_forward(layer, x, None, "auto")
    dy = randn(rng, *x.shape)
    dx, g = T._bn_backward(layer, cache, dy, None, "auto")
    xt, gt, bt = tt(x), tt(gamma), tt(beta)
    rmt, rvt = torch.tensor(rm), torch.tensor(rv)
    yt = F.batch_norm(xt.permute(0, 3, 1, 2), rmt, rvt, gt, bt, training=True, momentum=0.1, eps=1e-3)
    yt.permute(0, 2, 3, 1).backward(torch.from_numpy(dy))
    # We normalize in float64 and round once; torch in float32: a few float32 ulps.
    close(y, yt.permute(0, 2, 3, 1), rel=1e-6, what="y")
    close(dx, xt.grad, rel=1e-5, what="dx")
    close(g["gamma"], gt.grad, what="dgamma")
    close(g["beta"], bt.grad, what="dbeta")
    close(layer.weights["moving_mean"], rmt, rel=1e-6, what="running mean")
    close(layer.weights["moving_variance"], rvt, rel=1e-6, what="running var (unbiased)")


@pytest.mark.parametrize("depthwise", [False, True])
def test_bn_folding_during_qat_matches_torch_convbn2d(rng, depthwise):
    """One training step of the folded conv+BN against torch.ao.nn.intrinsic.qat.ConvBn2d with a
    per-channel symmetric 4-bit weight fake-quant (min/max of the scaled weight)."""
    n, h, w, c, k = 3, 7, 6, 4, 3
    o = c if depthwise else 6
    groups = c if depthwise else 1
    conv = L.DepthwiseConv2D(k, padding="same", name="conv") if depthwise else L.Conv2D(o, k, padding="same", name="conv")
    m = qd.Sequential([conv, L.BatchNormalization(name="bn")], input_shape=(h, w, c), seed=1)
    kname = "depthwise_kernel" if depthwise else "kernel"
    bn = m.layer("bn").weights
    bn.update(gamma=randn(rng, o) + 1.5, beta=randn(rng, o), moving_mean=randn(rng, o),
              moving_variance=np.abs(randn(rng, o)) + 0.5)
    m.layer("conv").weights["bias"] = randn(rng, o)
    cfg = qd.QuantConfig(weights=dict(bits=4, symmetric=True, narrow_range=True, granularity="per_channel"),
                         activations=None)
    qm = m.quantize(cfg, qat=True)
    assert isinstance(qm.layers[0], T.BatchNormFolded) and len(qm.layers) == 1
    x = randn(rng, n, h, w, c)
    dy = randn(rng, n, h, w, o)

    tm = nniqat.ConvBn2d(c, o, k, padding=1, groups=groups, bias=True, eps=1e-3, momentum=0.1,
                         qconfig=tq.QConfig(activation=tq.NoopObserver,
                                            weight=tq.FakeQuantize.with_args(
                                                observer=tq.PerChannelMinMaxObserver, quant_min=-7, quant_max=7,
                                                dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)))
    kernel = m.layer("conv").weights[kname]
    torch_w = kernel.reshape(k, k, 1, c) if depthwise else kernel
    with torch.no_grad():
        tm.weight.copy_(torch.from_numpy(np.ascontiguousarray(torch_w.transpose(3, 2, 0, 1))))
        tm.bias.copy_(torch.from_numpy(m.layer("conv").weights["bias"]))
        tm.bn.weight.copy_(torch.from_numpy(bn["gamma"]))
        tm.bn.bias.copy_(torch.from_numpy(bn["beta"]))
        tm.bn.running_mean.copy_(torch.from_numpy(bn["moving_mean"]))
        tm.bn.running_var.copy_(torch.from_numpy(bn["moving_variance"]))
    tm.train()
    xt = tt(x)
    yt = tm(xt.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    yt.backward(torch.from_numpy(dy))

    y, _ = T._folded_forward(qm.layers[0], x, qm.quant["conv"], "auto", training=False)   # stats unchanged
    _, _, grads = T.forward_backward(qm, x, np.zeros_like(dy), loss=lambda p, _: (0.0, dy))
    what = "depthwise" if depthwise else "conv"
    # Fake-quantized weights: identical codes on both sides; the rest is float32 arithmetic.
    close(y, yt, rel=1e-5, what=what + " y")
    dk = grads[f"conv/{kname}"]
    torch_dk = tm.weight.grad.permute(2, 3, 1, 0)
    close(dk, torch_dk.reshape(dk.shape), rel=1e-4, what=what + " dkernel")   # through 1/f and f
    close(grads["conv/gamma"], tm.bn.weight.grad, rel=1e-4, what=what + " dgamma")   # two paths summed
    close(grads["conv/beta"], tm.bn.bias.grad, what=what + " dbeta")
    # The conv bias before a training-mode BN has zero gradient in exact arithmetic; both sides
    # give float32 round-off around 0 relative to dbeta's size.
    assert np.max(np.abs(grads["conv/bias"])) <= 1e-5 * np.max(np.abs(grads["conv/beta"]))
    assert np.max(np.abs(tm.bias.grad.numpy())) <= 1e-5 * np.max(np.abs(grads["conv/beta"]))
    close(qm.layers[0].weights["moving_mean"], tm.bn.running_mean, rel=1e-5, what="running mean")
    close(qm.layers[0].weights["moving_variance"], tm.bn.running_var, rel=1e-5, what="running var")


# ---- fake quantization modules -----------------------------------------------------------------

@pytest.mark.parametrize("bits", [3, 4, 8])
def test_ste_fake_quant_per_tensor_and_per_channel_vs_torch(rng, bits):
    x = randn(rng, 64, 5) * 2
    dy = randn(rng, 64, 5)
    act = T.ObservedFakeQuant(dict(bits=bits))          # moving-average observer, asymmetric
    y, mask = act.forward(x)
    p = act.quantizer.params
    xt = tt(x)
    yt = torch.fake_quantize_per_tensor_affine(xt, float(p.scale), int(p.zero_point), p.qmin, p.qmax)
    yt.backward(torch.from_numpy(dy))
    assert np.array_equal(y, yt.detach().numpy())
    assert np.array_equal(act.backward(mask, dy), xt.grad.numpy())
    # A second batch with a wider range: the moving average moves, some values clip.
    y2, mask2 = act.forward(x * 3)
    assert 0 < mask2.mean() < 1
    w = T.ObservedFakeQuant(dict(bits=bits, symmetric=True, narrow_range=True, granularity="per_channel", axis=-1),
                            weight=True)
    yw, maskw = w.forward(x)
    pw = w.params_for(x)
    xt = tt(x)
    yt = torch.fake_quantize_per_channel_affine(xt, torch.tensor(np.asarray(pw.scale)),
                                                torch.tensor(np.asarray(pw.zero_point), dtype=torch.int32), 1,
                                                pw.qmin, pw.qmax)
    yt.backward(torch.from_numpy(dy))
    assert np.array_equal(yw, yt.detach().numpy())
    assert np.array_equal(w.backward(maskw, dy), xt.grad.numpy())


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_lsq_module_vs_torch_learnable_per_tensor(rng, bits):
    x = randn(rng, 200) * 2
    dy = randn(rng, 200)
    q = T.LSQFakeQuant(dict(bits=bits))
    q.forward(x)                                  # initializes scale / zero point from min/max
    q.scale = np.array([0.37 / bits], np.float32)
    q.zero_point = np.array([1.4], np.float32)    # not an integer: torch rounds it
    y, ctx = q.forward(x)
    dx = q.backward(ctx, dy)
    xt, st, zt = tt(x), tt(q.scale), tt(q.zero_point)
    gf = 1.0 / np.sqrt(x.size * q.qmax)
    yt = torch._fake_quantize_learnable_per_tensor_affine(xt, st, zt, q.qmin, q.qmax, gf)
    yt.backward(torch.from_numpy(dy))
    assert np.array_equal(y, yt.detach().numpy())
    assert np.array_equal(dx, xt.grad.numpy())
    # Per-slot sums: ours accumulate in double, torch's in float32 (sum of 200 terms).
    close(q.grads["scale"], st.grad, rel=1e-5, what="dscale")
    close(q.grads["zero_point"], zt.grad, rel=1e-5, what="dzero_point")


def test_lsq_module_vs_torch_learnable_per_channel(rng):
    x = randn(rng, 3, 3, 4, 6)      # a Keras conv kernel, channels on the last axis
    dy = randn(rng, *x.shape)
    q = T.LSQFakeQuant(dict(bits=4, granularity="per_channel", axis=-1), weight=True)
    q.forward(x)
    q.scale = (np.abs(randn(rng, 6)) * 0.2 + 0.05).astype(np.float32)
    q.zero_point = np.array([-1.6, 0.2, 2.5, 0.0, 3.4, -0.4], np.float32)
    y, ctx = q.forward(x)
    dx = q.backward(ctx, dy)
    xt, st, zt = tt(x), tt(q.scale), tt(q.zero_point)
    gf = 1.0 / np.sqrt(x.size * q.qmax)
    yt = torch._fake_quantize_learnable_per_channel_affine(xt, st, zt, 3, q.qmin, q.qmax, gf)
    yt.backward(torch.from_numpy(dy))
    assert np.array_equal(y, yt.detach().numpy())
    assert np.array_equal(dx, xt.grad.numpy())
    close(q.grads["scale"], st.grad, rel=1e-5, what="dscale")       # as above, 36 terms per slot
    close(q.grads["zero_point"], zt.grad, rel=1e-5, what="dzero_point")


# ---- optimizers and whole models -------------------------------------------------------------------

def small_models(rng):
    mlp = qd.Sequential([L.Dense(16, activation="relu"), L.Dense(4)], input_shape=(7,), seed=3)
    # No conv bias before the BN: its gradient is float32 round-off around 0, which Adam
    # normalizes into O(lr) steps of random sign (no oracle can match that noise).
    cnn = qd.Sequential([L.Conv2D(4, 3, padding="same", use_bias=False), L.BatchNormalization(), L.ReLU(),
                         L.DepthwiseConv2D(3, strides=2, padding="same", activation="relu6"), L.Flatten(),
                         L.Dense(4)], input_shape=(6, 6, 2), seed=4)
    rnn = qd.Sequential([L.SimpleRNN(8), L.Dense(4)], input_shape=(5, 3), seed=5)
    for m in (mlp, cnn, rnn):   # non-zero biases so their updates are exercised
        for layer in m.layers:
            if "bias" in layer.weights:
                layer.weights["bias"] = randn(rng, *layer.weights["bias"].shape) * 0.1
    return {"mlp": mlp, "cnn": cnn, "rnn": rnn}


class TorchMirror(torch.nn.Module):
    """The same network in torch, parameters in Keras layouts, TF padding, BN(eps=1e-3)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.p = torch.nn.ParameterDict({k.replace("/", "__"): torch.nn.Parameter(torch.from_numpy(v.copy()))
                                         for k, v in model.get_weights().items()
                                         if not k.endswith(("moving_mean", "moving_variance"))})
        self.buffers_ = {k: torch.from_numpy(v.copy()) for k, v in model.get_weights().items()
                         if k.endswith(("moving_mean", "moving_variance"))}

    def forward(self, x):
        p = lambda layer, k: self.p[f"{layer.name}__{k}"]
        for layer in self.model.layers:
            if isinstance(layer, L.Dense):
                x = x @ p(layer, "kernel") + p(layer, "bias")
            elif isinstance(layer, (L.Conv2D, L.DepthwiseConv2D)):
                dw = isinstance(layer, L.DepthwiseConv2D)
                k = p(layer, "depthwise_kernel" if dw else "kernel")
                c = dict(h=x.shape[1], w=x.shape[2], k=layer.kernel_size, s=layer.strides, d=layer.dilation_rate,
                         padding=layer.padding)
                if dw:
                    k = k.reshape(k.shape[0], k.shape[1], 1, -1)
                x = torch_conv(x, k, c, x.shape[3] if dw else layer.groups)
                x = x + p(layer, "bias") if layer.use_bias else x
            elif isinstance(layer, L.SimpleRNN):
                x = torch_rnn(x, p(layer, "kernel"), p(layer, "recurrent_kernel"), p(layer, "bias"),
                              torch.zeros(x.shape[0], layer.units), layer.activation, layer.go_backwards)[:, -1]
            elif isinstance(layer, L.BatchNormalization):
                rm, rv = self.buffers_[f"{layer.name}/moving_mean"], self.buffers_[f"{layer.name}/moving_variance"]
                x = F.batch_norm(x.permute(0, 3, 1, 2), rm, rv, p(layer, "gamma"), p(layer, "beta"), training=True,
                                 momentum=0.1, eps=layer.epsilon).permute(0, 2, 3, 1)
            elif isinstance(layer, L.Flatten):
                x = x.reshape(x.shape[0], -1)
            if isinstance(layer, L.Activation) or getattr(layer, "activation", "linear") != "linear":
                if not isinstance(layer, L.SimpleRNN):
                    x = {"relu": F.relu, "relu6": F.relu6, "tanh": torch.tanh, "linear": lambda v: v,
                         "sigmoid": torch.sigmoid}[layer.activation](x)
        return x


@pytest.mark.parametrize("kind", ["mlp", "cnn", "rnn"])
@pytest.mark.parametrize("opt", ["sgd", "adam", "adamw"])
def test_optimizer_trajectories_follow_torch(rng, kind, opt):
    model = small_models(rng)[kind]
    mirror = TorchMirror(model)
    x = randn(rng, 12, *model.input_shape)
    labels = rng.integers(0, 4, 12)
    targets = randn(rng, 12, 4)
    loss = "cross_entropy" if kind != "mlp" else "mse"
    if opt == "sgd":
        ours = T.SGD(lr=0.05, momentum=0.9, weight_decay=1e-3)
        theirs = torch.optim.SGD(mirror.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    else:
        ours = qd.training.make_optimizer(dict(kind=opt, lr=0.01, weight_decay=1e-2))
        cls = torch.optim.Adam if opt == "adam" else torch.optim.AdamW
        theirs = cls(mirror.parameters(), lr=0.01, weight_decay=1e-2)
    for step in range(5):
        value, _, grads = T.forward_backward(model, x, labels if loss == "cross_entropy" else targets, loss=loss)
        T.apply_gradients(model, grads, ours)
        theirs.zero_grad()
        out = mirror(torch.from_numpy(x))
        tl = F.cross_entropy(out, torch.from_numpy(labels)) if loss == "cross_entropy" else \
            F.mse_loss(out, torch.from_numpy(targets))
        tl.backward()
        theirs.step()
        assert abs(value - tl.item()) <= 1e-5 * max(1.0, abs(tl.item())), f"step {step}: loss {value} vs {tl.item()}"
    # After 5 steps the parameters agree to float32 round-off amplified by the steps (Adam divides
    # by sqrt(v): near-zero gradients amplify differences), 1e-4 relative to each tensor's size.
    for key, v in model.get_weights().items():
        ref = mirror.p[key.replace("/", "__")] if key.replace("/", "__") in mirror.p else mirror.buffers_[key]
        close(v, ref, rel=1e-4, what=f"{kind} {opt} {key}")


def digits_like(rng, n=96):
    x = rng.random((n, 8, 8, 1)).astype(np.float32)
    y = (x[:, :4].mean(axis=(1, 2, 3)) > x[:, 4:].mean(axis=(1, 2, 3))).astype(np.int64)
    return x, y


def test_fit_is_deterministic_for_a_seed_and_learns(rng):
    x, y = digits_like(rng)
    make = lambda: qd.Sequential([L.Conv2D(4, 3, padding="same"), L.BatchNormalization(), L.ReLU(), L.Flatten(),
                                  L.Dense(2)], input_shape=(8, 8, 1), seed=0)
    runs = []
    for seed in (7, 7, 8):
        m = make()
        h = m.fit(x, y, epochs=6, batch_size=16, optimizer=dict(kind="adam", lr=1e-2), seed=seed, verbose=False,
                  validation_data=(x, y))
        runs.append((m.get_weights(), h.history))
    assert all(np.array_equal(runs[0][0][k], runs[1][0][k]) for k in runs[0][0])
    assert runs[0][1] == runs[1][1]
    assert any(not np.array_equal(runs[0][0][k], runs[2][0][k]) for k in runs[0][0])
    h = runs[0][1]
    assert set(h) == {"loss", "accuracy", "val_loss", "val_accuracy"} and len(h["loss"]) == 6
    assert h["loss"][-1] < 0.5 * h["loss"][0], h["loss"]   # a separable toy task: the loss must fall


@pytest.mark.parametrize("lsq", [False, True])
def test_qat_fit_is_deterministic_and_exports(rng, lsq, tmp_path):
    x, y = digits_like(rng)
    m = qd.Sequential([L.Conv2D(4, 3, padding="same"), L.BatchNormalization(), L.ReLU(), L.Flatten(), L.Dense(2)],
                      input_shape=(8, 8, 1), seed=0)
    m.fit(x, y, epochs=2, batch_size=16, verbose=False)
    cfg = qd.QuantConfig(weights=dict(bits=4, symmetric=True, narrow_range=True, granularity="per_channel"),
                         activations=dict(bits=4))
    weights = []
    for _ in range(2):
        qm = m.quantize(cfg, qat=True, lsq=lsq, calibration=x)
        qm.fit(x, y, epochs=2, batch_size=16, verbose=False, seed=3)
        weights.append(qm.get_weights())
    assert all(np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])
    enc = qm.export_encodings(tmp_path / "enc.json")
    assert json.loads((tmp_path / "enc.json").read_text()) == json.loads(json.dumps(enc))
    # The exported kernel parameters reproduce the QAT model's fake-quantized folded kernel.
    layer = qm.layer("conv2d_0")
    kernel, _ = layer.folded_weights()
    e = enc["params"]["conv2d_0/kernel"]
    assert e["bits"] == 4 and e["qmin"] == -7 and e["qmax"] == 7 and len(e["scale"]) == 4
    ours = qd.fake_quant(kernel, np.array(e["scale"], np.float32), np.array(e["zero_point"], np.int32), e["qmin"],
                         e["qmax"], axis=3)
    assert np.array_equal(ours, qm.quant["conv2d_0"].weights["kernel"].fake_quant(kernel))
    assert set(enc["activations"]) == {"input", "conv2d_0/output", "relu_2/output", "flatten_3/output",
                                       "dense_4/output"}
    aimet = qm.export_encodings(layout="aimet")
    a = aimet["activation_encodings"]["input"][0]
    act = enc["activations"]["input"]
    assert a["bitwidth"] == 4 and a["offset"] == act["qmin"] - act["zero_point"][0]
    assert a["min"] == pytest.approx(act["min"][0], rel=1e-12) and a["max"] == pytest.approx(act["max"][0], rel=1e-12)
    assert len(aimet["param_encodings"]["conv2d_0/kernel"]) == 4


def test_ptq_model_exports_its_parameters(rng):
    x, _ = digits_like(rng, 32)
    m = qd.Sequential([L.Conv2D(4, 3), L.ReLU(), L.Flatten(), L.Dense(2)], input_shape=(8, 8, 1), seed=0)
    qm = m.quantize(qd.QuantConfig(), calibration=x)
    enc = qm.export_encodings()
    e = enc["params"]["dense_3/kernel"]
    w = qm.layer("dense_3").weights["kernel"]
    assert e["scale"] == pytest.approx((np.abs(w).max(axis=0) / 127).tolist(), rel=1e-6)   # float32 division
    assert enc["activations"]["input"]["min"][0] <= float(x.min())


def test_training_errors_name_the_cause():
    m = qd.Sequential([L.Dense(2)], input_shape=(3,), seed=0)
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(qd.ConfigError, match="unknown loss 'hinge'"):
        m.fit(x, np.zeros(4, np.int64), loss="hinge", verbose=False)
    with pytest.raises(qd.ConfigError, match="unknown optimizer 'rmsprop'"):
        m.fit(x, np.zeros(4, np.int64), optimizer=dict(kind="rmsprop"), verbose=False)
    with pytest.raises(qd.ShapeError, match="x has 4 samples but y has 3"):
        m.fit(x, np.zeros(3, np.int64), verbose=False)
    with pytest.raises(qd.DataError, match="labels must be integers"):
        m.fit(x, np.full(4, 5), verbose=False)
    with pytest.raises(qd.ShapeError, match="dy has shape"):
        qd.ops.dense_backward(x, np.zeros((3, 2), np.float32), np.zeros((4, 3), np.float32))


def test_lsq_qat_mlp_trajectory_follows_torch(rng):
    """Three Adam steps of a 4-bit LSQ QAT MLP (weights and activations learnable, input too)
    against the same network in torch built from torch._fake_quantize_learnable_per_tensor_affine."""
    model = qd.Sequential([L.Dense(12, activation="relu"), L.Dense(3)], input_shape=(6,), seed=2)
    # Random biases: with zero biases, sums of fake-quantized products (values on a grid) are
    # often exactly 0 before the relu, and the two libraries' summation orders then put them on
    # either side of the kink (a whole dy of difference, not a bug).
    for layer in model.layers:
        layer.weights["bias"] = randn(rng, *layer.weights["bias"].shape) * 0.1
    x = randn(rng, 16, 6)
    labels = rng.integers(0, 3, 16)
    # Unsigned activation codes keep every zero point >= 0, where torch's per-tensor learnable
    # backward rounds the zero point as its forward does (see the test below for negative ones).
    cfg = qd.QuantConfig(weights=dict(bits=4, symmetric=True, granularity="per_tensor"),
                         activations=dict(bits=4, signed=False))
    qm = model.quantize(cfg, qat=True, lsq=True, calibration=x)
    assert all(np.all(q.zero_point >= 0) for _, q in T._quantizers(qm))
    points = [name for name, _ in T._quantizers(qm)]
    qs = dict(T._quantizers(qm))
    ts = {n: tt(qs[n].scale.copy()) for n in points}
    tz = {n: tt(qs[n].zero_point.copy()) for n in points}
    w = {k: tt(v) for k, v in qm.get_weights().items()}
    params = list(w.values()) + [ts[n] for n in points] + [tz[n] for n in points if not qs[n].symmetric]
    opt_t = torch.optim.Adam(params, lr=0.01)
    opt = T.Adam(lr=0.01)

    def fq(t, n):
        q = qs[n]
        return torch._fake_quantize_learnable_per_tensor_affine(t, ts[n], tz[n], q.qmin, q.qmax,
                                                                1.0 / (t.numel() * q.qmax) ** 0.5)

    for step in range(3):
        value, _, grads = T.forward_backward(qm, x, labels)
        T.apply_gradients(qm, grads, opt)
        opt_t.zero_grad()
        h = fq(torch.from_numpy(x), "input")
        h = fq(F.relu(h @ fq(w["dense_0/kernel"], "dense_0/kernel") + w["dense_0/bias"]), "dense_0/output")
        out = fq(h @ fq(w["dense_1/kernel"], "dense_1/kernel") + w["dense_1/bias"], "dense_1/output")
        tl = F.cross_entropy(out, torch.from_numpy(labels))
        tl.backward()
        opt_t.step()
        assert abs(value - tl.item()) <= 1e-5 * max(1.0, tl.item()), f"step {step}: {value} vs {tl.item()}"
    # Same codes on both sides (an element changing code would move the loss and weights by a
    # whole quantization step); 1e-4 relative covers float32 round-off through Adam's steps.
    for k, v in qm.get_weights().items():
        close(v, w[k], rel=1e-4, what=k)
    for n in points:
        close(qs[n].scale, ts[n], rel=1e-4, what=f"{n} scale")
        if not qs[n].symmetric:
            close(qs[n].zero_point, tz[n], rel=1e-4, what=f"{n} zero point")


def test_torch_learnable_per_tensor_backward_rounds_negative_zero_points_differently():
    """Pins a torch 2.13 quirk qdrift does not copy: _fake_quantize_learnable_per_tensor_affine's
    backward takes the zero point as trunc(zp + 0.5) (its forward: nearbyint(zp)), so for zp = -2
    the backward clips with zero point -1. qdrift's forward and backward use one rounded zero point."""
    x = np.array([1.6, 1.8], np.float32)     # codes 6 and 7 with zp -2; 7 and 8 (clipped) with zp -1
    xt = tt(x)
    y = torch._fake_quantize_learnable_per_tensor_affine(xt, torch.tensor([0.2]), torch.tensor([-2.0]), -8, 7, 1.0)
    y.backward(torch.ones(2))
    assert np.array_equal(y.detach().numpy(), qd.fake_quant(x, 0.2, -2, -8, 7))      # forward: zp -2
    assert xt.grad.tolist() == [1.0, 0.0]                                             # backward: zp -1
    dx, _, _ = qd.fake_quant_lsq_backward(x, np.ones(2, np.float32), 0.2, -2, -8, 7)
    assert dx.tolist() == [1.0, 1.0]
