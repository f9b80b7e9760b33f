"""Interactive figures: Vega-Lite specs (plain dicts) drawn in the page by the Vega bundle inlined from vl-convert.

Why Vega-Lite: its JavaScript (vega + vega-lite + vega-embed with vega-tooltip, 0.9 MB minified) ships inside
the vl-convert-python wheel (`vl_convert.javascript_bundle()`), so the page inlines it and fetches nothing;
it draws SVG (crisp, printable, testable through the DOM), shows tooltips, zooms by binding scales to an
interval selection, and exports any view as SVG or PNG through its public API (`view.toSVG()`,
`view.toCanvas()`). Bokeh's inline bundle is 1.3 MB and draws on canvas; plotly's is 3.5 MB+.

Data travel columnar ({"columns": {name: [values]}}) and are expanded to rows by the page script: a
500-run report's training curves stay a few hundred KB. Every chart has a variable param `hidden` (the
series a reader has hidden by clicking the legend) and filters its layers on it; the colour scale's
domain is fixed, so a hidden series keeps its legend entry (greyed) and a second click brings it back.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from workbench.fit.laws import optimal_allocation, predict_loss

# Okabe & Ito (2008): distinguishable under the common colour-vision deficiencies; yellow last (faint on white)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#F0E442")
SHAPES = ("circle", "square", "triangle-up", "diamond", "cross", "triangle-down", "wedge", "stroke")
STAR = "M0,-1L0.29,-0.4L0.95,-0.31L0.47,0.15L0.59,0.81L0,0.5L-0.59,0.81L-0.47,0.15L-0.95,-0.31L-0.29,-0.4Z"
CURVE_POINTS = 40  # training-curve samples kept per run (log-spaced in step)


def palette(n: int) -> list[str]:
    """n colour-blind-safe colours (Okabe-Ito up to 8, then viridis samples)."""
    if n <= len(PALETTE):
        return list(PALETTE[:n])
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    return [to_hex(colormaps["viridis"](0.9 * i / (n - 1))) for i in range(n)]


def columns(frame: pd.DataFrame, digits: int = 5) -> dict:
    """A frame as columnar JSON: floats to `digits` significant digits, NaN as null."""
    out = {}
    for name in frame.columns:
        values = frame[name].tolist()
        if pd.api.types.is_float_dtype(frame[name]):
            values = [None if v is None or not math.isfinite(v) else float(f"{v:.{digits}g}") for v in values]
        out[str(name)] = values
    return {"columns": out}


def chart(cid: str, title: str, alt: str, caption: str, spec: dict, csv: str | None = None) -> dict:
    """One interactive figure for the template: `csv` names the dataset its CSV button exports."""
    spec = {"description": alt, **spec}  # Vega puts it on the SVG as its aria-label
    return {"id": cid, "title": title, "alt": alt, "caption": caption, "spec": spec, "csv": csv}


def spec_json(spec: dict) -> str:
    """The spec as JSON safe inside a <script type="application/json"> element."""
    return json.dumps(spec, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def base(datasets: dict, layers: list[dict], series: list[str], height: int = 340) -> dict:
    """A layered chart with the `hidden` param, the legend greying and a fixed colour domain."""
    return {
        "width": "container",
        "height": height,
        "autosize": {"type": "fit-x", "contains": "padding"},
        "datasets": datasets,
        "params": [{"name": "hidden", "value": []}],
        "layer": layers,
        "config": {
            "font": "DejaVu Sans",
            "legend": {"orient": "right", "labelLimit": 220},
            "axis": {"labelFontSize": 11, "titleFontSize": 12},
            "view": {"stroke": "#d6d6d6"},
        },
        "usermeta": {"series": series},
    }


def color(series: list[str], legend_title: str | None = "series") -> dict:
    legend = None
    if legend_title is not None:
        grey = {"signal": "indexof(hidden, datum.value) < 0 ? 1 : 0.3"}
        legend = {
            "title": legend_title,
            "encode": {
                "labels": {"interactive": True, "update": {"opacity": grey, "cursor": {"value": "pointer"}}},  # noqa: E501
                "symbols": {"interactive": True, "update": {"opacity": grey, "cursor": {"value": "pointer"}}},
            },
        }
    return {
        "field": "series",
        "type": "nominal",
        "scale": {"domain": series, "range": palette(len(series))},
        "legend": legend,
    }


def visible(*extra: dict) -> list[dict]:
    """The transform every layer starts with: drop the hidden series."""
    return [*extra, {"filter": "indexof(hidden, datum.series) < 0"}]


def log_axis(field: str, title: str, kind: str = "log", zero: bool = False, fmt: str = "~s") -> dict:
    scale = {"type": kind} if kind == "log" else {"zero": zero}
    return {"field": field, "type": "quantitative", "title": title, "scale": scale, "axis": {"format": fmt}}


ZOOM = {"name": "zoom", "select": {"type": "interval", "encodings": ["x", "y"]}, "bind": "scales"}
TIP_RUN = [
    {"field": "run", "title": "run"},
    {"field": "N", "title": "N (params)", "format": ".4~s"},
    {"field": "D", "title": "D (tokens)", "format": ".4~s"},
    {"field": "loss", "title": "loss", "format": ".4f"},
    {"field": "series", "title": "budget"},
]


def budget_label(budget: float) -> str:
    return f"{budget:.3g} FLOPs"


def parabola(params: np.ndarray, loss: np.ndarray, n: int = 60) -> tuple[np.ndarray, np.ndarray] | None:
    """The budget's parabola in log N, sampled on n points a little beyond its sizes (None under 3 sizes)."""
    if len(np.unique(params)) < 3:
        return None
    x = np.log(params)
    coef = np.polyfit(x, loss, 2)
    grid = np.linspace(x.min() - 0.1, x.max() + 0.1, n)
    return np.exp(grid), np.polyval(coef, grid)


