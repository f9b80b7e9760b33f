"""The interactive training curves: every run's loss against steps, tokens or FLOPs (the reader picks), on a
linear or log loss axis, with validation curves where the runs logged them, a filter by run id or size, a
tooltip on the nearest point of any line, and an HTML legend of budgets.

A budget's runs are one path (their points in data order, broken by each run's null row): a line a run would
make Vega build a sub-dataflow per run (a facet), which took most of a 500-run page's opening time. The
tooltip of a line comes from the page script: on pointer move it finds the nearest drawn point in the chart's
own data (a plain scan; Vega's nearest-point selection builds a Voronoi diagram of every point, which took
seconds at 500 runs), shows that run's step, tokens, FLOPs and loss, and sets `hl` to draw the run in black.

The loss axis is never clamped: by default it spans the late part of the curves (the first 10% of each run's
tokens, where the loss falls fast from ~ln(vocab), would flatten the rest) and the lines that leave it are
clipped at the plot's edge, which the axis title says; "full range" shows every point.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from workbench.report import interactive as vl
from workbench.report.style import COUNT_FORMAT, FLOPS_FORMAT, LOSS_FORMAT, budget_label

CURVE_POINTS = 40  # training-curve samples kept per run (log-spaced in step)
VAL_POINTS = 20  # validation-curve samples kept per run
X_AXES = {"s": "optimizer steps", "t": "tokens seen D", "f": "compute spent C (FLOPs)"}


def _thin(run: np.ndarray, cols: dict[str, np.ndarray], per_run: int, smooth: bool) -> pd.DataFrame:
    """Each run's rows (consecutive in `run`, ordered by step) log-thinned to per_run; with `smooth` the loss is
    a running mean over len/100 steps first (a per-batch loss is noisy); each run ends with a null row."""
    if not len(run):
        return pd.DataFrame(columns=["r", "s", "t", "f", "l"])
    starts = np.flatnonzero(np.r_[True, run[1:] != run[:-1]])
    ends = np.r_[starts[1:], len(run)]
    picks, values = [], []
    for lo, hi in zip(starts, ends, strict=True):
        n = hi - lo
        loss = cols["l"][lo:hi]
        window = max(1, n // 100) if smooth else 1
        if window > 1:
            total = np.cumsum(np.r_[0.0, loss])
            k = np.arange(1, n + 1)
            loss = (total[k] - total[np.maximum(k - window, 0)]) / np.minimum(k, window)
        keep = np.unique(np.geomspace(1, n, min(per_run, n)).astype(int) - 1)
        picks.append(lo + keep)
        values.append(loss[keep])
    at = np.concatenate(picks)
    frame = pd.DataFrame({k: cols[k][at] for k in ("r", "s", "t", "f")} | {"l": np.concatenate(values)})
    frame = frame[np.isfinite(frame["l"]) & (frame["t"] > 0)]
    breaks = pd.DataFrame({"r": np.unique(frame["r"])})  # a null row after each run's points breaks the line
    out = pd.concat([frame.assign(o=0), breaks.assign(o=1)], ignore_index=True)
    return out.sort_values(["r", "o"], kind="stable").drop(columns="o").reset_index(drop=True)


def thin_curves(runs: pd.DataFrame, metrics: pd.DataFrame, per_run: int = CURVE_POINTS) -> tuple:
    """(runs frame with index i, training curves r/s/t/f/l, validation curves r/s/t/f/l): each run's
    training loss (a running mean) and its validation losses (runs with 2 or more), log-thinned in step; each
    run's points end with a null row, which breaks the line there."""
    table = runs.reset_index(drop=True)
    index = pd.Series(range(len(table)), index=table["run_id"].to_numpy())
    frames = []
    for column, keep, smooth, least in (("loss", per_run, True, 1), ("val_loss", VAL_POINTS, False, 2)):
        if column not in metrics.columns:
            frames.append(pd.DataFrame(columns=["r", "s", "t", "f", "l"]))
            continue
        rows = metrics[metrics[column].notna() & metrics["run_id"].isin(index.index)]
        rows = rows[rows.groupby("run_id")["step"].transform("size") >= least].sort_values(["run_id", "step"])
        cols = {
            "r": index.loc[rows["run_id"]].to_numpy(),
            "s": rows["step"].to_numpy(float),
            "t": rows["tokens"].to_numpy(float),
            "f": rows["flops"].to_numpy(float) if "flops" in rows else np.full(len(rows), np.nan),
            "l": rows[column].to_numpy(float),
        }
        frames.append(_thin(cols["r"], cols, keep, smooth))
    n_total = table["params"].astype(float)
    meta = pd.DataFrame(
        {
            "i": range(len(table)),
            "run": table["run_id"].astype(str),
            "series": [budget_label(b) if b == b else "no budget" for b in table["budget_flops"]],
            "N": n_total,
            "D": table["tokens"].astype(float),
            "loss": table["val_loss"].astype(float),
            "status": table["status"].astype(str),
        }
    )
    return meta, frames[0], frames[1]


