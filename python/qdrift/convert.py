"""qd.convert: emulate the TFLite converter on a qd.Sequential (or Keras model) and return the
TFLiteModel the converter would write: same op sequence, tensor types, shapes, scales, zero points
and constant data, so `tm.run(x, kernels=...)` is the file's arithmetic on each LiteRT path.

The converter's rules reproduced here were found by converting Keras models with TF 2.21 and
reading the files (tests/python/test_convert.py checks every one against the real converter):
  - BatchNormalization right after a Dense/Conv2D/DepthwiseConv2D without activation is folded
    into its constants in float32 with TF's Rsqrt kernel: m = rsqrt(var + eps) * gamma,
    W' = W * m, b' = b * m + (beta - mean * m). Any other BatchNormalization becomes MUL(x, m) +
    ADD(beta - mean * m) with (C,) constants: float32 constants for tflite_dynamic, float16 through
    DEQUANTIZE for tflite_fp16, and on the full-integer profiles both constants quantized like an
    activation over their own [min, max] (int8 asymmetric per tensor, int16 symmetric), the MUL's
    and ADD's outputs from calibration. This includes a BatchNormalization after a dilated
    convolution (whose bias is a separate ADD) or after another unfolded one (two MUL + ADD pairs).
    Before a Dense with a bias it moves into that Dense (see Dense -> Dense); UnsupportedError:
    one right before a Dense without bias (or, with one channel, a Conv): the converter folds
    MUL + ADD into that layer's constants. A relu / relu6 right after it fuses into the ADD.
  - Dense -> Dense: when the first has no activation, the converter moves its bias (and a
    BatchNormalization between them) into the second Dense: b2' = FC(b1, W2, b2), constant-folded
    by FullyConnectedOp::fold (float32, Neumaier-compensated, in input order); the first keeps
    W1 and loses its bias. Not when the second has no (or an all-zero) bias, or a relu / relu6
    right after it; the exact rules are at _fuse_dense_chains. A BatchNormalization before a Dense
    that takes no bias stays MUL + ADD before it, which the converter folds later: UnsupportedError.
  - Dense on a (batch, ..., F) input: RESHAPE (-1, F) -> FULLY_CONNECTED without bias -> RESHAPE
    back -> ADD of the bias (quantized like an activation) carrying a fused relu / relu6; without
    a bias the FC carries it and a tanh / sigmoid comes before the second RESHAPE. Right after a
    reshape, or without a bias right before one, the converter merges RESHAPEs: UnsupportedError.
    A BatchNormalization after it is not folded (MUL + ADD).
  - relu / relu6 (the layer's activation, or a ReLU/Activation layer right after a Dense/Conv
    without activation) fuse into the op; tanh / sigmoid stay separate TANH / LOGISTIC ops.
  - FULLY_CONNECTED gets no bias input when the bias is absent or all zero; CONV_2D and
    DEPTHWISE_CONV_2D always get one (zeros when the layer has none).
  - Flatten / Reshape become RESHAPE (the converter computes the shape with SHAPE, STRIDED_SLICE
    and PACK ops for a dynamic batch; those are left out: they do not touch the data).
  - SimpleRNN (tanh, batch size 1, last output) with unroll=True is unrolled: RESHAPE (T, 1, F),
    UNPACK, then per step FC(h, U) [from step 1], FC(x_t, W, b), ADD(input part, recurrent part),
    TANH. The real converter segfaults on the non-unrolled (WHILE) int8 form, so the full-integer
    profiles need unroll=True.
  - A SimpleRNN with unroll=False (Keras's default; tanh, forwards, batch 1) under tflite_dynamic
    and tflite_fp16 is a WHILE loop over three subgraphs (read from TF 2.21 files):
      main: RESHAPE (1, T, F) -> (T, 1, F) (none when T = 1); WHILE(int32 0, int32 0, zeros list
        (R, 1, U), zeros h (1, U), x) -> 5 outputs, cond = subgraph 1, body = 2, where R = 1 for
        the last output and R = T with return_sequences; then STRIDED_SLICE(list, begin
        [-1, 0, 0], end [0, 1, U], strides [1, 1, 1], begin_mask 6, end_mask 6, shrink 1) ->
        (1, U), or with return_sequences RESHAPE (T, 1, U) -> (1, T, U) (none when T = 1), which
        a Flatten after it replaces (RESHAPE (T, 1, U) -> (1, T U) directly); a Flatten of
        (1, 1, U) before a Dense is dropped (the FC reads (1, 1, U)).
      cond (args step, time, list, h, x): LESS(time, T), LESS(step, T), LOGICAL_AND(second, first).
      body: ADD(time, 1), ADD(step, 1) (one int32 scalar 1), FC(h, U) without bias,
        GATHER(x, time, axis 0) -> (1, F), FC(x_t, W, b), ADD(input part, recurrent part), TANH;
        last output: RESHAPE(h) -> (1, 1, U) is the new list; return_sequences: the list becomes
        CONCATENATION(SLICE(list, [0,0,0], [time,-1,-1]), RESHAPE(h) (1, 1, U), SLICE(list,
        [time+1,0,0], [-1,-1,-1])), the indices built by RESHAPE(counter) -> (1,) and
        CONCATENATION with [-1, -1] / [0, 0]; the file declares the slices (1, 1, 1) and
        (1, 1, U). Body outputs (step+1, time+1, list, h, x).
    Constants follow the profile inside the body too: dynamic range quantizes W^T / U^T with
    1024+ elements (per channel; that FC gets asymmetric_quantize_inputs), the bias and the
    zeros stay float32; fp16 stores every float constant as float16 behind a DEQUANTIZE in the
    subgraph that reads it (the body opens with bias, W, U; main holds the zeros' ones). A
    dynamic batch fails in the converter itself (TensorListReserve needs a static element
    shape); a static batch N > 1 (TRANSPOSE instead of RESHAPE) is not emitted
    (UnsupportedError). Stacked loops: a loop returning sequences hands its (T, 1, U) list to the
    next WHILE directly (no RESHAPE between), whose cond / body are subgraphs 3 and 4.
  - A dilated Conv2D / DepthwiseConv2D (dilation_rate > 1 on some axis; Keras then requires
    strides 1) becomes SPACE_TO_BATCH_ND (block = dilation, int32 paddings) -> the convolution
    with dilation 1, VALID, and a zero bias -> BATCH_TO_SPACE_ND (int32 crops) -> ADD of the
    per-channel bias as a constant (only when the bias is nonzero), which carries a fused
    relu/relu6. Paddings per axis: SAME pads (d (k - 1)) // 2 before and the rest after, VALID
    nothing; then the end grows by e = (-(size + pads)) % d so the block divides it, and the
    crops are (0, e). The quantizer gives both data-movement ops their input's parameters and
    quantizes the ADD's constant like an activation over [min(b), max(b)] (int8 asymmetric per
    tensor, int16 symmetric). A relu with no bias becomes a separate RELU op: UnsupportedError.
    A BatchNormalization after a dilated convolution is not folded (MUL + ADD).
  - int8 (MLIR quantizer): a bias that would exceed INT32_MAX / 2 enlarges that channel's weight
    scale (SetBiasParamsWithAdjustments); int16x8 (old quantizer): AdjustWeightsForBiasScale,
    and the unrolled RNN shares one bias tensor across steps (int8 gives each step a copy).
Calibration runs the float graph one sample at a time (as the calibrator does: the batch size
picks Eigen's summation order) through tflite_float's "tf_builtin" kernels, the tensorflow
wheel's builtin float kernels as its calibrator runs them (not LiteRT's: the wheel's Eigen has
AVX packets, and the calibrator's default thread count selects the multithreaded CONV_2D; see
hybrid.h), keeps each tensor's global min/max, starting from (FLT_MAX, FLT_MIN) as the
calibrator does, and widens the ADD or MUL input whose buffer LiteRT's arena gives to the op's output (the
calibrator logs inputs again after the op; see _in_place_input). Measured equal to the
calibrator's min/max on every tensor of 100 random models (tests/python/test_convert.py).
Not reproducible: a CONV_2D whose filter is as large as its input under SAME padding with nothing
padded before (a 2-wide filter on a 2-wide input, stride 1), where the calibrator's kernel leaves
output pixels uninitialized, so its ranges are whatever memory held;
pass `ranges` (the calibrator's min/max) to reproduce the file exactly."""
from __future__ import annotations

import copy

import numpy as np

from . import _core, tflite
from . import layers as L
from .tflite_float import FLOAT_ACTIVATIONS, activation_function
from .tflite_int16 import _move_data
from .tflite_model import Op, Tensor, TFLiteModel

