"""The report's sections, built from `ReportInputs` as plain dicts for the template (figures as data URIs,
the held-out check as an interactive chart; report.charts turns the curves, isoFLOP and frontier figures into
charts too).

A section whose inputs are missing says what is missing and the command that makes it (`missing`).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

import workbench
from workbench.core.errors import WorkbenchError
from workbench.core.units import human
from workbench.fit.figures import rollout_figure
from workbench.fit.points import data_hash, validate_points
from workbench.plan.record import plan_rows, plan_sentence
from workbench.report import interactive as vl
from workbench.report import static_figures
from workbench.report.inputs import ReportInputs, command_line, git_commit, version_of
from workbench.report.style import report_scale


def cell(text: object, sort: object = None, cls: str = "") -> dict:
    """A table cell: shown text, sort key (numbers sort as numbers) and a CSS class."""
    if isinstance(sort, float) and not math.isfinite(sort):
        sort = None
    return {"t": "" if text is None else str(text), "v": "" if sort is None else sort, "cls": cls}


def _num(value: object, fmt: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, fmt)


def _h(value: object) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or pd.isna(value):
        return "-"
    return human(float(value))


def _figure(fig, alt: str, caption: str, fmt: str = "svg") -> dict:
    return {"uri": static_figures.data_uri(fig, fmt), "alt": alt, "caption": caption}


def _section(sid: str, title: str, **parts) -> dict:
    base = {"figures": [], "tables": [], "notes": [], "rows": [], "missing": None, "sentence": None, "provenance": []}
    return {"id": sid, "title": title, **base, **parts}


def _db_flag(inputs: ReportInputs) -> str:
    return f" --db {inputs.db_path}"


# --- sections ------------------------------------------------------------------------------------------


def summary_section(inputs: ReportInputs) -> dict:
    runs = inputs.runs
    counts = runs["status"].fillna("unknown").value_counts()
    status = ", ".join(f"{n} {s}" for s, n in counts.items())
    budgets = sorted(runs["budget_flops"].dropna().unique())
    rows = [
        ("sweep", inputs.sweep + (f" (spec {inputs.spec_path})" if inputs.spec_path else "")),
        ("runs of", inputs.scope or "every run"),
        ("runs", f"{len(runs)}: {status}"),
        ("budgets", f"{len(budgets)}: " + ", ".join(f"{b:.3g}" for b in budgets) + " FLOPs" if budgets else "-"),
        ("model sizes N", f"{_h(runs['params'].min())} to {_h(runs['params'].max())} parameters (non-embedding)"),
        (
            "compute spent",
            f"{runs['flops'].fillna(0).sum():.3g} FLOPs in "
            f"{runs['wall_s'].fillna(0).sum() / 3600:.3g} run-hours of wall time",
        ),
    ]
    if inputs.fit:
        rows.append(("fit", _fit_line(inputs.fit)))
    section = _section("summary", "Summary", rows=rows, sentence=None)
    if not inputs.plan:
        section["notes"].append(_missing_plan(inputs))
    demo = _demo(inputs.extra)
    if demo:
        verdict = "some checks FAILED (see held-out check)" if not demo.get("passed") else "all checks passed"
        if demo.get("passed") and demo.get("not_scored"):
            verdict = f"no check failed; not scored: {', '.join(demo['not_scored'])}"
        section["notes"].append(f"End-to-end demo: {verdict}.")
    return section


def _fit_line(fit: dict) -> str:
    parts = []
    if fit.get("isoflop"):
        iso = fit["isoflop"]
        parts.append(f"isoFLOP: N* = {iso['G']:.3g} C^{iso['a']:.3f}, D* = {iso['H']:.3g} C^{iso['b']:.3f}")
    if fit.get("parametric"):
        p = fit["parametric"]
        parts.append(f"parametric: L = {p['E']:.3g} + {p['A']:.3g}/N^{p['alpha']:.3f} + {p['B']:.3g}/D^{p['beta']:.3f}")
    return f"{fit.get('name')} on {fit.get('n_points')} runs; " + "; ".join(parts)


def _missing_fit(inputs: ReportInputs, what: str = "fit") -> str:
    return (
        f"No {what} for sweep '{inputs.sweep}' yet: run `workbench fit {inputs.sweep}{_db_flag(inputs)}` "
        "(or pass --fit fits/NAME.json)."
    )


def _fit_file(inputs: ReportInputs) -> str | None:
    """The fit file a plan can read: the report's --fit or fits/SWEEP.json, only when it exists."""
    for candidate in (inputs.fit_source, f"fits/{inputs.sweep}.json"):
        if candidate and candidate.endswith(".json") and Path(candidate).is_file():
            return candidate
    return None


