"""qdrift: run a model in float and under any quantization scheme side by side, reproduce what
real backends compute (bit-exactly where they are integer), and measure where the error is born.

The C++ core lives in ``qdrift._core``; this package re-exports it with Python conveniences.
"""
from __future__ import annotations

from . import _core
from ._core import (  # noqa: F401  (re-exports)
    ConfigError,
    DataError,
    DTypeError,
    Error,
    ShapeError,
    UnsupportedError,
    QuantParams,
    __version__,
    cast,
    fake_quant,
    fake_quant_backward,
    fake_quant_lsq_backward,
    from_bits,
    quantize_multiplier,
    requantize,
    to_bits,
)
from . import layers, metrics, ops, tflite, training  # noqa: F401
from .keras_import import from_keras
from .model import QuantConfig, Sequential
from .quantizer import Quantizer
from .tflite_model import from_tflite
from . import analysis  # noqa: E402
from .analysis import compare  # noqa: E402
from .convert import convert

__all__ = [
    "ConfigError", "DataError", "DTypeError", "Error", "ShapeError", "UnsupportedError",
    "QuantParams", "Quantizer", "cast", "fake_quant", "fake_quant_backward",
    "fake_quant_lsq_backward", "from_bits", "quantize_multiplier", "requantize", "to_bits",
    "tflite", "__version__", "layers", "metrics", "ops", "Sequential", "QuantConfig", "from_keras", "from_tflite",
    "analysis", "compare",
    "convert",
]
from . import experiments  # noqa: E402,F401
from .sweep import sweep  # noqa: E402,F401

__all__ += ["experiments", "sweep"]