PROFILES = ("tflite_int8", "tflite_int16x8", "tflite_dynamic", "tflite_fp16")
f32 = np.float32
_FUSED = {"linear": 0, "relu": 1, "relu6": 3}
# Ops whose output has the input's quantization (the converter forces it).
_SAME_PARAMS = ("RESHAPE", "UNPACK", "SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND")
# Dynamic range: constants with fewer elements stay float (minimum_elements_for_weights).
DYNAMIC_MIN_ELEMENTS = 1024
_TENSOR_TYPE_INT64 = 4   # TFLite schema TensorType


def _file_options(node, options, profile):
    """The options as the file carries them: the old int16x8 quantizer declares its int64 bias
    (quantized_bias_type on FC and CONV_2D) and clears ADD's pot_scale_int16, which every other
    profile leaves at the schema default (true)."""
    options = dict(options)
    int16 = profile == "tflite_int16x8"
    if node.op in ("FULLY_CONNECTED", "CONV_2D"):
        options["quantized_bias_type"] = _TENSOR_TYPE_INT64 if int16 else 0
    if node.op == "ADD":
        options["pot_scale_int16"] = not int16
    return options


def _rsqrt(v):
    """TF's Rsqrt kernel, which constant-folds BatchNormalization in the converter. Its
    vectorized blocks use an approximation refined by Newton steps whose bits qdrift does not
    reproduce (1/sqrt differs in the last bit for about 1 value in 3); when TensorFlow is
    importable its kernel is used."""
    try:
        import tensorflow as tf
    except ImportError:   # pragma: no cover (TensorFlow is what the converter runs on)
        return (f32(1) / np.sqrt(v)).astype(f32)
    return np.asarray(tf.math.rsqrt(v), f32)


class _Node:
    """One op of the converter's float graph, with its constants in TFLite layout."""

    def __init__(self, op, inputs, outputs, weights=None, bias=None, options=None, kernel=None, geometry=None,
                 bn_folded=False):
        self.op, self.inputs, self.outputs = op, list(inputs), list(outputs)
        self.weights, self.bias = weights, bias            # TFLite layout (FC (O, I), CONV OHWI, DW 1HW(CM))
        self.options = dict(options or {})
        self.kernel, self.geometry = kernel, geometry      # Keras-layout kernel for the float run
        self.bn_folded = bn_folded


class _FloatGraph:
    def __init__(self, input_shape):
        self.nodes, self.shapes = [], {"input": (1,) + tuple(input_shape)}   # batch 1, as the file
        self.last = "input"

    def add(self, node, shapes):
        self.nodes.append(node)
        self.shapes.update(zip(node.outputs, shapes))
        self.last = node.outputs[-1]


def _fold(prev, bn):
    """(kernel, bias) of prev with bn folded in, as the converter's constant folding computes them."""
    w = bn.weights
    m = (_rsqrt((w["moving_variance"] + f32(bn.epsilon)).astype(f32)) * w["gamma"]).astype(f32)
    shift = (w["beta"] - w["moving_mean"] * m).astype(f32)
    kname = "depthwise_kernel" if isinstance(prev, L.DepthwiseConv2D) else "kernel"
    kernel = prev.weights[kname]
    flat = kernel.reshape(kernel.shape[:-2] + (-1,)) if kname == "depthwise_kernel" else kernel
    folded = (flat * m).astype(f32).reshape(kernel.shape)
    b = prev.weights.get("bias")
    bias = shift if b is None else ((b * m).astype(f32) + shift).astype(f32)
    return _with_weights(prev, kname, folded, bias)


def _with_weights(layer, kname, kernel, bias):
    out = copy.copy(layer)
    out.weights = dict(layer.weights, **{kname: kernel, "bias": bias})
    out.use_bias = True
    return out


# ---- runs of Dense layers: the converter's FULLY_CONNECTED fusions --------------------------------
# The TF graph of a Dense is MatMul -> BiasAdd -> activation, of a BatchNormalization x * m + s;
# they reach the TFL optimize pass (tensorflow/compiler/mlir/lite/transforms/optimize.cc) as
# FULLY_CONNECTED without bias, ADD and MUL of 1-D constants, and activation ops. Its greedy
# rewrite visits the graph from the output back: each FULLY_CONNECTED first takes its own ADD
# (FuseFullyConnectedAndAdd), then pulls the ADDs and MULs before it into its constants
# (FuseAddAndFullyConnected: bias = FC(c, W, bias), constant-folded by FullyConnectedOp::fold in
# tfl_ops.cc; FuseMulAndFullyConnected: W[o, i] * m[i]), then takes a following BatchNormalization
# (FuseFullyConnectedAndMul / ...AndAdd: W[o, :] * m[o], b * m + s) and a relu / relu6. Found by
# converting Keras models with TF 2.21 (tests/python/test_convert.py compares the files):
#   - a FULLY_CONNECTED with no bias (or an all-zero one, which canonicalization removes) pulls in
#     no ADD (the pattern needs a bias), but a MUL;
#   - one without its own bias takes a following BatchNormalization first (its bias is then s);
#   - one whose own ADD is followed by a relu / relu6 pulls in no ADD that sits right after
#     another FULLY_CONNECTED (that Dense's bias stays its own);
#   - a run of several linear Dense pairs up from the output (the bias of Dense k moves into
#     Dense k + 1, whose own bias then cannot move).
class _ChainOp:
    """One op of that graph: "fc" (value: (O, I) weights), "add" / "mul" (value: a 1-D constant)
    or "act" (value: the activation's name); layer: the qd layer it comes from."""

    def __init__(self, kind, value, layer):
        self.kind, self.value, self.layer = kind, value, layer
        self.bias, self.activation = None, "linear"     # a "fc" op's constants after the fusions


def _fc_fold(x, w, b):
    """FullyConnectedOp::fold (tfl_ops.cc) on constants: per output o, float32 Neumaier
    (compensated) summation of x[j] * w[o, j] over j in order, starting from b[o] (0 without a
    bias), and sum + compensation at the end."""
    x, w = np.asarray(x, f32).reshape(-1), np.asarray(w, f32)
    total = np.zeros(w.shape[0], f32) if b is None else np.array(b, f32).reshape(-1)
    compensation = np.zeros(w.shape[0], f32)
    with np.errstate(over="ignore", invalid="ignore"):
        for j in range(x.size):
            addend = (x[j] * w[:, j]).astype(f32)
            new = (total + addend).astype(f32)
            lost = np.where(np.abs(total) >= np.abs(addend), (total - new) + addend, (addend - new) + total)
            compensation = (compensation + lost.astype(f32)).astype(f32)
            total = new
        return (total + compensation).astype(f32)


def _bn_constants(bn):
    w = bn.weights
    m = (_rsqrt((w["moving_variance"] + f32(bn.epsilon)).astype(f32)) * w["gamma"]).astype(f32)
    return m, (w["beta"] - w["moving_mean"] * m).astype(f32)


def _chain_ops(layer):
    """The graph ops of a layer that can sit in a run of Dense layers, or None."""
    if layer.input_shape is None or len(layer.input_shape) != 1:
        return None
    if isinstance(layer, L.Dense):
        ops = [_ChainOp("fc", np.ascontiguousarray(np.asarray(layer.weights["kernel"], f32).T), layer)]
        if layer.use_bias and layer.weights.get("bias") is not None:
            ops.append(_ChainOp("add", np.asarray(layer.weights["bias"], f32), layer))
        if layer.activation != "linear":
            ops.append(_ChainOp("act", layer.activation, layer))
        return ops
    if isinstance(layer, L.BatchNormalization):
        m, s = _bn_constants(layer)
        return [_ChainOp("mul", m, layer), _ChainOp("add", s, layer)]
    if isinstance(layer, L.Activation):
        return [] if layer.activation == "linear" else [_ChainOp("act", layer.activation, layer)]
    return None


def _take_batch_norm(ops, i, w, bias):
    """Fold a BatchNormalization right after op i into (w, bias); returns (w, bias, folded)."""
    nxt = ops[i + 1:i + 3]
    if len(nxt) < 2 or nxt[0].kind != "mul" or nxt[1].kind != "add" or nxt[0].layer is not nxt[1].layer:
        return w, bias, False
    m, s = nxt[0].value, nxt[1].value
    del ops[i + 1:i + 3]
    w = (w * m[:, None]).astype(f32)
    return w, (s if bias is None else ((bias * m).astype(f32) + s).astype(f32)), True


