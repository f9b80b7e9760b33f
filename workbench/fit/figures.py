"""Figures of the fits (matplotlib only here). Functions return a Figure; `save_figure` writes PNG + SVG.

Figures are built with matplotlib.figure.Figure directly (no pyplot): no global state, no GUI backend.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from workbench.core.files import atomic_write_bytes
from workbench.fit.isoflop import IsoflopFit
from workbench.fit.laws import predict_loss
from workbench.fit.parametric import ParametricFit


def _colors(n: int):

    cmap = colormaps["viridis"]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]


def isoflop_figure(points: pd.DataFrame, fit: IsoflopFit) -> Figure:
    """Left: loss vs N per budget with its parabola and vertex (excluded budgets dashed). Right: N*(C), D*(C)."""
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_curves, ax_laws = fig.subplots(1, 2)
    excluded = {e["budget_flops"] for e in fit.excluded}
    budgets = sorted(points["budget_flops"].unique())
    for color, budget in zip(_colors(len(budgets)), budgets, strict=True):
        part = points[points["budget_flops"] == budget]
        x = np.log(part["params"].to_numpy())
        ax_curves.scatter(part["params"], part["loss"], color=color, s=14)
        if part["params"].nunique() >= 3:
            coef = np.polyfit(x, part["loss"].to_numpy(), 2)
            grid = np.linspace(x.min(), x.max(), 100)
            style = "--" if budget in excluded else "-"
            ax_curves.plot(np.exp(grid), np.polyval(coef, grid), style, color=color, lw=1, label=f"{budget:.2g}")
    for m in fit.minima:
        ax_curves.scatter(m["params"], m["loss"], marker="*", s=80, color="crimson", zorder=3)
    ax_curves.set(xscale="log", xlabel="parameters N", ylabel="loss", title="isoFLOP curves (dashed: excluded)")
    ax_curves.legend(title="budget (FLOPs)", fontsize=7)
    c = np.array([m["budget_flops"] for m in fit.minima])
    grid_c = np.geomspace(c.min(), c.max() * 100, 50)
    ax_laws.scatter(c, [m["params"] for m in fit.minima], color="C0", label="N* (vertex)")
    ax_laws.scatter(c, [m["tokens"] for m in fit.minima], color="C1", label="D* (vertex)")
    ax_laws.plot(grid_c, fit.G * grid_c**fit.a, color="C0", label=f"N* = {fit.G:.3g} C^{fit.a:.3f}")
    ax_laws.plot(grid_c, fit.H * grid_c**fit.b, color="C1", label=f"D* = {fit.H:.3g} C^{fit.b:.3f}")
    ax_laws.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", title="compute-optimal N* and D*")
    ax_laws.legend(fontsize=8)
    return fig


def parametric_figure(points: pd.DataFrame, fit: ParametricFit) -> Figure:
    """Left: runs and the law along each isoFLOP curve (D = C / 6N). Right: predicted vs observed loss."""
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_curves, ax_parity = fig.subplots(1, 2)
    law = fit.as_dict()
    budgets = sorted(points["budget_flops"].unique())
    for color, budget in zip(_colors(len(budgets)), budgets, strict=True):
        part = points[points["budget_flops"] == budget]
        grid_n = np.geomspace(part["params"].min(), part["params"].max(), 100)
        ax_curves.scatter(part["params"], part["loss"], color=color, s=14)
        ax_curves.plot(grid_n, predict_loss(law, grid_n, budget / (6.0 * grid_n)), color=color, lw=1)
    title = f"L = {fit.E:.3g} + {fit.A:.3g}/N^{fit.alpha:.3f} + {fit.B:.3g}/D^{fit.beta:.3f}"
    ax_curves.set(xscale="log", xlabel="parameters N", ylabel="loss", title=title)
    predicted = predict_loss(law, points["params"], points["tokens"])
    ax_parity.scatter(points["loss"], predicted, s=10)
    lims = [min(points["loss"].min(), predicted.min()), max(points["loss"].max(), predicted.max())]
    ax_parity.plot(lims, lims, color="grey", lw=1)
    ax_parity.set(xlabel="observed loss", ylabel="predicted loss", title="law vs runs")
    return fig


def rollout_figure(rollout: list[dict]) -> Figure:
    """Relative error of each prediction of the next budget up, against that budget (a step whose target was
    not scored, its held-out vertex outside the sizes, has no error and no point)."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for method, key, marker in (
        ("parametric", "loss_rel_err", "o"),
        ("parametric", "N_opt_rel_err", "s"),
        ("isoflop", "N_opt_rel_err", "^"),
    ):
        rows = [(r["budget_flops"], r[method][key]) for r in rollout if r.get(method, {}).get(key) is not None]
        if rows:
            c, err = zip(*rows, strict=True)
            ax.plot(c, 100 * np.array(err), marker=marker, label=f"{method} {key.removesuffix('_rel_err')}")
    ax.axhline(0, color="grey", lw=1)
    ax.set(xscale="log", xlabel="predicted budget (FLOPs)", ylabel="relative error (%)", title="rollout")
    ax.legend(fontsize=8)
    return fig


def save_figure(fig: Figure, stem: str | Path) -> list[Path]:
    """Write stem.png and stem.svg, each rendered in memory and renamed in (workbench.core.files: a full or
    read-only disk is a one-line error and leaves the earlier figure); returns both paths."""
    stem = Path(stem)
    paths = [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")]
    for path in paths:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=path.suffix[1:], dpi=120)
        atomic_write_bytes(path, buffer.getvalue())
    return paths
