"""The decision panel at the top of a report and its compute slider.

The panel answers what a researcher decides from, each item linking to the section that backs it: the
compute-optimal N* and D* with intervals, the planned shape and why it differs from N* (the size rule's
ladder, the trainer's FLOPs per token, inference-aware or data-constrained sizing), the predicted loss with
its interval, the held-out result (pass when the observed value lies inside the predicted interval), the
cross-method agreement flag and the flagship's layout, days and GPU-hours.

The slider's table is computed here, in Python, with the plan's own functions (workbench.fit.laws'
law_from_fit and workbench.plan.planner's intervals and inference_optimal, the data-constrained law of
workbench.plan.data_constrained) on a log grid of budgets, 100 a decade, from the smallest fitted budget to
100x past the target; the page interpolates it log-linearly. No law is re-implemented in JavaScript, so the
slider agrees with `workbench plan --law fits/NAME.json` at any budget (to the table's 5 significant digits).
"""

from __future__ import annotations

import math

import numpy as np

from workbench.core.units import human
from workbench.fit import frontier
from workbench.fit.laws import isoflop_allocation, isoflop_law, law_from_fit
from workbench.model.shapes import ladder
from workbench.plan.data_constrained import DataConstrainedLaw
from workbench.plan.planner import inference_optimal, intervals
from workbench.plan.record import plan_sentence
from workbench.records import parse_fit
from workbench.report.inline import script_json
from workbench.report.inputs import ReportInputs
from workbench.report.loss_frontier import target_flops

PER_DECADE = 100
PAST_TARGET = 100.0


def _span(ci: dict | None, key: str, fmt) -> str:
    i = (ci or {}).get(key)
    return f" [{fmt(i['p5'])}, {fmt(i['p95'])}]" if i else ""


def _pct(x: float) -> str:
    return f"{x:+.0%}"


def shape_reason(plan: dict) -> str:
    """Why the planned shape's N and D differ from N* and D*, in words, from the plan record."""
    s, n_opt, d_opt = plan["shape"], plan["params"], plan["tokens"]
    d_n, d_d = s["params"] / n_opt - 1, s["tokens"] / d_opt - 1
    ci = plan.get("ci") or {}
    where = []
    for what, value, key in (("N", s["params"], "params"), ("D", s["tokens"], "tokens")):
        i = ci.get(key)
        if i:
            where.append(f"{what} {'inside' if i['p5'] <= value <= i['p95'] else 'outside'} its interval")
    head = f"The shape's N is {_pct(d_n)} and its D {_pct(d_d)} from N* and D*" + (
        f" ({', '.join(where)})" if where else ""
    )
    if plan.get("inference"):
        inf = plan["inference"]
        return head + (
            f": sized for {human(inf['inference_tokens'])} inference tokens (Sardana et al. 2023): a smaller model "
            "trained longer reaches the compute-optimal loss and costs less to serve."
        )
    if plan.get("data_constrained"):
        dc = plan["data_constrained"]
        return head + (
            f": data-constrained, {dc['epochs']:.2f} epochs of {human(dc['unique_tokens'])} unique tokens "
            "(Muennighoff et al. 2023) move compute from tokens to parameters."
        )
    seq = s.get("seq_len") or 0
    per_token = s.get("flops_per_token") or 6 * s["params"]
    overhead = per_token / (6 * s["params"]) - 1
    counts, _ = ladder(int(s["vocab_size"]))
    i = int(np.searchsorted(counts, n_opt))
    rungs = [human(counts[j]) for j in (i - 1, i) if 0 <= j < len(counts)]
    rule = (
        "the one of lowest predicted loss when trained on the tokens that fill the budget"
        if plan.get("loss") is not None
        else "the one whose tokens at the budget come nearest D*"
    )
    return head + (
        f": the size rule's ladder has rungs at {' and '.join(rungs)} around N* ({human(n_opt)}); of those within "
        f"3x, {s['name']} is {rule}. The trainer spends 6N + 12 L T d = {per_token:.3g} FLOPs a token at seq_len "
        f"{seq} (attention {overhead:+.1%} over 6N, which C = 6ND leaves out), so the budget buys "
        f"{human(s['tokens'])} tokens."
    )


