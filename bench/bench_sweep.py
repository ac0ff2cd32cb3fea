"""Points per second of the demo sweep (configs/rnn_error_growth.json, 36 points): one thread vs
all threads vs an in-process Dask cluster with as many threads, plus the validate-everything step."""
import os
import pathlib

from distributed import Client, LocalCluster

import qdrift as qd
from qdrift.sweep import expand
from timing import best_time

CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "rnn_error_growth.json"


def run():
    threads = os.cpu_count()
    points = len(expand(CONFIG)[1])
    rows = [dict(executor="validate all points (no compute)", threads=1,
                 seconds=best_time(lambda: expand(CONFIG), 3))]
    for n in sorted({1, threads}):
        rows.append(dict(executor="local threads", threads=n,
                         seconds=best_time(lambda: qd.sweep(CONFIG, threads=n, progress=False), 2)))
    with LocalCluster(n_workers=1, threads_per_worker=threads, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        rows.append(dict(executor="dask LocalCluster (in-process)", threads=threads,
                         seconds=best_time(lambda: qd.sweep(CONFIG, executor="dask", scheduler=client,
                                                            progress=False), 2)))
    single = rows[1]["seconds"]
    print(f"{CONFIG.name}: {points} points; best of 2 runs after a warm-up; results kept in memory (out=None)")
    print(f"{'executor':<34} {'threads':>7} {'seconds':>8} {'points/s':>9} {'x 1 thread':>10}")
    for r in rows:
        r["points_per_second"] = points / r["seconds"]
        r["speedup_vs_1_thread"] = single / r["seconds"]
        speedup = "-" if r is rows[0] else f"{r['speedup_vs_1_thread']:.2f}x"
        print(f"{r['executor']:<34} {r['threads']:>7} {r['seconds']:>8.3f} {r['points_per_second']:>9.1f} "
              f"{speedup:>10}")
    return rows


if __name__ == "__main__":
    run()
