"""Interactive figures: Vega-Lite specs (plain dicts) drawn in the page by the Vega bundle inlined from vl-convert.

Why Vega-Lite: its JavaScript (vega + vega-lite + vega-embed with vega-tooltip, 0.9 MB minified) ships inside
the vl-convert-python wheel (`vl_convert.javascript_bundle()`), so the page inlines it and fetches nothing;
it draws SVG (crisp, printable, testable through the DOM), shows tooltips, zooms by binding scales to an
interval selection, and exports any view as SVG or PNG through its public API (`view.toSVG()`,
`view.toCanvas()`). Bokeh's inline bundle is 1.3 MB and draws on canvas; plotly's is 3.5 MB+.

Data travel columnar ({"columns": {name: [values]}}) and are expanded to rows by the page script: a
500-run report's training curves stay a few hundred KB. Every chart has a variable param `hidden` (the
series a reader has hidden) and filters its layers on it. Legends are HTML, not Vega's: a row of buttons
under the chart (`chart(legend=...)`) that wraps instead of clipping, never covers the data, and is
reachable by keyboard; a pressed-off button greys and hides its series. Colours and shapes of budgets
come from workbench.report.style, the same as the static figures'.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd

from workbench.fit.laws import optimal_allocation, predict_loss
from workbench.report.inline import script_code, script_json
from workbench.report.style import COUNT_FORMAT, FLOPS_FORMAT, LOSS_FORMAT, PALETTE, budget_label

STAR = "M0,-1L0.29,-0.4L0.95,-0.31L0.47,0.15L0.59,0.81L0,0.5L-0.59,0.81L-0.47,0.15L-0.95,-0.31L-0.29,-0.4Z"


@functools.lru_cache(maxsize=1)
def vega_bundle() -> str:
    """vega, vega-lite and vega-embed as one classic script (sets window.vegaEmbed), safe inside <script>."""
    import vl_convert

    return str(script_code(vl_convert.javascript_bundle()))


def palette(n: int) -> list[str]:
    """n colour-blind-safe colours for series that are not budgets (Okabe-Ito, repeated past 8)."""
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def key(value: str, colour: str, mark: str = "point", shape: str = "circle", label: str | None = None) -> dict:
    """One HTML legend entry: the series `value` it toggles, its swatch (mark: point, line, dash, area, rule)."""
    return {"value": value, "label": label or value, "colour": colour, "mark": mark, "shape": shape}


def columns(frame: pd.DataFrame, digits: int = 5) -> dict:
    """A frame as columnar JSON: floats to `digits` significant digits, NaN as null."""
    out = {}
    for name in frame.columns:
        values = frame[name].tolist()
        if pd.api.types.is_float_dtype(frame[name]):
            values = [None if v is None or not math.isfinite(v) else float(f"{v:.{digits}g}") for v in values]
        out[str(name)] = values
    return {"columns": out}


def chart(
    cid: str,
    title: str,
    alt: str,
    caption: str,
    spec: dict,
    csv: str | None = None,
    legend: list[dict] | None = None,
    legend_title: str = "",
    controls: list[dict] | None = None,
) -> dict:
    """One interactive figure for the template: `csv` names the dataset its CSV button exports, `legend` its
    HTML legend entries (workbench.report.interactive.key), `controls` its form controls (curves)."""
    spec = {"description": alt, **spec}  # Vega puts it on the SVG as its aria-label
    return {
        "id": cid,
        "title": title,
        "alt": alt,
        "caption": caption,
        "spec": spec,
        "csv": csv,
        "legend": legend or [],
        "legend_title": legend_title,
        "controls": controls or [],
    }


def spec_json(spec: dict) -> str:
    """The spec as JSON safe inside a <script type="application/json"> element (workbench.report.inline)."""
    return str(script_json(spec))


def base(datasets: dict, layers: list[dict], series: list[str], height: int = 340) -> dict:
    """A layered chart with the `hidden` param (the series whose HTML legend button is off); Vega's own
    legends are off (the page draws HTML ones)."""
    return {
        "width": "container",
        "height": height,
        "autosize": {"type": "fit-x", "contains": "padding"},
        "datasets": datasets,
        "params": [{"name": "hidden", "value": []}],
        "layer": layers,
        "config": {
            "font": "DejaVu Sans",
            "customFormatTypes": True,  # COUNT_FORMAT: counts as 350M, 8.03B (the page registers it)
            "legend": {"disable": True},
            "axis": {"labelFontSize": 11, "titleFontSize": 12},
            "view": {"stroke": "#d6d6d6"},
        },
        "usermeta": {"series": series},
    }


def color(series: list[str], colours: list[str] | None = None) -> dict:
    """Colour by `series` with a fixed domain (a hidden series keeps its colour); no Vega legend."""
    return {
        "field": "series",
        "type": "nominal",
        "scale": {"domain": series, "range": colours or palette(len(series))},
        "legend": None,
    }


def shape(series: list[str], shapes: list[str]) -> dict:
    return {"field": "series", "type": "nominal", "scale": {"domain": series, "range": shapes}, "legend": None}


def visible(*extra: dict) -> list[dict]:
    """The transform every layer starts with: drop the hidden series."""
    return [*extra, {"filter": "indexof(hidden, datum.series) < 0"}]


def axis(field: str, title: str, kind: str = "log", fmt: str | None = None) -> dict:
    """A quantitative axis: log or linear (not from zero); fmt COUNT_FORMAT, FLOPS_FORMAT or LOSS_FORMAT."""
    scale = {"type": "log"} if kind == "log" else {"zero": False}
    out = {"field": field, "type": "quantitative", "title": title, "scale": scale}
    if fmt == COUNT_FORMAT:  # on a log axis only the 1-2-5 ticks get a label (as d3's log tickFormat does)
        out["axis"] = {"labelExpr": f"{COUNT_FORMAT}(datum.value, '{kind}')"}
    elif fmt:
        out["axis"] = {"format": fmt}
    return out


def count_tip(field: str, title: str) -> dict:
    return {"field": field, "title": title, "formatType": COUNT_FORMAT}


ZOOM = {"name": "zoom", "select": {"type": "interval", "encodings": ["x", "y"]}, "bind": "scales"}
TIP_RUN = [
    {"field": "run", "title": "run"},
    count_tip("N", "N (params)"),
    count_tip("D", "D (tokens)"),
    {"field": "loss", "title": "loss (nats/token)", "format": LOSS_FORMAT},
    {"field": "series", "title": "budget"},
]


def budget_keys(scale, budgets) -> list[dict]:
    """HTML legend entries of `budgets` in the report's budget scale (workbench.report.style)."""
    return [key(budget_label(b), scale.colour(b), "point", scale.shape(b), f"{b:.3g}") for b in budgets]


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