def _missing_plan(inputs: ReportInputs) -> str:
    """What to run for a plan, naming only files that exist (a --watch page's fit lives in memory only)."""
    plan = f"`workbench plan --law {{}} --compute FLOPS{_db_flag(inputs)}`"
    fit_file = _fit_file(inputs)
    if fit_file:
        return f"No plan for sweep '{inputs.sweep}' yet: run {plan.format(fit_file)} (or pass --plan PLAN.json)."
    return (
        f"No plan for sweep '{inputs.sweep}' yet: run `workbench fit {inputs.sweep}{_db_flag(inputs)}` (it "
        f"writes fits/{inputs.sweep}.json), then {plan.format(f'fits/{inputs.sweep}.json')} (or pass --plan PLAN.json)."
    )


def curves_section(inputs: ReportInputs) -> dict:
    """Training curves: the interactive figure is attached by report.charts (report.curves)."""
    section = _section("curves", "Training curves")
    if not len(inputs.metrics):
        section["missing"] = (
            f"No metric rows for sweep '{inputs.sweep}': run `workbench db ingest runs/{inputs.sweep}`."
        )
    return section


def _fit_budgets(fit: dict) -> set[float]:
    return {float(b) for b in fit["points"]["budget_flops"]} if fit.get("points") else set()


def isoflop_section(inputs: ReportInputs) -> dict:
    section = _section("isoflop", "isoFLOP curves")
    if not inputs.fit or not inputs.fit.get("isoflop"):
        section["missing"] = _missing_fit(inputs, "isoFLOP fit" if inputs.fit else "fit")
        return section
    iso = inputs.fit["isoflop"]
    rows = [
        [
            cell(f"{m['budget_flops']:.3g}", m["budget_flops"]),
            cell(_h(m["params"]), m["params"]),
            cell(_h(m["tokens"]), m["tokens"]),
            cell(_num(m["loss"]), m["loss"]),
            cell(m["n_sizes"]),
            cell("kept"),
        ]
        for m in iso["minima"]
    ]
    rows += [
        [
            cell(f"{e['budget_flops']:.3g}", e["budget_flops"]),
            *[cell("-")] * 4,
            cell(f"excluded: {e['reason']}", cls="bad"),
        ]
        for e in iso["excluded"]
    ]
    header = ["budget C (FLOPs)", "N* (params)", "D* (tokens)", "L* (nats/token)", "sizes", "status"]
    section["tables"].append({"caption": "Minimum of each budget's parabola", "header": header, "rows": rows})
    return section


def frontier_section(inputs: ReportInputs) -> dict:
    section = _section("frontier", "Compute-optimal frontier")
    fit = inputs.fit
    if not fit or not (fit.get("isoflop") or fit.get("parametric")):
        section["missing"] = _missing_fit(inputs)
        return section
    rows = []
    for method, key_n, key_d in (("isoflop", "N_opt", "D_opt"), ("parametric", "N_opt", "D_opt")):
        ci = (fit.get(method) or {}).get("ci") or {}
        for at in ci.get("at", []):
            n, d = at[key_n], at[key_d]
            rows.append(
                [
                    cell(method),
                    cell(f"{at['budget_flops']:.3g}", at["budget_flops"]),
                    cell(f"{_h(n['median'])} [{_h(n['lo'])}, {_h(n['hi'])}]", n["median"]),
                    cell(f"{_h(d['median'])} [{_h(d['lo'])}, {_h(d['hi'])}]", d["median"]),
                ]
            )
    if rows:
        header = ["law", "C (FLOPs)", "N* median [5%, 95%]", "D* median [5%, 95%]"]
        section["tables"].append({"caption": "Bootstrap intervals at larger budgets", "header": header, "rows": rows})
    if inputs.plan is None:
        section["notes"].append(_missing_plan(inputs))
    return section


