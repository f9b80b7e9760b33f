"""The loss frontier (loss against compute, log-log) and Chinchilla approach 1's envelope, as interactive figures.

Loss frontier: the fitted isoFLOP minima (each in its budget's colour and shape), the compute-optimal loss law
L*(C) of the fit record with its 5-95% band over the law's bootstrap draws, extended to the target (the plan's
budget, else 1000x the largest fitted budget), the held-out budget's observed minimum with its interval drawn
apart (a hollow square) next to the prediction made without it, the parametric law's L*(C), and the plan's
predicted loss at the target. The law and its band are read through workbench.fit.frontier.predict_at, so a
change of the law's form or of its intervals in the fit record shows here without an edit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workbench.fit import frontier
from workbench.fit.laws import isoflop_allocation, optimal_loss
from workbench.report import interactive as vl
from workbench.report.style import COUNT_FORMAT, FLOPS_FORMAT, LOSS_FORMAT, PALETTE, budget_label

GRID = 80


def target_flops(fit: dict, plan: dict | None) -> float:
    """The budget a report extrapolates to: the plan's, else 1000x the largest fitted budget."""
    if plan:
        return float(plan["compute_flops"])
    return 1000.0 * max(float(b) for b in fit["points"]["budget_flops"])


def _held(fit: dict) -> dict | None:
    held = fit.get("holdout")
    return held if held and held.get("observed", {}).get("loss_opt") is not None else None


def loss_frames(fit: dict, plan: dict | None) -> tuple[dict, list[dict]]:
    """(frames, legend keys) of the loss frontier."""
    iso, held = fit.get("isoflop") or {}, _held(fit)
    fitted = sorted({float(b) for b in fit["points"]["budget_flops"]})
    target = target_flops(fit, plan)
    c_hi = max(target, *(fitted or [1.0])) * 1.5
    grid = np.geomspace(min(fitted) / 1.5, c_hi, GRID)
    held_c = float(held["budget_flops"]) if held else None
    dots, lines, bands, bars, keys = [], [], [], [], []
    for m in iso.get("minima") or []:
        if held_c is None or not np.isclose(m["budget_flops"], held_c, rtol=1e-6):
            dots.append(
                {
                    "series": "fitted minima",
                    "C": m["budget_flops"],
                    "v": m["loss"],
                    "run": budget_label(m["budget_flops"]),
                }
            )
    if dots:
        keys.append(vl.key("fitted minima", "#444444", "point", "circle", "isoFLOP minima fitted (budget colours)"))
    law = iso.get("loss_law")
    if law:
        at = [frontier.predict_at(law, c) for c in grid]
        lines += [{"series": "L*(C) law", "C": c, "v": a["loss_pred"]} for c, a in zip(grid, at, strict=True)]
        bands += [
            {"series": "L*(C) law 5-95%", "C": c, "lo": a["law_interval"][0], "hi": a["law_interval"][1]}
            for c, a in zip(grid, at, strict=True)
            if a["law_interval"]
        ]
        if bands:
            keys.append(vl.key("L*(C) law 5-95%", PALETTE[0], "area"))
        keys.append(
            vl.key("L*(C) law", PALETTE[0], "line", label=f"L*(C) law on the minima (gamma {law['gamma']:.3f})")
        )
    if fit.get("parametric"):
        values = optimal_loss(fit["parametric"], grid)
        lines += [{"series": "parametric L*(C)", "C": c, "v": v} for c, v in zip(grid, values, strict=True)]
        keys.append(vl.key("parametric L*(C)", PALETTE[1], "dash"))
    if held:
        obs = held["observed"]
        lo, hi = obs.get("loss_opt_interval") or [obs["loss_opt"], obs["loss_opt"]]
        dots.append({"series": "held-out minimum (observed)", "C": held_c, "v": obs["loss_opt"], "run": "held out"})
        bars.append({"series": "held-out minimum (observed)", "C": held_c, "lo": lo, "hi": hi})
        keys.append(
            vl.key("held-out minimum (observed)", PALETTE[5], "point", "square", "held-out budget: observed minimum")
        )
        pred = (held.get("loss_law") or {}).get("loss") or (held.get("parametric") or {}).get("loss")
        if pred:
            name = "prediction without it"
            dots.append({"series": name, "C": held_c * 1.08, "v": pred["pred"], "run": "predicted"})
            if pred.get("pred_interval"):
                p_lo, p_hi = pred["pred_interval"]
                bars.append({"series": name, "C": held_c * 1.08, "lo": p_lo, "hi": p_hi})
            keys.append(vl.key(name, PALETTE[3], "point", "diamond", "held-out budget: predicted without it"))
    if plan and plan.get("loss") is not None:
        ci = (plan.get("ci") or {}).get("loss")
        dots.append({"series": "plan", "C": target, "v": plan["loss"], "run": plan.get("name") or "plan"})
        if ci:
            bars.append({"series": "plan", "C": target, "lo": ci["p5"], "hi": ci["p95"]})
        keys.append(vl.key("plan", "#000000", "point", "star", "plan: predicted loss at the target"))
    frames = {
        "dots": pd.DataFrame(dots, columns=["series", "C", "v", "run"]),
        "lines": pd.DataFrame(lines, columns=["series", "C", "v"]),
        "bands": pd.DataFrame(bands, columns=["series", "C", "lo", "hi"]),
        "bars": pd.DataFrame(bars, columns=["series", "C", "lo", "hi"]),
        "rules": pd.DataFrame(
            [{"series": "target", "C": target, "label": f"target {target:.3g} FLOPs"}], columns=["series", "C", "label"]
        ),
        "range": pd.DataFrame([{"series": "fitted", "C": min(fitted), "C2": max(fitted)}]),
    }
    return frames, keys


