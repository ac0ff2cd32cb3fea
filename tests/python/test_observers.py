"""Each observer against an independent NumPy computation of its definition (observers.h),
and minmax / moving-average against torch.ao.quantization's observers."""
import numpy as np
import pytest
import torch

import qdrift as qd

f32 = np.float32


def datasets(rng):
    return {
        "normal": lambda: rng.normal(0.3, 1.2, (64, 200)).astype(np.float32),
        "uniform": lambda: rng.uniform(-2, 5, (64, 200)).astype(np.float32),
        "heavy": lambda: rng.standard_t(2.5, (64, 200)).astype(np.float32),
        "relu": lambda: np.maximum(rng.normal(0, 1, (64, 200)), 0).astype(np.float32),
    }


def slots(x, granularity):
    """(slots, values) rows: per tensor one row; per channel (axis 1) one row per column."""
    return x.reshape(1, -1) if granularity == "per_tensor" else np.ascontiguousarray(x.T)


def observe(batches, **spec):
    q = qd.Quantizer(**spec)
    for b in batches:
        q.observe(b)
    return q


@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
@pytest.mark.parametrize("data", ["normal", "uniform", "heavy", "relu"])
def test_minmax_and_moving_average(rng, data, granularity):
    batches = [datasets(rng)[data]() for _ in range(4)]
    kw = dict(granularity=granularity, axis=1)
    mn, mx = observe(batches, observer="minmax", **kw).observed_range()
    rows = [slots(b, granularity) for b in batches]
    assert np.array_equal(mn, np.min([r.min(axis=1) for r in rows], axis=0))
    assert np.array_equal(mx, np.max([r.max(axis=1) for r in rows], axis=0))

    mn, mx = observe(batches, observer="moving_average", averaging_constant=0.1, **kw).observed_range()
    c = f32(0.1)
    emin, emax = rows[0].min(axis=1), rows[0].max(axis=1)
    for r in rows[1:]:
        emin = (emin + c * (r.min(axis=1) - emin)).astype(np.float32)
        emax = (emax + c * (r.max(axis=1) - emax)).astype(np.float32)
    assert np.array_equal(mn, emin) and np.array_equal(mx, emax)


@pytest.mark.parametrize("per_channel", [False, True])
def test_minmax_and_moving_average_equal_torch_observers(rng, per_channel):
    batches = [rng.normal(0.2, 1.5, (32, 16)).astype(np.float32) for _ in range(5)]
    for ours_kind, torch_cls, torch_pc_cls in (
            ("minmax", torch.ao.quantization.MinMaxObserver, torch.ao.quantization.PerChannelMinMaxObserver),
            ("moving_average", torch.ao.quantization.MovingAverageMinMaxObserver,
             torch.ao.quantization.MovingAveragePerChannelMinMaxObserver)):
        for symmetric in (False, True):
            qscheme = (torch.per_channel_symmetric if symmetric else torch.per_channel_affine) if per_channel \
                else (torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine)
            obs = torch_pc_cls(ch_axis=1, dtype=torch.qint8, qscheme=qscheme) if per_channel \
                else torch_cls(dtype=torch.qint8, qscheme=qscheme)
            q = qd.Quantizer(observer=ours_kind, symmetric=symmetric,
                             granularity="per_channel" if per_channel else "per_tensor", axis=1)
            for b in batches:
                obs(torch.from_numpy(b))
                q.observe(b)
            scale, zp = obs.calculate_qparams()
            assert np.array_equal(q.observed_range()[0], np.atleast_1d(obs.min_val.numpy()))
            assert np.array_equal(q.observed_range()[1], np.atleast_1d(obs.max_val.numpy()))
            assert np.array_equal(np.atleast_1d(q.params.scale), np.atleast_1d(scale.numpy()))
            assert np.array_equal(np.atleast_1d(q.params.zero_point), np.atleast_1d(zp.numpy()).astype(np.int32))


def np_percentile_range(rows, p):
    # numpy's default (linear) method on float64 values, one estimate per batch, then the mean.
    lo = np.mean([np.percentile(r.astype(np.float64), 100 - p, axis=1) for r in rows], axis=0)
    hi = np.mean([np.percentile(r.astype(np.float64), p, axis=1) for r in rows], axis=0)
    return lo.astype(np.float32), hi.astype(np.float32)


