"""Error metrics between a reference tensor and a candidate, and per-layer errors of two models."""
from __future__ import annotations

import numpy as np


def mse(ref, x):
    return float(np.mean((np.asarray(x, np.float64) - np.asarray(ref, np.float64)) ** 2))


def sqnr_db(ref, x):
    """10 log10(sum ref^2 / sum (x - ref)^2); inf when x equals ref."""
    ref = np.asarray(ref, np.float64)
    noise = np.sum((np.asarray(x, np.float64) - ref) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(ref ** 2) / noise))


def max_abs(ref, x):
    return float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(ref, np.float64)))) if np.size(ref) else 0.0


def layer_errors(reference, candidate, x):
    """Run both models on x with taps and return one row per tapped tensor the two share:
    {"layer", "mse", "sqnr_db", "max_abs"} in the reference model's order."""
    _, ref_taps = reference(x, taps=True)
    _, cand_taps = candidate(x, taps=True)
    return [dict(layer=name, mse=mse(r, cand_taps[name]), sqnr_db=sqnr_db(r, cand_taps[name]),
                 max_abs=max_abs(r, cand_taps[name]))
            for name, r in ref_taps.items() if name in cand_taps]