def parametric_section(inputs: ReportInputs) -> dict:
    section = _section("parametric", "Parametric law")
    if not inputs.fit or not inputs.fit.get("parametric"):
        section["missing"] = _missing_fit(inputs, "parametric fit" if inputs.fit else "fit")
        return section
    par = inputs.fit["parametric"]
    points = pd.DataFrame(inputs.fit["points"])
    fig = static_figures.parametric_figure(points, par, inputs.plan, report_scale(inputs.runs, inputs.fit))
    section["figures"].append(
        _figure(
            fig,
            "loss contours over N and D with the efficient frontier; residuals",
            "Top: the fitted law's loss over (N, D) with the runs the fit used and the "
            "efficient frontier. Bottom: residuals of those runs against N and against D.",
        )
    )
    ci = par.get("ci") or {}
    rows = []
    for key in ("E", "A", "B", "alpha", "beta", "a"):
        band = ci.get(key) or {}
        interval = f"[{_num(band.get('lo'))}, {_num(band.get('hi'))}]" if band.get("lo") is not None else "-"
        rows.append([cell(key), cell(_num(par.get(key))), cell(interval)])
    if inputs.fit.get("n_points", 99) < 10:
        section["notes"].append(
            f"Only {inputs.fit['n_points']} runs for 5 parameters: the law is poorly determined "
            "(see the intervals); add sizes and budgets before trusting it."
        )
    section["tables"].append(
        {
            "caption": "L(N, D) = E + A / N^alpha + B / D^beta; a = beta / (alpha + beta)",
            "header": ["parameter", "estimate", "bootstrap 5-95%"],
            "rows": rows,
        }
    )
    return section


def _demo(extra: dict) -> dict | None:
    demo = extra.get("demo")
    if demo is None and "flagship" in extra:
        demo = extra
    return demo if isinstance(demo, dict) else None


def holdout_section(inputs: ReportInputs) -> dict:
    section = _section("holdout", "Held-out check")
    fit, demo = inputs.fit, _demo(inputs.extra)
    holdout = (fit or {}).get("holdout")
    if not holdout:
        section["missing"] = (
            f"No held-out check in the fit: run `workbench fit {inputs.sweep} "
            f"--holdout-largest{_db_flag(inputs)}` (it needs 3 or more budgets)."
        )
    else:
        budget = holdout["budget_flops"]
        target = pd.DataFrame(columns=["params", "loss"])
        if inputs.points is not None:
            target = inputs.points[np.isclose(inputs.points["budget_flops"], budget, rtol=1e-6)]
        if not len(target):
            best = holdout["observed"]["best_run"]
            target = pd.DataFrame({"params": [best["params"]], "loss": [best["loss"]]})
        frames = vl.holdout_frames(target, holdout, _law_without(fit, budget), (demo or {}).get("flagship"))
        keys = vl.holdout_keys(frames, report_scale(inputs.runs, fit).colour(budget))
        section["charts"] = [
            vl.chart(
                "holdout",
                "Held-out check",
                f"Final validation loss against model size N at the held-out budget "
                f"{budget:.3g} FLOPs: its runs, the loss the law fitted without that budget predicts along C = 6ND, "
                "the "
                "predicted best loss, and the observed and predicted compute-optimal N*.",
                f"The largest budget ({budget:.3g} FLOPs) left out of the fit: its runs, the law's prediction and the "
                "predicted N*. Hover a point for its run id, N, D and loss.",
                vl.holdout_spec(frames, keys),
                "runs",
                legend=keys,
                legend_title="held-out check",
            )
        ]
        section["tables"].append(_holdout_table(holdout))
    for step in (fit or {}).get("rollout") or []:
        section.setdefault("rollout", []).append(step)
    if (fit or {}).get("rollout"):
        section["figures"].append(
            _figure(
                rollout_figure(fit["rollout"]),
                "rollout relative errors",
                "Rollout: fit budgets 1..k, predict budget k+1 (relative error, %).",
            )
        )
    if demo:
        section["tables"].append(_demo_table(demo))
        section["tables"] += _experiment_tables(demo)
    section["notes"] += _extra_notes(inputs.extra)
    return section


