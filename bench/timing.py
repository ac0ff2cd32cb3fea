"""Shared timing helper for the benchmarks: best of N after one warm-up call."""
import time


def best_time(fn, repeats=10):
    fn()  # warm up (page faults, caches, lazy initialization)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)