def isoflop_spec(
    runs: pd.DataFrame, curves: pd.DataFrame, mins: pd.DataFrame, series: list[str], colours: list[str], shapes
) -> dict:
    """Loss against N: runs (hover: run id, N, D, loss), each budget's parabola, the minima (stars)."""
    x = axis("N", "parameters N (non-embedding)", fmt=COUNT_FORMAT)
    y = axis("loss", "final validation loss (nats/token)", "linear", LOSS_FORMAT)
    hue = color(series, colours)
    layers = [
        {
            "data": {"name": "curves"},
            "transform": visible(),
            "mark": {"type": "line", "strokeWidth": 1.5},
            "encoding": {"x": x, "y": y, "color": hue},
        },
        {
            "data": {"name": "runs"},
            "transform": visible(),
            "params": [ZOOM],
            "mark": {"type": "point", "filled": True, "size": 60, "opacity": 0.9},
            "encoding": {"x": x, "y": y, "color": hue, "shape": shape(series, shapes), "tooltip": TIP_RUN},
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


def draw_band(draws: dict | None, keys: tuple[str, str], grid_c: np.ndarray) -> tuple | None:
    """5-95% band of coef C^exp over the finite bootstrap draws (None under 5 finite draws)."""
    if not draws or keys[0] not in draws:
        return None
    coef = np.asarray([np.nan if v is None else v for v in draws[keys[0]]], float)
    exp = np.asarray([np.nan if v is None else v for v in draws[keys[1]]], float)
    ok = np.isfinite(coef) & np.isfinite(exp) & (coef > 0)
    if ok.sum() < 5:
        return None
    values = np.log(coef[ok, None]) + exp[ok, None] * np.log(grid_c)[None, :]
    lo, hi = np.percentile(values, [5, 95], axis=0)
    return np.exp(lo), np.exp(hi)


def frontier_specs(
    iso: dict | None, par: dict | None, plan: dict | None, budgets: list[float], scale
) -> list[tuple[dict, list[dict]]]:
    """[(spec, legend)] of N*(C) and D*(C): the minima (in their budget's colour), the isoFLOP power law and
    its 5-95% band, the parametric law, the plan."""

    c_max = max([*budgets, plan["compute_flops"] if plan else 0.0]) * 2.0
    grid = np.geomspace(min(budgets) / 2.0, c_max, 60)
    out = []
    for what, field, coef, exp in (("N*", "params", "G", "a"), ("D*", "tokens", "H", "b")):
        lines, bands, dots, keys = [], [], [], []
        if iso:
            dots += [
                {
                    "series": "isoFLOP minima",
                    "C": m["budget_flops"],
                    "v": m[field],
                    "run": budget_label(m["budget_flops"]),
                }
                for m in iso["minima"]
            ]
            keys.append(key("isoFLOP minima", "#444444", "point", "circle", "isoFLOP minima (budget colours)"))
            if iso.get(coef) is not None:
                label = f"isoFLOP law {what} = {iso[coef]:.3g} C^{iso[exp]:.3f}"
                lines += [{"series": label, "C": c, "v": iso[coef] * c ** iso[exp]} for c in grid]
                band = draw_band(iso.get("draws"), (coef, exp), grid)
                if band is not None:
                    bands += [
                        {"series": "isoFLOP law 5-95%", "C": c, "lo": lo, "hi": hi}
                        for c, lo, hi in zip(grid, *band, strict=True)
                    ]
                    keys.append(key("isoFLOP law 5-95%", PALETTE[0], "area"))
                keys.append(key(label, PALETTE[0], "line"))
        if par:
            n_opt, d_opt = optimal_allocation(par, grid)
            lines += [
                {"series": "parametric law", "C": c, "v": v}
                for c, v in zip(grid, n_opt if field == "params" else d_opt, strict=True)
            ]
            keys.append(key("parametric law", PALETTE[1], "dash"))
        if plan:
            dots.append(
                {"series": "plan", "C": plan["compute_flops"], "v": plan[field], "run": plan.get("name") or "plan"}
            )
            keys.append(key("plan", "#000000", "point", "diamond"))
        spec = frontier_spec(what, field, pd.DataFrame(lines), pd.DataFrame(bands), pd.DataFrame(dots), keys, scale)
        out.append((spec, keys))
    return out


HUE = {
    "calculate": "datum.series === 'isoFLOP minima' || datum.series === 'fitted minima' ? datum.run : datum.series",
    "as": "hue",
}


def frontier_spec(
    what: str, field: str, lines: pd.DataFrame, bands: pd.DataFrame, dots: pd.DataFrame, keys: list[dict], scale=None
) -> dict:
    """N* or D* against compute: bands, lines (dashed parametric), dots; the minima in their budget's colour
    when `scale` is given (then `run` holds the budget label), else in their legend colour."""
    unit = "parameters (non-embedding)" if field == "params" else "training tokens"
    series = [k["value"] for k in keys]
    colours = [k["colour"] for k in keys]
    x = axis("C", "compute C (FLOPs)", fmt=FLOPS_FORMAT)
    y = axis("v", f"{what}: {unit}", fmt=COUNT_FORMAT)
    tip = [
        {"field": "series", "title": "what"},
        {"field": "C", "format": FLOPS_FORMAT, "title": "C (FLOPs)"},
        count_tip("v", what),
    ]
    dash = {
        "field": "series",
        "type": "nominal",
        "scale": {"domain": series, "range": [[6, 3] if k["mark"] == "dash" else [1, 0] for k in keys]},
        "legend": None,
    }
    hue = color(series, colours)
    if scale is not None:  # the minima in their budget's colour: one scale of series and budget labels
        hue = color(series + scale.labels, colours + scale.colours)
        hue["field"] = "hue"
    layers = [
        {
            "data": {"name": "bands"},
            "transform": visible(HUE),
            "mark": {"type": "area", "opacity": 0.22},
            "encoding": {"x": x, "y": {**y, "field": "lo"}, "y2": {"field": "hi"}, "color": hue},
        },
        {
            "data": {"name": "lines"},
            "transform": visible(HUE),
            "mark": {"type": "line", "strokeWidth": 1.8},
            "encoding": {"x": x, "y": y, "color": hue, "strokeDash": dash},
        },
        {
            "data": {"name": "dots"},
            "transform": visible(HUE),
            "params": [ZOOM],
            "mark": {"type": "point", "filled": True, "size": 90, "stroke": "black", "strokeWidth": 0.8},
            "encoding": {
                "x": x,
                "y": y,
                "color": hue,
                "shape": {
                    "field": "series",
                    "type": "nominal",
                    "scale": {"domain": series, "range": [k["shape"] for k in keys]},
                    "legend": None,
                },
                "tooltip": [{"field": "run", "title": "which"}, *tip],
            },
        },
    ]
    data = {
        "bands": columns(bands if len(bands) else pd.DataFrame(columns=["series", "C", "lo", "hi"])),
        "lines": columns(lines if len(lines) else pd.DataFrame(columns=["series", "C", "v"])),
        "dots": columns(dots if len(dots) else pd.DataFrame(columns=["series", "C", "v", "run"])),
    }
    return base(data, layers, series, 320)


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


HOLDOUT_MARKS = {"predicted best loss": ("diamond", 120), "flagship": (STAR, 220)}


def holdout_keys(frames: dict, budget_colour: str) -> list[dict]:
    """The held-out figure's legend: its runs in their budget's colour, the law, rules and marks."""
    colours = iter(PALETTE[1:])
    keys = []
    for name, frame in frames.items():
        for series in dict.fromkeys(frame["series"]):
            if name == "runs":
                keys.append(key(series, budget_colour, "point", "circle"))
            elif name == "rules":
                keys.append(key(series, next(colours), "dash" if series.startswith("predicted") else "rule"))
            elif name == "law":
                keys.append(key(series, next(colours), "dash"))
            elif name == "interval":
                continue  # drawn in the flagship's colour, toggled with it
            else:
                mark = HOLDOUT_MARKS.get(series, ("circle", 0))[0]
                keys.append(key(series, next(colours), "point", "diamond" if mark == "diamond" else "star"))
    return keys


def holdout_spec(frames: dict, keys: list[dict]) -> dict:
    """Loss against N at the held-out budget: its runs (hover: run id, N, D, loss), the law fitted without it,
    the predicted best loss (diamond), observed and predicted N* (rules), the flagship (star) and its interval."""
    series = [k["value"] for k in keys]
    x = axis("N", "parameters N (non-embedding)", fmt=COUNT_FORMAT)
    y = axis("loss", "final validation loss (nats/token)", "linear", LOSS_FORMAT)
    tip = [*TIP_RUN[:4], {"field": "series", "title": "what"}]
    hue = color(series, [k["colour"] for k in keys])
    dashes = [[6, 3] if k["mark"] == "dash" else [1, 0] for k in keys]
    layers = [
        {
            "data": {"name": "rules"},
            "transform": visible(),
            "mark": {"type": "rule", "strokeWidth": 1.4},
            "encoding": {
                "x": x,
                "color": hue,
                "strokeDash": {"field": "series", "scale": {"domain": series, "range": dashes}, "legend": None},
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
                    {"field": "lo", "format": LOSS_FORMAT, "title": "90% interval from"},
                    {"field": "hi", "format": LOSS_FORMAT, "title": "to"},
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
                "transform": visible({"filter": {"field": "series", "equal": name}}),
                "mark": {
                    "type": "point",
                    "shape": mark,
                    "size": size,
                    "filled": False,
                    "fill": "white",
                    "strokeWidth": 2,
                },
                "encoding": {"x": x, "y": y, "color": hue, "tooltip": tip},
            }
            for name, (mark, size) in HOLDOUT_MARKS.items()
        ],
    ]
    return base({k: columns(v) for k, v in frames.items()}, layers, series, 340)