SHAPES = {"square": "square", "diamond": "diamond", "star": vl.STAR, "circle": "circle"}


def loss_spec(frames: dict, keys: list[dict], scale) -> dict:
    series = [k["value"] for k in keys]
    colours = [k["colour"] for k in keys]
    x = vl.axis("C", "compute C (FLOPs)", fmt=FLOPS_FORMAT)
    y = vl.axis("v", "compute-optimal loss L* (nats/token)", fmt=LOSS_FORMAT)
    y["scale"]["nice"] = False
    y["scale"]["padding"] = 12
    hue = {**vl.color(series + scale.labels, colours + scale.colours), "field": "hue"}
    dash = [[6, 3] if k["mark"] == "dash" else [1, 0] for k in keys]
    tip = [
        {"field": "series", "title": "what"},
        {"field": "run", "title": "which"},
        {"field": "C", "title": "C (FLOPs)", "format": FLOPS_FORMAT},
        {"field": "v", "title": "loss (nats/token)", "format": LOSS_FORMAT},
    ]
    layers = [
        {
            "data": {"name": "range"},
            "mark": {"type": "rect", "color": "#888888", "opacity": 0.1},
            "encoding": {"x": {**x, "field": "C"}, "x2": {"field": "C2"}},
        },
        {
            "data": {"name": "rules"},
            "mark": {"type": "rule", "strokeDash": [2, 3], "color": "#000000"},
            "encoding": {"x": x, "tooltip": [{"field": "label", "title": "target"}]},
        },
        {
            "data": {"name": "bands"},
            "transform": vl.visible(vl.HUE),
            "mark": {"type": "area", "opacity": 0.22},
            "encoding": {"x": x, "y": {**y, "field": "lo"}, "y2": {"field": "hi"}, "color": hue},
        },
        {
            "data": {"name": "lines"},
            "transform": vl.visible(vl.HUE),
            "mark": {"type": "line", "strokeWidth": 1.8},
            "encoding": {
                "x": x,
                "y": y,
                "color": hue,
                "strokeDash": {"field": "series", "scale": {"domain": series, "range": dash}, "legend": None},
            },
        },
        {
            "data": {"name": "bars"},
            "transform": vl.visible(vl.HUE),
            "mark": {"type": "rule", "strokeWidth": 2},
            "encoding": {"x": x, "y": {**y, "field": "lo"}, "y2": {"field": "hi"}, "color": hue},
        },
        {
            "data": {"name": "dots"},
            "transform": vl.visible(vl.HUE),
            "params": [vl.ZOOM],
            "mark": {"type": "point", "filled": True, "size": 110, "stroke": "black", "strokeWidth": 0.8},
            "encoding": {
                "x": x,
                "y": y,
                "color": hue,
                "shape": {
                    "field": "shape",
                    "type": "nominal",
                    "scale": {
                        "domain": series + scale.labels,
                        "range": [SHAPES[k["shape"]] for k in keys] + scale.shapes,
                    },
                    "legend": None,
                },
                "tooltip": tip,
            },
        },
    ]
    layers[-1]["transform"].insert(1, {"calculate": "datum.hue", "as": "shape"})
    data = {k: vl.columns(v) for k, v in frames.items()}
    return vl.base(data, layers, series, 340)


