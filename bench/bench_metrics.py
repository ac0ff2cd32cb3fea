"""Error metrics (mse, rmse, sqnr, max/mean abs, cosine, rel_l2 in one pass, double sums): qdrift's
C++ kernel vs the same set in NumPy (float64), whole tensors and per time step."""
import numpy as np

from qdrift import _core
from timing import best_time


def numpy_metrics(ref, cand, axis):
    r, c = ref.astype(np.float64), cand.astype(np.float64)
    e = c - r
    ee, rr, cc, rc = ((e * e).sum(axis), (r * r).sum(axis), (c * c).sum(axis), (r * c).sum(axis))
    n = e.size / np.size(ee)
    return dict(mse=ee / n, rmse=np.sqrt(ee / n), sqnr_db=10 * np.log10(rr / ee), max_abs=np.abs(e).max(axis),
                mean_abs=np.abs(e).sum(axis) / n, cosine=rc / np.sqrt(rr * cc), rel_l2=np.sqrt(ee / rr))


def run():
    rows = []
    rng = np.random.default_rng(0)
    for label, shape, axis, layout in (("whole tensor, 1M", (1 << 20,), None, (1, 1, 1 << 20)),
                                       ("whole tensor, 16M", (1 << 24,), None, (1, 1, 1 << 24)),
                                       ("per step (256, 64, 256)", (256, 64, 256), (0, 2), (256, 64, 256))):
        ref = rng.normal(size=shape).astype(np.float32)
        cand = (ref + rng.normal(scale=0.01, size=shape)).astype(np.float32)
        o, g, i = layout
        repeats = 5 if ref.size >= (1 << 24) else 20
        got = _core.error_metrics(ref, cand, outer=o, groups=g, inner=i)
        want = numpy_metrics(ref, cand, axis)
        assert np.allclose(got["mse"], want["mse"], rtol=1e-9)   # sequential vs pairwise double sums
        t_qd = best_time(lambda: _core.error_metrics(ref, cand, outer=o, groups=g, inner=i), repeats)
        t_np = best_time(lambda: numpy_metrics(ref, cand, axis), repeats)
        rows.append(dict(case=label, elements=int(ref.size), qdrift_ms=t_qd * 1e3, numpy_ms=t_np * 1e3,
                         speedup_vs_numpy=t_np / t_qd))
    print(f"{'case':<26} {'qdrift ms':>10} {'numpy ms':>10} {'x numpy':>8}")
    for r in rows:
        print(f"{r['case']:<26} {r['qdrift_ms']:>10.2f} {r['numpy_ms']:>10.2f} {r['speedup_vs_numpy']:>7.1f}x")
    return rows


if __name__ == "__main__":
    run()