def isoflop_layers(points: pd.DataFrame, minima: list[dict], label=budget_label, prefix: str = "") -> tuple:
    """(runs, curves, minima frames) of an isoFLOP figure; `series` = prefix + budget label."""
    runs = pd.DataFrame(
        {
            "series": [prefix + label(b) for b in points["budget_flops"]],
            "run": points.get("run_id", pd.Series([""] * len(points))).astype(str).to_numpy(),
            "N": points["params"].to_numpy(float),
            "D": points["tokens"].to_numpy(float),
            "loss": points["loss"].to_numpy(float),
        }
    )
    curves = []
    for budget, part in points.groupby("budget_flops"):
        drawn = parabola(part["params"].to_numpy(float), part["loss"].to_numpy(float))
        if drawn is not None:
            curves.append(pd.DataFrame({"series": prefix + label(budget), "N": drawn[0], "loss": drawn[1]}))
    curve_frame = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=["series", "N", "loss"])
    mins = pd.DataFrame(
        {
            "series": [prefix + label(m["budget_flops"]) for m in minima],
            "run": ["parabola minimum"] * len(minima),
            "N": [m["params"] for m in minima],
            "D": [m["tokens"] for m in minima],
            "loss": [m["loss"] for m in minima],
        }
    )
    return runs, curve_frame, mins


