"""Figures of the HTML report (matplotlib only here); each returns a Figure, `data_uri` embeds one.

Readable in greyscale: colours come from viridis (luminance rises monotonically along it) cut before its
pale yellow end, and every series also differs by marker and line style. Figures are built on
matplotlib.figure.Figure directly (no pyplot): no global state, no GUI backend.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from workbench.core.units import human
from workbench.fit.laws import optimal_allocation, predict_loss
from workbench.report.style import BudgetScale, budget_scale
from workbench.train.config import BatchConfig, RampStep, ScheduleConfig
from workbench.train.schedule import batch_tokens_at, lr_at

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
LINESTYLES = ("-", "--", "-.", ":")
MAX_LEGEND_BUDGETS = 10  # more budgets get a colour bar instead of a legend entry each
MAX_SVG_BYTES = 300_000  # larger SVGs (many curves) are embedded as PNG instead
PNG_DPI = 110
HUMAN = FuncFormatter(lambda x, _pos: human(x, 3))


def colors(n: int) -> list:
    """n viridis colours from dark purple to green-yellow (the palest end is skipped: it vanishes on white)."""

    cmap = colormaps["viridis"]
    return [cmap(0.88 * i / max(n - 1, 1)) for i in range(n)]


def style(i: int) -> dict:
    """Marker and line style of series i (so that series differ without colour)."""
    return {"marker": MARKERS[i % len(MARKERS)], "linestyle": LINESTYLES[(i // len(MARKERS)) % len(LINESTYLES)]}


def data_uri(fig: Figure, fmt: str = "svg") -> str:
    """The figure as a data: URI (SVG, or PNG when the SVG would be over MAX_SVG_BYTES)."""
    buffer = io.BytesIO()
    if fmt == "svg":
        fig.savefig(buffer, format="svg", metadata={"Date": None})
        if buffer.tell() <= MAX_SVG_BYTES:
            return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()
        buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PNG_DPI, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def parametric_figure(points: pd.DataFrame, par: dict, plan: dict | None, scale: BudgetScale | None = None) -> Figure:
    """Loss contours of L(N, D) with the efficient frontier and the runs; residuals (%) vs N and vs D. Budgets
    take the page's colours and markers (`scale`); the legend sits below the panels, never over the data, with
    one entry per budget up to 10 and a budget colour bar beyond."""
    scale = scale or budget_scale(points["budget_flops"])
    fig = Figure(figsize=(11, 8.2), layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=(1.5, 1))
    ax_map = fig.add_subplot(grid[0, :])
    ax_n, ax_d = fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])
    n_all = [points["params"].min(), points["params"].max()]
    d_all = [points["tokens"].min(), points["tokens"].max()]
    if plan:
        n_all.append(plan["params"])
        d_all.append(plan["tokens"])
    n_grid = np.geomspace(min(n_all) / 3, max(n_all) * 3, 200)
    d_grid = np.geomspace(min(d_all) / 3, max(d_all) * 3, 200)
    loss = predict_loss(par, n_grid[None, :], d_grid[:, None])

    # levels span the losses the runs reached (a poorly determined law can reach absurd values off the data)
    observed = points["loss"].to_numpy(float)
    lo = max(float(loss.min()), 0.9 * observed.min())
    hi = min(float(np.quantile(loss, 0.9)), observed.max() + 0.5 * (observed.max() - observed.min() + 0.1))
    levels = MaxNLocator(12).tick_values(lo, max(hi, lo * 1.01))
    filled = ax_map.contourf(n_grid, d_grid, loss, levels=levels, cmap="Greys", extend="both", alpha=0.45)
    lines = ax_map.contour(n_grid, d_grid, loss, levels=levels, colors="black", linewidths=0.4)
    ax_map.clabel(lines, fmt="%.3g", fontsize=7)
    bar = fig.colorbar(filled, ax=ax_map, pad=0.01)
    bar.set_label("predicted loss L(N, D) (nats/token)")
    c_lo, c_hi = 6 * n_grid[0] * d_grid[0], 6 * n_grid[-1] * d_grid[-1]
    c_grid = np.geomspace(c_lo, c_hi, 100)
    n_opt, d_opt = optimal_allocation(par, c_grid)
    ax_map.plot(n_opt, d_opt, color="white", lw=4)
    ax_map.plot(n_opt, d_opt, color="black", lw=1.6, linestyle="--", label="efficient frontier N*(C), D*(C)")
    budgets = sorted(points["budget_flops"].unique())
    many = len(budgets) > MAX_LEGEND_BUDGETS
    for budget in budgets:
        part = points[points["budget_flops"] == budget]
        color, marker = scale.colour(budget), scale.marker(budget)
        ax_map.plot(n_grid, budget / (6 * n_grid), ":", color=color, lw=1.0)
        dots = ax_map.scatter(
            part["params"],
            part["tokens"],
            marker=marker,
            s=36,
            color=color,
            edgecolors="black",
            linewidths=0.6,
            zorder=3,
            label=None if many else f"runs at {budget:.3g} FLOPs",
        )
        dots.set_gid(f"budget-{budget:.3g}")  # the SVG group of this budget's runs (the tests read its colour)
        residual = 100 * (part["loss"] / predict_loss(par, part["params"], part["tokens"]) - 1)
        for ax, x in ((ax_n, part["params"]), (ax_d, part["tokens"])):
            ax.scatter(x, residual, marker=marker, s=30, color=color, edgecolors="black", linewidths=0.4)
    if plan:
        ax_map.plot(
            plan["params"],
            plan["tokens"],
            "*",
            ms=16,
            mfc="white",
            mec="black",
            zorder=5,
            label=f"plan at {plan['compute_flops']:.3g} FLOPs",
        )
    ax_map.set(
        xscale="log",
        yscale="log",
        xlim=(n_grid[0], n_grid[-1]),
        ylim=(d_grid[0], d_grid[-1]),
        xlabel="parameters N (non-embedding)",
        ylabel="training tokens D",
        title=f"L = {par['E']:.3g} + {par['A']:.3g} / N^{par['alpha']:.3f} + {par['B']:.3g} / "
        f"D^{par['beta']:.3f}"
        " (dotted: isoFLOP lines C = 6ND)",
    )
    handles, labels = ax_map.get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="outside lower center", ncols=min(4, max(1, len(labels))), fontsize=8, frameon=False
    )
    if many:  # a colour bar of the budgets, in the page's scale, instead of one legend entry each
        cmap = ListedColormap(scale.colours)
        norm = BoundaryNorm(np.arange(len(scale.budgets) + 1) - 0.5, len(scale.budgets))
        bar = fig.colorbar(ScalarMappable(norm, cmap), ax=[ax_n, ax_d], location="right", pad=0.01, aspect=15)
        step = max(1, len(scale.budgets) // 6)
        bar.set_ticks(range(0, len(scale.budgets), step), labels=[f"{b:.2g}" for b in scale.budgets[::step]])
        bar.set_label("budget C (FLOPs)", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    for ax, label in ((ax_n, "parameters N (non-embedding)"), (ax_d, "training tokens D")):
        ax.axhline(0, color="grey", lw=1)
        ax.set(xscale="log", xlabel=label, ylabel="residual: observed / law - 1 (%)")
        ax.xaxis.set_major_formatter(HUMAN)
        ax.grid(alpha=0.3, which="both")
    for ax in (ax_map,):
        ax.xaxis.set_major_formatter(HUMAN)
        ax.yaxis.set_major_formatter(HUMAN)
    return fig


def schedule_figure(plan: dict) -> Figure:
    """The planned run's peak-relative LR and its global batch (tokens) over the tokens of the run."""

    sched, total = plan["schedule"], float(plan["shape"]["tokens"])
    config = ScheduleConfig(
        kind=sched.get("kind", "cosine"),
        warmup_tokens=sched["warmup_tokens"],
        floor=sched["floor"],
        anneal_tokens=sched["anneal_tokens"],
    )
    ramp = [RampStep(after_tokens=r["after_tokens"], batch_tokens=r["batch_tokens"]) for r in sched["ramp"]]
    batch = BatchConfig(batch_tokens=plan["batch_tokens"], micro_batch=1, ramp=ramp)
    tokens = np.unique(
        np.concatenate(
            [
                np.linspace(0, total, 600),
                np.linspace(0, sched["warmup_tokens"] * 1.5, 60),
                np.linspace(total - sched["anneal_tokens"] * 1.5, total, 60),
            ]
        )
    )
    tokens = tokens[(tokens >= 0) & (tokens <= total)]
    lr = [lr_at(t, total, plan["lr_peak"], config) for t in tokens]
    sizes = [batch_tokens_at(t, batch) for t in tokens]
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    ax_lr, ax_batch = fig.subplots(2, 1, sharex=True, height_ratios=(1.6, 1))
    c0, c1 = colors(3)[0], colors(3)[1]
    ax_lr.plot(tokens, lr, color=c0, lw=1.8, label=f"LR (peak {plan['lr_peak']:.3g})")
    ax_lr.axvline(
        sched["warmup_tokens"],
        color="grey",
        lw=1,
        linestyle="--",
        label=f"end of warmup ({human(sched['warmup_tokens'])} tokens)",
    )
    if sched["anneal_tokens"]:
        ax_lr.axvline(
            total - sched["anneal_tokens"],
            color="grey",
            lw=1,
            linestyle=":",
            label=f"final anneal to 0 ({human(sched['anneal_tokens'])} tokens)",
        )
    ax_lr.set(
        ylabel="learning rate",
        title=f"{sched.get('kind', 'cosine')} to {sched['floor']:g} x peak, ~{sched['steps']:,} steps",
    )
    ax_lr.legend(fontsize=8, loc="upper right")
    ax_batch.step(tokens, sizes, where="post", color=c1, lw=1.8, linestyle="--")
    ax_batch.set(xlabel="tokens seen", ylabel="global batch (tokens)", ylim=(0, max(sizes) * 1.15))
    ax_batch.yaxis.set_major_formatter(HUMAN)
    ax_batch.xaxis.set_major_formatter(HUMAN)
    for ax in (ax_lr, ax_batch):
        ax.grid(alpha=0.3)
    return fig
