"""`python -m qdrift.demo` (`make demo`): run the RNN error-growth sweep (configs/rnn_error_growth.json)
and write a results table (CSV and markdown) and a plot of the hidden state's error over time
under results/. Rerunning resumes: finished points are read back, not recomputed."""
from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np
import pandas as pd

from .sweep import sweep

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = "configs/rnn_error_growth.json"


def find_config(path: str) -> pathlib.Path:
    """The config as given, else relative to the source checkout."""
    p = pathlib.Path(path)
    return p if p.exists() else ROOT / p


def markdown(table: pd.DataFrame) -> str:
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)   # noqa: E731
    rows = [list(table.columns), ["---"] * len(table.columns)] + [[cell(v) for v in r] for r in table.itertuples(index=False)]
    return "".join("| " + " | ".join(r) + " |\n" for r in rows)


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread over seeds of the output metrics, one row per setting of the other axes."""
    axes = [c for c in df.columns if c.startswith("/") and c != "/seed"]
    metrics = [c for c in ("sqnr_db", "mse", "max_abs") if c in df.columns]
    grouped = df.groupby(axes)[metrics]
    table = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=0).add_suffix("_std")).reset_index()
    table.columns = [".".join(c.split("/")[-2:]) if c.startswith("/") else c for c in table.columns]
    return table


def state_curves(df: pd.DataFrame, layer: str) -> pd.DataFrame:
    """Per-step MSE of one tapped RNN state (accumulated error), averaged over seeds."""
    rows = []
    axes = [c for c in df.columns if c.startswith("/") and c != "/seed"]
    for _, r in df.iterrows():
        for s in r["curves"]["timesteps"]:
            if s["layer"] == layer and s["mode"] == "accumulated":
                rows.append({**{a: r[a] for a in axes}, "step": s["step"], "mse": s["mse"]})
    return pd.DataFrame(rows).groupby(axes + ["step"])["mse"].mean().reset_index()


def plot(curves: pd.DataFrame, path: pathlib.Path, title: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    axes = [c for c in curves.columns if c.startswith("/")]
    panel_axis = "/quant/state/mode" if "/quant/state/mode" in axes else None
    panels = sorted(curves[panel_axis].unique()) if panel_axis else [None]
    fig, subplots = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), sharey=True, squeeze=False)
    for ax, panel in zip(subplots[0], panels):
        part = curves if panel is None else curves[curves[panel_axis] == panel]
        lines = [a for a in axes if a != panel_axis]
        for key, g in part.groupby(lines):
            key = key if isinstance(key, tuple) else (key,)
            label = ", ".join(f"{a.rsplit('/', 2)[-2]}.{a.rsplit('/', 1)[-1]}={v}" for a, v in zip(lines, key))
            ax.semilogy(g["step"], g["mse"], label=label)
        ax.set_title(f"state {panel}" if panel else title)
        ax.set_xlabel("time step")
        ax.grid(True, which="both", alpha=0.3)
    subplots[0][0].set_ylabel("hidden-state MSE vs float (mean over seeds)")
    subplots[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qdrift.demo", description=__doc__)
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--out", default="results")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    config, out = find_config(args.config), pathlib.Path(args.out)
    df = sweep(config, out=out, resume=True, threads=args.threads)
    name = pathlib.Path(config).stem
    table = summary_table(df)
    table.to_csv(out / f"{name}.csv", index=False)
    (out / f"{name}.md").write_text(markdown(table))
    rnn = next(s["layer"] for s in df["curves"].iloc[0]["timesteps"] if s["mode"] == "accumulated")
    curves = state_curves(df, rnn)
    plot(curves, out / f"{name}.png", f"{name}: error of '{rnn}' over time")
    pd.set_option("display.width", 160)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    last, first = curves["step"].max(), curves["step"].min()
    growth = curves[curves["step"] == last]["mse"].to_numpy() / curves[curves["step"] == first]["mse"].to_numpy()
    print(f"\nstate MSE grows {np.min(growth):.3g}x to {np.max(growth):.3g}x from step {first} to step {last}")
    print(f"wrote {out / (name + '.jsonl')}, {out / (name + '.csv')}, {out / (name + '.md')}, "
          f"{out / (name + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
