"""The demo's end-to-end checks on top of the fit's: the sweep's LR rule against x0.5 and x2 at the smallest
budget, and the trained flagship against its prediction. Pure: the runs are launched by the caller."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from workbench.records import FitRecord
from workbench.sweep.spec import SweepSpec, expand

LR_CHECK_FACTORS = (0.5, 2.0)
FLAGSHIP_TOLERANCE = 0.01  # the flagship's validation loss within 1% of the best sweep run at its budget


def lr_variants(spec: SweepSpec) -> list[tuple[float, SweepSpec]]:
    """(factor, spec) for the LR rule x1, x0.5 and x2 at the smallest budget, every size."""
    smallest = min(spec.grid.budgets_flops)
    out = []
    for factor in (1.0, *LR_CHECK_FACTORS):
        name = spec.name if factor == 1.0 else f"{spec.name}-lr{factor:g}x"
        update = {"name": name, "grid": spec.grid.model_copy(update={"budgets_flops": [smallest]})}
        if spec.train.lr_peak == "auto":  # scale the whole LR rule
            rules = spec.rules
            update["rules"] = rules.model_copy(
                update={"lr_ref": rules.lr_ref * factor, "lr_max": rules.lr_max * factor}
            )
        else:
            update["train"] = spec.train.model_copy(update={"lr_peak": spec.train.lr_peak * factor})
        out.append((factor, spec.model_copy(update=update)))
    return out


def lr_check(spec: SweepSpec, run: Callable[[object, str], pd.DataFrame]) -> dict:
    """The LR rule against x0.5 and x2 at the smallest budget, per size (mean over seeds); `run(plan, label)`
    launches an expanded sweep (label "" for the rule itself) and returns its points."""
    smallest = min(spec.grid.budgets_flops)
    rows: dict[float, dict[float, list[float]]] = {}
    for factor, variant in lr_variants(spec):
        got = run(expand(variant, f"{spec.name} LR check"), "" if factor == 1.0 else f"(LR rule x{factor:g})")
        got = got[np.isclose(got["budget_flops"], smallest)]
        for params, loss in zip(got["params"], got["loss"], strict=True):
            rows.setdefault(float(params), {}).setdefault(factor, []).append(float(loss))
    table = []
    for params, seeds in sorted(rows.items()):
        by_factor = {k: float(np.mean(v)) for k, v in seeds.items()}
        rule = by_factor.get(1.0, float("nan"))
        losses = {str(k): v for k, v in sorted(by_factor.items())}
        table.append({"params": params, "losses": losses, "rule_vs_best": rule / min(by_factor.values()) - 1})
    return {
        "budget_flops": smallest,
        "lr_peak": spec.train.lr_peak,
        "factors": [1.0, *LR_CHECK_FACTORS],
        "sizes": table,
        "worst_gap": max(r["rule_vs_best"] for r in table),
    }


def flagship_outcome(record: FitRecord, flagship: dict, shape: dict) -> dict:
    """The fit's held-out checks plus the flagship's: inside the prediction interval, within 1% of the held-out
    budget's L* (its parabola's minimum: the loss the compute-optimal model reaches there, where the best
    single run, the lowest of several noisy losses, sits low; a record without it falls back on the best run)."""
    hold, iso = record.holdout, record.isoflop
    budget = hold["budget_flops"]
    at = next(a for a in iso.loss_law.at if np.isclose(a["budget_flops"], budget, rtol=1e-9))
    best, val = hold["observed"].get("loss_opt") or hold["observed"]["best_run"]["loss"], flagship["val_loss"]
    lo, hi = at["prediction_interval"]
    checks = {name: c["passed"] for name, c in record.checks.items()}
    checks["flagship_in_interval"] = lo <= val <= hi
    checks["flagship_within_1pct_of_best"] = abs(val / best - 1) <= FLAGSHIP_TOLERANCE
    return {
        "held_out_budget": budget,
        "fitted_budgets": [m["budget_flops"] for m in iso.minima],
        "excluded": iso.excluded,
        "best_run": hold["observed"]["best_run"],
        "observed_best_loss": best,
        "observed_best_loss_interval": hold["observed"].get("loss_opt_interval"),
        "loss_law": {"K": iso.loss_law.K, "gamma": iso.loss_law.gamma},
        "predicted_best_loss": at["loss_pred"],
        "best_loss_rel_err": at["loss_pred"] / best - 1,
        "parametric_predicted_best_loss": hold["parametric"]["loss_pred"],
        "parametric_best_loss_rel_err": hold["parametric"]["loss_rel_err"],
        "observed_n_opt": hold["observed"]["N_opt"],
        "observed_n_opt_source": hold["observed"]["N_opt_source"],
        "predicted_n_opt_isoflop": (hold.get("isoflop") or {}).get("N_opt_pred"),
        "predicted_n_opt_parametric": hold["parametric"]["N_opt_pred"],
        "flagship": {
            "params": shape["params"],
            "tokens": shape["tokens"],
            "val_loss": val,
            "predicted": at["loss_pred"],
            "interval": [lo, hi],
            "law_interval": at["law_interval"],
            "vs_best": val / best - 1,
            "wall_s": flagship["wall_s"],
        },
        "checks": checks,
        "passed": all(checks.values()),
    }