def isoflop_spec(runs: pd.DataFrame, curves: pd.DataFrame, mins: pd.DataFrame, series: list[str]) -> dict:
    """Loss against N: runs (hover: run id, N, D, loss), each budget's parabola, the minima (stars)."""
    x, y = log_axis("N", "parameters N (non-embedding)"), log_axis("loss", "final validation loss", "linear")
    y["axis"] = {"format": ".3f"}
    layers = [
        {
            "data": {"name": "curves"},
            "transform": visible(),
            "mark": {"type": "line", "strokeWidth": 1.5},
            "encoding": {"x": x, "y": y, "color": color(series, "budget C")},
        },
        {
            "data": {"name": "runs"},
            "transform": visible(),
            "params": [ZOOM],
            "mark": {"type": "point", "filled": True, "size": 60, "opacity": 0.9},
            "encoding": {
                "x": x,
                "y": y,
                "color": color(series, "budget C"),
                "shape": {
                    "field": "series",
                    "type": "nominal",
                    "scale": {"domain": series, "range": [SHAPES[i % len(SHAPES)] for i in range(len(series))]},
                },
                "tooltip": TIP_RUN,
            },
        },
        {
            "data": {"name": "minima"},
            "transform": visible(),
            "mark": {
                "type": "point",
                "shape": STAR,
                "size": 260,
                "filled": True,
                "fill": "white",
                "stroke": "black",
                "strokeWidth": 1.2,
            },
            "encoding": {"x": x, "y": y, "tooltip": TIP_RUN},
        },
    ]
    return base({"runs": columns(runs), "curves": columns(curves), "minima": columns(mins)}, layers, series)


