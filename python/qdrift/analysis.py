"""qd.compare: where a quantized model's error is born and how it grows (per layer, per RNN step,
per quantizer), with an analytic noise prediction next to the measurement. Metrics come from the
C++ kernels in analysis/ (one pass, double sums)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from . import _core
from .layers import (Activation, BatchNormalization, Conv2D, Dense, DepthwiseConv2D, Flatten, Reshape, SimpleRNN,
                     _fq)

METRICS = ("mse", "rmse", "sqnr_db", "max_abs", "mean_abs", "cosine", "rel_l2")
GROWTH_LAWS = ("linear", "sqrt", "geometric")


# ---- metrics ---------------------------------------------------------------------------------
def _f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def metrics(reference, candidate, axis=None, what="metrics"):
    """The metric set of candidate against reference: a dict of floats (axis=None, the whole
    tensor) or of float64 arrays with one value per index along `axis` (e.g. axis=1 of
    (batch, time, units) states: one value per time step). Definitions: analysis/include/
    qdrift/analysis/metrics.h. NaN/Inf in either tensor raise DataError naming `what`."""
    ref, cand = _f32(reference), _f32(candidate)
    if ref.shape != cand.shape:
        raise _core.ShapeError(f"{what}: reference {ref.shape} and candidate {cand.shape} differ in shape")
    if axis is None:
        outer, groups, inner = 1, 1, ref.size
    else:
        axis = axis % ref.ndim if ref.ndim else 0
        outer, groups, inner = int(np.prod(ref.shape[:axis])), ref.shape[axis], int(np.prod(ref.shape[axis + 1:]))
    m = _core.error_metrics(ref, cand, outer=outer, groups=groups, inner=inner, what=what)
    m = {k: m[k] for k in METRICS}
    return {k: float(v[0]) for k, v in m.items()} if axis is None else m


def argmax_agreement(reference, candidate, what="argmax_agreement"):
    """Fraction of rows whose argmax over the last axis agrees (numpy's first-maximum rule)."""
    return float(_core.argmax_agreement(_f32(reference), _f32(candidate), what=what))


def lsb_histogram(reference_codes, candidate_codes, max_diff=16):
    """{difference: count} of integer codes candidate - reference; |d| > max_diff counts at ±max_diff."""
    bins = _core.lsb_histogram(np.ascontiguousarray(reference_codes, dtype=np.int32),
                               np.ascontiguousarray(candidate_codes, dtype=np.int32), max_diff=max_diff)
    return {d: int(c) for d, c in zip(range(-max_diff, max_diff + 1), bins) if c}


# ---- growth laws -------------------------------------------------------------------------------
def _r2(y, fit):
    ss = float(np.sum((y - np.mean(y)) ** 2))
    res = float(np.sum((y - fit) ** 2))
    return 1.0 - res / ss if ss > 0 else (1.0 if res == 0 else 0.0)


def _geometric_curve(n, gain):
    """sqrt(sum_{k<n} gain^(2k)): the RMS of e_t = gain * e_{t-1} + (unit white noise) after n steps."""
    g2 = gain * gain
    return np.sqrt(n if abs(g2 - 1) < 1e-12 else (g2 ** n - 1) / (g2 - 1))


def fit_growth(rmse, name=""):
    """Fit the RMS error after n = 1..T steps with each law, by least squares on the RMSE:
      linear     rmse = a n            (fully correlated error, e.g. a bias, adds up)
      sqrt       rmse = a sqrt(n)      (independent errors through a unit-gain recurrence)
      geometric  rmse = a sqrt(sum_{k<n} g^(2k)) with the estimated recurrent gain g
                 (g < 1 saturates at a / sqrt(1 - g^2); g = 1 is sqrt; g > 1 grows like g^n)
    Returns rows {layer, law, scale, gain, r2, adj_r2, best}; `best` has the highest R^2
    adjusted for the number of parameters (1, 1, 2)."""
    y = np.asarray(rmse, np.float64)
    n = np.arange(1, len(y) + 1, dtype=np.float64)
    rows = []

    def scaled(f):   # closed-form a for y ~ a f
        ff = float(np.dot(f, f))
        return float(np.dot(f, y) / ff) if ff > 0 else 0.0

    for law, f in (("linear", n), ("sqrt", np.sqrt(n))):
        a = scaled(f)
        rows.append(dict(layer=name, law=law, scale=a, gain=float("nan"), r2=_r2(y, a * f), params=1))
    # Geometric: one-dimensional search over g (log grid, then a golden-section refinement),
    # with the closed-form a for each g.
    def loss(g):
        f = _geometric_curve(n, g)
        return float(np.sum((y - scaled(f) * f) ** 2))

    grid = np.exp(np.linspace(np.log(0.05), np.log(4.0), 400))
    if len(y) > 1:
        grid = grid[np.isfinite([_geometric_curve(n[-1:], g)[0] for g in grid])]
    losses = [loss(g) for g in grid]
    i = int(np.argmin(losses))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    phi = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        a_, b_ = hi - phi * (hi - lo), lo + phi * (hi - lo)
        if loss(a_) < loss(b_):
            hi = b_
        else:
            lo = a_
    g = (lo + hi) / 2
    f = _geometric_curve(n, g)
    a = scaled(f)
    rows.append(dict(layer=name, law="geometric", scale=a, gain=float(g), r2=_r2(y, a * f), params=2))
    for r in rows:
        dof = len(y) - r["params"] - 1
        r["adj_r2"] = 1 - (1 - r["r2"]) * (len(y) - 1) / dof if dof > 0 else r["r2"]
    best = max(range(len(rows)), key=lambda k: rows[k]["adj_r2"])
    for k, r in enumerate(rows):
        r["best"] = k == best
        del r["params"]
    return rows


# ---- the report --------------------------------------------------------------------------------
def _json_value(v):
    if isinstance(v, (np.floating, float)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    return v


def _records(df):
    return [{k: _json_value(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


@dataclass
class Report:
    """What qd.compare measured. DataFrames (pandas):
      layers       layer, mode (accumulated | isolated), mse, rmse, sqnr_db, max_abs, mean_abs,
                   cosine, rel_l2, argmax_agree (model output only)
      timesteps    layer, step, mode (accumulated | local), the metrics, clipped, saturated,
                   predicted_mse (with predict=True)
      growth       layer, law (linear | sqrt | geometric), scale, gain, r2, adj_r2, best
      attribution  quantizer, kind (quantizer | residual), only_this, all_but_this, contribution
      predicted    layer, predicted_mse, measured_mse, ratio, predicted_sqnr_db, measured_sqnr_db
      lsb          layer, mode, diff, count (code differences at static int output quantizers)
    total_mse: the model output's MSE (what attribution splits)."""
    layers: object
    timesteps: object
    growth: object
    attribution: object
    predicted: object
    lsb: object
    output: str = ""
    total_mse: float = float("nan")
    meta: dict = field(default_factory=dict)

    def to_dict(self):
        """Plain lists of records: JSON-serializable with allow_nan=False (non-finite numbers, e.g.
        the infinite SQNR of an exact match, become None; its mse of 0 says the same)."""
        out = {k: _records(getattr(self, k)) for k in ("layers", "timesteps", "growth", "attribution", "predicted",
                                                       "lsb")}
        out.update(output=self.output, total_mse=_json_value(self.total_mse), meta=self.meta)
        return out

    def plot(self, figsize=None):
        """Error vs layer, error vs time step, attribution bars, predicted vs measured: one
        matplotlib figure with a panel for each part the report holds."""
        from . import analysis_plot
        return analysis_plot.plot(self, figsize=figsize)


def _frame(rows, columns):
    import pandas as pd
    return pd.DataFrame(rows, columns=columns)


LAYER_COLUMNS = ["layer", "mode"] + list(METRICS) + ["argmax_agree"]
STEP_COLUMNS = ["layer", "step", "mode"] + list(METRICS) + ["clipped", "saturated", "predicted_mse"]
GROWTH_COLUMNS = ["layer", "law", "scale", "gain", "r2", "adj_r2", "best"]
ATTRIBUTION_COLUMNS = ["quantizer", "kind", "only_this", "all_but_this", "contribution"]
PREDICTED_COLUMNS = ["layer", "predicted_mse", "measured_mse", "ratio", "predicted_sqnr_db", "measured_sqnr_db"]
LSB_COLUMNS = ["layer", "mode", "diff", "count"]


# ---- running the candidate ---------------------------------------------------------------------
def _is_sequential(model):
    return hasattr(model, "with_quantizers") and hasattr(model, "layers")


def _tap_name(layer):
    return getattr(layer, "folded", [layer.name])[-1]


def _tensor_quant(model):
    """{tensor name: (scale, zero_point)} of a TFLite-like model's per-tensor quantized tensors."""
    out = {}
    for t in getattr(model, "tensors", []) or []:
        scale, zp = np.ravel(getattr(t, "scale", [])), np.ravel(getattr(t, "zero_point", []))
        if scale.size == 1 and zp.size == 1:
            out[t.name] = (float(scale[0]), int(zp[0]))
    return out


def _run_with_taps(model, x, what):
    """(output, float taps, integer taps) of a qd.Sequential, or of anything with run(x, taps=True)
    (a qd.TFLiteModel: {tensor name: value}). Integer taps of per-tensor quantized tensors are
    dequantized with their scale and zero point (real = scale * (q - zero_point)) and also kept as
    codes {name: (codes, scale, zero_point)} for LSB histograms; taps are matched to the
    reference's by name. Without taps support, only the output is compared."""
    if _is_sequential(model):
        y, taps = model(x, taps=True)
        return y, taps, {}
    if not hasattr(model, "run"):
        raise _core.ConfigError(f"compare: the {what} must be a qd.Sequential or have run(x, taps=True), "
                                f"got {type(model).__name__}")
    try:
        y, taps = model.run(x, taps=True)
    except TypeError:   # run() without taps: the output alone
        y, taps = model.run(x), {}
    quant = _tensor_quant(model)
    floats, codes = {}, {}
    for name, v in taps.items():
        v = np.asarray(v)
        if v.dtype.kind == "f":
            floats[name] = _f32(v)
        elif v.dtype.kind in "iu" and name in quant:
            scale, zp = quant[name]
            floats[name] = _f32(scale * (v.astype(np.float64) - zp))
            codes[name] = (v, scale, zp)
    _assemble_tflite_taps(floats, codes)
    y = np.asarray(y)
    if y.dtype.kind != "f":
        raise _core.UnsupportedError(f"compare: the {what}'s output is {y.dtype}; end the model with DEQUANTIZE "
                                     f"(a float output) to compare it")
    return _f32(y), floats, codes


def _assemble_tflite_taps(floats, codes):
    """Name converted-graph tensors like the Sequential's taps: the quantized input "input/quantized"
    stands for "input" (the float input itself has no error), and the unrolled RNN's per-step states
    "<rnn>/step<t>/state" stack into "<rnn>/states" (batch, time, units); the last step's state is
    the layer's output tensor "<rnn>" when no step tensor holds it."""
    for name in [k for k in floats if k.endswith("/quantized")]:
        base = name[:-len("/quantized")]
        if base in floats and floats[base].shape == floats[name].shape:
            floats[base] = floats[name]
            if name in codes:
                codes[base] = codes[name]
    steps = {}
    for name, v in floats.items():
        m = re.fullmatch(r"(.+)/step(\d+)/state", name)
        if m:
            steps.setdefault(m.group(1), {})[int(m.group(2))] = v
    for rnn, by_step in steps.items():
        last = max(by_step) + 1
        if rnn in floats and floats[rnn].shape == by_step[0].shape:
            by_step.setdefault(last, floats[rnn])
        if sorted(by_step) == list(range(len(by_step))):
            floats[f"{rnn}/states"] = np.ascontiguousarray(np.stack([by_step[t] for t in sorted(by_step)], axis=1))


def _reference_codes(ref, codes, scale, zp):
    """The reference quantized as the candidate's tensor is: round half away (TFLite's QUANTIZE),
    then clamp to the code type's range."""
    info = np.iinfo(codes.dtype)
    q = np.asarray(ref, np.float64) / scale
    return np.clip(np.sign(q) * np.floor(np.abs(q) + 0.5) + zp, info.min, info.max).astype(np.int32)


def _layer_inputs(model):
    """For each layer of a Sequential: the tap name of its input."""
    prev, out = "input", {}
    for layer in model.layers:
        out[layer.name] = prev
        prev = _tap_name(layer)
    return out


def _metric_row(layer, mode, ref, cand, extra=None):
    row = dict(layer=layer, mode=mode, **metrics(ref, cand, what=f"compare '{layer}' ({mode})"))
    row.update(extra or {})
    return row


# ---- RNN step curves -----------------------------------------------------------------------------
def _state_range(q):
    """(lo, hi) real bounds of a static int quantizer (per channel arrays), or None."""
    if q is None or not getattr(q, "observes", False):
        return None
    p = q.params
    scale = np.atleast_1d(np.asarray(p.scale, np.float64))
    zp = np.atleast_1d(np.asarray(p.zero_point, np.float64))
    return (scale * (p.qmin - zp)).astype(np.float32), (scale * (p.qmax - zp)).astype(np.float32), p


def _range_counts(q, pre, post):
    """Per step: values clipped (pre-quantization outside the range) and saturated (codes at qmin/qmax)."""
    n, t, u = pre.shape
    q = getattr(q, "quantizer", q)   # a QAT model's state quantizer wraps a qd.Quantizer
    rng = _state_range(q)
    if rng is None:
        return [float("nan")] * t, [float("nan")] * t
    lo, hi, p = rng
    clipped = _core.count_outside(_f32(pre), outer=n, groups=t, inner=u, lo=list(map(float, lo)),
                                  hi=list(map(float, hi)), what="clip counts")
    codes = q.quantize(_f32(post)).astype(np.float32)
    saturated = _core.count_outside(np.ascontiguousarray(codes), outer=n, groups=t, inner=u, lo=[p.qmin + 0.5],
                                    hi=[p.qmax - 0.5], what="saturation counts")
    return [int(c) for c in clipped], [int(c) for c in saturated]


def _rnn_replay(layer, q, x, ref_states, path):
    """Accumulated and local runs of one quantized SimpleRNN on its (candidate) input x.
    accumulated: every step from the previous quantized state (what the quantized model does);
    local: step t from the float model's state at t-1, so only step t's quantization acts.
    Both start from the zero state, so step 0 is the same computation in both."""
    w = layer.quantized_weights(q)
    state_q = q.state if q is not None else None
    n, t, _ = x.shape
    order = list(range(t - 1, -1, -1)) if layer.go_backwards else list(range(t))
    shape = (n, t, layer.units)
    acc_pre, acc, loc_pre, loc = (np.empty(shape, np.float32) for _ in range(4))
    h = np.zeros((n, layer.units), np.float32)
    for step, src in enumerate(order):
        h_float = ref_states[:, step - 1] if step > 0 else np.zeros_like(h)
        acc_pre[:, step] = layer.step(x[:, src], h, w, path)
        h = _fq(state_q, acc_pre[:, step])
        acc[:, step] = h
        loc_pre[:, step] = layer.step(x[:, src], h_float, w, path)
        loc[:, step] = _fq(state_q, loc_pre[:, step])
    return acc_pre, acc, loc_pre, loc


def _step_rows(name, mode, ref, cand, clipped=None, saturated=None):
    m = metrics(ref, cand, axis=1, what=f"compare '{name}' per step ({mode})")
    t = ref.shape[1]
    clipped = clipped or [float("nan")] * t
    saturated = saturated or [float("nan")] * t
    return [dict(layer=name, step=s, mode=mode, **{k: float(m[k][s]) for k in METRICS}, clipped=clipped[s],
                 saturated=saturated[s], predicted_mse=float("nan")) for s in range(t)]


# ---- compare ----------------------------------------------------------------------------------------
def compare(reference, candidate, x, isolated=True, attribution=False, predict=False, per_timestep=True):
    """Compare a candidate (a fake-quantized qd.Sequential from reference.quantize(...), or a model
    with run(x, taps=True) such as a qd.TFLiteModel) against the float reference on inputs x.

    Per layer (r.layers): accumulated = the candidate run end to end; isolated = each candidate
    layer, with its own quantizers, fed the float model's input to that layer.
    Per RNN step (r.timesteps, per_timestep=True): hidden states accumulated vs local (step t fed
    the float state of step t-1), clipped/saturated counts of the state quantizer, and per-step
    curves of every later (batch, time, features) output; r.growth fits growth laws to them.
    attribution=True: each quantizer's share of the output MSE (r.attribution).
    predict=True: the analytic noise model's per-layer MSE next to the measured (r.predicted).
    Isolated, local, attribution and prediction need a qd.Sequential candidate; other candidates'
    taps are matched to the reference's by name (qd.convert names tensors after layers), integer
    taps dequantized with their tensor's scale and zero point."""
    from . import noise_model

    x = _f32(x)
    ref_out, ref_taps, _ = _run_with_taps(reference, x, "reference")
    cand_out, cand_taps, cand_codes = _run_with_taps(candidate, x, "candidate")
    seq = _is_sequential(candidate)
    if not seq and (attribution or predict):
        raise _core.UnsupportedError("compare: attribution and predict need a qd.Sequential candidate "
                                     "(quantizers that can be switched one by one)")
    output = _tap_name(reference.layers[-1]) if _is_sequential(reference) and reference.layers else "output"
    ref_taps.setdefault(output, ref_out)
    cand_taps.setdefault(output, cand_out)

    layer_rows = []
    for name, ref in ref_taps.items():
        cand = cand_taps.get(name)
        if cand is None or cand.shape != ref.shape:
            continue
        extra = {}
        if name == output and ref.ndim >= 2 and ref.shape[-1] > 1:
            extra["argmax_agree"] = argmax_agreement(ref, cand, what=f"compare '{name}'")
        layer_rows.append(_metric_row(name, "accumulated", ref, cand, extra))

    lsb_rows = []
    if seq:
        points = [("input", candidate.input_quantizer)] + [
            (_tap_name(l), candidate.quant[l.name].output if l.name in candidate.quant else None)
            for l in candidate.layers]
        for name, q in points:
            if not getattr(q, "observes", False) or name not in ref_taps:
                continue
            hist = lsb_histogram(q.quantize(_f32(ref_taps[name])), q.quantize(_f32(cand_taps[name])))
            lsb_rows += [dict(layer=name, mode="accumulated", diff=d, count=c) for d, c in hist.items()]

    for name, (codes, scale, zp) in cand_codes.items():
        if name in ref_taps and ref_taps[name].shape == codes.shape:
            hist = lsb_histogram(_reference_codes(ref_taps[name], codes, scale, zp), codes)
            lsb_rows += [dict(layer=name, mode="accumulated", diff=d, count=c) for d, c in hist.items()]

    inputs = _layer_inputs(candidate) if seq else {}
    if seq and isolated:
        if "input" in ref_taps and "input" in cand_taps:
            layer_rows.append(_metric_row("input", "isolated", ref_taps["input"], cand_taps["input"]))
        for layer in candidate.layers:
            src, name = inputs[layer.name], _tap_name(layer)
            if src not in ref_taps or name not in ref_taps:
                continue
            iso_taps = {}
            y = candidate.run_layer(layer.name, ref_taps[src], taps=iso_taps)
            for k, v in iso_taps.items():
                if k in ref_taps:
                    layer_rows.append(_metric_row(k, "isolated", ref_taps[k], v))
            layer_rows.append(_metric_row(name, "isolated", ref_taps[name], y))

    step_rows, growth_rows = [], []
    if per_timestep:
        steps = None
        for name, ref in ref_taps.items():
            if not name.endswith("/states") or name not in cand_taps:
                continue
            rnn_name = name[:-len("/states")]
            steps = ref.shape[1]
            if seq and rnn_name in {l.name for l in candidate.layers}:
                layer = candidate.layer(rnn_name)
                q = candidate.quant.get(rnn_name)
                acc_pre, acc, loc_pre, loc = _rnn_replay(layer, q, cand_taps[inputs[rnn_name]], ref, "auto")
                state_q = q.state if q is not None else None
                c_acc, s_acc = _range_counts(state_q, acc_pre, acc)
                c_loc, s_loc = _range_counts(state_q, loc_pre, loc)
                step_rows += _step_rows(name, "accumulated", ref, acc, c_acc, s_acc)
                step_rows += _step_rows(name, "local", ref, loc, c_loc, s_loc)
            else:
                step_rows += _step_rows(name, "accumulated", ref, cand_taps[name])
            curve = [r["rmse"] for r in step_rows if r["layer"] == name and r["mode"] == "accumulated"]
            growth_rows += fit_growth(curve, name)
        # Later per-step outputs (return_sequences=True followed by time-distributed layers).
        if steps is not None:
            for name, ref in ref_taps.items():
                cand = cand_taps.get(name)
                if name.endswith("/states") or name == "input" or cand is None or cand.shape != ref.shape:
                    continue
                if ref.ndim == 3 and ref.shape[1] == steps:
                    step_rows += _step_rows(name, "accumulated", ref, cand)

    total = metrics(ref_out, cand_out, what="compare output")["mse"]
    attribution_rows = _attribution(candidate, x, ref_out, total) if attribution else []
    predicted_rows = []
    if predict:
        predicted_rows, step_predictions = noise_model.predict(candidate, x, ref_taps)
        measured = {r["layer"]: r for r in layer_rows if r["mode"] == "accumulated"}
        for r in predicted_rows:
            m = measured.get(r["layer"])
            r["measured_mse"] = m["mse"] if m else float("nan")
            r["measured_sqnr_db"] = m["sqnr_db"] if m else float("nan")
            r["ratio"] = r["predicted_mse"] / r["measured_mse"] if m and r["measured_mse"] > 0 else float("nan")
        for r in step_rows:
            pred = step_predictions.get(r["layer"])
            if pred is not None and r["mode"] == "accumulated":
                r["predicted_mse"] = float(pred[r["step"]])

    return Report(layers=_frame(layer_rows, LAYER_COLUMNS), timesteps=_frame(step_rows, STEP_COLUMNS),
                  growth=_frame(growth_rows, GROWTH_COLUMNS), attribution=_frame(attribution_rows, ATTRIBUTION_COLUMNS),
                  predicted=_frame(predicted_rows, PREDICTED_COLUMNS), lsb=_frame(lsb_rows, LSB_COLUMNS),
                  output=output, total_mse=total,
                  meta=dict(batch=int(x.shape[0]), candidate=type(candidate).__name__,
                            quantizers=candidate.quantizer_names() if seq else []))


# ---- attribution ----------------------------------------------------------------------------------
def _attribution(candidate, x, ref_out, total):
    """Each quantizer q's share of the output MSE E(all):
      only_this     E({q})                   (q alone)
      all_but_this  E(all - {q})             (everything but q)
      contribution  (E({q}) + E(all) - E(all - {q})) / 2
    the mean of q's effect added first and added last (the two ends of a Shapley average);
    the residual row is E(all) - sum(contributions): the interactions the pairs do not capture,
    so contributions + residual == E(all) exactly (up to one double rounding)."""
    names = candidate.quantizer_names()
    everything = set(names)

    def err(keep):
        return metrics(ref_out, candidate.with_quantizers(keep)(x), what="attribution")["mse"]

    rows = []
    for name in names:
        only, all_but = err({name}), err(everything - {name})
        rows.append(dict(quantizer=name, kind="quantizer", only_this=only, all_but_this=all_but,
                         contribution=(only + total - all_but) / 2))
    residual = total - math.fsum(r["contribution"] for r in rows)
    rows.append(dict(quantizer="residual", kind="residual", only_this=float("nan"), all_but_this=float("nan"),
                     contribution=residual))
    return rows