def _fuse_run(ops):
    """The optimize pass on one run's ops, in place (see the comment above)."""
    for fc in [op for op in ops if op.kind == "fc"][::-1]:
        i = ops.index(fc)
        w, bias = fc.value, None
        if i + 1 < len(ops) and ops[i + 1].kind == "add":
            bias = ops.pop(i + 1).value
            if not np.any(bias):
                bias = None     # RemoveOptionalZeroBias drops an all-zero bias before anything moves
        relu_next = i + 1 < len(ops) and ops[i + 1].kind == "act" and ops[i + 1].value in ("relu", "relu6")
        folded = False
        if bias is None:
            w, bias, folded = _take_batch_norm(ops, i, w, bias)
        while i > 0:
            p = ops[i - 1]
            if p.kind == "add" and bias is not None:
                if relu_next and i >= 2 and ops[i - 2].kind == "fc":
                    break
                bias = _fc_fold(p.value, w, bias)
            elif p.kind == "mul":
                w = (w * p.value[None, :]).astype(f32)
            else:
                break
            del ops[i - 1]
            i -= 1
        if not folded:
            w, bias, _ = _take_batch_norm(ops, i, w, bias)
        if i + 1 < len(ops) and ops[i + 1].kind == "act" and ops[i + 1].value in ("relu", "relu6"):
            fc.activation = ops.pop(i + 1).value
        fc.value, fc.bias = w, bias


def _fuse_dense_chains(layers):
    """Replace each run of rank-1 Dense / BatchNormalization / Activation layers by the layers the
    converter's fusions leave: Dense layers with their final constants and fused relu/relu6, the
    activations left as separate ops, and any BatchNormalization no Dense took (MUL + ADD)."""
    out, run = [], []

    def flush():
        ops = [op for layer in run for op in _chain_ops(layer)]
        _fuse_run(ops)
        k = 0
        while k < len(ops):
            op = ops[k]
            if op.kind == "fc":
                dense = copy.copy(op.layer)
                dense.weights = {"kernel": np.ascontiguousarray(op.value.T)}
                if op.bias is not None:
                    dense.weights["bias"] = op.bias
                dense.use_bias = op.bias is not None
                dense.activation = op.activation
                if k + 1 < len(ops) and ops[k + 1].kind == "act" and ops[k + 1].layer is op.layer:
                    dense.activation = ops[k + 1].value     # its own tanh / sigmoid, a separate op in the file
                    k += 1
                out.append(dense)
            elif op.kind == "act" or op.kind == "mul":
                out.append(op.layer)                          # an Activation layer, or a BatchNormalization
            k += 2 if op.kind == "mul" else 1                 # (a BatchNormalization's MUL and ADD stay together)
        run.clear()

    for layer in layers:
        if _chain_ops(layer) is None:
            flush()
            out.append(layer)
        else:
            run.append(layer)
    flush()
    return out


def _merge(layers):
    """Apply the converter's fusions to the layer list: fold BN, fuse a following relu/relu6."""
    layers = _fuse_dense_chains(layers)
    out = []
    for layer in layers:
        if isinstance(layer, L.Activation) and layer.activation == "linear":
            continue     # the identity: the converter drops it (a BatchNormalization after it still folds)
        prev = out[-1] if out else None
        linear = isinstance(prev, (L.Dense, L.Conv2D, L.DepthwiseConv2D)) and prev.activation == "linear"
        if isinstance(layer, L.BatchNormalization):
            # After a dilated convolution (its bias is a separate ADD), an unfolded
            # BatchNormalization or a rank-N Dense (its ADD follows a RESHAPE) the converter
            # keeps MUL + ADD (see _lower).
            if not linear or _dilated(prev) or isinstance(prev, L.Dense) and len(prev.input_shape) != 1:
                out.append(layer)
                continue
            out[-1] = _fold(prev, layer)
            out[-1].name = prev.name
            out[-1].bn_folded = True
            continue
        if isinstance(layer, L.Activation) and layer.activation in ("relu", "relu6") \
                and isinstance(prev, L.BatchNormalization) and not hasattr(prev, "fused_activation"):
            fused = copy.copy(prev)      # an unfolded BatchNormalization: the relu fuses into its ADD
            fused.fused_activation = layer.activation
            out[-1] = fused
            continue
        if isinstance(layer, L.Activation) and layer.activation in ("relu", "relu6") and linear:
            fused = copy.copy(prev)
            fused.activation = layer.activation
            out[-1] = fused
            continue
        out.append(layer)
    return out


def _dilated(layer):
    return isinstance(layer, (L.Conv2D, L.DepthwiseConv2D)) and max(layer.dilation_rate) > 1


def _space_to_batch_params(layer, in_hw):
    """(block, paddings, crops) of the converter's SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND pair
    around a dilated convolution (TF's required_space_to_batch_paddings)."""
    kh, kw = layer.kernel_size
    block = np.asarray(layer.dilation_rate, np.int32)
    paddings, crops = np.zeros((2, 2), np.int32), np.zeros((2, 2), np.int32)
    for a, (size, k, d) in enumerate(zip(in_hw, (kh, kw), block)):
        total = int(d) * (k - 1) if layer.padding == "same" else 0
        start, end = total // 2, total - total // 2
        extra = (-(size + start + end)) % int(d)
        paddings[a] = (start, end + extra)
        crops[a] = (0, extra)
    return block, paddings, crops


def _tflite_weights(layer):
    """The layer's kernel in the converter's layout, plus its Keras-layout kernel."""
    if isinstance(layer, L.Dense):
        k = layer.weights["kernel"]
        return np.ascontiguousarray(k.T), k
    if isinstance(layer, L.Conv2D):
        k = layer.weights["kernel"]
        return np.ascontiguousarray(np.transpose(k, (3, 0, 1, 2))), k     # (KH, KW, C/g, O) -> OHWI
    k = layer.weights["depthwise_kernel"]
    return np.ascontiguousarray(k.reshape((1,) + k.shape[:2] + (-1,))), k  # (KH, KW, C, M) -> (1, KH, KW, C*M)


def _bias_or_none(b):
    return None if b is None or not np.any(b) else np.ascontiguousarray(b, f32)


def _lower(model):
    """The converter's float graph of a qd.Sequential."""
    g = _FloatGraph(model.input_shape)
    merged = _merge(model.layers)
    for i, layer in enumerate(merged):
        x, name = g.last, layer.name
        shape_in = g.shapes[x][1:]
        after = merged[i + 1] if i + 1 < len(merged) else None
        if _dilated(layer) and layer.activation == "linear" and _bias_or_none(layer.weights.get("bias")) is not None \
                and layer.weights["bias"].size == 1 and isinstance(after, (L.Conv2D, L.DepthwiseConv2D)) \
                and after.padding == "valid" and not _dilated(after):
            raise _core.UnsupportedError(
                f"convert: the one-channel bias ADD of dilated '{name}' is folded by the converter into the "
                f"following VALID '{after.name}' (not reproduced)")
        if isinstance(layer, (L.Dense, L.Conv2D, L.DepthwiseConv2D)):
            if isinstance(layer, L.Dense) and len(shape_in) != 1 and x != getattr(g, "flattened", None):
                _lower_dense_rank_n(g, layer, x, after)
                continue
            if _dilated(layer):
                _lower_dilated(g, layer, x)
                continue
            w, k = _tflite_weights(layer)
            op = {L.Dense: "FULLY_CONNECTED", L.Conv2D: "CONV_2D"}.get(type(layer), "DEPTHWISE_CONV_2D")
            act = layer.activation if layer.activation in _FUSED else "linear"
            options = dict(activation=_FUSED[act])
            if op != "FULLY_CONNECTED":
                options.update(padding=layer.padding, strides=layer.strides, dilation=layer.dilation_rate)
            else:
                options.update(keep_num_dims=False, asymmetric_quantize_inputs=False)
            out = name if act == layer.activation else f"{name}/linear"
            bias = _bias_or_none(layer.weights.get("bias"))
            if bias is None and op != "FULLY_CONNECTED":   # convolutions always get one (zeros)
                bias = np.zeros(w.shape[0] if op == "CONV_2D" else w.shape[3], f32)
            g.add(_Node(op, [x], [out], w, bias, options, k, layer, getattr(layer, "bn_folded", False)),
                  [(1,) + layer.output_shape])
            if act != layer.activation:
                _add_activation(g, layer.activation, out, name)
        elif isinstance(layer, L.Activation):
            _add_activation(g, layer.activation, x, name)
        elif isinstance(layer, (L.Flatten, L.Reshape)):
            prev = g.nodes[-1] if g.nodes and x in g.nodes[-1].outputs else None
            if prev is not None and prev.op == "WHILE" and isinstance(after, L.Dense) \
                    and g.shapes[x][-1] == layer.output_shape[-1]:
                g.flattened = x     # (1, 1, U) -> (1, U) before a Dense: the converter drops the RESHAPE
                continue
            if prev is not None and getattr(prev, "sequence_reshape", False):
                # The converter folds RESHAPE(RESHAPE(x)): the loop's (T, 1, U) goes straight to this shape.
                g.nodes.pop()
                x, shape_in = prev.inputs[0], None     # (T, 1, U), T > 1: never the target shape
            if shape_in is None or tuple(layer.output_shape) != tuple(shape_in):
                g.add(_Node("RESHAPE", [x], [name]), [(1,) + tuple(layer.output_shape)])
        elif isinstance(layer, L.BatchNormalization):
            _lower_batch_norm(g, layer, x, after)
        elif isinstance(layer, L.SimpleRNN) and not layer.unroll:
            _lower_rnn_while(g, layer, x)
        elif isinstance(layer, L.SimpleRNN):
            _lower_rnn(g, layer, x)
        else:
            raise _core.UnsupportedError(f"convert: layer '{name}' ({type(layer).__name__}) is not supported")
    return g