def _law_without(fit: dict, budget: float) -> dict | None:
    """The parametric law fitted without `budget`, as the fit stored it: the held-out step's training law, or
    the fit's own law when the fit itself left that budget out (the demo). A report never refits."""
    if not fit.get("parametric"):
        return None
    points = pd.DataFrame(fit.get("points") or {"budget_flops": []})
    if not len(points) or not (points["budget_flops"] >= budget * (1 - 1e-6)).any():
        return fit["parametric"]
    held = ((fit.get("holdout") or {}).get("parametric") or {}).get("law")
    if held is None:
        steps = [s for s in fit.get("rollout") or [] if abs(s["budget_flops"] / budget - 1) < 1e-6]
        held = ((steps[0].get("parametric") or {}).get("law")) if steps else None
    return held


def _scored_row(label: str, scored: dict | None, fmt) -> list[dict] | None:
    """predicted [PI], target [interval], error [90%], target in PI: one held-out quantity (fit/scoring.py)."""
    if not scored:
        return None
    pi, ti, ei = scored.get("pred_interval"), scored.get("target_interval"), scored.get("rel_err_interval")
    pred = fmt(scored["pred"]) + (f" [{fmt(pi[0])}, {fmt(pi[1])}]" if pi else "")
    target = fmt(scored["target"]) if scored.get("target") is not None else "-"
    target += f" [{fmt(ti[0])}, {fmt(ti[1])}]" if ti else ""
    err = "not scored" if scored.get("rel_err") is None else f"{scored['rel_err']:+.2%}"
    err += f" [{ei[0]:+.1%}, {ei[1]:+.1%}]" if ei else ""
    inside = {True: "yes", False: "no", None: "-"}[scored.get("truth_in_interval")]
    return [cell(label), cell(pred), cell(target), cell(err, cls="bad" if inside == "no" else ""), cell(inside)]


def _holdout_table(holdout: dict) -> dict:
    obs = holdout["observed"]
    par, iso = holdout.get("parametric") or {}, holdout.get("isoflop") or {}
    frontier = holdout.get("loss_law") or {}
    for scored, key in (
        (par.get("loss"), "loss_opt"),
        (frontier.get("loss"), "loss_opt"),
        (par.get("N_opt"), "N_opt"),
        (iso.get("N_opt"), "N_opt"),
    ):
        if scored is not None:
            scored["target_interval"] = obs.get(f"{key}_interval")
    rows = [
        _scored_row("L* (parametric law)", par.get("loss"), _num),
        _scored_row("L* (L*(C) = K C^-gamma on the isoFLOP minima)", frontier.get("loss"), _num),
        _scored_row("N* (parametric law)", par.get("N_opt"), _h),
        _scored_row("N* (isoFLOP power law)", iso.get("N_opt"), _h),
    ]
    rows = [r for r in rows if r is not None]
    if "error" in iso:
        rows.append([cell("N* (isoFLOP power law)"), cell(iso["error"], cls="bad"), cell("-"), cell("-"), cell("-")])
    caption = (
        f"Fit on {holdout.get('train_budgets', '?')} smaller budgets, predicting {holdout['budget_flops']:.3g} "
        f"FLOPs, scored against that budget's own parabola (target N*: {obs['N_opt_source']}; target L*: its "
        "minimum), 5-95% intervals; the error's interval is where the true error lies (90%)"
    )
    header = ["quantity", "predicted [5-95%]", "target [5-95%]", "relative error [90%]", "target in interval"]
    return {"caption": caption, "header": header, "rows": rows}


