"""Held-out checks: fit on the smaller budgets, predict the next one up. Pure numpy/scipy, no I/O.

`holdout_largest` leaves out the largest budget; `rollout` fits on budgets 1..k for every k and predicts
budget k+1, the extrapolation track record to look at before trusting a long extrapolation.
Every prediction is scored against the held-out budget's own parabola (workbench.fit.scoring): N* against
its vertex, L* against its minimum, each with a bootstrap interval; relative errors are
predicted / target - 1, with a 90% interval for the true error and the target named.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from workbench.core.errors import WorkbenchError
from workbench.fit import frontier, scoring
from workbench.fit.bootstrap import bootstrap_isoflop, bootstrap_parametric
from workbench.fit.isoflop import fit_isoflop
from workbench.fit.laws import SIX_N, FlopsPerToken, isoflop_allocation, optimal_allocation, optimal_loss
from workbench.fit.parametric import fit_parametric


def _rel(predicted: float, observed: float) -> float:
    return float((predicted - observed) / observed)


def _train_draws(train: pd.DataFrame, fits: dict, n_bootstrap: int, seed: int, mode: str, flops: FlopsPerToken):
    """Bootstrap draws of the training fits (the prediction intervals), n_bootstrap resamples."""
    draws: dict = {}
    if n_bootstrap <= 0:
        return draws
    if "parametric" in fits:
        draws["parametric"] = bootstrap_parametric(train, fits["parametric"], n_bootstrap, seed, mode=mode)
    if "isoflop" in fits:
        draws["isoflop"] = bootstrap_isoflop(train, n_bootstrap, seed, mode, flops)
    return draws


def predict_budget(
    train: pd.DataFrame,
    target: pd.DataFrame,
    methods: Sequence[str],
    fit_options: dict | None = None,
    *,
    n_bootstrap: int = 0,
    seed: int = 0,
    mode: str = "budget",
    draws: dict | None = None,
    loss_law: dict | None = None,
    flops: FlopsPerToken = SIX_N,
    fits: dict | None = None,
) -> dict:
    """Fit `methods` on train and score their N* and L* at the target budget against its own parabola
    (workbench.fit.scoring). Prediction intervals come from `draws` ({"parametric": ..., "isoflop": ...}
    of the training fits) or from a bootstrap of n_bootstrap resamples here; none when both are absent.
    `loss_law` (workbench.fit.frontier, fitted on train) adds its L*(C) prediction, scored the same way; `fits`
    gives training fits already made ({"parametric": ParametricFit, "isoflop": IsoflopFit}). The budget's N
    and D come from its FLOPs counted by `flops`. The training laws are kept in the result (`law`), so that a
    report draws the held-out prediction without refitting."""
    budget = float(target["budget_flops"].iloc[0])
    goal = scoring.budget_target(target, seed=seed)
    out: dict = {
        "budget_flops": budget,
        "train_budgets": int(train["budget_flops"].nunique()),
        "train_max_flops": float(train["budget_flops"].max()),
        "observed": scoring.public(goal),
    }
    fits = dict(fits or {})
    if "parametric" in methods and "parametric" not in fits:
        fits["parametric"] = fit_parametric(train["params"], train["tokens"], train["loss"], **(fit_options or {}))
    if "isoflop" in methods and "isoflop" not in fits:
        try:
            fits["isoflop"] = fit_isoflop(train, flops)
        except WorkbenchError as err:  # too few kept budgets at this k: record why, the other k still count
            out["isoflop"] = {"error": str(err)}
    draws = draws if draws is not None else _train_draws(train, fits, n_bootstrap, seed, mode, flops)
    if "parametric" in fits:
        law = fits["parametric"].as_dict()
        pd_ = draws.get("parametric")
        n_pred, loss_pred = float(optimal_allocation(law, budget, flops)[0]), float(optimal_loss(law, budget, flops))
        n_draws = None if pd_ is None else optimal_allocation(pd_, budget, flops)[0]
        l_draws = None if pd_ is None else optimal_loss(pd_, budget, flops)
        out["parametric"] = _scored(goal, n_pred, n_draws, loss_pred, l_draws) | {"law": law}
    if "isoflop" in fits:
        iso = fits["isoflop"]
        id_ = draws.get("isoflop")
        n_draws = None if id_ is None else isoflop_allocation(id_, budget)[0]
        out["isoflop"] = _scored(goal, float(iso.G * budget**iso.a), n_draws, robust=True) | {
            "law": {k: iso.as_dict()[k] for k in ("G", "a", "H", "b")}
        }
    if loss_law is None and "isoflop" in fits:
        try:
            loss_law = frontier.optimal_loss_law(train, n_bootstrap, seed, mode)
        except WorkbenchError:  # fewer than 2 interior minima: no L*(C) law at this k
            loss_law = None
    if loss_law is not None:
        predicted, l_draws = frontier.predict(loss_law, budget)
        l_score = scoring.score(float(predicted), goal, "loss_opt", l_draws if len(l_draws) else None)
        law_fields = {k: loss_law[k] for k in ("E", "K", "gamma") if k in loss_law}
        out["loss_law"] = {
            "loss_pred": float(predicted),
            "loss_rel_err": l_score["rel_err"],
            "loss": l_score,
            "law": law_fields,
        }
    return out


def _scored(goal: dict, n_pred: float, n_draws, loss_pred: float | None = None, l_draws=None, robust=False) -> dict:
    """The flat errors of old (N_opt_pred, N_opt_rel_err, loss_pred, loss_rel_err) and the scored blocks."""
    n_score = scoring.score(n_pred, goal, "N_opt", n_draws, robust=robust)
    row = {"N_opt_pred": n_pred, "N_opt_rel_err": n_score["rel_err"], "N_opt": n_score}
    if loss_pred is not None:
        l_score = scoring.score(loss_pred, goal, "loss_opt", l_draws)
        row |= {"loss_pred": loss_pred, "loss_rel_err": l_score["rel_err"], "loss": l_score}
    return row


def holdout_largest(
    points: pd.DataFrame, methods: Sequence[str], fit_options: dict | None = None, **scoring_kw
) -> dict:
    """Fit without the largest budget; its N* and L* predicted vs its own parabola (see predict_budget)."""
    budgets = np.unique(points["budget_flops"])
    if len(budgets) < 3:
        raise WorkbenchError(
            f"--holdout-largest: {len(budgets)} budgets, and a fit needs 2 after holding one out",
            "Add runs at a third budget or drop --holdout-largest.",
        )
    train = points[points["budget_flops"] < budgets[-1]]
    return predict_budget(train, points[points["budget_flops"] == budgets[-1]], methods, fit_options, **scoring_kw)


def rollout(
    points: pd.DataFrame,
    methods: Sequence[str],
    fit_options: dict | None = None,
    progress: Callable[[int], None] | None = None,
    **scoring_kw,
) -> list[dict]:
    """For k = 2 .. B-1: fit on the k smallest budgets, predict budget k+1 (scored as in predict_budget);
    `progress(1)` after each step."""
    budgets = np.unique(points["budget_flops"])
    if len(budgets) < 3:
        raise WorkbenchError(f"--rollout: {len(budgets)} budgets; it needs 3 or more", "Add runs at a third budget.")
    steps = []
    for k in range(2, len(budgets)):
        train = points[points["budget_flops"] < budgets[k]]
        target = points[points["budget_flops"] == budgets[k]]
        steps.append(predict_budget(train, target, methods, fit_options, **scoring_kw))
        if progress is not None:
            progress(1)
    return steps


BEST_LOSS_TOLERANCE = 0.02  # L*(C) without the largest budget predicts its parabola's minimum within 2%
N_OPT_FACTOR = 1.5  # and the isoFLOP law's N* lands within a factor 1.5 of the observed N*


NOT_SCORED = "not scored (vertex outside the tested sizes)"


def held_out_checks(holdout: dict, minima: int, excluded: int, fitted_budgets: int) -> dict:
    """The held-out budget's checks, each {passed, scored, predicted, observed, tolerance}: every fitted
    budget has an interior isoFLOP minimum; the L*(C) law predicts the minimum of the held-out budget's
    parabola within 2% (the check's historical name says best loss); the isoFLOP law's N* is within a factor
    1.5 of the parabola's vertex. A check with nothing to score (the held-out vertex outside the tested
    sizes, or no prediction) has scored False, passed None, observed None and the reason; it is not a pass."""
    observed = holdout["observed"]
    best = observed["loss_opt"]
    loss_pred = (holdout.get("loss_law") or {}).get("loss_pred")
    n_pred = (holdout.get("isoflop") or {}).get("N_opt_pred")
    vertex = observed.get("scored", True)
    n_ratio = None if n_pred is None or not vertex else n_pred / observed["N_opt"]
    n_reason = NOT_SCORED if not vertex else "not scored (no isoFLOP prediction)" if n_pred is None else None
    loss_reason = NOT_SCORED if not vertex else "not scored (no L*(C) law)" if loss_pred is None else None
    return {
        "interior_minima": {
            "passed": excluded == 0 and minima == fitted_budgets,
            "scored": True,
            "predicted": minima,
            "observed": fitted_budgets,
            "tolerance": "every fitted budget",
        },
        "best_loss_within_2pct": {
            "passed": None if loss_reason else abs(loss_pred / best - 1) <= BEST_LOSS_TOLERANCE,
            "scored": loss_reason is None,
            "reason": loss_reason,
            "predicted": loss_pred,
            "observed": None if loss_reason else best,
            "tolerance": BEST_LOSS_TOLERANCE,
        },
        "n_opt_within_1.5x": {
            "passed": None if n_reason else 1 / N_OPT_FACTOR <= n_ratio <= N_OPT_FACTOR,
            "scored": n_reason is None,
            "reason": n_reason,
            "predicted": n_pred,
            "observed": None if n_reason else observed["N_opt"],
            "ratio": n_ratio,
            "tolerance": N_OPT_FACTOR,
        },
    }
