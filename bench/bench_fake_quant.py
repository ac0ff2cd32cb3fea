"""Per-channel int8 fake quantization: qdrift vs torch.fake_quantize_per_channel_affine, single
thread, on 1M and 16M float32 elements, next to this machine's memcpy bandwidth."""
import numpy as np
import torch

import qdrift as qd
from timing import best_time


def run():
    torch.set_num_threads(1)
    rows = []
    for n in (1 << 20, 1 << 24):
        repeats = 20 if n < (1 << 24) else 5
        src = np.random.default_rng(0).normal(0, 1, n).astype(np.float32)
        dst = np.empty_like(src)
        memcpy_s = best_time(lambda: np.copyto(dst, src), repeats)
        memcpy_gbs = 2 * src.nbytes / memcpy_s / 1e9          # read + write
        for layout, shape, axis in (("weights (C, K), axis 0", (256, n // 256), 0),
                                    ("activations NHWC, axis -1", (n // 64, 64), 1)):
            x = src.reshape(shape)
            ch = shape[axis]
            scale = np.linspace(0.01, 0.05, ch, dtype=np.float32)
            zp = np.zeros(ch, np.int32)
            xt, st, zt = torch.from_numpy(x), torch.from_numpy(scale), torch.from_numpy(zp)
            out = np.empty_like(x)
            t_qd = best_time(lambda: qd.fake_quant(x, scale, zp, -128, 127, axis=axis), repeats)
            t_out = best_time(lambda: qd.fake_quant(x, scale, zp, -128, 127, axis=axis, out=out), repeats)
            t_torch = best_time(lambda: torch.fake_quantize_per_channel_affine(xt, st, zt, axis, -128, 127),
                                repeats)
            assert np.array_equal(qd.fake_quant(x, scale, zp, -128, 127, axis=axis),
                                  torch.fake_quantize_per_channel_affine(xt, st, zt, axis, -128, 127).numpy())
            # Bandwidth is measured like memcpy's: into an existing buffer (out=), read + write.
            gbs = 2 * x.nbytes / t_out / 1e9
            rows.append(dict(elements=n, layout=layout, qdrift_ms=t_qd * 1e3, qdrift_out_ms=t_out * 1e3,
                             torch_ms=t_torch * 1e3, speedup_vs_torch=t_torch / t_qd, qdrift_gbs=gbs,
                             memcpy_gbs=memcpy_gbs, fraction_of_memcpy=gbs / memcpy_gbs))
    print("single thread; 'x torch' compares new-array calls; GB/s (read + write) uses out= like memcpy")
    print(f"{'elements':>9} {'layout':<26} {'qdrift ms':>9} {'out= ms':>8} {'torch ms':>9} {'x torch':>8} "
          f"{'GB/s':>6} {'memcpy':>7} {'of memcpy':>9}")
    for r in rows:
        print(f"{r['elements']:>9} {r['layout']:<26} {r['qdrift_ms']:>9.2f} {r['qdrift_out_ms']:>8.2f} "
              f"{r['torch_ms']:>9.2f} {r['speedup_vs_torch']:>7.1f}x {r['qdrift_gbs']:>6.1f} "
              f"{r['memcpy_gbs']:>7.1f} {r['fraction_of_memcpy']:>8.0%}")
    return rows


if __name__ == "__main__":
    run()