def _demo_table(demo: dict) -> dict:
    rows = []
    f = demo.get("flagship") or {}
    if f:
        lo, hi = f["interval"]
        inside = lo <= f["val_loss"] <= hi
        rows.append(
            [
                cell("flagship validation loss"),
                cell(f"{_num(f['predicted'])} [{lo:.4f}, {hi:.4f}]"),
                cell(_num(f["val_loss"])),
                cell("inside the 90% interval" if inside else "OUTSIDE the interval", cls="ok" if inside else "bad"),
            ]
        )
    lr = demo.get("lr_check")
    if lr:
        rows.append(
            [
                cell(f"LR rule vs the best of x0.5 / x1 / x2 at {lr['budget_flops']:.3g} FLOPs"),
                cell(""),
                cell(f"worst gap {lr['worst_gap']:.2%}"),
                cell(""),
            ]
        )
    for name, ok in (demo.get("checks") or {}).items():
        word = "NOT SCORED" if ok is None else "PASS" if ok else "FAIL"
        reason = (demo.get("not_scored") or {}).get(name) or ""
        rows.append(
            [cell(name.replace("_", " ")), cell(""), cell(reason), cell(word, cls="bad" if ok is False else "ok")]
        )
    return {
        "caption": "End-to-end demo: the planned flagship, trained",
        "rows": rows,
        "header": ["check", "predicted", "observed", "result"],
    }


def _experiment_tables(demo: dict) -> list[dict]:
    """The embedded default as an experiment: the LR scan, the seed scatter per budget, the WSD branch check
    and the acceptance checks (workbench.demo.experiment)."""
    tables = []
    lr = demo.get("lr_check")
    if lr and lr.get("sizes"):
        factors = [str(f) for f in lr["factors"]]
        rows = [
            [cell(human(r["params"]), r["params"])]
            + [cell(_num(r["losses"].get(f))) for f in factors]
            + [cell(f"{r['rule_vs_best']:+.2%}")]
            for r in lr["sizes"]
        ]
        tables.append(
            {
                "caption": f"LR scan at {lr['budget_flops']:.3g} FLOPs: final validation loss (mean over "
                "seeds) with the LR rule x0.5, x1, x2; the rule's gap to the best",
                "header": ["N", *[f"x{f}" for f in factors], "rule vs best"],
                "rows": rows,
            }
        )
    if demo.get("seed_scatter"):
        rows = [
            [
                cell(f"{s['budget_flops']:.3g}", s["budget_flops"]),
                cell(human(s["params"]) if s["params"] else "-"),
                cell(s["seeds"]),
                cell(_num(s["mean"])),
                cell(
                    "-" if s["scatter"] is None else f"{s['scatter']:.2%}",
                    cls="" if s["scatter"] is None else ("ok" if s["scatter"] <= 0.01 else "bad"),
                ),
            ]
            for s in demo["seed_scatter"]
        ]
        tables.append(
            {
                "caption": "Seed scatter per budget: sd / mean of the final validation loss over the seeds "
                "of the budget's centre size (target: at most 1%)",
                "header": ["budget (FLOPs)", "N", "seeds", "mean loss", "sd / mean"],
                "rows": rows,
            }
        )
    b = demo.get("branch_check")
    if b:
        ok = b["passed"]
        sd = "-" if b["seed_scatter"] is None else f"{b['seed_scatter']:.2%}"
        tables.append(
            {
                "caption": "WSD branch check: a cooldown branch against the same (N, D, seed) trained alone "
                "from step 0, against the seed scatter at that budget",
                "header": ["run", "branch", "trained alone", "difference", "seed scatter", "result"],
                "rows": [
                    [
                        cell(b["run_id"]),
                        cell(_num(b["branch_loss"])),
                        cell(_num(b["separate_loss"])),
                        cell(f"{b['rel_diff']:+.2%}"),
                        cell(sd),
                        cell("PASS" if ok else "FAIL", cls="ok" if ok else "bad"),
                    ]
                ],
            }
        )
    checks = demo.get("experiment") or {}
    if checks:
        rows = [
            [
                cell(name.replace("_", " ")),
                cell(
                    _num(c["value"])
                    if not isinstance(c["value"], dict)
                    else ", ".join(
                        f"{k} {_num(v)}" for k, v in c["value"].items() if not isinstance(v, (str, dict, list))
                    )
                ),
                cell(str(c["tolerance"])),
                cell(
                    "NOT SCORED" if c["passed"] is None else "PASS" if c["passed"] else "FAIL",
                    cls="bad" if c["passed"] is False else "ok",
                ),
            ]
            for name, c in checks.items()
        ]
        tables.append(
            {
                "caption": "The embedded default as an experiment: acceptance checks",
                "header": ["check", "value", "tolerance", "result"],
                "rows": rows,
            }
        )
    return tables