def _holdout_item(fit: dict) -> dict | None:
    held = fit.get("holdout")
    if not held:
        return None
    parts, fails = [], 0
    for label, scored in (
        ("L*(C)", ((held.get("loss_law") or {}).get("loss"))),
        ("L* parametric", (held.get("parametric") or {}).get("loss")),
        ("N* isoFLOP", (held.get("isoflop") or {}).get("N_opt")),
    ):
        if not scored or scored.get("rel_err") is None:
            continue
        inside = scored.get("truth_in_interval")
        fails += inside is False
        mark = {True: "pass", False: "FAIL", None: "no interval"}[inside]
        parts.append(f"{label} {scored['rel_err']:+.2%} ({mark})")
    if not parts:
        return None
    verdict = "FAIL" if fails else "PASS"
    return {
        "label": "Held-out check",
        "value": f"{verdict} at {held['budget_flops']:.3g} FLOPs",
        "detail": "; ".join(parts) + " (pass: the observed value lies inside the predicted interval)",
        "href": "#holdout",
        "cls": "bad" if fails else "ok",
    }


def _goodput(plan: dict) -> float | None:
    """The plan's goodput fraction (the cost block's; older records kept it in the layout or at the top)."""
    cost_goodput = ((plan.get("cost") or {}).get("goodput") or {}).get("fraction")
    value = cost_goodput or (plan.get("layout") or {}).get("goodput") or plan.get("goodput")
    return value if isinstance(value, int | float) else None


def _flagship_item(plan: dict) -> dict:
    lay = plan.get("layout")
    if lay is None:  # a CPU target (a plan that inherits a sweep trained on CPU): no GPUs, days or layout
        spent = plan.get("spent_flops") or plan["compute_flops"]
        return {
            "label": "Flagship",
            "value": f"{spent:.3g} FLOPs on CPU",
            "detail": "a CPU target, as the sweep trained: no GPU-hours, days or layout",
            "href": "#plan",
            "cls": "",
        }
    goodput = _goodput(plan)
    extra = f", goodput {goodput:.1%}" if isinstance(goodput, int | float) else ""
    return {
        "label": "Flagship",
        "value": f"{plan['days']:.3g} days on {lay['gpus']:,} {lay['gpu']}",
        "detail": f"TP {lay['tp']} x PP {lay['pp']} x DP {lay['dp']} on {lay['nodes']:,} nodes; "
        f"{plan['gpu_hours']:.3g} GPU-hours at modelled MFU {lay['mfu']:.2f}{extra}",
        "href": "#plan",
        "cls": "",
    }


def _fit_optimum_item(fit: dict) -> dict | None:
    """Without a plan: the fit's own N* and D* at 1000x its largest budget, with their bootstrap intervals."""
    target = target_flops(fit, None)
    for method in ("parametric", "isoflop"):
        for at in ((fit.get(method) or {}).get("ci") or {}).get("at", []):
            if math.isclose(at["budget_flops"], target, rel_tol=1e-6):
                n, d = at["N_opt"], at["D_opt"]
                return {
                    "label": f"Compute-optimal at {target:.3g} FLOPs",
                    "value": f"N* {human(n['median'])}, D* {human(d['median'])}",
                    "detail": f"N* [{human(n['lo'])}, {human(n['hi'])}], D* [{human(d['lo'])}, {human(d['hi'])}] "
                    f"({method} law, bootstrap medians); no plan yet: `workbench plan` sizes the shape and the run",
                    "href": "#frontier",
                    "cls": "",
                }
    return None


