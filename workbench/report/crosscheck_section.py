"""The report's cross-check section: the methods side by side (workbench.fit.crosscheck), the bootstrap
scheme, the diagnostics' warnings and, with a rollout, the calibration of the prediction intervals."""

from __future__ import annotations

from workbench.core.units import human
from workbench.report.inputs import ReportInputs
from workbench.report.sections import cell


def _span(interval: list | None, fmt) -> str:
    return f"[{fmt(interval[0])}, {fmt(interval[1])}]" if interval else "-"


def crosscheck_section(inputs: ReportInputs) -> dict:
    """Cross-checks: the methods' exponent and N* with intervals, the disagreement flag, warnings."""
    section = {
        "id": "crosscheck",
        "title": "Cross-checks and diagnostics",
        "figures": [],
        "tables": [],
        "notes": [],
        "rows": [],
        "missing": None,
        "sentence": None,
        "provenance": [],
    }
    fit = inputs.fit or {}
    cross = fit.get("crosscheck")
    if not cross:
        section["missing"] = f"No cross-check in the fit: refit with `workbench fit {inputs.sweep}`."
        return section
    flag = {True: "the methods DISAGREE", False: "the methods agree", None: "no intervals to compare"}[cross["flag"]]
    rows = [
        [
            cell(r["method"]),
            cell(f"{r['a']:.4f}", r["a"]),
            cell(_span(r["a_interval"], lambda x: f"{x:.4f}")),
            cell(human(r["N_opt"]), r["N_opt"]),
            cell(_span(r["N_opt_interval"], human)),
        ]
        for r in cross["rows"]
    ]
    section["tables"].append(
        {
            "caption": f"Allocation exponent a (N* ~ C^a) and N* at {cross['target_flops']:.3g} FLOPs by method, "
            f"5-95% bootstrap intervals: {flag} (intervals that do not overlap)",
            "header": ["method", "a", "a 5-95%", "N*", "N* 5-95%"],
            "rows": rows,
        }
    )
    section["notes"] += list(cross.get("disagreements") or [])
    design = fit.get("design")
    if design:
        section["notes"].append(f"Bootstrap: {design['bootstrap_mode']} ({design['reason']}).")
    diag = fit.get("diagnostics") or {}
    section["notes"] += [f"Warning: {w}" for w in diag.get("warnings", [])]
    bias = diag.get("parabola_bias") or []
    if bias:
        section["tables"].append(
            {
                "caption": "Bias of the isoFLOP parabola's vertex on each budget's grid, estimated from the "
                "parametric law",
                "header": ["budget (FLOPs)", "grid span (decades)", "N* bias", "L* bias"],
                "rows": [
                    [
                        cell(f"{b['budget_flops']:.3g}", b["budget_flops"]),
                        cell(f"{b['span_decades']:.2f}"),
                        cell(f"{b['N_opt_bias']:+.2%}"),
                        cell(f"{b['loss_bias']:+.3%}"),
                    ]
                    for b in bias
                ],
            }
        )
    calibration = fit.get("calibration")
    if calibration and calibration.get("rows"):
        section["tables"].append(
            {
                "caption": "Calibration of the prediction intervals by the rollout (nominal vs achieved coverage)",
                "header": [
                    "quantity",
                    "nominal",
                    "achieved (bootstrap)",
                    "achieved (calibrated)",
                    "predictions",
                    "extra log sd per decade",
                ],
                "rows": [
                    [
                        cell(r["quantity"]),
                        cell(f"{r['nominal']:.0%}"),
                        cell(f"{r['achieved']:.0%}"),
                        cell(f"{r['achieved_calibrated']:.0%}"),
                        cell(str(r["n"])),
                        cell(_num(r.get("widen"))),
                    ]
                    for r in calibration["rows"]
                ],
            }
        )
        at = calibration.get("at") or []
        if at:
            section["tables"].append(
                {
                    "caption": "N* intervals widened by the rollout's track record (distance = decades beyond the "
                    "largest fitted budget)",
                    "header": ["method", "budget (FLOPs)", "N*", "bootstrap 5-95%", "calibrated 90%"],
                    "rows": [
                        [
                            cell(r["method"]),
                            cell(f"{r['budget_flops']:.3g}", r["budget_flops"]),
                            cell(human(r["N_opt"])),
                            cell(_span(r["N_opt_interval"], human)),
                            cell(_span(r["N_opt_interval_calibrated"], human)),
                        ]
                        for r in at
                    ],
                }
            )
    return section


def _num(value) -> str:
    return "-" if value is None else f"{value:.3g}"
