"""int8 QUANTIZE / DEQUANTIZE on the builtin path (found while verifying int16x8): LiteRT's optimized
kernels run NEON code through NEON_2_SSE on x86, so in whole blocks of 8 elements QUANTIZE rounds
x * f32(1/s) half to even and DEQUANTIZE adds f32(-zp * s) to f32(q * s); the tails round like the
reference. qdrift equals LiteRT on every path with exact ties, extremes and 16-wide tensors."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import qdrift as qd  # noqa: E402
from test_from_tflite import convert  # noqa: E402
from test_tflite_kernels import RESOLVERS, run_litert  # noqa: E402


def test_int8_quantize_and_dequantize_blocks_of_8(rng):
    km = keras.Sequential([keras.Input((13,)), keras.layers.Dense(16)])
    km.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in km.get_weights()])
    flatbuffer = convert(km, rng.normal(size=(16, 13)).astype(np.float32) + 0.7, False)   # zero points != 0
    tm = qd.from_tflite(flatbuffer)
    t_q = tm.tensors[tm.ops[0].outputs[0]]
    assert int(t_q.zero_point[0]) != 0
    x = rng.normal(size=(300, 13)).astype(np.float32)
    # Exact ties of x / s (k + 0.5), where half-even and half-away rounding disagree.
    x[:40] = ((rng.integers(-60, 60, (40, 13)) + 0.5) * np.float64(t_q.scale[0])).astype(np.float32)
    x[40, :4] = [np.inf, np.nan, 1e30, -np.inf]
    outs = {}
    for kernels in RESOLVERS:
        _, expected = run_litert(flatbuffer, kernels, x)
        outs[kernels] = expected
        assert np.array_equal(tm.run(x, kernels=kernels), expected, equal_nan=True), kernels
    # The builtin path really differs from the reference here (measured: ~30% of the outputs).
    assert np.sum(outs["builtin"] != outs["reference"]) > x.size // 20
