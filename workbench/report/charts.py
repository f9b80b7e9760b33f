"""The sweep report's interactive figures and CSV downloads, attached to the sections html.py builds.

The training curves, isoFLOP curves and frontier become Vega-Lite charts (hover, zoom, legend hiding,
SVG/PNG export; the held-out check is built as one by sections.holdout_section, next to the refit it
draws); the parametric contours, rollout and schedule figures stay matplotlib images. The page also
offers the runs, the isoFLOP minima and the fitted laws as CSV.
"""

from __future__ import annotations

import math

import pandas as pd

from workbench.report import interactive as vl
from workbench.report.inputs import ReportInputs


def attach(inputs: ReportInputs, built: list[dict]) -> list[dict]:
    """Replace the static curves/isoFLOP/frontier figures by interactive charts; returns the CSV downloads."""
    by_id = {s["id"]: s for s in built}
    for section in built:
        section.setdefault("charts", [])
    if "curves" in by_id and len(inputs.metrics):
        meta, curves = vl.thin_curves(inputs.runs, inputs.metrics)
        by_id["curves"]["figures"] = []
        by_id["curves"]["charts"].append(
            vl.chart(
                "curves",
                "Training curves",
                "Training loss against tokens seen for every run, one line a run, coloured "
                "by compute budget; dots mark each completed run's final validation loss.",
                "Training loss (running mean) against tokens seen, coloured by budget; dots: final validation loss. "
                "Hover for the run, drag to pan, scroll to zoom, click a legend entry to hide its budget.",
                vl.curves_spec(meta, curves),
                "final",
            )
        )
    fit = inputs.fit or {}
    iso = fit.get("isoflop")
    if "isoflop" in by_id and iso:
        points = inputs.points if inputs.points is not None else pd.DataFrame(fit["points"])
        runs, curves, mins = vl.isoflop_layers(points, iso["minima"])
        series = [vl.budget_label(b) for b in sorted(points["budget_flops"].unique())]
        by_id["isoflop"]["figures"] = []
        by_id["isoflop"]["charts"].append(
            vl.chart(
                "isoflop",
                "isoFLOP curves",
                "Final validation loss against model size N for each compute budget, with "
                "each budget's fitted parabola in log N and its minimum marked by a star.",
                "Final validation loss against N per budget, the parabola in log N and its minimum (stars). Hover a "
                "point for its run id, N, D and loss.",
                vl.isoflop_spec(runs, curves, mins, series),
                "runs",
            )
        )
    if "frontier" in by_id and (iso or fit.get("parametric")):
        budgets = (
            sorted({float(b) for b in fit["points"]["budget_flops"]})
            if fit.get("points")
            else sorted(inputs.runs["budget_flops"].dropna().unique())
        )
        specs = vl.frontier_specs(iso, fit.get("parametric"), inputs.plan, budgets)
        by_id["frontier"]["figures"] = []
        for (what, unit), spec in zip((("N*", "parameters"), ("D*", "tokens")), specs, strict=True):
            by_id["frontier"]["charts"].append(
                vl.chart(
                    f"frontier-{unit}",
                    f"{what} against compute",
                    f"Compute-optimal {unit} {what} against compute on "
                    "log axes: the isoFLOP minima, the power law fitted to them with its 5-95% bootstrap band, the "
                    "parametric law and the plan.",
                    f"{what}(C): isoFLOP minima, power law with its 5-95% bootstrap band, parametric law, plan.",
                    spec,
                    "dots",
                )
            )
    return downloads(inputs)


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