def _lower_dense_rank_n(g, layer, x, after):
    """Keras Dense on a (batch, ..., F) input: its Tensordot becomes RESHAPE (-1, F) ->
    FULLY_CONNECTED without bias (keep_num_dims false) -> RESHAPE back -> ADD of the bias, which
    carries a fused relu / relu6 (without a bias the FULLY_CONNECTED carries it); tanh / sigmoid
    stay separate. The file declares the two inner tensors (1, 1) and (1, units): their shapes
    are computed at run time (SHAPE, GATHER, REDUCE_PROD, PACK, CONCATENATION, left out here)."""
    name = layer.name
    prev = g.nodes[-1] if g.nodes and g.nodes[-1].outputs[-1] == x else None
    if prev is not None and prev.op == "RESHAPE":
        raise _core.UnsupportedError(f"convert: Dense '{name}' on a rank-{len(g.shapes[x])} input right after a "
                                     "reshape: the converter merges the two RESHAPE ops (not reproduced)")
    w, k = _tflite_weights(layer)
    bias = _bias_or_none(layer.weights.get("bias"))
    if bias is None and isinstance(after, (L.Flatten, L.Reshape)):
        raise _core.UnsupportedError(f"convert: Dense '{name}' on a rank-{len(g.shapes[x])} input without a bias, "
                                     "then a reshape: the converter merges the two RESHAPE ops (not reproduced)")
    act = layer.activation if layer.activation in _FUSED else "linear"
    units = w.shape[0]
    g.add(_Node("RESHAPE", [x], [f"{name}/flat"]), [(1, 1)])
    g.nodes[-1].new_shape = (-1, w.shape[1])
    fc = dict(activation=_FUSED[act] if bias is None else 0, keep_num_dims=False, asymmetric_quantize_inputs=False)
    g.add(_Node("FULLY_CONNECTED", [g.last], [f"{name}/matmul"], w, None, fc, k, layer), [(1, units)])
    if bias is None and act != layer.activation:     # tanh / sigmoid: the converter puts it before the RESHAPE
        _add_activation(g, layer.activation, g.last, f"{name}/activation")
    out = name if bias is None else f"{name}/tensordot"
    g.add(_Node("RESHAPE", [g.last], [out]), [(1,) + tuple(layer.output_shape)])
    g.nodes[-1].new_shape = (-1,) + tuple(layer.output_shape)
    if bias is not None:
        out = name if act == layer.activation else f"{name}/linear"
        g.add(_Node("ADD", [g.last], [out], bias=bias, options=dict(activation=_FUSED[act])), [g.shapes[g.last]])
    if out != name:
        _add_activation(g, layer.activation, out, name)


