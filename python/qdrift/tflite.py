"""The TFLite converter's quantization formulas, bit for bit
(shared/reference/tflite-semantics.md §2.3-§2.7)."""
from ._core import (  # noqa: F401
    tflite_activation_params_int8 as activation_params_int8,
    tflite_activation_params_int16 as activation_params_int16,
    tflite_quantize_bias_int32 as quantize_bias_int32,
    tflite_quantize_bias_int64 as quantize_bias_int64,
    tflite_quantize_weights as quantize_weights,
)
