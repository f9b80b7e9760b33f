"""Figures of the HTML report (matplotlib only here); each returns a Figure, `data_uri` embeds one.

Readable in greyscale: colours come from viridis (luminance rises monotonically along it) cut before its
pale yellow end, and every series also differs by marker and line style. Figures are built on
matplotlib.figure.Figure directly (no pyplot): no global state, no GUI backend.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from workbench.core.units import human
from workbench.fit.laws import optimal_allocation, predict_loss
from workbench.train.config import BatchConfig, RampStep, ScheduleConfig
from workbench.train.schedule import batch_tokens_at, lr_at

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
LINESTYLES = ("-", "--", "-.", ":")
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


def _thin(frame: pd.DataFrame, max_points: int) -> pd.DataFrame:
    """At most max_points rows, log-spaced in step (a log token axis shows early and late alike)."""
    if len(frame) <= max_points:
        return frame
    idx = np.unique(np.geomspace(1, len(frame), max_points).astype(int) - 1)
    return frame.iloc[idx]


def training_curves_figure(runs: pd.DataFrame, metrics: pd.DataFrame, max_points: int = 150) -> Figure:
    """Training loss vs tokens, one panel per budget, colour and line style by model size N (shared scale)."""

    budgets = sorted(runs["budget_flops"].dropna().unique())
    cols = len(budgets) if len(budgets) <= 3 else 2 if len(budgets) == 4 else 3
    rows = math.ceil(len(budgets) / cols)
    fig = Figure(figsize=(11, 3.3 * rows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, sharey=True, squeeze=False)).ravel()
    sizes = np.array(sorted(runs["params"].dropna().unique()), dtype=float)
    norm = LogNorm(sizes.min(), sizes.max() if sizes.max() > sizes.min() else sizes.min() * 2)
    cmap = colormaps["viridis"]
    by_run = dict(tuple(metrics.groupby("run_id"))) if len(metrics) else {}
    tops, bottoms, ends = [], [], []
    for ax, budget in zip(axes, budgets, strict=False):
        part = runs[runs["budget_flops"] == budget].sort_values("params")
        for i, run in enumerate(part.itertuples()):
            rows_ = by_run.get(run.run_id)
            if rows_ is None or not len(rows_):
                continue
            train = rows_[rows_["loss"].notna()]
            window = max(1, len(train) // 100)  # a per-batch loss is noisy: a short running mean
            loss = train["loss"].rolling(window, min_periods=1).mean()
            thin = _thin(pd.DataFrame({"tokens": train["tokens"], "loss": loss}), max_points)
            color = cmap(0.88 * norm(run.params)) if run.params == run.params else "grey"
            ax.plot(thin["tokens"], thin["loss"], color=color, lw=1.1, linestyle=LINESTYLES[i % len(LINESTYLES)])
            late = thin[thin["tokens"] >= 0.1 * thin["tokens"].max()]["loss"]
            if len(late) and run.status == "completed":  # a diverged run's blow-up would flatten every curve
                tops.append(late.max())
                bottoms.append(late.min())
            final_loss = getattr(run, "val_loss", None)  # the run's final validation loss (final.json)
            if final_loss is not None and np.isfinite(final_loss):
                ax.plot(thin["tokens"].iloc[-1], final_loss, "o", color=color, mec="black", ms=5, zorder=4)
            if run.status not in ("completed", "running"):
                finite = thin[np.isfinite(thin["loss"])]
                ends.append((ax, thin["tokens"].iloc[-1], finite["loss"].iloc[-1] if len(finite) else np.inf))
        ax.set(xscale="log", title=f"budget {budget:.3g} FLOPs", xlabel="tokens seen D")
        ax.xaxis.set_major_formatter(HUMAN)
        ax.grid(alpha=0.3, which="both")
    for ax in axes[len(budgets) :]:
        ax.set_visible(False)
    for ax in axes[::cols]:
        ax.set_ylabel("training loss (nats/token)")
    if tops:
        pad = 0.05 * (max(tops) - min(bottoms))
        axes[0].set_ylim(min(bottoms) - pad, max(tops) + pad)
    top = axes[0].get_ylim()[1]
    for ax, tokens, loss in ends:  # drawn at the top edge when off the scale
        ax.plot(tokens, min(loss, top), "x", color="crimson", ms=9, mew=2, clip_on=False, zorder=5)

    shown = ListedColormap(cmap(np.linspace(0.0, 0.88, 256)))  # the part of viridis the lines use
    bar = fig.colorbar(ScalarMappable(norm, shown), ax=axes.tolist(), shrink=0.8, pad=0.01)
    bar.set_label("parameters N (non-embedding)")
    bar.ax.yaxis.set_major_formatter(HUMAN)
    bar.ax.yaxis.set_minor_formatter(HUMAN)
    handles = [
        Line2D([], [], color="grey", lw=1.1, label="train loss (running mean)"),
        Line2D([], [], marker="o", color="grey", mec="black", linestyle="", label="final validation loss"),
        Line2D([], [], marker="x", color="crimson", mew=2, linestyle="", label="diverged / failed"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return fig


def _parabola(part: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    if part["params"].nunique() < 3:
        return None
    x = np.log(part["params"].to_numpy(float))
    coef = np.polyfit(x, part["loss"].to_numpy(float), 2)
    grid = np.linspace(x.min() - 0.1, x.max() + 0.1, 120)
    return np.exp(grid), np.polyval(coef, grid)


def isoflop_curves_figure(points: pd.DataFrame, iso: dict, fitted_budgets: set[float]) -> Figure:
    """Final loss vs N per budget with its parabola in log N and the minimum marked (Llama 3, Figure 2).

    Budgets not in `fitted_budgets` (held out) are drawn hollow; excluded budgets get a dashed parabola.
    """
    fig = Figure(figsize=(8.5, 5), layout="constrained")
    ax = fig.subplots()
    excluded = {round(math.log10(e["budget_flops"]), 6) for e in iso.get("excluded", [])}
    budgets = sorted(points["budget_flops"].unique())
    for i, (color, budget) in enumerate(zip(colors(len(budgets)), budgets, strict=True)):
        part = points[points["budget_flops"] == budget]
        held = not any(math.isclose(budget, b, rel_tol=1e-6) for b in fitted_budgets)
        key = round(math.log10(budget), 6)
        label = f"{budget:.3g}" + (" (held out)" if held else " (excluded)" if key in excluded else "")
        marker = MARKERS[i % len(MARKERS)]
        face = "white" if held else color
        ax.scatter(part["params"], part["loss"], marker=marker, s=36, facecolors=face, edgecolors=color, zorder=3)
        curve = _parabola(part)
        line = "--" if key in excluded or held else "-"
        if curve is not None:
            ax.plot(*curve, line, color=color, lw=1.3)
        ax.plot([], [], line, color=color, marker=marker, label=label, mfc=face)  # legend entry: marker and line
    minima = iso.get("minima", [])
    if minima:
        ax.scatter(
            [m["params"] for m in minima],
            [m["loss"] for m in minima],
            marker="*",
            s=220,
            c="white",
            edgecolors="black",
            linewidths=1.2,
            zorder=4,
            label="fitted minimum",
        )
    ax.set(xscale="log", xlabel="parameters N (non-embedding)", ylabel="final validation loss (nats/token)")
    ax.xaxis.set_major_formatter(HUMAN)
    ax.grid(alpha=0.3, which="both")
    ax.legend(title="budget C (FLOPs)", fontsize=8, title_fontsize=8, loc="upper right")
    return fig


def _band(draws: dict | None, keys: tuple[str, str], grid_c: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """5-95% band of coef C^exp over the finite bootstrap draws, at each C of grid_c."""
    if not draws or keys[0] not in draws:
        return None
    coef = np.asarray(draws[keys[0]], float)
    exp = np.asarray(draws[keys[1]], float)
    ok = np.isfinite(coef) & np.isfinite(exp)
    if ok.sum() < 5:
        return None
    values = np.log(coef[ok, None]) + exp[ok, None] * np.log(grid_c)[None, :]
    lo, hi = np.percentile(values, [5, 95], axis=0)
    return np.exp(lo), np.exp(hi)


def frontier_figure(iso: dict | None, par: dict | None, plan: dict | None, budgets: list[float]) -> Figure:
    """N*(C) and D*(C) on log axes: isoFLOP minima, power laws with 5-95% bootstrap bands, the parametric
    law's closed form, extrapolated to the planned budget (Llama 3, Figure 3)."""
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    axes = fig.subplots(1, 2)
    c_max = max([*budgets, plan["compute_flops"] if plan else 0.0]) * 2.0
    grid_c = np.geomspace(min(budgets) / 2.0, c_max, 120)
    for ax, (what, key, coef, exp) in zip(axes, (("N*", "params", "G", "a"), ("D*", "tokens", "H", "b")), strict=True):
        if iso:
            minima = iso["minima"]
            cs = [m["budget_flops"] for m in minima]
            ax.scatter(
                cs,
                [m[key] for m in minima],
                marker="o",
                s=40,
                color=colors(3)[0],
                edgecolors="black",
                zorder=4,
                label="isoFLOP minima",
            )
            band = _band(iso.get("draws"), (coef, exp), grid_c)
            if band is not None:
                ax.fill_between(grid_c, *band, color=colors(3)[0], alpha=0.18, lw=0, label="isoFLOP law, 5-95%")
            law = iso[coef] * grid_c ** iso[exp]
            ax.plot(grid_c, law, "-", color=colors(3)[0], lw=1.6, label=f"{what} = {iso[coef]:.3g} C^{iso[exp]:.3f}")
        if par:
            n_opt, d_opt = optimal_allocation(par, grid_c)
            ax.plot(
                grid_c,
                n_opt if key == "params" else d_opt,
                "--",
                color=colors(3)[1],
                lw=1.6,
                label="parametric law (C = 6ND)",
            )
            draws = par.get("draws")
            if draws and not iso:
                n_d, d_d = optimal_allocation(draws, grid_c[:, None])
                lo, hi = np.percentile(np.log(n_d if key == "params" else d_d), [5, 95], axis=1)
                ax.fill_between(
                    grid_c, np.exp(lo), np.exp(hi), color=colors(3)[1], alpha=0.18, lw=0, label="parametric law, 5-95%"
                )
        ax.axvspan(min(budgets), max(budgets), color="grey", alpha=0.08, lw=0, label="swept budgets")
        if plan:
            _mark_plan(ax, plan, key)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="compute C (FLOPs)",
            ylabel=f"{what}: {'parameters (non-embedding)' if key == 'params' else 'training tokens'}",
        )
        ax.yaxis.set_major_formatter(HUMAN)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="upper left")
    return fig