def _lower_dilated(g, layer, x):
    """SPACE_TO_BATCH_ND -> undilated VALID convolution (zero bias) -> BATCH_TO_SPACE_ND -> ADD(bias)."""
    name = layer.name
    bias = _bias_or_none(layer.weights.get("bias"))
    act = layer.activation if layer.activation in _FUSED else "linear"
    if act != "linear" and bias is None:
        raise _core.UnsupportedError(f"convert: dilated '{name}' without a bias: the converter emits its "
                                     f"{act} as a separate RELU op (not supported)")
    n, h, w_, c = g.shapes[x]
    block, paddings, crops = _space_to_batch_params(layer, (h, w_))
    padded = (h + paddings[0].sum(), w_ + paddings[1].sum())
    # The file declares the batched tensors with the input's batch (1; the signature says -1).
    batched = (n, int(padded[0] // block[0]), int(padded[1] // block[1]), c)
    g.add(_Node("SPACE_TO_BATCH_ND", [x], [f"{name}/space_to_batch"]), [batched])
    g.nodes[-1].block, g.nodes[-1].pads = block, paddings
    inner = copy.copy(layer)
    inner.padding, inner.strides, inner.dilation_rate = "valid", (1, 1), (1, 1)
    w, k = _tflite_weights(layer)
    op = "CONV_2D" if isinstance(layer, L.Conv2D) else "DEPTHWISE_CONV_2D"
    out_c = w.shape[0] if op == "CONV_2D" else w.shape[3]
    conv_hw = (batched[1] - layer.kernel_size[0] + 1, batched[2] - layer.kernel_size[1] + 1)
    options = dict(activation=0, padding="valid", strides=(1, 1), dilation=(1, 1))
    g.add(_Node(op, [g.last], [f"{name}/conv"], w, np.zeros(out_c, f32), options, k, inner),
          [(batched[0],) + conv_hw + (out_c,)])
    done = bias is None and layer.activation == "linear"
    linear = name if done else (f"{name}/batch_to_space" if bias is not None else f"{name}/linear")
    g.add(_Node("BATCH_TO_SPACE_ND", [g.last], [linear]), [(n,) + tuple(layer.output_shape)])
    g.nodes[-1].block, g.nodes[-1].pads = block, crops
    if bias is not None:
        out = name if act == layer.activation else f"{name}/linear"
        # Keras adds the bias reshaped to (1, 1, 1, C); the converter's folding keeps that shape
        # for one channel and flattens it to (C,) otherwise.
        bias = bias.reshape(1, 1, 1, 1) if bias.size == 1 else bias
        g.add(_Node("ADD", [linear], [out], bias=bias, options=dict(activation=_FUSED[act])), [g.shapes[linear]])
        linear = out
    if linear != name:
        _add_activation(g, layer.activation, linear, name)


def _lower_batch_norm(g, bn, x, after):
    """A BatchNormalization not folded into a layer: MUL(x, m) -> ADD(shift), the constants as
    _fold computes them (shape (C,))."""
    name = bn.name
    w = bn.weights
    if isinstance(after, L.Dense) or w["gamma"].size == 1 and isinstance(after, (L.Conv2D, L.DepthwiseConv2D)):
        raise _core.UnsupportedError(f"convert: BatchNormalization '{name}' before '{after.name}': the converter "
                                     "folds its MUL + ADD into that layer's constants (not reproduced)")
    m = (_rsqrt((w["moving_variance"] + f32(bn.epsilon)).astype(f32)) * w["gamma"]).astype(f32)
    shift = (w["beta"] - w["moving_mean"] * m).astype(f32)
    g.add(_Node("MUL", [x], [f"{name}/mul"], bias=m, options=dict(activation=0)), [g.shapes[x]])
    act = _FUSED[getattr(bn, "fused_activation", "linear")]
    g.add(_Node("ADD", [f"{name}/mul"], [name], bias=shift, options=dict(activation=act)), [g.shapes[x]])


def _add_activation(g, activation, x, name):
    if activation in ("tanh", "sigmoid"):
        g.add(_Node("TANH" if activation == "tanh" else "LOGISTIC", [x], [name]), [g.shapes[x]])
    elif activation != "linear":
        raise _core.UnsupportedError(f"convert: the {activation} of '{name}' does not follow a Dense/Conv2D "
                                     "without activation; the converter emits a separate RELU op (not supported)")


def _lower_rnn(g, layer, x):
    name = layer.name
    if layer.activation != "tanh" or layer.return_sequences or layer.go_backwards:
        raise _core.UnsupportedError(f"convert: SimpleRNN '{name}' must use tanh, return only the last output and "
                                     "run forwards (other forms lower to TRANSPOSE/FILL/PACK graphs, not supported)")
    t, f = g.shapes[x][1:]
    w = layer.weights
    kx, kh = w["kernel"], w["recurrent_kernel"]
    bias = _bias_or_none(w.get("bias"))
    if t > 1:   # (1, T, F) -> (T, 1, F); with T = 1 the converter drops the identity reshape
        g.add(_Node("RESHAPE", [x], [f"{name}/time_major"]), [(t, 1, f)])
        x = f"{name}/time_major"
    steps = [f"{name}/x{s}" for s in range(t)]
    g.add(_Node("UNPACK", [x], steps, options=dict(axis=0)), [(1, f)] * t)
    fc = dict(activation=0, keep_num_dims=False, asymmetric_quantize_inputs=False)
    h = None
    for s in range(t):
        zx = f"{name}/step{s}/input"
        if h is None:
            g.add(_Node("FULLY_CONNECTED", [steps[s]], [zx], np.ascontiguousarray(kx.T), bias, fc, kx), [(1, layer.units)])
            pre = zx
        else:
            zh = f"{name}/step{s}/recurrent"
            g.add(_Node("FULLY_CONNECTED", [h], [zh], np.ascontiguousarray(kh.T), None, fc, kh), [(1, layer.units)])
            g.add(_Node("FULLY_CONNECTED", [steps[s]], [zx], np.ascontiguousarray(kx.T), bias, fc, kx),
                  [(1, layer.units)])
            pre = f"{name}/step{s}/add"
            g.add(_Node("ADD", [zx, zh], [pre], options=dict(activation=0)), [(1, layer.units)])
        h = name if s == t - 1 else f"{name}/step{s}/state"
        g.add(_Node("TANH", [pre], [h]), [(1, layer.units)])


def _lower_rnn_while(g, layer, x):
    """The converter's non-unrolled SimpleRNN (batch 1): RESHAPE (1, T, F) -> (T, 1, F) (left out
    when T = 1 or when another loop's (T, 1, U) sequences come in), WHILE over cond / body
    subgraphs (built by _emit_while) carrying (step, time, output list, h, x), then the output
    list's last row (STRIDED_SLICE) or, for return_sequences, RESHAPE (T, 1, U) -> (1, T, U)
    (left out when T = 1)."""
    name = layer.name
    if layer.activation != "tanh" or layer.go_backwards:
        raise _core.UnsupportedError(f"convert: SimpleRNN '{name}' (WHILE loop) must use tanh and run forwards "
                                     "(other forms are not emitted)")
    prev = g.nodes[-1] if g.nodes and x in g.nodes[-1].outputs else None
    if prev is not None and getattr(prev, "sequence_reshape", False) and x == g.last:
        # After another loop's sequences: its (T, 1, U) list feeds this loop directly (the
        # converter cancels RESHAPE (1, T, U) against this loop's RESHAPE (T, 1, U)).
        g.nodes.pop()
        x = prev.inputs[0]
        t, f = g.shapes[x][0], g.shapes[x][2]
    else:
        t, f = g.shapes[x][1:]
    if t > 1 and g.shapes[x] != (t, 1, f):
        g.add(_Node("RESHAPE", [x], [f"{name}/time_major"]), [(t, 1, f)])
        x = f"{name}/time_major"
    rows = t if layer.return_sequences else 1       # the output list keeps only what is read after the loop
    done = layer.return_sequences and t == 1
    states = [f"{name}/while/{k}" for k in ("step", "time", "outputs", "state", "inputs")]
    if done:
        states[2] = name
    node = _Node("WHILE", [x], states)
    node.rnn = layer
    g.add(node, [(), (), (rows, 1, layer.units), (1, layer.units), (t, 1, f)])
    g.last = states[2]
    if done:
        return
    if layer.return_sequences:
        g.add(_Node("RESHAPE", [states[2]], [name]), [(1, t, layer.units)])
        g.nodes[-1].sequence_reshape = True
    else:
        options = dict(begin_mask=6, end_mask=6, shrink_axis_mask=1)
        g.add(_Node("STRIDED_SLICE", [states[2]], [name], options=options), [(1, layer.units)])
        g.nodes[-1].slice = ([-1, 0, 0], [0, 1, layer.units], [1, 1, 1])


# ---- the float run (calibration) ----------------------------------------------------------------
_FLOAT_TENSOR = Tensor("float", np.float32, (), np.zeros(0, f32), np.zeros(0, np.int64), None)   # pads with 0


def _run_float(g, x, kernels="tf_builtin"):
    """Every tensor of the float graph on input `x`, with the float kernels of path `kernels`
    (tflite_float's: the calibrator's are "tf_builtin")."""
    values = {"input": np.ascontiguousarray(x, f32)}
    for n in g.nodes:
        v = [values[i] for i in n.inputs]
        if n.op in ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D"):
            lo, hi = FLOAT_ACTIVATIONS[n.options["activation"]]
            bias = None if n.bias is None else np.ascontiguousarray(n.bias, f32)
        if n.op == "FULLY_CONNECTED":
            x2 = np.ascontiguousarray(v[0].reshape(v[0].shape[0], -1))
            w = np.ascontiguousarray(np.asarray(n.kernel, f32).T)     # (in, out) -> TFLite's (out, in)
            y = _core.fully_connected_f32(x2, w, bias, kernels=kernels, lo=lo, hi=hi)
        elif n.op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            layer = n.geometry
            depthwise = n.op == "DEPTHWISE_CONV_2D"
            k = np.asarray(n.kernel, f32)
            if depthwise:                                             # (KH, KW, C, M) -> (KH, KW, 1, C*M)
                k = k.reshape(k.shape[0], k.shape[1], 1, -1)
            y = _core.conv2d_f32(np.ascontiguousarray(v[0]), np.ascontiguousarray(k), bias, kernels=kernels,
                                 depthwise=depthwise, strides=tuple(layer.strides), padding=layer.padding,
                                 dilation=tuple(layer.dilation_rate),
                                 groups=v[0].shape[3] if depthwise else layer.groups, lo=lo, hi=hi)
        elif n.op in ("TANH", "LOGISTIC"):
            y = _core.activation_f32(np.ascontiguousarray(v[0]), activation_function(n.op, kernels))
        elif n.op == "ADD" and n.bias is not None:     # a dilated convolution's bias, fused relu/relu6
            lo, hi = {0: (-np.inf, np.inf), 1: (0, np.inf), 3: (0, 6)}[n.options["activation"]]
            y = np.clip((v[0] + n.bias).astype(f32), f32(lo), f32(hi)).astype(f32)
        elif n.op == "ADD":
            y = (v[0] + v[1]).astype(f32)
        elif n.op == "MUL":
            y = (v[0] * n.bias).astype(f32)
        elif n.op in ("SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"):    # zero padding: the float graph
            y = _move_data(n.op, v[0], (n.block, n.pads), _FLOAT_TENSOR)
        elif n.op == "RESHAPE":
            if n.outputs[0].endswith("/time_major"):      # (N, T, F) -> (T, N, F)
                y = np.ascontiguousarray(np.transpose(v[0], (1, 0, 2)))
            elif hasattr(n, "new_shape"):                    # a Dense on a rank-N input
                y = np.ascontiguousarray(v[0].reshape(n.new_shape))
            else:
                y = np.ascontiguousarray(v[0].reshape((v[0].shape[0],) + g.shapes[n.outputs[0]][1:]))
        elif n.op == "UNPACK":
            time_major = v[0] if n.inputs[0].endswith("/time_major") else np.transpose(v[0], (1, 0, 2))
            for k, out in enumerate(n.outputs):
                values[out] = np.ascontiguousarray(time_major[k])
            continue
        else:   # pragma: no cover (every lowered op is listed above)
            raise AssertionError(n.op)
        values[n.outputs[0]] = y
    return values


def calibrate(g, calibration):
    """Global (min, max) of every float tensor over the calibration data, as float32. Like the
    converter's calibrator, one sample at a time (the batch size picks Eigen's summation order)."""
    calibration = np.ascontiguousarray(calibration, f32)
    ranges = {}
    for i in range(len(calibration)):
        for name, v in _run_float(g, calibration[i:i + 1]).items():
            lo, hi = f32(v.min()), f32(v.max())
            # The calibrator starts from min = FLT_MAX and max = FLT_MIN (the smallest positive
            # normal float), so an all-negative tensor's max is FLT_MIN.
            old = ranges.get(name, (f32(np.finfo(f32).max), f32(np.finfo(f32).tiny)))
            ranges[name] = (min(old[0], lo), max(old[1], hi))
    for n in g.nodes:
        shared = _in_place_input(g, n)
        if shared is not None:   # logged again after ADD overwrote it with ADD's output
            a, out = ranges[shared], ranges[n.outputs[0]]
            ranges[shared] = (min(a[0], out[0]), max(a[1], out[1]))
    return ranges


def _in_place_input(g, n):
    """The input whose buffer an ADD's or MUL's output takes over, or None. The calibrator logs
    every op's inputs before and after the op ran, so that input's range also covers the output.
    TFLite's ArenaPlanner::IdentifyInPlaceTensors (ADD and MUL are registered with
    kTfLiteInplaceOpInput0Shared | kTfLiteInplaceOpInput1Shared) takes the first input, in order, that InputTensorCanBeShared
    allows: as many bytes as the output and more than one float (kScalarTensorBytes = 4), read by
    no other op (refcount 1), not the graph input, and the output not the graph output. A
    constant (a dilated convolution's bias, an unfolded BatchNormalization's operands) is never
    in the arena."""
    if n.op not in ("ADD", "MUL") or n.outputs[0] == g.last:
        return None
    size = int(np.prod(g.shapes[n.outputs[0]]))
    for name in n.inputs:
        readers = sum(m.inputs.count(name) for m in g.nodes) + (name == g.last)
        if name != "input" and int(np.prod(g.shapes[name])) == size and size > 1 and readers == 1:
            return name
    return None


# ---- quantization ---------------------------------------------------------------------------------
class _Builder:
    def __init__(self):
        self.tensors, self.ops, self.index = [], [], {}

    def tensor(self, name, dtype, shape, scale=(), zero_point=(), data=None):
        self.tensors.append(Tensor(name, dtype, tuple(shape), np.asarray(scale, f32).reshape(-1),
                                   np.asarray(zero_point, np.int64).reshape(-1), data))
        self.index[name] = len(self.tensors) - 1
        return self.index[name]

    def op(self, name, inputs, outputs, options=None):
        self.ops.append(Op(name, list(inputs), list(outputs), dict(options or {})))


_WEIGHT_AXIS = {"FULLY_CONNECTED": 0, "CONV_2D": 0, "DEPTHWISE_CONV_2D": 3}


def _int_activation(profile, lo, hi):
    if profile == "tflite_int16x8":
        return tflite.activation_params_int16(lo, hi)
    return tflite.activation_params_int8(lo, hi)


def _fixed_output(profile, op):
    """TANH / LOGISTIC outputs have fixed quantization."""
    if profile == "tflite_int16x8":
        return (1.0 / 32768, 0)
    return (1.0 / 128, 0) if op == "TANH" else (1.0 / 256, -128)


_BIAS_MAX = (2 ** 31 - 1) // 2


def _bias_fits(bias, input_scale, weight_scales):
    """QuantizationDriver::SetBiasParamsWithAdjustments (MLIR, int8): a channel whose bias would
    exceed INT32_MAX / 2 in units of s_in * s_w gets the bias scale |b| / (INT32_MAX / 2) and the
    weight scale |b| / (INT32_MAX / 2) / s_in (double arithmetic, each stored as float32; the bias
    scale is not recomputed from the rounded weight scale, which can differ in the last bit).
    Returns (weight scales, bias scales), or None when no channel needs it."""
    s_in = float(f32(input_scale))
    bias_scale = (np.float64(s_in) * weight_scales.astype(np.float64)).astype(f32).astype(np.float64)
    abs_b = np.abs(bias.astype(f32)).astype(np.float64)
    with np.errstate(divide="ignore"):
        over = abs_b / bias_scale > _BIAS_MAX
    if not over.any():
        return None
    new = weight_scales.astype(np.float64).copy()
    new[over] = (abs_b[over] / _BIAS_MAX) / s_in
    new_bias_scale = bias_scale.copy()
    new_bias_scale[over] = abs_b[over] / _BIAS_MAX
    return new.astype(f32), new_bias_scale.astype(f32)


def _adjust_weights_for_bias_int16(bias, input_scale, w, axis, weight_scales):
    """The old quantizer's AdjustWeightsForBiasScale (int16x8): a channel whose bias reaches half
    of INT32_MAX in units of s_in * s_w gets the weight half-range 2|b| / INT32_MAX * f32(127 / s_in)
    (so a near-zero input scale gives an infinite weight scale and all-zero codes, as the file
    holds). One output channel uses the largest |b| (the per-layer branch). Returns (scales,
    codes) when some channel changes, else None."""
    from .tflite_kernels import round_half_away
    k = 2147483647.0
    s_in = f32(input_scale)
    abs_b = np.abs(bias.astype(f32))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        inv_in = f32(f32(127) / s_in)
        if weight_scales.size > 1:
            over = abs_b.astype(np.float64) >= 0.5 * np.float64(s_in) * weight_scales.astype(np.float64) * k
            new_max = (2.0 * abs_b.astype(np.float64) / k * np.float64(inv_in)).astype(f32)
        else:
            half = abs_b.max()
            over = np.array([np.float64(f32(half / f32(k))) >= 0.5 * np.float64(s_in) * np.float64(weight_scales[0])])
            new_max = np.array([2.0 * np.float64(half) / k * np.float64(inv_in)]).astype(f32)
        if not over.any():
            return None
        moved = np.moveaxis(w, axis, 0)
        half_range = np.where(over, new_max, np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)).astype(f32)
        scales = (half_range / f32(127)).astype(f32)
        inv = np.where(half_range == 0, f32(0), (f32(127) / half_range).astype(f32)).astype(f32)
        shape = [1] * w.ndim
        shape[axis] = -1
        codes = np.clip(round_half_away((w * inv.reshape(shape)).astype(f32)), -127, 127)
    return scales, np.nan_to_num(codes).astype(np.int8)


def _quantize_with_scales(w, axis, scales):
    """Per-channel symmetric int8 codes for given scales: RHA(f32(w * f32(1 / scale))), clamped."""
    from .tflite_kernels import round_half_away
    inv = (1.0 / scales.astype(np.float64)).astype(f32)
    shape = [1] * w.ndim
    shape[axis] = -1
    return np.clip(round_half_away((w * inv.reshape(shape)).astype(f32)), -127, 127).astype(np.int8)


def _full_integer(g, profile, ranges, inference_io):
    b = _Builder()
    act_dtype = np.int16 if profile == "tflite_int16x8" else np.int8
    params = {}

    def activation(name):
        if name not in params:
            if name not in ranges:
                raise _core.ConfigError(f"convert: no calibration range for tensor '{name}'")
            lo, hi = ranges[name]
            params[name] = _int_activation(profile, float(lo), float(hi))
        return params[name]

    s, z = activation("input")
    if inference_io == "float":
        x_float = b.tensor("input", np.float32, g.shapes["input"])
        x = b.tensor("input/quantized", act_dtype, g.shapes["input"], s, z)
        b.op("QUANTIZE", [x_float], [x])
        inputs = [x_float]
    else:
        x = b.tensor("input", act_dtype, g.shapes["input"], s, z)
        inputs = [x]
    ids = {"input": x}
    constants = {}
    rnn_layers = {n.outputs[0].split("/")[0] for n in g.nodes if n.op == "UNPACK"}
    for n in g.nodes:
        if n.op in _SAME_PARAMS:
            params.update({o: params[n.inputs[0]] if n.inputs[0] in params else activation(n.inputs[0])
                           for o in n.outputs})
        elif n.op in ("TANH", "LOGISTIC"):
            params[n.outputs[0]] = _fixed_output(profile, n.op)
        out_ids = []
        for o in n.outputs:
            so, zo = activation(o)
            out_ids.append(b.tensor(o, act_dtype, g.shapes[o], so, zo))
        in_ids = [ids[i] for i in n.inputs]
        if n.weights is not None:
            key = id(n.weights) if n.op != "FULLY_CONNECTED" else (n.weights.tobytes(), n.weights.shape)
            s_in = float(b.tensors[in_ids[0]].scale[0])
            scheme = "int16x8" if profile == "tflite_int16x8" else "ptq"
            if key not in constants:   # the unrolled RNN shares one weight tensor across steps
                ws, wq = tflite.quantize_weights(n.weights, True, _WEIGHT_AXIS[n.op], scheme)
                constants[key] = b.tensor(f"{n.outputs[0]}/weights", np.int8, n.weights.shape, ws,
                                          np.zeros(ws.size, np.int64), wq)
            w_id = constants[key]
            in_ids.append(w_id)
            if n.bias is not None and profile == "tflite_int16x8":
                adjusted = _adjust_weights_for_bias_int16(n.bias, s_in, n.weights, _WEIGHT_AXIS[n.op],
                                                          b.tensors[w_id].scale)
                if adjusted is not None and n.outputs[0].split("/")[0] in rnn_layers:
                    raise _core.UnsupportedError(
                        f"convert: tflite_int16x8 enlarges the weight scale of '{n.outputs[0]}' so its bias fits "
                        "(AdjustWeightsForBiasScale); for the RNN's shared weights qdrift does not reproduce it")
                if adjusted is not None:
                    ws, wq = adjusted
                    w_id = b.tensor(f"{n.outputs[0]}/weights", np.int8, n.weights.shape, ws,
                                    np.zeros(ws.size, np.int64), wq)
                    in_ids[-1] = w_id
            fitted_bias_scale = None
            if n.bias is not None and profile == "tflite_int8":
                adjusted = _bias_fits(n.bias, s_in, b.tensors[w_id].scale)
                if adjusted is not None:   # a per-op copy of the weights with enlarged scales
                    adjusted, fitted_bias_scale = adjusted
                    wq = _quantize_with_scales(n.weights, _WEIGHT_AXIS[n.op], adjusted)
                    w_id = b.tensor(f"{n.outputs[0]}/weights", np.int8, n.weights.shape, adjusted,
                                    np.zeros(adjusted.size, np.int64), wq)
                    in_ids[-1] = w_id
            if n.bias is not None:
                ws = b.tensors[w_id].scale
                if profile == "tflite_int16x8":
                    # An infinite weight scale (see _adjust_weights_for_bias_int16) gives an
                    # infinite bias scale, inverse 0 and code 0.
                    finite = np.isfinite(ws)
                    bq = tflite.quantize_bias_int64(n.bias, s_in, np.where(finite, ws, f32(1)))
                    bq, dtype = np.where(finite if ws.size > 1 else finite[0], bq, 0).astype(np.int64), np.int64
                    with np.errstate(over="ignore", invalid="ignore"):
                        bs = (f32(s_in) * ws).astype(f32)
                elif fitted_bias_scale is not None:   # _bias_fits' bias scales (input scale 1: bs itself)
                    bs = fitted_bias_scale
                    bq, dtype = tflite.quantize_bias_int32(n.bias, 1.0, bs), np.int32
                else:
                    bq, dtype = tflite.quantize_bias_int32(n.bias, s_in, ws), np.int32
                    bs = (np.float64(f32(s_in)) * ws.astype(np.float64)).astype(f32)
                # The old quantizer (int16x8) keeps the unrolled RNN's one shared bias tensor; the
                # MLIR quantizer (int8) gives every step its own copy.
                bkey = ("bias", n.bias.tobytes(), s_in, w_id) if profile == "tflite_int16x8" else None
                if bkey is not None and not np.any(n.bias):
                    # The float model holds one zeros constant per size, read by every convolution
                    # without a bias; the old quantizer quantizes it once, at its first reader.
                    bkey = ("zero bias", n.bias.shape)
                if bkey is None or bkey not in constants:
                    bid = b.tensor(f"{n.outputs[0]}/bias", dtype, n.bias.shape, bs, np.zeros(bs.size, np.int64), bq)
                    if bkey is not None:
                        constants[bkey] = bid
                in_ids.append(bid if bkey is None else constants[bkey])
            else:
                in_ids.append(-1)
        if n.op in ("ADD", "MUL") and n.bias is not None:   # a constant operand, quantized like an activation
            sb, zb = _int_activation(profile, float(n.bias.min()), float(n.bias.max()))
            lim = np.iinfo(act_dtype)
            # int8 (MLIR quantizer): RHA(f32(b / s)); int16 (the old quantizer's
            # SymmetricQuantizeFloatsToInt16): RHA(f32(b * f32(1 / (double)s))), which differs at near-ties.
            scaled = n.bias / f32(sb) if act_dtype == np.int8 else n.bias * f32(1.0 / float(f32(sb)))
            codes = np.clip(_round_half_away(scaled.astype(f32)) + zb, lim.min, lim.max).astype(act_dtype)
            what = "bias" if n.op == "ADD" else "multiplier"
            in_ids.append(b.tensor(f"{n.outputs[0]}/{what}", act_dtype, n.bias.shape, sb, zb, codes))
        _data_constants(b, n, g, in_ids)
        b.op(n.op, in_ids, out_ids, _file_options(n, n.options, profile))
        ids.update(zip(n.outputs, out_ids))
    last = ids[g.last]
    if inference_io == "float":
        y = b.tensor("output", np.float32, b.tensors[last].shape)
        b.op("DEQUANTIZE", [last], [y])
        last = y
    tm = TFLiteModel(b.tensors, b.ops, inputs, [last])
    tm.subgraphs = [tm]
    return tm


def _round_half_away(x):
    from .tflite_kernels import round_half_away
    return round_half_away(np.asarray(x, np.float64))


def _data_constants(b, n, g, in_ids):
    """The int32 operands of RESHAPE (shape) and SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND (block, paddings or crops)."""
    out = n.outputs[0]
    if n.op == "RESHAPE":
        shape = np.asarray(getattr(n, "new_shape", g.shapes[out]), np.int32)
        in_ids.append(b.tensor(f"{out}/shape", np.int32, shape.shape, data=shape))
    elif n.op in ("SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"):
        in_ids.append(b.tensor(f"{out}/block_shape", np.int32, (2,), data=n.block))
        in_ids.append(b.tensor(f"{out}/paddings", np.int32, (2, 2), data=n.pads))
    elif n.op == "STRIDED_SLICE":
        for what, v in zip(("begin", "end", "strides"), n.slice):
            in_ids.append(b.tensor(f"{out}/{what}", np.int32, (3,), data=np.asarray(v, np.int32)))


FP16_MAX = 65504.0


def _float_weights(g, profile):
    """tflite_dynamic: constants of FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D with at least
    1024 elements become symmetric int8, per channel, in double arithmetic; biases and smaller
    weights stay float32; FC ops get asymmetric_quantize_inputs. tflite_fp16: every float
    constant (weights, biases, a WHILE loop's initial zeros) becomes float16 (clamped to +-65504,
    rounded half to even) read through a DEQUANTIZE op in the subgraph that uses it.
    Activations stay float32 in both, with no QUANTIZE / DEQUANTIZE at the ends."""
    b = _Builder()
    ids = {"input": b.tensor("input", np.float32, g.shapes["input"])}
    shared = {}   # the unrolled RNN reads one weight (and bias) tensor at every step
    subgraphs = []
    for n in g.nodes:
        in_ids = [ids[i] for i in n.inputs]
        options = dict(n.options)
        if n.op == "WHILE":
            out_ids = _emit_while(b, shared, profile, n, in_ids[0], g, subgraphs)
            ids.update(zip(n.outputs, out_ids))
            continue
        if n.weights is not None:
            in_ids.append(_float_constant(b, shared, profile, f"{n.outputs[0]}/weights", n.weights, _WEIGHT_AXIS[n.op]))
            in_ids.append(-1 if n.bias is None else _float_constant(b, shared, profile, f"{n.outputs[0]}/bias",
                                                                    n.bias, None))
            if n.op == "FULLY_CONNECTED" and profile == "tflite_dynamic":
                options["asymmetric_quantize_inputs"] = b.tensors[in_ids[1]].dtype == np.int8
        if n.op in ("ADD", "MUL") and n.bias is not None:
            in_ids.append(_float_constant(b, shared, profile, f"{n.outputs[0]}/bias", n.bias, None))
        _data_constants(b, n, g, in_ids)
        out_ids = [b.tensor(o, np.float32, g.shapes[o]) for o in n.outputs]
        b.op(n.op, in_ids, out_ids, _file_options(n, options, profile))
        ids.update(zip(n.outputs, out_ids))
    main = TFLiteModel(b.tensors, b.ops, [ids["input"]], [ids[g.last]])
    models = [main] + subgraphs
    for m in models:
        m.subgraphs = models
    return main


def _float_constant(b, shared, profile, name, value, axis):
    """A float constant of a float-activation profile (see _float_weights); axis: the weight's
    output-channel axis, None for biases and other constants (never quantized)."""
    key = (value.tobytes(), value.shape, value.dtype.str)
    if key in shared:
        return shared[key]
    if profile == "tflite_fp16":
        half = np.clip(value, -FP16_MAX, FP16_MAX).astype(np.float16)
        src = b.tensor(f"{name}/fp16", np.float16, value.shape, data=half)
        out = b.tensor(name, np.float32, value.shape)
        b.op("DEQUANTIZE", [src], [out])
    elif axis is not None and value.size >= DYNAMIC_MIN_ELEMENTS:
        ws, wq = tflite.quantize_weights(value, True, axis, "dynamic")
        out = b.tensor(name, np.int8, value.shape, ws, np.zeros(ws.size, np.int64), wq)
    else:
        out = b.tensor(name, np.float32, value.shape, data=np.ascontiguousarray(value, f32))
    shared[key] = out
    return out


def _int32(b, name, value):
    v = np.asarray(value, np.int32)
    return b.tensor(name, np.int32, v.shape, data=v)


def _emit_while(b, shared, profile, n, x, g, subgraphs):
    """The main graph's WHILE op of a non-unrolled SimpleRNN and its cond / body subgraphs
    (appended to `subgraphs`; the first subgraph index is 1). Returns the WHILE's output ids."""
    layer, (step, time, outputs, state, inputs) = n.rnn, n.outputs
    units = layer.units
    shapes = [g.shapes[o] for o in n.outputs]
    rows = shapes[2][0]
    zero = _int32(b, f"{step}/zero", 0)
    # The converter dequantizes the initial state before the initial output list (reverse order of use).
    h0 = _float_constant(b, shared, profile, f"{state}/initial", np.zeros((1, units), f32), None)
    list0 = _float_constant(b, shared, profile, f"{outputs}/initial", np.zeros((rows, 1, units), f32), None)
    out_ids = [b.tensor(o, np.int32 if k < 2 else np.float32, shapes[k]) for k, o in enumerate(n.outputs)]
    first = len(subgraphs) + 1
    b.op("WHILE", [zero, zero, list0, h0, x], out_ids, dict(cond=first, body=first + 1))
    subgraphs.append(_while_cond(layer.name, shapes))
    subgraphs.append(_while_body(layer, shapes, profile, layer.return_sequences))
    return out_ids


def _loop_arguments(b, name, shapes):
    return [b.tensor(f"{name}/arg{k}", np.int32 if k < 2 else np.float32, s) for k, s in enumerate(shapes)]


def _while_cond(name, shapes):
    """LESS(time, T), LESS(step, T), LOGICAL_AND: both counters below the sequence length."""
    b = _Builder()
    args = _loop_arguments(b, f"{name}/while_cond", shapes)
    steps = _int32(b, f"{name}/while_cond/length", shapes[4][0])
    less_time = b.tensor(f"{name}/while_cond/less_time", np.bool_, ())
    less_step = b.tensor(f"{name}/while_cond/less_step", np.bool_, ())
    both = b.tensor(f"{name}/while_cond/and", np.bool_, ())
    b.op("LESS", [args[1], steps], [less_time])
    b.op("LESS", [args[0], steps], [less_step])
    b.op("LOGICAL_AND", [less_step, less_time], [both])
    return TFLiteModel(b.tensors, b.ops, args, [both])


def _while_body(layer, shapes, profile, sequences):
    """One step: the counters + 1, FC(h, U) without bias, GATHER(x, time), FC(x_t, W, b), ADD,
    TANH, and the output list written: the last output RESHAPEd to (1, 1, U), or (return_sequences)
    list[:time] ++ h ++ list[time + 1:] through SLICE and CONCATENATION, with the shapes the
    converter declares for the slices ((1, 1, 1) and (1, 1, U)). Outputs (step + 1, time + 1,
    list, h, x)."""
    name, units = layer.name, layer.units
    w = layer.weights
    b, shared = _Builder(), {}
    base = f"{name}/while_body"
    args = _loop_arguments(b, base, shapes)
    bias = _bias_or_none(w.get("bias"))
    # fp16: the DEQUANTIZE ops open the body in reverse order of use (bias, W, U)
    b_id = -1 if bias is None else _float_constant(b, shared, profile, f"{base}/bias", bias, None)
    w_id = _float_constant(b, shared, profile, f"{base}/kernel", np.ascontiguousarray(w["kernel"].T), 0)
    u_id = _float_constant(b, shared, profile, f"{base}/recurrent_kernel",
                           np.ascontiguousarray(w["recurrent_kernel"].T), 0)
    one = _int32(b, f"{base}/one", 1)
    time_next = b.tensor(f"{base}/time_next", np.int32, ())
    step_next = b.tensor(f"{base}/step_next", np.int32, ())
    b.op("ADD", [args[1], one], [time_next], dict(activation=0, pot_scale_int16=True))
    b.op("ADD", [args[0], one], [step_next], dict(activation=0, pot_scale_int16=True))

    def fc(x, weights, bias_id, out):
        y = b.tensor(f"{base}/{out}", np.float32, (1, units))
        hybrid = profile == "tflite_dynamic" and b.tensors[weights].dtype == np.int8
        b.op("FULLY_CONNECTED", [x, weights, bias_id], [y],
             dict(activation=0, keep_num_dims=False, quantized_bias_type=0, asymmetric_quantize_inputs=hybrid))
        return y

    recurrent = fc(args[3], u_id, -1, "recurrent")
    x_t = b.tensor(f"{base}/x_t", np.float32, (1, shapes[4][2]))
    b.op("GATHER", [args[4], args[1]], [x_t], dict(axis=0))
    projected = fc(x_t, w_id, b_id, "input")
    pre = b.tensor(f"{base}/add", np.float32, (1, units))
    b.op("ADD", [projected, recurrent], [pre], dict(activation=0, pot_scale_int16=True))
    h = b.tensor(f"{base}/state", np.float32, (1, units))
    b.op("TANH", [pre], [h])
    row = b.tensor(f"{base}/row", np.float32, (1, 1, units))
    if not sequences:
        b.op("RESHAPE", [h, _int32(b, f"{base}/row_shape", [1, 1, units])], [row])
        return TFLiteModel(b.tensors, b.ops, args, [step_next, time_next, row, h, args[4]])
    one_d = _int32(b, f"{base}/one_d", [1])

    def index3(counter, rest, label):
        r = b.tensor(f"{base}/{label}_1d", np.int32, (1,))
        b.op("RESHAPE", [counter, one_d], [r])
        out = b.tensor(f"{base}/{label}", np.int32, (3,))
        b.op("CONCATENATION", [r, _int32(b, f"{base}/{label}_rest", rest)], [out], dict(axis=0, activation=0))
        return out

    head_size = index3(args[1], [-1, -1], "head_size")
    head = b.tensor(f"{base}/head", np.float32, (1, 1, 1))
    b.op("SLICE", [args[2], _int32(b, f"{base}/head_begin", [0, 0, 0]), head_size], [head])
    tail_begin = index3(time_next, [0, 0], "tail_begin")
    tail = b.tensor(f"{base}/tail", np.float32, (1, 1, units))
    b.op("SLICE", [args[2], tail_begin, _int32(b, f"{base}/tail_size", [-1, -1, -1])], [tail])
    b.op("RESHAPE", [h, _int32(b, f"{base}/row_shape", [1, 1, units])], [row])
    written = b.tensor(f"{base}/outputs", np.float32, shapes[2])
    b.op("CONCATENATION", [head, row, tail], [written], dict(axis=0, activation=0))
    return TFLiteModel(b.tensors, b.ops, args, [step_next, time_next, written, h, args[4]])


def convert(model, profile="tflite_int8", calibration=None, ranges=None, inference_io="float"):
    """The TFLiteModel the TFLite converter writes for `model` (a qd.Sequential or a Keras model).

    profile:      tflite_int8 (full integer, int8 activations) | tflite_dynamic (int8 weights of
                  1024+ elements, float activations) | tflite_fp16 (float16 constants) |
                  tflite_int16x8 (int16 activations, int8 weights, int64 biases)
    calibration:  representative inputs (batch first, float32); the float graph runs on them and
                  each tensor's global min/max sets its scale and zero point
    ranges:       {tensor name: (min, max)} overriding calibrated ranges (tensor names: "input",
                  each layer's name, "<rnn>/step<t>/input|recurrent|add|state")
    inference_io: "float" (QUANTIZE in, DEQUANTIZE out, the default) or "int8" (the converter's
                  inference_input_type = inference_output_type = tf.int8)"""
    if profile not in PROFILES:
        raise _core.ConfigError(f"convert: unknown profile '{profile}'; expected one of {', '.join(PROFILES)}")
    if inference_io not in ("float", "int8"):
        raise _core.ConfigError(f"convert: inference_io must be 'float' or 'int8', got '{inference_io}'")
    model = _as_sequential(model)
    if profile not in ("tflite_dynamic", "tflite_fp16"):
        for layer in model.layers:
            if isinstance(layer, L.SimpleRNN) and not layer.unroll:
                raise _core.UnsupportedError(
                    f"convert: {profile}: SimpleRNN '{layer.name}' needs unroll=True (the real converter crashes on "
                    "the full-integer WHILE loop of TF 2.21; tflite_dynamic and tflite_fp16 emit the loop)")
    g = _lower(model)
    if profile in ("tflite_dynamic", "tflite_fp16"):
        return _float_weights(g, profile)
    if profile == "tflite_int16x8" and inference_io != "float":
        raise _core.UnsupportedError("convert: tflite_int16x8 with integer inference I/O is not verified")
    found = {} if calibration is None else calibrate(g, calibration)
    found.update({k: (f32(v[0]), f32(v[1])) for k, v in (ranges or {}).items()})
    missing = [n for n in g.shapes if n not in found]
    if missing:
        raise _core.ConfigError(f"convert: profile '{profile}' needs calibration data (calibration=...) or ranges "
                                f"for every activation; missing: {', '.join(missing[:5])}")
    return _full_integer(g, profile, found, inference_io)


def float_graph_tensors(model):
    """Names of the float tensors qd.convert calibrates, in graph order (the keys of `ranges`)."""
    g = _lower(_as_sequential(model))
    return ["input"] + [o for n in g.nodes for o in n.outputs]


def _as_sequential(model):
    from .model import Sequential
    if isinstance(model, Sequential):
        return model
    from .keras_import import from_keras
    batch = (getattr(model, "input_shape", None) or (None,))[0]
    for layer in getattr(model, "layers", []):
        if type(layer).__name__ == "SimpleRNN" and not layer.get_config().get("unroll", False) and batch != 1:
            why = ("the converter fails on it (TensorListReserve needs a static element shape)" if batch is None
                   else "qd.convert emits the loop for batch 1 only (the converter's TRANSPOSE form is not emitted)")
            raise _core.UnsupportedError(f"convert: the non-unrolled SimpleRNN '{layer.name}' on a batch of {batch}: "
                                         f"{why}; use keras.Input(..., batch_size=1) or unroll=True")
    return from_keras(model)
