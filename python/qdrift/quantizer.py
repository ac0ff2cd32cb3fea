"""qd.Quantizer: keyword arguments in, the one strict C++ spec reader underneath."""
from __future__ import annotations

import json

from . import _core


class Quantizer(_core.Quantizer):
    """A quantizer: what it does (its spec) plus its calibration state.

    Keywords (defaults in brackets; unknown keys raise ConfigError):
      format [int]            int | fp16 | bf16 | fp8_e4m3 | fp8_e5m2
      bits [8]                2..16 (int)
      signed [True]           signed or unsigned codes
      symmetric [False]       zero point fixed at 0 (signed) or the mid code (unsigned)
      narrow_range [False]    drop the most negative code ([-127, 127] for int8)
      granularity [per_tensor] per_tensor | per_channel | per_group
      axis [-1]               channel / grouped axis
      group_size [0]          per_group: elements per group along axis
      mode [static]           static (observe, then use) | dynamic (params from each input)
      observer [minmax]       minmax | moving_average | percentile | mse | entropy
      rounding [half_even]    half_even | half_away | half_up | floor | stochastic
      formula [torch]         torch (torch.ao observers, float32) | tflite (the TFLite converter)
      averaging_constant [0.01], percentile [99.99], bins [2048], mse_grid [100], seed [0]

    Example::

        q = qd.Quantizer(bits=4, granularity="per_channel", axis=0, symmetric=True)
        q.observe(w)
        w_fq = q.fake_quant(w)
    """

    def __init__(self, **spec):
        super().__init__(json.dumps(spec))

    @property
    def observes(self) -> bool:
        """True for static int quantizers: they take their parameters from observe()d data."""
        spec = json.loads(self.spec_json())
        return spec["mode"] == "static" and spec["format"] == "int"

    def __repr__(self) -> str:
        return f"Quantizer({self.spec_json()})"