def _y(field: str, domain: list[float] | None) -> dict:
    title = "loss (nats/token)" + (", lines beyond the axis clipped" if domain else "")
    y = vl.axis(field, title, "linear", LOSS_FORMAT)
    if domain:
        y["scale"] = {"domain": domain, "zero": False}
    return y


def curves_spec(meta: pd.DataFrame, curves: pd.DataFrame, val: pd.DataFrame, scale) -> dict:
    """Training (solid) and validation (dashed) loss against the chosen x, coloured by budget; dots: final
    validation loss, hollow dots: a run's last logged point when it has no final loss."""
    series = sorted(meta["series"].unique(), key=lambda s: float(s.split()[0]) if s[0].isdigit() else math.inf)
    colours = [scale.colour(float(s.split()[0])) if s[0].isdigit() else "#888888" for s in series]
    hue = vl.color(series, colours)
    lookup = {"lookup": "r", "from": {"data": {"name": "runs"}, "key": "i", "fields": ["series", "run", "N"]}}
    chosen = [lookup, {"calculate": "datum[xkey]", "as": "x"}, {"filter": "datum.x > 0 || datum.x === null"}]
    keep = {
        "filter": "(!filt && filt_hi < 0) || (filt && indexof(lower(datum.run), filt) >= 0)"
        " || (filt_hi >= 0 && datum.N >= filt_lo && datum.N <= filt_hi)"
    }
    x = vl.axis("x", X_AXES["t"], fmt=COUNT_FORMAT)
    late = curves.dropna()
    tail = late.loc[late["t"] >= 0.1 * late.groupby("r")["t"].transform("max"), "l"].astype(float)
    lo, hi = (float(np.nanquantile(tail, 0.01)), float(np.nanquantile(tail, 0.9))) if len(tail) else (0.0, 1.0)
    domain = [round(lo * 0.97, 4), round(hi * 1.05, 4)]
    y = _y("l", domain)
    done = meta[np.isfinite(meta["loss"])]
    ends = curves.dropna().groupby("r").tail(1)
    ends = ends[~ends["r"].isin(done["i"])].merge(meta, left_on="r", right_on="i")
    ends = pd.DataFrame({"r": ends["r"], "s": ends["s"], "t": ends["t"], "f": ends["f"], "l": ends["l"]})
    final = curves.dropna().groupby("r").tail(1).merge(done, left_on="r", right_on="i")
    final = pd.DataFrame(
        {
            "r": final["r"],
            "run": final["run"],
            "series": final["series"],
            "N": final["N"],
            "D": final["D"],
            "s": final["s"],
            "t": final["t"],
            "f": final["f"],
            "l": final["loss"],
        }
    )
    tip = [
        {"field": "run", "title": "run"},
        vl.count_tip("N", "N (params)"),
        {"field": "s", "title": "step", "format": ","},
        vl.count_tip("t", "tokens"),
        {"field": "f", "title": "FLOPs", "format": FLOPS_FORMAT},
        {"field": "l", "title": "loss (nats/token)", "format": LOSS_FORMAT},
        {"field": "series", "title": "budget"},
    ]
    dot = {"type": "point", "size": 30, "stroke": "black", "strokeWidth": 0.5, "clip": True}
    layers = [
        {
            "data": {"name": "curves"},
            "transform": vl.visible(*chosen, keep),
            "params": [vl.ZOOM],
            "mark": {"type": "line", "strokeWidth": 1, "opacity": 0.75, "clip": True},
            "encoding": {"x": x, "y": y, "color": hue, "order": {"value": None}},
        },
        {
            "data": {"name": "val"},
            "transform": vl.visible(*chosen, keep, {"filter": "showval"}),
            "mark": {"type": "line", "strokeWidth": 1.2, "strokeDash": [4, 2], "clip": True},
            "encoding": {"x": x, "y": y, "color": hue, "order": {"value": None}},
        },
        {
            "data": {"name": "final"},
            "transform": vl.visible(*chosen, keep),
            "mark": {**dot, "filled": True},
            "encoding": {"x": x, "y": y, "color": hue, "tooltip": tip},
        },
        {
            "data": {"name": "ends"},
            "transform": vl.visible(*chosen, keep),
            "mark": {**dot, "filled": False, "strokeWidth": 1.5},
            "encoding": {"x": x, "y": y, "color": hue, "tooltip": tip},
        },
        {  # the run under the pointer (the page script sets `hl` from the nearest point: report.templates.page.js)
            "data": {"name": "curves"},
            "transform": [lookup, {"filter": "datum.r === hl"}, *chosen[1:]],
            "mark": {"type": "line", "strokeWidth": 2.6, "color": "black", "clip": True},
            "encoding": {"x": x, "y": y, "order": {"value": None}},
        },
    ]
    data = {
        "runs": vl.columns(meta[["i", "series", "run", "N"]]),
        "curves": vl.columns(curves, 4),
        "val": vl.columns(val, 4),
        "final": vl.columns(final),
        "ends": vl.columns(ends),
    }
    spec = vl.base(data, layers, series, 380)
    spec["params"] += [
        {"name": "xkey", "value": "t"},
        {"name": "filt", "value": ""},
        {"name": "filt_lo", "value": 0},
        {"name": "filt_hi", "value": -1},
        {"name": "showval", "value": True},
        {"name": "hl", "value": -1},
    ]
    spec["usermeta"]["curves"] = {"x_axes": X_AXES, "domain": domain, "has_val": bool(len(val))}
    return spec


