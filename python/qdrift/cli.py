"""The `qdrift` command: `qdrift validate CONFIG`, `qdrift run CONFIG`, `qdrift sweep CONFIG --out DIR`."""
from __future__ import annotations

import argparse
import json
import sys

from . import _core


def _validate(args):
    from .sweep import expand
    name, points = expand(args.config)
    print(f"{args.config}: valid ('{name}', {len(points)} point{'s' if len(points) != 1 else ''})")


def _run(args):
    from .experiments import run
    result = run(args.config)
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return
    print(f"{result['config']['name']}  (key {result['key']})")
    fmt = lambda v: "-" if v is None else f"{v:.4g}"   # noqa: E731  (None: an exact match's infinite SQNR)
    for name, value in result["metrics"].items():
        print(f"  output {name:<8} {fmt(value)}")
    for row in result["curves"]["layers"]:
        print(f"  {row['layer']:<24} {row['mode']:<12} " +
              "  ".join(f"{k} {fmt(row[k])}" for k in ("sqnr_db", "mse", "max_abs")))


def _sweep(args):
    from .sweep import sweep
    df = sweep(args.config, executor=args.executor, out=args.out, resume=args.resume, threads=args.threads,
               scheduler=args.scheduler, progress=not args.no_progress)
    columns = [c for c in df.columns if c not in ("curves", "key")]
    print(df[columns].to_string(index=False))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="qdrift", description="Run qdrift experiment configs (JSON).")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("validate", help="check a config and every sweep point; compute nothing")
    p.add_argument("config")
    p.set_defaults(fn=_validate)
    p = commands.add_parser("run", help="run a config's base point (its sweep ignored) and print the errors")
    p.add_argument("config")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    p.set_defaults(fn=_run)
    p = commands.add_parser("sweep", help="run every sweep point, appending one JSON line per point")
    p.add_argument("config")
    p.add_argument("--out", required=True, help="results folder (or a .jsonl path)")
    p.add_argument("--resume", action="store_true", help="skip the points already in the results file")
    p.add_argument("--threads", type=int, default=None, help="local worker threads (default: all cores)")
    p.add_argument("--executor", choices=("local", "dask"), default="local")
    p.add_argument("--scheduler", default=None, help="dask scheduler address (default: an in-process cluster)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(fn=_sweep)
    args = parser.parse_args(argv)
    try:
        args.fn(args)
    except _core.Error as e:
        print(f"qdrift {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    return 0
