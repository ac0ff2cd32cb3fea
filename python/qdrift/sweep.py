"""qd.sweep: expand a config's grid (JSON pointers), validate every point with the C++ reader
before computing anything, run the points on threads or a Dask cluster, append one JSON line per
finished point and resume after an interruption (even kill -9) by skipping finished points."""
from __future__ import annotations

import itertools
import json
import os
import pathlib
from concurrent.futures import ThreadPoolExecutor, as_completed

import pandas as pd

from . import _core
from .experiments import load_text, metric_names, point_key, run_point_text


class Point:
    """One validated sweep point: its index in the grid, the pointer -> value overrides, its
    normalized config text and the key (hash) that identifies it in a results file."""

    def __init__(self, index, overrides, normalized):
        self.index, self.overrides, self.normalized = index, overrides, normalized
        self.key = point_key(normalized)


def expand(config) -> tuple:
    """(name, [Point]) for every point of the grid, all validated; the first bad point raises
    ConfigError naming the pointer at fault and the point."""
    text, base_dir = load_text(config)
    base = json.loads(_core.parse_experiment(text, base_dir))   # checks the base and each grid value
    pointers = list(base["sweep"])
    points = []
    for i, values in enumerate(itertools.product(*(base["sweep"][p] for p in pointers))):
        overrides = dict(zip(pointers, values))
        points.append(Point(i, overrides, _core.experiment_point(text, json.dumps(overrides), base_dir)))
    keys = {}
    for p in points:
        if p.key in keys:
            raise _core.ConfigError(f"/sweep: points {keys[p.key]} and {p.index} are the same config "
                                    f"({points[keys[p.key]].overrides} and {p.overrides})")
        keys[p.key] = p.index
    return base["name"], points


def results_path(out, name) -> pathlib.Path:
    out = pathlib.Path(out)
    return out if out.suffix == ".jsonl" else out / f"{name}.jsonl"


def read_results(path) -> dict:
    """key -> record of a results file. A torn last line (an interrupted write) is cut off the
    file; any other unreadable line is a DataError."""
    path = pathlib.Path(path)
    if not path.exists():
        return {}
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):                     # bytes after the last newline: an unfinished line
        with open(path, "r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    records = {}
    for number, line in enumerate(data[:end].splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError:
            raise _core.DataError(f"{path}:{number}: not a JSON line; the results file is damaged") from None
        records[record["key"]] = record
    return records


class _Writer:
    """Appends one JSON line per record; each line is flushed and fsynced before the next."""

    def __init__(self, path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "ab")

    def write(self, record):
        self.file.write((json.dumps(record, sort_keys=True) + "\n").encode())
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self):
        self.file.close()


def _record(point, result):
    return dict(key=point.key, index=point.index, point=point.overrides, config=json.loads(point.normalized),
                **result)


def _result(point, future):
    """A finished point's result; a qdrift error names the point it came from."""
    try:
        return future.result()
    except _core.Error as e:
        raise type(e)(f"{e} (sweep point {point.index}: {json.dumps(point.overrides)})") from e


def _run_local(points, threads):
    pool = ThreadPoolExecutor(max_workers=threads)
    try:
        futures = {pool.submit(run_point_text, p.normalized): p for p in points}
        for future in as_completed(futures):
            yield futures[future], _result(futures[future], future)
    finally:   # a failed point (or an interrupt) cancels the points not yet started
        pool.shutdown(wait=True, cancel_futures=True)


def _run_dask(points, scheduler):
    from distributed import Client, as_completed as dask_completed
    owns = not isinstance(scheduler, Client)
    client = Client(scheduler, processes=False) if scheduler is None else \
        (Client(scheduler) if owns else scheduler)
    futures = {}
    try:
        # pure=False: fresh task keys, so a rerun computes again instead of reusing a cached result.
        futures = {client.submit(run_point_text, p.normalized, pure=False): p for p in points}
        for future in dask_completed(list(futures)):
            yield futures[future], _result(futures[future], future)
    finally:
        client.cancel(list(futures))
        if owns:
            client.close()


def sweep(config, executor="local", out=None, resume=False, threads=None, scheduler=None,
          progress=True) -> pd.DataFrame:
    """Run every point of a config's sweep grid and return one DataFrame row per point.

    config:    a path, JSON text or dict (DESIGN.md §5); every point is validated first
    executor:  "local" (a thread pool of `threads` workers, default all cores) or "dask"
               (`scheduler`: a distributed.Client, a scheduler address, or None for an
               in-process LocalCluster)
    out:       a folder (results go to <out>/<name>.jsonl) or a .jsonl path; None keeps them
               in memory. An existing file needs resume=True, which skips its finished points.
    Columns: index, key, one per swept pointer, one per metric, and curves (a dict per row).
    """
    if executor not in ("local", "dask"):
        raise _core.ConfigError(f"executor: unknown '{executor}'; expected local or dask")
    name, points = expand(config)
    done, writer = {}, None
    if out is not None:
        path = results_path(out, name)
        if path.exists() and path.stat().st_size and not resume:
            raise _core.ConfigError(f"out: {path} already has results; pass resume=True (--resume) to skip "
                                    f"the finished points, or remove it")
        done = read_results(path)
        writer = _Writer(path)
    keys = {p.key for p in points}
    done = {k: r for k, r in done.items() if k in keys}
    todo = [p for p in points if p.key not in done]
    from tqdm.auto import tqdm
    bar = tqdm(total=len(points), initial=len(points) - len(todo), desc=name, unit="point", disable=not progress)
    try:
        runs = _run_local(todo, threads or os.cpu_count()) if executor == "local" else _run_dask(todo, scheduler)
        for point, result in runs:
            record = _record(point, result)
            if writer is not None:
                writer.write(record)
            done[point.key] = record
            bar.update(1)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    return to_frame([dict(done[p.key], index=p.index) for p in points])


def to_frame(records) -> pd.DataFrame:
    # Column order is fixed (pointers sorted, metrics in the config's order, per arm for
    # training points) whether a record was computed now or read back from a results file.
    rows = [dict(index=r["index"], key=r["key"], **{p: r["point"][p] for p in sorted(r["point"])},
                 **{m: r["metrics"][m] for m in metric_names(r["config"])}, curves=r["curves"])
            for r in records]
    return pd.DataFrame(rows)