@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
@pytest.mark.parametrize("data", ["normal", "heavy", "relu"])
def test_percentile(rng, data, granularity):
    batches = [datasets(rng)[data]() for _ in range(3)]
    for p in (99.0, 99.9, 100.0):
        mn, mx = observe(batches, observer="percentile", percentile=p, granularity=granularity, axis=1).observed_range()
        lo, hi = np_percentile_range([slots(b, granularity) for b in batches], p)
        # Same formula, same float64 steps; the mean over batches may differ in the last bit of
        # a double (summation order), which can move the float32 result by at most 1 ulp.
        assert np.all(np.abs(mn.view(np.int32) - lo.view(np.int32)) <= 1)
        assert np.all(np.abs(mx.view(np.int32) - hi.view(np.int32)) <= 1)


def np_fake_quant_sq_error(v, lo, hi, bits, symmetric, signed=True):
    qmin, qmax = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    min_neg, max_pos = min(lo, f32(0)), max(hi, f32(0))
    eps = np.finfo(np.float32).eps
    if symmetric:
        scale = max(f32(max(-min_neg, max_pos) / f32((qmax - qmin) / 2)), f32(eps))
        zp = 0
    else:
        scale = max(f32((max_pos - min_neg) / f32(qmax - qmin)), f32(eps))
        zp = int(np.clip(qmin - np.rint(f32(min_neg / scale)), qmin, qmax))
    inv = f32(1) / scale
    code = np.clip(np.rint((v * inv).astype(np.float32)), qmin - zp, qmax - zp)
    return np.sum(((code * scale).astype(np.float32).astype(np.float64) - v) ** 2)


@pytest.mark.parametrize("symmetric", [False, True])
def test_mse(rng, symmetric):
    batches = [rng.standard_t(3, (2000,)).astype(np.float32) for _ in range(2)]
    q = observe(batches, observer="mse", mse_grid=50, bits=4, symmetric=symmetric)
    mn, mx = q.observed_range()
    los, his = [], []
    for b in batches:
        best, arg = np.inf, None
        for k in range(1, 51):
            r = k / 50
            lo, hi = f32(r * float(b.min())), f32(r * float(b.max()))
            err = np_fake_quant_sq_error(b.astype(np.float64), lo, hi, 4, symmetric)
            if err < best:
                best, arg = err, (lo, hi)
        los.append(float(arg[0]))
        his.append(float(arg[1]))
    # The chosen ratio must be the same; the range is then the mean of float32 values in double.
    assert mn[0] == f32(np.mean(los)) and mx[0] == f32(np.mean(his))
    assert mx[0] < max(b.max() for b in batches)     # heavy tails get clipped


def np_entropy_threshold(hist, width, levels):
    n = len(hist)
    best_kl, best_i = np.inf, n
    for i in range(min(levels, n), n + 1):
        p = hist[:i].astype(np.float64).copy()
        p[i - 1] += hist[i:].sum()
        q = np.zeros(i)
        for g in range(levels):
            b0, b1 = g * i // levels, (g + 1) * i // levels
            seg = hist[b0:b1]
            nonempty = np.count_nonzero(seg)
            if nonempty:
                q[b0:b1] = np.where(seg > 0, seg.sum() / nonempty, 0)
        pn, qn = p / p.sum(), q / q.sum()
        mask = pn > 0
        if np.any(qn[mask] == 0):
            continue
        kl = np.sum(pn[mask] * np.log(pn[mask] / qn[mask]))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return best_i * width


def test_entropy(rng):
    bins = 256
    batches = [rng.standard_t(3, 5000).astype(np.float32) for _ in range(2)]
    batches[1][0] = 3 * np.abs(batches[0]).max()           # the second batch extends the histogram
    q = observe(batches, observer="entropy", bins=bins, bits=4)
    mn, mx = q.observed_range()
    width = float(np.abs(batches[0]).max()) / bins
    total = int(np.ceil(float(np.abs(np.concatenate(batches)).max()) / width))
    hist = np.zeros(total)
    for b in batches:
        idx = np.minimum((np.abs(b).astype(np.float64) / width).astype(np.int64), total - 1)
        np.add.at(hist, idx, 1)
    t = f32(np_entropy_threshold(hist, width, 8))
    allx = np.concatenate(batches)
    assert mn[0] == max(allx.min(), -t) and mx[0] == min(allx.max(), t)
    assert mx[0] < allx.max()                                # the outlier is clipped


def test_observer_errors():
    q = qd.Quantizer(observer="percentile")
    with pytest.raises(qd.ConfigError, match="observed no data"):
        q.params
    with pytest.raises(qd.DataError, match="nan at flat index 2"):
        q.observe(np.array([1, 2, np.nan], np.float32))
    with pytest.raises(qd.ShapeError, match="empty"):
        q.observe(np.zeros((0, 3), np.float32))
