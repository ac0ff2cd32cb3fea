"""`python -m qdrift.demo`: a quantization-error table for a weight tensor and an activation
tensor, across bit widths, granularities and observers (the default job of `make demo` until the
experiment runner lands)."""
from __future__ import annotations

import sys

import numpy as np

from . import Quantizer


def sqnr_db(x: np.ndarray, y: np.ndarray) -> float:
    noise = np.sum((x.astype(np.float64) - y) ** 2)
    return float("inf") if noise == 0 else 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / noise)


def error_table(seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    # Conv weights (out, kh, kw, in) with per-channel spread, and heavy-tailed activations.
    weights = (rng.normal(0, 1, (64, 3, 3, 32)) * rng.uniform(0.02, 0.5, (64, 1, 1, 1))).astype(np.float32)
    acts = rng.standard_t(4, (256, 32)).astype(np.float32)
    rows = []
    cases = [("weights", weights, dict(symmetric=True, narrow_range=True), ("per_tensor", "per_channel")),
             ("activations", acts, dict(), ("per_tensor",))]
    for name, x, base, granularities in cases:
        for bits in (8, 6, 4, 3):
            for granularity in granularities:
                for observer in ("minmax", "percentile", "mse"):
                    q = Quantizer(bits=bits, granularity=granularity, axis=0, observer=observer, **base)
                    q.observe(x)
                    y = q.fake_quant(x)
                    rows.append(dict(tensor=name, bits=bits, granularity=granularity, observer=observer,
                                     sqnr_db=sqnr_db(x, y), max_abs=float(np.max(np.abs(x - y)))))
    return rows


def main() -> int:
    rows = error_table()
    print("qdrift demo: fake-quantization error of a conv weight tensor and a heavy-tailed activation tensor")
    print(f"{'tensor':<12}{'bits':>5}  {'granularity':<12}{'observer':<11}{'SQNR dB':>9}{'max |err|':>11}")
    for r in rows:
        print(f"{r['tensor']:<12}{r['bits']:>5}  {r['granularity']:<12}{r['observer']:<11}"
              f"{r['sqnr_db']:>9.2f}{r['max_abs']:>11.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