def loss_chart(fit: dict, plan: dict | None, scale) -> dict | None:
    """The loss-frontier figure, or None when the fit has neither an L*(C) law nor a parametric law."""
    if not ((fit.get("isoflop") or {}).get("loss_law") or fit.get("parametric")) or not fit.get("points"):
        return None
    frames, keys = loss_frames(fit, plan)
    target = frames["rules"]["C"].iloc[0]
    return vl.chart(
        "frontier-loss",
        "Loss against compute",
        "Compute-optimal loss against compute on log axes: the fitted isoFLOP minima, the L*(C) law with its "
        "5-95% band extended to the target, the held-out budget's observed minimum apart from them, the plan.",
        f"L*(C): the isoFLOP minima the law was fitted on (budget colours), the law and its 5-95% band over its "
        f"bootstrap draws to the target ({target:.3g} FLOPs, dotted), the held-out budget's observed minimum "
        "(square, with its interval) beside the law's prediction made without it (diamond), the parametric "
        "law (dashed) and the plan's predicted loss (star). Shaded: the fitted budgets.",
        loss_spec(frames, keys, scale),
        "dots",
        legend=keys,
        legend_title="loss frontier",
    )


def envelope_chart(fit: dict, scale) -> dict | None:
    """Approach 1: N* of each compute's best run (the envelope of the loss curves), its power law and band,
    against the isoFLOP law; None when the fit has no envelope."""
    env = fit.get("envelope")
    if not env or not env.get("grid"):
        return None
    grid_c = np.asarray([g[0] for g in env["grid"]], float)
    cs = np.geomspace(grid_c.min() / 1.5, grid_c.max() * 1.5, 40)
    dots = [{"series": "envelope points", "C": c, "v": n, "run": "best run at this compute"} for c, n in env["grid"]]
    label = f"approach 1 law N* = {env['G']:.3g} C^{env['a']:.3f}"
    lines = [{"series": label, "C": c, "v": env["G"] * c ** env["a"]} for c in cs]
    keys = [vl.key("envelope points", PALETTE[2], "point", "circle", "best run at each compute")]
    band = vl.draw_band(env.get("draws"), ("G", "a"), cs)
    bands = []
    if band is not None:
        bands = [
            {"series": "approach 1, 5-95%", "C": c, "lo": lo, "hi": hi} for c, lo, hi in zip(cs, *band, strict=True)
        ]
        keys.append(vl.key("approach 1, 5-95%", PALETTE[2], "area"))
    keys.append(vl.key(label, PALETTE[2], "line"))
    iso = fit.get("isoflop") or {}
    if iso.get("G") is not None:
        lines += [{"series": "isoFLOP law (approach 2)", "C": c, "v": float(isoflop_allocation(iso, c)[0])} for c in cs]
        keys.append(vl.key("isoFLOP law (approach 2)", PALETTE[0], "dash"))
    spec = vl.frontier_spec("N*", "params", pd.DataFrame(lines), pd.DataFrame(bands), pd.DataFrame(dots), keys)
    return vl.chart(
        "envelope",
        "Approach 1: the envelope of the training curves",
        "Compute-optimal N* from the envelope of the runs' loss curves (Chinchilla approach 1) against compute, "
        "with its power law and 5-95% band, and the isoFLOP law for comparison.",
        f"Approach 1 on {env.get('n_runs', '?')} runs' curves: at each compute the size of the run with the lowest "
        "loss (dots, interior sizes only), the power law fitted to them with its 5-95% band, and the isoFLOP law "
        "(approach 2, dashed). Mid-schedule points of cosine runs bias approach 1 towards larger models.",
        spec,
        "dots",
        legend=keys,
        legend_title="approach 1",
    )


__all__ = ["loss_chart", "envelope_chart", "target_flops", "COUNT_FORMAT"]
