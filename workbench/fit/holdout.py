"""Held-out checks: fit on the smaller budgets, predict the next one up. Pure numpy/scipy, no I/O.

`holdout_largest` leaves out the largest budget; `rollout` fits on budgets 1..k for every k and predicts
budget k+1, the extrapolation track record to look at before trusting a long extrapolation.
Relative errors are (predicted - observed) / observed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from workbench.errors import WorkbenchError
from workbench.fit.isoflop import budget_vertices, fit_isoflop
from workbench.fit.parametric import fit_parametric
from workbench.laws import optimal_allocation, predict_loss


def _observed(target: pd.DataFrame) -> dict:
    """Best run of the target budget, and its N*: the parabola vertex if valid, else the best run's N."""
    best = target.loc[target["loss"].idxmin()]
    vertex = budget_vertices(
        target["params"].to_numpy(), target["tokens"].to_numpy(), target["loss"].to_numpy(), np.ones((1, len(target)))
    )
    valid = int(vertex.code[0]) == 0
    return {
        "best_run": {"params": float(best["params"]), "tokens": float(best["tokens"]), "loss": float(best["loss"])},
        "N_opt": float(np.exp(vertex.log_n[0])) if valid else float(best["params"]),
        "N_opt_source": "parabola vertex" if valid else "best run (vertex outside tested sizes)",
    }


def _rel(predicted: float, observed: float) -> float:
    return float((predicted - observed) / observed)


def predict_budget(
    train: pd.DataFrame, target: pd.DataFrame, methods: Sequence[str], fit_options: dict | None = None
) -> dict:
    """Fit `methods` on train and compare their predictions with the target budget's runs."""
    budget = float(target["budget_flops"].iloc[0])
    observed = _observed(target)
    out: dict = {"budget_flops": budget, "train_budgets": int(train["budget_flops"].nunique()), "observed": observed}
    best = observed["best_run"]
    if "parametric" in methods:
        law = fit_parametric(train["params"], train["tokens"], train["loss"], **(fit_options or {})).as_dict()
        loss_pred = float(predict_loss(law, best["params"], best["tokens"]))
        n_pred = float(optimal_allocation(law, budget)[0])
        out["parametric"] = {
            "loss_pred": loss_pred,
            "loss_rel_err": _rel(loss_pred, best["loss"]),
            "N_opt_pred": n_pred,
            "N_opt_rel_err": _rel(n_pred, observed["N_opt"]),
        }
    if "isoflop" in methods:
        try:
            iso = fit_isoflop(train)
        except WorkbenchError as err:  # too few kept budgets at this k: record why, the other k still count
            out["isoflop"] = {"error": str(err)}
        else:
            n_pred = float(iso.G * budget**iso.a)
            out["isoflop"] = {"N_opt_pred": n_pred, "N_opt_rel_err": _rel(n_pred, observed["N_opt"])}
    return out


def holdout_largest(points: pd.DataFrame, methods: Sequence[str], fit_options: dict | None = None) -> dict:
    """Fit without the largest budget; predicted vs observed loss at its best run and N*."""
    budgets = np.unique(points["budget_flops"])
    if len(budgets) < 3:
        raise WorkbenchError(
            f"--holdout-largest: {len(budgets)} budgets, and a fit needs 2 after holding one out",
            "Add runs at a third budget or drop --holdout-largest.",
        )
    train = points[points["budget_flops"] < budgets[-1]]
    return predict_budget(train, points[points["budget_flops"] == budgets[-1]], methods, fit_options)


def rollout(points: pd.DataFrame, methods: Sequence[str], fit_options: dict | None = None) -> list[dict]:
    """For k = 2 .. B-1: fit on the k smallest budgets, predict budget k+1."""
    budgets = np.unique(points["budget_flops"])
    if len(budgets) < 3:
        raise WorkbenchError(f"--rollout: {len(budgets)} budgets; it needs 3 or more", "Add runs at a third budget.")
    steps = []
    for k in range(2, len(budgets)):
        train = points[points["budget_flops"] < budgets[k]]
        steps.append(predict_budget(train, points[points["budget_flops"] == budgets[k]], methods, fit_options))
    return steps


BEST_LOSS_TOLERANCE = 0.02  # L*(C) without the largest budget predicts its best run's loss within 2%
N_OPT_FACTOR = 1.5  # and the isoFLOP law's N* lands within a factor 1.5 of the observed N*


def held_out_checks(holdout: dict, minima: int, excluded: int, fitted_budgets: int) -> dict:
    """The held-out budget's checks, each {passed, predicted, observed, tolerance}: every fitted budget has
    an interior isoFLOP minimum; the L*(C) law predicts the best loss within 2%; the isoFLOP law's N* is
    within a factor 1.5 of the observed."""
    observed = holdout["observed"]
    best = observed["best_run"]["loss"]
    loss_pred = (holdout.get("loss_law") or {}).get("loss_pred")
    n_pred = (holdout.get("isoflop") or {}).get("N_opt_pred")
    n_ratio = None if n_pred is None else n_pred / observed["N_opt"]
    return {
        "interior_minima": {
            "passed": excluded == 0 and minima == fitted_budgets,
            "predicted": minima,
            "observed": fitted_budgets,
            "tolerance": "every fitted budget",
        },
        "best_loss_within_2pct": {
            "passed": loss_pred is not None and abs(loss_pred / best - 1) <= BEST_LOSS_TOLERANCE,
            "predicted": loss_pred,
            "observed": best,
            "tolerance": BEST_LOSS_TOLERANCE,
        },
        "n_opt_within_1.5x": {
            "passed": n_ratio is not None and 1 / N_OPT_FACTOR <= n_ratio <= N_OPT_FACTOR,
            "predicted": n_pred,
            "observed": observed["N_opt"],
            "tolerance": N_OPT_FACTOR,
        },
    }