def thin_curves(runs: pd.DataFrame, metrics: pd.DataFrame, per_run: int = CURVE_POINTS) -> tuple:
    """(runs frame with index i, curve frame r/t/l): each run's training loss, a running mean, log-thinned;
    each run's points end with a null row, which breaks the line there (one path a budget, see curves_spec)."""
    table = runs.reset_index(drop=True)
    index = {rid: i for i, rid in enumerate(table["run_id"])}
    parts = []
    for rid, rows in metrics[metrics["loss"].notna()].groupby("run_id", sort=False):
        if rid not in index or not len(rows):
            continue
        loss = rows["loss"].rolling(max(1, len(rows) // 100), min_periods=1).mean().to_numpy(float)
        keep = np.unique(np.geomspace(1, len(rows), min(per_run, len(rows))).astype(int) - 1)
        part = pd.DataFrame({"r": index[rid], "t": rows["tokens"].to_numpy(float)[keep], "l": loss[keep]})
        part = part[np.isfinite(part["l"]) & (part["t"] > 0)]
        if len(part):
            parts += [part, pd.DataFrame({"r": [index[rid]], "t": [np.nan], "l": [np.nan]})]
    curves = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["r", "t", "l"])
    meta = pd.DataFrame(
        {
            "i": range(len(table)),
            "run": table["run_id"].astype(str),
            "series": [budget_label(b) if b == b else "no budget" for b in table["budget_flops"]],
            "N": table["params"].astype(float),
            "D": table["tokens"].astype(float),
            "loss": table["val_loss"].astype(float),
            "status": table["status"].astype(str),
        }
    )
    return meta, curves


def curves_spec(meta: pd.DataFrame, curves: pd.DataFrame) -> dict:
    """Training loss against tokens, coloured by budget; dots: final validation loss, or for a run without one
    its last logged point (hollow). Hover a dot for its run.

    A budget's runs are one path (their points in data order, broken by each run's null row): a line a run would
    make Vega build a sub-dataflow per run (a facet), which took most of a 500-run page's opening time."""
    series = sorted(meta["series"].unique(), key=lambda s: float(s.split()[0]) if s[0].isdigit() else math.inf)
    lookup = {"lookup": "r", "from": {"data": {"name": "runs"}, "key": "i", "fields": ["series"]}}
    x = log_axis("t", "tokens seen D")
    tail = curves["l"].astype(float).dropna()
    lo, hi = (float(np.nanquantile(tail, 0.01)), float(np.nanquantile(tail, 0.9))) if len(tail) else (0, 1)
    y = {
        "field": "l",
        "type": "quantitative",
        "title": "training loss (nats/token)",
        "scale": {"domain": [lo * 0.97, hi * 1.05], "clamp": True},
    }
    done = meta[np.isfinite(meta["loss"])]
    ends = curves.dropna().groupby("r").tail(1)
    ends = ends[~ends["r"].isin(done["i"])].merge(meta, left_on="r", right_on="i")
    ends = pd.DataFrame(
        {
            "series": ends["series"],
            "run": ends["run"],
            "N": ends["N"],
            "D": ends["t"],
            "loss": ends["l"],
            "status": ends["status"],
        }
    )
    tip = [*TIP_RUN[:3], {"field": "loss", "title": "last training loss", "format": ".4f"}, {"field": "status"}]
    dot = {"type": "point", "size": 30, "stroke": "black", "strokeWidth": 0.5}
    layers = [
        {
            "data": {"name": "curves"},
            "transform": visible(lookup),
            "params": [ZOOM],
            "mark": {"type": "line", "strokeWidth": 1, "opacity": 0.75},
            "encoding": {"x": x, "y": y, "color": color(series, "budget C"), "order": {"value": None}},
        },
        {
            "data": {"name": "final"},
            "transform": visible(),
            "mark": {**dot, "filled": True},
            "encoding": {
                "x": {**x, "field": "D"},
                "y": {**y, "field": "loss"},
                "color": color(series, "budget C"),
                "tooltip": TIP_RUN,
            },
        },
        {
            "data": {"name": "ends"},
            "transform": visible(),
            "mark": {**dot, "filled": False, "strokeWidth": 1.5},
            "encoding": {
                "x": {**x, "field": "D"},
                "y": {**y, "field": "loss"},
                "color": color(series, "budget C"),
                "tooltip": tip,
            },
        },
    ]
    final = done[["run", "series", "N", "D", "loss"]]
    data = {
        "runs": columns(meta[["i", "series"]]),
        "curves": columns(curves, 4),
        "final": columns(final),
        "ends": columns(ends),
    }
    return base(data, layers, series, 380)


def frontier_specs(iso: dict | None, par: dict | None, plan: dict | None, budgets: list[float]) -> list[dict]:
    """N*(C) and D*(C): minima, the isoFLOP power law and its 5-95% band, the parametric law, the plan."""

    c_max = max([*budgets, plan["compute_flops"] if plan else 0.0]) * 2.0
    grid = np.geomspace(min(budgets) / 2.0, c_max, 60)
    out = []
    for what, key, coef, exp in (("N*", "params", "G", "a"), ("D*", "tokens", "H", "b")):
        lines, bands, dots = [], [], []
        if iso:
            for m in iso["minima"]:
                dots.append(
                    {
                        "series": "isoFLOP minima",
                        "C": m["budget_flops"],
                        "v": m[key],
                        "run": budget_label(m["budget_flops"]),
                    }
                )
            label = f"isoFLOP law {coef} C^{exp} = {iso[coef]:.3g} C^{iso[exp]:.3f}"
            lines += [{"series": label, "C": c, "v": iso[coef] * c ** iso[exp]} for c in grid]
            band = draw_band(iso.get("draws"), (coef, exp), grid)
            if band is not None:
                bands += [
                    {"series": "isoFLOP law 5-95%", "C": c, "lo": lo, "hi": hi}
                    for c, lo, hi in zip(grid, *band, strict=True)
                ]
        if par:
            n_opt, d_opt = optimal_allocation(par, grid)
            lines += [
                {"series": "parametric law", "C": c, "v": v}
                for c, v in zip(grid, n_opt if key == "params" else d_opt, strict=True)
            ]
        if plan:
            dots.append(
                {"series": "plan", "C": plan["compute_flops"], "v": plan[key], "run": plan.get("name") or "plan"}
            )
        out.append(frontier_spec(what, key, pd.DataFrame(lines), pd.DataFrame(bands), pd.DataFrame(dots)))
    return out


def draw_band(draws: dict | None, keys: tuple[str, str], grid_c: np.ndarray) -> tuple | None:
    """5-95% band of coef C^exp over the finite bootstrap draws (None under 5 finite draws)."""
    if not draws or keys[0] not in draws:
        return None
    coef, exp = np.asarray(draws[keys[0]], float), np.asarray(draws[keys[1]], float)
    ok = np.isfinite(coef) & np.isfinite(exp) & (coef > 0)
    if ok.sum() < 5:
        return None
    values = np.log(coef[ok, None]) + exp[ok, None] * np.log(grid_c)[None, :]
    lo, hi = np.percentile(values, [5, 95], axis=0)
    return np.exp(lo), np.exp(hi)


def frontier_spec(what: str, key: str, lines: pd.DataFrame, bands: pd.DataFrame, dots: pd.DataFrame) -> dict:
    unit = "parameters (non-embedding)" if key == "params" else "training tokens"
    series = list(dict.fromkeys([*bands.get("series", []), *lines.get("series", []), *dots.get("series", [])]))
    x, y = log_axis("C", "compute C (FLOPs)", fmt=".0e"), log_axis("v", f"{what}: {unit}")
    tip = [
        {"field": "series"},
        {"field": "C", "format": ".3~s", "title": "C (FLOPs)"},
        {"field": "v", "format": ".4~s", "title": what},
    ]
    layers = [
        {
            "data": {"name": "bands"},
            "transform": visible(),
            "mark": {"type": "area", "opacity": 0.25},
            "encoding": {"x": x, "y": {**y, "field": "lo"}, "y2": {"field": "hi"}, "color": color(series)},
        },
        {
            "data": {"name": "lines"},
            "transform": visible(),
            "mark": {"type": "line", "strokeWidth": 1.8},
            "encoding": {"x": x, "y": y, "color": color(series), "strokeDash": {"field": "series", "legend": None}},
        },
        {
            "data": {"name": "dots"},
            "transform": visible(),
            "params": [ZOOM],
            "mark": {"type": "point", "filled": True, "size": 90, "stroke": "black", "strokeWidth": 0.8},
            "encoding": {"x": x, "y": y, "color": color(series), "tooltip": [{"field": "run", "title": "what"}, *tip]},
        },
    ]
    data = {
        "bands": columns(bands if len(bands) else pd.DataFrame(columns=["series", "C", "lo", "hi"])),
        "lines": columns(lines if len(lines) else pd.DataFrame(columns=["series", "C", "v"])),
        "dots": columns(dots if len(dots) else pd.DataFrame(columns=["series", "C", "v", "run"])),
    }
    spec = base(data, layers, series, 320)
    spec["config"]["legend"] = {"orient": "bottom", "columns": 2, "labelLimit": 300}
    return spec


def csv_text(frame: pd.DataFrame) -> str:
    """A frame as CSV text (for the page's download buttons)."""
    return frame.to_csv(index=False, float_format="%.6g")


def holdout_frames(target: pd.DataFrame, holdout: dict, law: dict | None, flagship: dict | None) -> dict:
    """The held-out figure's data: the budget's runs, the law along C = 6ND, the predicted and observed points,
    the N* rules and the flagship's 90% interval (frames with a `series` column each)."""

    budget, best = float(holdout["budget_flops"]), holdout["observed"]["best_run"]
    n = target["params"].to_numpy(float)
    ids = target["run_id"].astype(str).to_numpy() if "run_id" in target else [best.get("run_id", "best run")] * len(n)
    runs = pd.DataFrame(
        {
            "series": f"runs at {budget:.3g} FLOPs (observed)",
            "run": ids,
            "N": n,
            "D": budget / (6 * n),
            "loss": target["loss"].to_numpy(float),
        }
    )
    span = [*n, *([flagship["params"]] if flagship else [])]
    grid = np.geomspace(min(span) / 1.5, max(span) * 1.5, 80)
    line = pd.DataFrame(columns=["series", "N", "D", "loss"])
    if law:
        d_grid = budget / (6 * grid)
        line = pd.DataFrame(
            {
                "series": "law fitted without this budget (along C = 6ND)",
                "N": grid,
                "D": d_grid,
                "loss": predict_loss(law, grid, d_grid),
            }
        )
    marks, rules, bars = [], [], []
    pred = holdout.get("parametric") or {}
    if "loss_pred" in pred:
        marks.append(
            {
                "series": "predicted best loss",
                "run": "law's prediction at the best run's N, D",
                "N": best["params"],
                "D": budget / (6 * best["params"]),
                "loss": pred["loss_pred"],
            }
        )
    rules.append({"series": "observed N*", "N": holdout["observed"]["N_opt"]})
    for method in ("parametric", "isoflop"):
        n_pred = (holdout.get(method) or {}).get("N_opt_pred")
        if n_pred:
            rules.append({"series": f"predicted N* ({method})", "N": n_pred})
    if flagship:
        lo, hi = flagship["interval"]
        marks.append(
            {
                "series": "flagship",
                "run": "flagship",
                "N": flagship["params"],
                "D": flagship.get("tokens"),
                "loss": flagship["val_loss"],
            }
        )
        bars.append({"series": "flagship", "N": flagship["params"] * 1.04, "lo": lo, "hi": hi})  # its 90% interval
    return {
        "runs": runs,
        "law": line,
        "marks": pd.DataFrame(marks, columns=["series", "run", "N", "D", "loss"]),
        "rules": pd.DataFrame(rules, columns=["series", "N"]),
        "interval": pd.DataFrame(bars, columns=["series", "N", "lo", "hi"]),
    }


def holdout_spec(frames: dict) -> dict:
    """Loss against N at the held-out budget: its runs (hover: run id, N, D, loss), the law fitted without it,
    the predicted best loss (diamond), observed and predicted N* (rules), the flagship (star) and its interval."""
    series = list(dict.fromkeys(s for f in frames.values() for s in f["series"]))
    x = log_axis("N", "parameters N (non-embedding)")
    y = log_axis("loss", "final validation loss (nats/token)", "linear")
    y["axis"] = {"format": ".3f"}
    tip = [*TIP_RUN[:4], {"field": "series", "title": "what"}]
    hue = color(series, "held-out check")
    shapes = {"predicted best loss": "diamond", "flagship": STAR}
    layers = [
        {
            "data": {"name": "rules"},
            "transform": visible(),
            "mark": {"type": "rule", "strokeWidth": 1.4},
            "encoding": {
                "x": x,
                "color": hue,
                "strokeDash": {"field": "series", "legend": None},
                "tooltip": [{"field": "series", "title": "what"}, tip[1]],
            },
        },
        {
            "data": {"name": "law"},
            "transform": visible(),
            "mark": {"type": "line", "strokeWidth": 1.8, "strokeDash": [6, 3]},
            "encoding": {"x": x, "y": y, "color": hue},
        },
        {
            "data": {"name": "interval"},
            "transform": visible(),
            "mark": {"type": "rule", "strokeWidth": 2},
            "encoding": {
                "x": x,
                "y": {**y, "field": "lo"},
                "y2": {"field": "hi"},
                "color": hue,
                "tooltip": [
                    {"field": "lo", "format": ".4f", "title": "90% interval from"},
                    {"field": "hi", "format": ".4f", "title": "to"},
                ],
            },
        },
        {
            "data": {"name": "runs"},
            "transform": visible(),
            "params": [ZOOM],
            "mark": {"type": "point", "filled": True, "size": 70, "stroke": "black", "strokeWidth": 0.6},
            "encoding": {"x": x, "y": y, "color": hue, "tooltip": tip},
        },
        *[
            {
                "data": {"name": "marks"},
                "transform": visible({"filter": f"datum.series === '{name}'"}),
                "mark": {
                    "type": "point",
                    "shape": shape,
                    "size": 220 if name == "flagship" else 120,
                    "filled": False,
                    "fill": "white",
                    "strokeWidth": 2,
                },
                "encoding": {"x": x, "y": y, "color": hue, "tooltip": tip},
            }
            for name, shape in shapes.items()
        ],
    ]
    spec = base({k: columns(v) for k, v in frames.items()}, layers, series, 340)
    spec["config"]["legend"] = {"orient": "bottom", "columns": 2, "labelLimit": 360}
    return spec