def _extra_notes(extra: dict) -> list[str]:
    """Outcomes passed in `extra` other than the demo record, one line each."""
    if "flagship" in extra and "demo" not in extra:  # extra is itself the demo record
        return []
    return [f"{key}: {value}" for key, value in extra.items() if key != "demo"]


def plan_section(inputs: ReportInputs) -> dict:
    section = _section("plan", "The plan")
    plan = inputs.plan
    if not plan:
        section["missing"] = _missing_plan(inputs)
        return section
    section["sentence"] = plan_sentence(plan)
    rows = plan_rows(plan)  # the same words as `workbench plan` prints (workbench.plan.record)
    if plan.get("config_path"):
        rows.append(("flagship config", f"{plan['config_path']}: run it with `workbench train {plan['config_path']}`"))
    section["rows"] = rows
    section["figures"].append(
        _figure(
            static_figures.schedule_figure(plan),
            "learning rate and batch over the planned run",
            "The planned run's learning rate (top) and global batch (bottom) against tokens seen.",
        )
    )
    demo = _demo(inputs.extra)
    if demo and demo.get("flagship"):
        f = demo["flagship"]
        lo, hi = f["interval"]
        where = "inside" if lo <= f["val_loss"] <= hi else "OUTSIDE"
        section["notes"].append(
            f"Outcome: the flagship trained to validation loss {f['val_loss']:.4f}, {where} the "
            f"predicted 90% interval [{lo:.4f}, {hi:.4f}] (prediction {f['predicted']:.4f}); "
            f"{f['vs_best']:+.2%} against the best sweep run at that budget."
        )
    section["notes"] += _extra_notes(inputs.extra)
    return section


RUN_COLUMNS = (
    ("run", "run_id", str),
    ("status", "status", str),
    ("budget C (FLOPs)", "budget_flops", ".3g"),
    ("N (params)", "params", "h"),
    ("D (tokens)", "tokens", "h"),
    ("D/N", "tpp", ".1f"),
    ("val loss", "val_loss", ".4f"),
    ("peak LR", "lr_peak", ".3g"),
    ("batch (tokens)", "batch_tokens", "h"),
    ("steps", "steps", ","),
    ("wall (s)", "wall_s", ".0f"),
)


def _run_cell(value: object, fmt: object) -> dict:
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or pd.isna(value):
        return cell("-")
    if fmt is str:
        return cell(value, str(value))
    if fmt == "h":
        return cell(human(float(value)), float(value))
    return cell(format(int(value) if fmt == "," else float(value), fmt), float(value))


def runs_section(inputs: ReportInputs, command: str | None = None) -> dict:
    section = _section("runs", "Runs, exclusions and provenance")
    runs = inputs.runs.copy()
    runs["tpp"] = runs["tokens"] / runs["params"]
    rows = []
    for run in runs.to_dict("records"):
        row = [_run_cell(run[key], fmt) for _, key, fmt in RUN_COLUMNS]
        row[1]["cls"] = "ok" if run["status"] == "completed" else "bad"
        rows.append(row)
    section["tables"].append(
        {
            "caption": f"{len(runs)} runs (click a column header to sort)",
            "sortable": True,
            "header": [c[0] for c in RUN_COLUMNS],
            "rows": rows,
        }
    )
    problems = []
    for run in runs[runs["status"] != "completed"].to_dict("records"):
        reason = run.get("error") or ("still running" if run["status"] in ("running", "pending") else "no error given")
        problems.append([cell(run["run_id"]), cell(run["status"], cls="bad"), cell(reason)])
    for e in ((inputs.fit or {}).get("isoflop") or {}).get("excluded", []):
        problems.append(
            [cell(f"budget {e['budget_flops']:.3g} FLOPs"), cell("excluded from the isoFLOP fit"), cell(e["reason"])]
        )
    if problems:
        section["tables"].append(
            {
                "caption": "Failures and exclusions, with reasons",
                "rows": problems,
                "header": ["what", "status", "reason"],
            }
        )
    else:
        section["notes"].append("No failed runs and no excluded budgets.")
    section["provenance"] = provenance(inputs, command)
    return section