def panel(fit: dict | None, plan: dict | None) -> list[dict]:
    """The decision panel's items: {label, value, detail, href, cls}."""
    items = []
    fit = fit or {}
    if plan:
        ci = plan.get("ci")
        items.append(
            {
                "label": f"Compute-optimal at {plan['compute_flops']:.3g} FLOPs",
                "value": f"N* {human(plan['params'])}, D* {human(plan['tokens'])}",
                "detail": f"N*{_span(ci, 'params', human) or ' (no interval)'}, D*{_span(ci, 'tokens', human)}; "
                f"{plan['tokens_per_param']:.1f} tokens/parameter ({plan['law']['name']})",
                "href": "#frontier",
                "cls": "",
            }
        )
        s = plan["shape"]
        items.append(
            {
                "label": "Planned shape",
                "value": f"{s['name']}: {human(s['params'])} on {human(s['tokens'])} tokens",
                "detail": shape_reason(plan),
                "href": "#plan",
                "cls": "",
            }
        )
        if s.get("loss") is not None:
            items.append(
                {
                    "label": "Predicted loss",
                    "value": f"{s['loss']:.4f} nats/token",
                    "detail": "the planned shape's loss, 5-95%"
                    + (_span(ci, "shape_loss", lambda v: f"{v:.4f}") or ": no interval (no bootstrap draws)"),
                    "href": "#fig-frontier-loss",
                    "cls": "",
                }
            )
    elif fit.get("points"):
        item = _fit_optimum_item(fit)
        if item:
            items.append(item)
    held = _holdout_item(fit)
    if held:
        items.append(held)
    cross = fit.get("crosscheck")
    if cross:
        flag = cross.get("flag")
        items.append(
            {
                "label": "Methods",
                "value": {True: "DISAGREE", False: "agree", None: "not comparable"}[flag],
                "detail": f"{len(cross['rows'])} methods' exponent a and N* at {cross['target_flops']:.3g} FLOPs, "
                "5-95% intervals " + ("do not all overlap" if flag else "overlap" if flag is False else "missing"),
                "href": "#crosscheck",
                "cls": "bad" if flag else "ok" if flag is False else "",
            }
        )
    if plan:
        items.append(_flagship_item(plan))
    return items


def _grid(fit: dict, plan: dict | None) -> np.ndarray:
    budgets = [float(b) for b in fit["points"]["budget_flops"]]
    lo, hi = min(budgets), max(target_flops(fit, plan), max(budgets)) * PAST_TARGET
    n = int(round(math.log10(hi / lo) * PER_DECADE)) + 1
    return np.geomspace(lo, hi, n)


def _round(values) -> list:
    return [None if v is None or not math.isfinite(v) else float(f"{v:.5g}") for v in values]


def slider_table(fit: dict | None, plan: dict | None) -> dict | None:
    """{columns: {C, N, N_lo, ..}, law, fitted, gpu_s_per_flop, gpus, ...} for the page's compute slider; None
    without a fit that has points and a law."""
    if not fit or not fit.get("points") or not (fit.get("parametric") or (fit.get("isoflop") or {}).get("G")):
        return None
    record = parse_fit(fit, "fit")
    grid = _grid(fit, plan)
    cols: dict[str, list] = {k: [] for k in ("N", "N_lo", "N_hi", "D", "D_lo", "D_hi", "L", "L_lo", "L_hi")}
    if record.parametric is not None:
        law = law_from_fit(record, fit.get("name") or "fit")
        name = f"parametric law of {law.name} (the law `workbench plan --law` uses)"
        for c in grid:
            n, d = law.optimum(float(c))
            ci = intervals(law.draws, float(c), n, d)
            row = {"N": n, "D": d, "L": law.parametric.loss(n, d)}
            if ci:
                row |= {"N_lo": ci["params"].p5, "N_hi": ci["params"].p95, "D_lo": ci["tokens"].p5}
                row |= {"D_hi": ci["tokens"].p95, "L_lo": ci["loss"].p5, "L_hi": ci["loss"].p95}
            for k in cols:
                cols[k].append(row.get(k))
    else:
        law = isoflop_law(record)
        name = f"isoFLOP law of {record.name} (no parametric law: no loss from it)"
        draws = (fit.get("isoflop") or {}).get("draws")
        for c in grid:
            n, d = law.optimum(float(c))
            row = {"N": n, "D": d}
            if draws:
                nd, dd = isoflop_allocation({k: np.asarray(draws[k], float) for k in "GaHb"}, float(c))
                ok = np.isfinite(nd) & np.isfinite(dd)
                if ok.sum() >= 5:
                    (row["N_lo"], row["N_hi"]), (row["D_lo"], row["D_hi"]) = (
                        np.percentile(nd[ok], [5, 95]),
                        np.percentile(dd[ok], [5, 95]),
                    )
            for k in cols:
                cols[k].append(row.get(k))
    out = {"C": _round(grid), **{k: _round(v) for k, v in cols.items()}}
    loss_law = (fit.get("isoflop") or {}).get("loss_law")
    if loss_law:
        at = [frontier.predict_at(loss_law, float(c)) for c in grid]
        out["LL"] = _round([a["loss_pred"] for a in at])
        out["LL_lo"] = _round([(a["law_interval"] or [None])[0] for a in at])
        out["LL_hi"] = _round([(a["law_interval"] or [None, None])[1] for a in at])
    out |= _variants(plan, grid, law)
    budgets = sorted({float(b) for b in fit["points"]["budget_flops"]})
    return {
        "columns": out,
        "law": name,
        "fitted": [budgets[0], budgets[-1]],
        "target": target_flops(fit, plan),
        **_gpu_rate(plan),
    }


