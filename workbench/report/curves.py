"""The interactive training curves: every run's loss against steps, tokens or FLOPs (the reader picks), on a
linear or log loss axis, with validation curves where the runs logged them, a filter by run id or size, a
tooltip on the nearest point of any line, and an HTML legend of budgets.

A budget's runs are one path (their points in data order, broken by each run's null row): a line a run would
make Vega build a sub-dataflow per run (a facet), which took most of a 500-run page's opening time. The
tooltip comes from a layer of invisible points with a nearest-point selection (one Voronoi diagram).

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


def _thin(rows: pd.DataFrame, column: str, per_run: int, smooth: bool) -> pd.DataFrame:
    values = rows[column].to_numpy(float)
    if smooth:  # a per-batch loss is noisy: a short running mean
        values = rows[column].rolling(max(1, len(rows) // 100), min_periods=1).mean().to_numpy(float)
    keep = np.unique(np.geomspace(1, len(rows), min(per_run, len(rows))).astype(int) - 1)
    flops = rows["flops"].to_numpy(float) if "flops" in rows else np.full(len(rows), np.nan)
    return pd.DataFrame(
        {
            "s": rows["step"].to_numpy(float)[keep],
            "t": rows["tokens"].to_numpy(float)[keep],
            "f": flops[keep],
            "l": values[keep],
        }
    )


def thin_curves(runs: pd.DataFrame, metrics: pd.DataFrame, per_run: int = CURVE_POINTS) -> tuple:
    """(runs frame with index i, training curves r/s/t/f/l, validation curves r/s/t/f/l): each run's
    training loss (a running mean) and its validation losses (runs with 2 or more), log-thinned in step; each
    run's points end with a null row, which breaks the line there."""
    table = runs.reset_index(drop=True)
    index = {rid: i for i, rid in enumerate(table["run_id"])}
    train, val = [], []
    has_val = "val_loss" in metrics.columns
    for rid, rows in metrics.groupby("run_id", sort=False):
        if rid not in index:
            continue
        for out, column, keep, smooth in ((train, "loss", per_run, True), (val, "val_loss", VAL_POINTS, False)):
            if column == "val_loss" and not has_val:
                continue
            part = rows[rows[column].notna()]
            if len(part) < (2 if column == "val_loss" else 1):
                continue
            thin = _thin(part, column, keep, smooth)
            thin = thin[np.isfinite(thin["l"]) & (thin["t"] > 0)]
            if len(thin):
                out += [thin.assign(r=index[rid]), pd.DataFrame({"r": [index[rid]]})]
    empty = pd.DataFrame(columns=["r", "s", "t", "f", "l"])
    frames = [pd.concat(p, ignore_index=True)[["r", "s", "t", "f", "l"]] if p else empty for p in (train, val)]
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
        {  # the tooltip of any line: its nearest point
            "data": {"name": "curves"},
            "transform": vl.visible(*chosen, keep, {"filter": "datum.l !== null"}),
            "params": [{"name": "near", "select": {"type": "point", "on": "pointermove", "nearest": True}}],
            "mark": {"type": "point", "size": 20, "opacity": 0, "clip": True},
            "encoding": {"x": x, "y": y, "tooltip": tip},
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