def _stale(inputs: ReportInputs) -> str:
    """Whether the sweep's runs at the fitted budgets still hash to the fit's data hash."""

    fit = inputs.fit
    if not fit or not fit.get("data_hash") or inputs.points is None or not fit.get("points"):
        return ""
    budgets = np.unique(fit["points"]["budget_flops"])
    mask = np.isclose(inputs.points["budget_flops"].to_numpy(float)[:, None], budgets[None, :], rtol=1e-9).any(1)
    try:
        now = data_hash(validate_points(inputs.points[mask], inputs.sweep))  # as the fit saw them
    except WorkbenchError as err:
        return f"cannot check against the store: {err}"
    return "matches the store's runs" if now == fit["data_hash"] else f"STALE: the store's runs now hash to {now}"


def _fit_command(sweep: str, fit: dict) -> str:
    settings = fit.get("settings") or {}
    words = [f"workbench fit {sweep} --bootstrap {settings.get('bootstrap')} --seed {settings.get('seed')}"]
    if fit.get("method") not in (None, "all"):
        words.append(f"--method {fit['method']}")
    words += [flag for flag, key in (("--holdout-largest", "holdout"), ("--rollout", "rollout")) if fit.get(key)]
    return " ".join(words) + f" (source: {fit.get('source')})"


def provenance(inputs: ReportInputs, command: str | None = None) -> list[tuple[str, str]]:
    """(label, value) rows: versions, git commit, command lines, sources and data hash."""
    fit, plan = inputs.fit or {}, inputs.plan or {}
    rows = [
        ("generated", datetime.now(UTC).isoformat(timespec="seconds")),
        ("report command", command or command_line()),
        (
            "versions",
            f"workbench {workbench.__version__}, torch {version_of('torch')}, python "
            f"{'.'.join(map(str, __import__('sys').version_info[:3]))}, numpy {version_of('numpy')}, "
            f"matplotlib {version_of('matplotlib')}, duckdb {version_of('duckdb')}",
        ),
        ("git commit", git_commit()),
        ("database", str(inputs.db_path)),
        ("runs' bit-identity (torch, threads, CPU capability, GPU)", bit_identity_text(inputs.runs)),
    ]
    if inputs.spec_path:
        rows.append(("sweep command", f"workbench sweep launch {inputs.spec_path}"))
    if fit:
        rows += [
            ("fit", f"{inputs.fit_source}; created {fit.get('created')} by workbench {fit.get('version')}"),
            ("fit command (as recorded in the fit)", _fit_command(inputs.sweep, fit)),
            ("fit data hash", f"{fit.get('data_hash')} over {fit.get('n_points')} runs; {_stale(inputs) or '-'}"),
        ]
    else:
        rows.append(("fit", _missing_fit(inputs)))
    if plan:
        rows.append(("plan", f"{inputs.plan_source}; {plan.get('name') or ''} {plan.get('created') or ''}".strip()))
    return rows


def bit_identity_text(runs: pd.DataFrame) -> str:
    """What the runs' bit-identity depends on (final.json's bit_identity): each distinct setting, with its count."""
    keys = ("torch_version", "torch_threads", "cpu_capability", "cuda_device")
    if runs.empty or any(k not in runs.columns for k in keys):
        return "not recorded"
    counts: dict[str, int] = {}
    for run in runs[list(keys)].to_dict("records"):
        torch_version, threads, capability, gpu = (None if pd.isna(run[k]) else run[k] for k in keys)
        if threads is None:
            text = "not recorded" + (f" (torch {torch_version})" if torch_version else "")
        else:
            text = f"torch {torch_version}, {int(threads)} threads, " + (f"GPU {gpu}" if gpu else f"CPU {capability}")
        counts[text] = counts.get(text, 0) + 1
    return "; ".join(f"{text}: {n} runs" for text, n in counts.items())