def _mark_plan(ax, plan: dict, key: str) -> None:
    c = plan["compute_flops"]
    ax.axvline(c, color="black", lw=0.8, linestyle=":")
    ci = (plan.get("ci") or {}).get(key)
    value = plan[key]
    if ci:
        err = [[value - ci["p5"]], [ci["p95"] - value]]
        ax.errorbar(
            [c],
            [value],
            yerr=err,
            fmt="*",
            ms=14,
            mfc="white",
            mec="black",
            ecolor="black",
            capsize=4,
            zorder=5,
            label=f"plan: {human(value)} at {c:.3g} FLOPs",
        )
    else:
        ax.plot([c], [value], "*", ms=14, mfc="white", mec="black", zorder=5, label=f"plan: {human(value)}")


def parametric_figure(points: pd.DataFrame, par: dict, plan: dict | None) -> Figure:
    """Loss contours of L(N, D) with the efficient frontier and the runs; residuals (%) vs N and vs D."""
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
    for i, (color, budget) in enumerate(zip(colors(len(budgets)), budgets, strict=True)):
        part = points[points["budget_flops"] == budget]
        marker = MARKERS[i % len(MARKERS)]
        ax_map.plot(n_grid, budget / (6 * n_grid), ":", color=color, lw=1.0)
        ax_map.scatter(
            part["params"],
            part["tokens"],
            marker=marker,
            s=36,
            color=color,
            edgecolors="black",
            linewidths=0.6,
            zorder=3,
            label=f"runs at {budget:.3g} FLOPs",
        )
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
    ax_map.legend(fontsize=7, loc="lower right", ncols=2, framealpha=0.95)
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
