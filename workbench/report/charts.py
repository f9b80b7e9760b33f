"""The sweep report's interactive figures and CSV downloads, attached to the sections page.py builds.

The training curves, isoFLOP curves, the loss frontier, N*(C), D*(C), approach 1's envelope and the plan's
schedule are Vega-Lite charts (hover, zoom, HTML legends, SVG/PNG export; the held-out check is built as one
by sections.holdout_section, next to the refit it draws); the parametric contours and the rollout stay
matplotlib images. Every budget has the colour and shape of workbench.report.style in every figure. The
page also offers the runs, the isoFLOP minima with their intervals and the fitted laws as CSV.
"""

from __future__ import annotations

import math

import pandas as pd

from workbench.report import interactive as vl
from workbench.report.curves import curves_chart
from workbench.report.inputs import ReportInputs
from workbench.report.loss_frontier import envelope_chart, loss_chart
from workbench.report.style import report_scale


def attach(inputs: ReportInputs, built: list[dict]) -> list[dict]:
    """Replace the static curves/isoFLOP/frontier figures by interactive charts; returns the CSV downloads."""
    by_id = {s["id"]: s for s in built}
    for section in built:
        section.setdefault("charts", [])
    scale = report_scale(inputs.runs, inputs.fit)
    if "curves" in by_id and len(inputs.metrics):
        by_id["curves"]["figures"] = []
        by_id["curves"]["charts"].append(curves_chart(inputs.runs, inputs.metrics, scale))
    fit = inputs.fit or {}
    iso = fit.get("isoflop")
    if "isoflop" in by_id and iso:
        by_id["isoflop"]["figures"] = []
        by_id["isoflop"]["charts"].append(isoflop_chart(inputs, iso, scale))
    if "frontier" in by_id and (iso or fit.get("parametric")):
        by_id["frontier"]["figures"] = []
        by_id["frontier"]["charts"] += frontier_charts(inputs, fit, scale)
    return downloads(inputs)


def isoflop_chart(inputs: ReportInputs, iso: dict, scale) -> dict:
    points = inputs.points if inputs.points is not None else pd.DataFrame(inputs.fit["points"])
    runs, curves, mins = vl.isoflop_layers(points, iso["minima"])
    budgets = sorted(points["budget_flops"].unique())
    series = [vl.budget_label(b) for b in budgets]
    spec = vl.isoflop_spec(
        runs, curves, mins, series, [scale.colour(b) for b in budgets], [scale.shape(b) for b in budgets]
    )
    return vl.chart(
        "isoflop",
        "isoFLOP curves",
        "Final validation loss against model size N for each compute budget, with "
        "each budget's fitted parabola in log N and its minimum marked by a star.",
        "Final validation loss against N per budget, the parabola in log N and its minimum (stars). Hover a "
        "point for its run id, N, D and loss.",
        spec,
        "runs",
        legend=vl.budget_keys(scale, budgets),
        legend_title="budget C (FLOPs)",
    )


def frontier_charts(inputs: ReportInputs, fit: dict, scale) -> list[dict]:
    """Loss against compute (wide), N*(C) and D*(C) side by side, approach 1's envelope."""
    out = []
    loss = loss_chart(fit, inputs.plan, scale) if fit.get("points") else None
    if loss is not None:
        out.append({**loss, "wide": True})
    budgets = (
        sorted({float(b) for b in fit["points"]["budget_flops"]})
        if fit.get("points")
        else sorted(inputs.runs["budget_flops"].dropna().unique())
    )
    specs = vl.frontier_specs(fit.get("isoflop"), fit.get("parametric"), inputs.plan, budgets, scale)
    for (what, unit), (spec, keys) in zip((("N*", "parameters"), ("D*", "tokens")), specs, strict=True):
        out.append(
            vl.chart(
                f"frontier-{unit}",
                f"{what} against compute",
                f"Compute-optimal {unit} {what} against compute on "
                "log axes: the isoFLOP minima, the power law fitted to them with its 5-95% bootstrap band, the "
                "parametric law and the plan.",
                f"{what}(C): isoFLOP minima (budget colours), power law with its 5-95% bootstrap band, parametric "
                "law, plan.",
                spec,
                "dots",
                legend=keys,
                legend_title=f"{what}(C)",
            )
        )
    env = envelope_chart(fit, scale)
    if env is not None:
        out.append({**env, "wide": True})
    return out


def downloads(inputs: ReportInputs) -> list[dict]:
    """CSV files offered by the page: the runs, the isoFLOP minima and the fitted laws."""
    keep = [
        c
        for c in (
            "run_id",
            "status",
            "budget_flops",
            "params",
            "params_total",
            "tokens",
            "flops",
            "val_loss",
            "lr_peak",
            "batch_tokens",
            "steps",
            "wall_s",
            "error",
        )
        if c in inputs.runs.columns
    ]
    files = [{"name": f"{inputs.sweep}-runs.csv", "text": vl.csv_text(inputs.runs[keep])}]
    fit = inputs.fit or {}
    iso = fit.get("isoflop") or {}
    if iso.get("minima"):
        files.append({"name": f"{inputs.sweep}-minima.csv", "text": vl.csv_text(pd.DataFrame(iso["minima"]))})
    laws = fit_rows(fit)
    if laws:
        files.append({"name": f"{inputs.sweep}-fits.csv", "text": vl.csv_text(pd.DataFrame(laws))})
    for i, f in enumerate(files):
        f["id"] = f"csv-{i}"
    return files


def fit_rows(fit: dict) -> list[dict]:
    """One row per fitted parameter: law, parameter, estimate, 5% and 95% bootstrap bounds."""
    rows = []
    for law, keys in (("isoflop", ("G", "a", "H", "b")), ("parametric", ("E", "A", "B", "alpha", "beta"))):
        record = fit.get(law) or {}
        ci = record.get("ci") or {}
        for key in keys:
            if key in record and record[key] is not None and math.isfinite(float(record[key])):
                band = ci.get(key) or {}
                rows.append(
                    {
                        "law": law,
                        "parameter": key,
                        "estimate": float(record[key]),
                        "p5": band.get("lo"),
                        "p95": band.get("hi"),
                    }
                )
    return rows
