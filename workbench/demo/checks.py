"""The demo's end-to-end checks on top of the fit's: the sweep's LR rule against x0.5 and x2 at the smallest
budget, and the trained flagship against its prediction. Pure: the runs are launched by the caller."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from workbench.records import FitRecord
from workbench.sweep.grid import expand
from workbench.sweep.spec import SweepSpec

LR_CHECK_FACTORS = (0.5, 2.0)
FLAGSHIP_TOLERANCE = 0.01  # the flagship's validation loss within 1% of the best sweep run at its budget


def lr_variants(spec: SweepSpec) -> list[tuple[float, SweepSpec]]:
    """(factor, spec) for the LR rule x1, x0.5 and x2 at the smallest budget, every size, the sweep's seeds.
    x1 is the sweep itself (its runs at the smallest budget: on a WSD grid some are branches, which train
    exactly as a run of their own would, as the demo's branch check shows); x0.5 and x2 are sweeps of their
    own at that budget alone (one-run families on a WSD grid), without centre seeds."""
    smallest = min(spec.grid.budgets_flops)
    out = [(1.0, spec)]
    for factor in LR_CHECK_FACTORS:
        update = {
            "name": f"{spec.name}-lr{factor:g}x",
            "grid": spec.grid.model_copy(update={"budgets_flops": [smallest]}),
        }
        update["train"] = spec.train.model_copy(update={"center_seeds": []})
        if spec.train.lr_peak == "auto":  # scale the whole LR rule
            rules = spec.rules
            update["rules"] = rules.model_copy(
                update={"lr_ref": rules.lr_ref * factor, "lr_max": rules.lr_max * factor}
            )
        else:
            update["train"] = update["train"].model_copy(update={"lr_peak": spec.train.lr_peak * factor})
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
    checks = {name: c["passed"] for name, c in record.checks.items()}  # None: not scored (`not_scored` says why)
    not_scored = {name: c.get("reason") for name, c in record.checks.items() if c.get("scored") is False}
    checks["flagship_in_interval"] = lo <= val <= hi
    checks["flagship_within_1pct_of_best"] = abs(val / best - 1) <= FLAGSHIP_TOLERANCE
    n_check = record.checks.get("n_opt_within_1.5x") or {}
    n_scored = n_check.get("scored", True) and hold["observed"].get("scored", True)
    return {
        "held_out_budget": budget,
        "fitted_budgets": [m["budget_flops"] for m in iso.minima],
        "excluded": iso.excluded,
        "best_run": hold["observed"]["best_run"],
        "observed_best_loss": best,
        "observed_best_loss_interval": hold["observed"].get("loss_opt_interval"),
        "loss_law": {"E": iso.loss_law.E, "K": iso.loss_law.K, "gamma": iso.loss_law.gamma, "form": "E + K C^-gamma"},
        "predicted_best_loss": at["loss_pred"],
        "best_loss_rel_err": at["loss_pred"] / best - 1,
        "parametric_predicted_best_loss": hold["parametric"]["loss_pred"],
        "parametric_best_loss_rel_err": hold["parametric"]["loss_rel_err"],
        "observed_n_opt": hold["observed"]["N_opt"] if n_scored else None,  # only a number the check used
        "observed_n_opt_source": hold["observed"]["N_opt_source"] if n_scored else n_check.get("reason"),
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
        "not_scored": not_scored,
        "passed": all(ok is not False for ok in checks.values()),  # a check with nothing to score is no failure
    }


# --- the embedded default as an experiment: what the demo's outcome record asserts ----------------

MIN_FITTED_SPAN = 10.0  # the fitted budgets span at least 10x in compute
MAX_SEED_SCATTER = 0.01  # sd / mean of the final validation loss over >= 3 seeds, at every budget
MIN_SEEDS = 3
LOSS_LAW_TOLERANCE = 0.01  # L*(C) predicts the held-out budget's parabola minimum within 1%
PARAMETRIC_TOLERANCE = 0.02  # the parametric law within 2%
N_OPT_RATIO = 1.3  # N* within a factor 1.3 by both laws
MAX_INTERVAL_WIDTH = 0.065  # the flagship's 90% prediction interval at most 6.5% of the prediction wide
EXPONENT_RANGE = (0.1, 1.0)  # the parametric alpha and beta each in this range (not degenerate)


def seed_scatter(points: pd.DataFrame) -> list[dict]:
    """Per budget: the (size, seeds) points trained with >= MIN_SEEDS seeds and the largest sd / mean among
    them (the sample standard deviation, ddof 1); budgets without such a point have scatter None."""
    out = []
    for budget, at in points.groupby("budget_flops", sort=True):
        groups = [(float(n), g["loss"].to_numpy(float)) for n, g in at.groupby("params") if len(g) >= MIN_SEEDS]
        worst = max(groups, key=lambda g: np.std(g[1], ddof=1) / np.mean(g[1]), default=None)
        out.append(
            {
                "budget_flops": float(budget),
                "params": None if worst is None else worst[0],
                "seeds": 0 if worst is None else len(worst[1]),
                "mean": None if worst is None else float(np.mean(worst[1])),
                "scatter": None if worst is None else float(np.std(worst[1], ddof=1) / np.mean(worst[1])),
            }
        )
    return out


def _check(passed: bool, value, tolerance) -> dict:
    return {"passed": bool(passed), "value": value, "tolerance": tolerance}


def _within(pred: float | None, observed: float | None, tolerance: float) -> dict:
    err = None if pred is None or not observed else pred / observed - 1
    return _check(err is not None and abs(err) <= tolerance, err, tolerance)


def _ratio(pred: float | None, observed: float | None, reason: str | None = None) -> dict:
    """predicted / observed within N_OPT_RATIO; with no observed value (the held-out vertex outside the tested
    sizes) the check is not scored: passed None and the reason, no number."""
    if observed is None:
        return {"passed": None, "scored": False, "reason": reason, "value": None, "tolerance": N_OPT_RATIO}
    ratio = None if pred is None or not observed else pred / observed
    return _check(ratio is not None and 1 / N_OPT_RATIO <= ratio <= N_OPT_RATIO, ratio, N_OPT_RATIO)


def experiment_checks(outcome: dict, record: FitRecord, scatter: list[dict], branch: dict | None) -> dict:
    """The acceptance of the embedded default as an experiment, each {passed, value, tolerance}, from the
    demo's outcome (flagship_outcome), the fit record, the seed scatter per budget and the WSD branch check."""
    fitted = outcome["fitted_budgets"]
    span = max(fitted) / min(fitted) if fitted else 0.0
    worst = [s["scatter"] for s in scatter]
    f = outcome["flagship"]
    lo, hi = f["interval"]
    width = (hi - lo) / f["predicted"]
    par = record.parametric
    exponents = None if par is None else {"alpha": par.alpha, "beta": par.beta}
    return {
        "fitted_span_10x": _check(span >= MIN_FITTED_SPAN, span, MIN_FITTED_SPAN),
        "seed_scatter_1pct": _check(
            all(w is not None and w <= MAX_SEED_SCATTER for w in worst),
            None if None in worst else max(worst, default=None),
            MAX_SEED_SCATTER,
        ),
        "loss_law_within_1pct": _within(
            outcome["predicted_best_loss"], outcome["observed_best_loss"], LOSS_LAW_TOLERANCE
        ),
        "parametric_within_2pct": _within(
            outcome["parametric_predicted_best_loss"], outcome["observed_best_loss"], PARAMETRIC_TOLERANCE
        ),
        "n_opt_isoflop_within_1.3x": _ratio(
            outcome["predicted_n_opt_isoflop"], outcome["observed_n_opt"], outcome.get("observed_n_opt_source")
        ),
        "n_opt_parametric_within_1.3x": _ratio(
            outcome["predicted_n_opt_parametric"], outcome["observed_n_opt"], outcome.get("observed_n_opt_source")
        ),
        "interval_width_6.5pct": _check(width <= MAX_INTERVAL_WIDTH, width, MAX_INTERVAL_WIDTH),
        "parametric_exponents_0.1_1": _check(
            exponents is not None and all(EXPONENT_RANGE[0] <= v <= EXPONENT_RANGE[1] for v in exponents.values()),
            exponents,
            list(EXPONENT_RANGE),
        ),
        "wsd_branch_matches_run": _check(bool(branch and branch["passed"]), branch, "within the seed scatter"),
    }


def branch_match(branch_loss: float, separate_loss: float, scatter: list[dict], budget: float) -> dict:
    """A WSD branch against a run of the same (N, D, seed) trained on its own: the difference, against the
    seed scatter (sd / mean) measured at that budget; passes when it is within one standard deviation."""
    at = next((s for s in scatter if np.isclose(s["budget_flops"], budget, rtol=1e-9)), None)
    sd = None if at is None or at["scatter"] is None else at["scatter"]
    diff = separate_loss / branch_loss - 1
    return {
        "branch_loss": branch_loss,
        "separate_loss": separate_loss,
        "rel_diff": diff,
        "seed_scatter": sd,
        "passed": sd is not None and abs(diff) <= sd,
    }
