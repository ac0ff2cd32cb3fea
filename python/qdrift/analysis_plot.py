"""Report.plot(): error vs layer, error vs time step, attribution bars, predicted vs measured."""
from __future__ import annotations

import numpy as np


def _finite_db(values):
    # An exact match has infinite SQNR; plot it at the top of the axis rather than dropping it.
    v = np.asarray(values, np.float64)
    top = np.nanmax(v[np.isfinite(v)]) + 10 if np.any(np.isfinite(v)) else 100.0
    return np.where(np.isposinf(v), top, v)


def plot(report, figsize=None):
    """One matplotlib figure with a panel per part the report holds; returns the Figure."""
    import matplotlib.pyplot as plt

    panels = [p for p, df in (("layers", report.layers), ("timesteps", report.timesteps),
                              ("attribution", report.attribution), ("predicted", report.predicted)) if len(df)]
    fig, axes = plt.subplots(1, len(panels), figsize=figsize or (5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        globals()[f"_{panel}"](ax, getattr(report, panel))
    fig.tight_layout()
    return fig


def _layers(ax, df):
    order = list(dict.fromkeys(df["layer"]))
    for mode, part in df.groupby("mode", sort=False):
        part = part.set_index("layer").reindex(order)
        ax.plot(range(len(order)), _finite_db(part["sqnr_db"]), marker="o", label=mode)
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels(order, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("SQNR (dB)")
    ax.set_title("error vs layer")
    ax.legend()


def _timesteps(ax, df):
    for (layer, mode), part in df.groupby(["layer", "mode"], sort=False):
        ax.plot(part["step"], part["rmse"], label=f"{layer} {mode}")
        if mode == "accumulated" and part["predicted_mse"].notna().any():
            ax.plot(part["step"], np.sqrt(part["predicted_mse"]), ls="--", label=f"{layer} predicted")
    ax.set_xlabel("time step")
    ax.set_ylabel("RMSE")
    ax.set_title("error vs time step")
    ax.legend(fontsize=7)


def _attribution(ax, df):
    ax.barh(range(len(df)), df["contribution"], color=["C0" if k == "quantizer" else "C3" for k in df["kind"]])
    ax.set_yticks(range(len(df)))
    ax.set_yticklabels(df["quantizer"], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("share of the output MSE")
    ax.set_title("attribution")


def _predicted(ax, df):
    ok = df["measured_mse"] > 0
    ax.loglog(df.loc[ok, "measured_mse"], df.loc[ok, "predicted_mse"], "o")
    for _, r in df[ok].iterrows():
        ax.annotate(r["layer"], (r["measured_mse"], r["predicted_mse"]), fontsize=6)
    lo = float(np.nanmin(df.loc[ok, ["measured_mse", "predicted_mse"]].to_numpy())) if ok.any() else 1e-6
    hi = float(np.nanmax(df.loc[ok, ["measured_mse", "predicted_mse"]].to_numpy())) if ok.any() else 1.0
    ax.plot([lo, hi], [lo, hi], "k:", lw=1)
    ax.set_xlabel("measured MSE")
    ax.set_ylabel("predicted MSE")
    ax.set_title("predicted vs measured")