def controls(has_val: bool) -> list[dict]:
    """The form controls under the training curves (the page script applies them)."""
    out = [
        {"name": "x", "label": "x-axis", "options": [[k, v] for k, v in X_AXES.items()], "value": "t"},
        {"name": "y", "label": "loss axis", "options": [["linear", "linear"], ["log", "log"]], "value": "linear"},
        {
            "name": "range",
            "label": "loss range",
            "options": [["focus", "late training (clipped)"], ["full", "full range"]],
            "value": "focus",
        },
        {"name": "filter", "label": "filter runs (id, or size such as >100M, <1B, 50M-200M)", "text": True},
    ]
    if has_val:
        out.append({"name": "val", "label": "validation curves", "check": True, "value": True})
    return out


def curves_chart(runs: pd.DataFrame, metrics: pd.DataFrame, scale) -> dict:
    """The training-curves figure of the report."""
    meta, curves, val = thin_curves(runs, metrics)
    spec = curves_spec(meta, curves, val, scale)
    budgets = sorted({float(s.split()[0]) for s in meta["series"] if s[0].isdigit()})
    return vl.chart(
        "curves",
        "Training curves",
        "Training loss against tokens seen for every run, one line a run, coloured by compute budget; "
        "dots mark each completed run's final validation loss.",
        "Training loss (running mean; dashed: validation loss where logged) against the chosen axis, coloured "
        "by budget; dots: final validation loss, hollow: the last point of a run without one. Hover a line for "
        "its run, drag to pan, scroll or press + and - to zoom; the legend's buttons hide a budget.",
        spec,
        "final",
        legend=vl.budget_keys(scale, budgets),
        legend_title="budget C (FLOPs)",
        controls=controls(bool(len(val))),
    )
