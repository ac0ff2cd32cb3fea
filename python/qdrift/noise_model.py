"""Analytic noise model for qd.compare(predict=True)."""
from __future__ import annotations

from . import _core


def predict(candidate, x, ref_taps):
    raise _core.UnsupportedError("compare(predict=True): the noise model is not in this build yet")