def _variants(plan: dict | None, grid: np.ndarray, law) -> dict:
    """The inference-aware and data-constrained N and D at each budget, when the plan has them."""
    if not plan or law.parametric is None:
        return {}
    out = {}
    inf = plan.get("inference")
    if inf:
        rows = [inference_optimal(law.parametric, float(c), inf["inference_tokens"]) for c in grid]
        out |= {"NI": _round([r.params for r in rows]), "DI": _round([r.tokens for r in rows])}
        out["inference_tokens"] = inf["inference_tokens"]
    dc = plan.get("data_constrained")
    if dc:
        constrained = DataConstrainedLaw(**law.parametric.as_dict(), unique_tokens=dc["unique_tokens"])
        rows = [constrained.optimum(float(c)) for c in grid]
        out |= {"NU": _round([r[0] for r in rows]), "DU": _round([r[1] for r in rows])}
        out["unique_tokens"] = dc["unique_tokens"]
    return out


def _gpu_rate(plan: dict | None) -> dict:
    """GPU-seconds per FLOP from the plan: its throughput figures (peak x modelled MFU, x goodput where the
    plan gives one), else its own GPU-hours over its spent FLOPs."""
    if not plan or plan.get("layout") is None:  # no plan, or a CPU target
        return {}
    lay = plan["layout"]
    goodput = _goodput(plan)
    if lay.get("peak_tflops") and lay.get("mfu"):
        rate = 1.0 / (lay["peak_tflops"] * 1e12 * lay["mfu"])
        how = f"{lay['gpu']} at {lay['peak_tflops']:g} TFLOPS and the plan's modelled MFU {lay['mfu']:.2f}"
        if isinstance(goodput, int | float) and goodput > 0:
            rate /= goodput
            how += f" and goodput {goodput:.0%}"
    else:
        spent = plan.get("spent_flops") or plan["compute_flops"]
        rate = plan["gpu_hours"] * 3600.0 / spent
        how = "the plan's GPU-hours per FLOP"
    return {"gpu_s_per_flop": rate, "gpus": int(lay["gpus"]), "gpu_how": how}


def decision_section(inputs: ReportInputs) -> dict:
    """The report's first section: the panel, the plan in one sentence and the compute slider."""
    section = {
        "id": "decision",
        "title": "Decision",
        "figures": [],
        "tables": [],
        "notes": [],
        "rows": [],
        "missing": None,
        "sentence": plan_sentence(inputs.plan) if inputs.plan else None,
        "provenance": [],
        "panel": panel(inputs.fit, inputs.plan),
    }
    if not section["panel"]:
        section["missing"] = (
            f"Nothing to decide from yet: no fit and no plan for sweep '{inputs.sweep}' (see the sections below "
            "for the commands that make them)."
        )
    table = slider_table(inputs.fit, inputs.plan)
    if table is not None:
        c = table["columns"]["C"]
        start = table["target"]
        section["slider"] = {
            "data": table,
            "json": script_json(table),
            "lo_log": f"{math.log10(c[0]):.2f}",
            "hi_log": f"{math.log10(c[-1]):.2f}",
            "start_log": f"{math.log10(start):.2f}",
            "start": f"{start:.3g}",
            "rows": len(c),
            "per_decade": PER_DECADE,
        }
    return section
