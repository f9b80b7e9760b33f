"""The compute-optimal loss law L*(C) = K C^-gamma, fitted on the isoFLOP minima, with bootstrap draws.

The isoFLOP approach (Llama 3, Chinchilla approach 2) gives N*(C) and D*(C) from the parabolas'
vertices; their losses L*(C) give the loss the compute-optimal model reaches. A power law in C,
least squares in log space, predicts the next budget's best loss with two parameters where the
parametric law needs five (and is poorly determined by a few budgets spanning one decade of compute).
Bootstrap: runs are resampled within each budget (the same scheme as the other fits), every parabola
is refitted by weights, and the power law refitted on the valid vertices. `scatter_log` is the
run-to-run scatter: each run's log loss minus its budget parabola's at the run's N.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workbench.core.errors import WorkbenchError
from workbench.fit.bootstrap import resample_counts
from workbench.fit.isoflop import budget_vertices, power_law
from workbench.fit.points import budget_strata
from workbench.fit.stats import HI_Q, LO_Q, percentiles


def optimal_loss_law(points: pd.DataFrame, n_bootstrap: int = 1000, seed: int = 0, mode: str = "budget") -> dict:
    """{K, gamma, draws: {K, gamma}, scatter_log, budgets}: L*(C) = K C^-gamma over the points' budgets."""
    counts = resample_counts(points["budget_flops"].to_numpy(), n_bootstrap, seed, mode)
    budgets = sorted(points["budget_flops"].unique())
    rows = 1 + n_bootstrap
    log_loss = np.full((rows, len(budgets)), np.nan)
    valid = np.zeros((rows, len(budgets)), dtype=bool)
    scatter: list[float] = []
    for j, rows_j in enumerate(budget_strata(points["budget_flops"].to_numpy())):
        group = points.iloc[rows_j]
        weights = np.vstack([np.ones(len(rows_j)), counts[:, rows_j]])
        params, tokens, loss = (group[c].to_numpy(float) for c in ("params", "tokens", "loss"))
        vertex = budget_vertices(params, tokens, loss, weights)
        valid[:, j] = vertex.code == 0
        with np.errstate(invalid="ignore", divide="ignore"):
            log_loss[:, j] = np.log(vertex.loss)
        scatter += _scatter(params, loss)
    valid &= np.isfinite(log_loss)
    if valid[0].sum() < 2:
        raise WorkbenchError(
            f"L*(C): {valid[0].sum()} budgets with an interior minimum, and a power law needs 2",
            "Add sizes around the optimum of each budget.",
        )
    log_c = np.log(np.asarray(budgets, float))[None, :].repeat(rows, axis=0)
    k, slope = power_law(log_c, np.where(valid, log_loss, 0.0), valid)
    keep = np.isfinite(k[1:]) & np.isfinite(slope[1:])
    return {
        "K": float(k[0]),
        "gamma": float(-slope[0]),
        "budgets": [float(b) for b in budgets],
        "draws": {"K": k[1:][keep].tolist(), "gamma": (-slope[1:][keep]).tolist()},
        "scatter_log": scatter,
    }


def _scatter(params: np.ndarray, loss: np.ndarray) -> list[float]:
    """Log residuals of one budget's runs about its parabola in log N (empty with < 4 runs)."""
    if len(np.unique(params)) < 3 or len(params) < 4:
        return []
    x = np.log(params)
    coef = np.polyfit(x, loss, 2)
    inflate = np.sqrt(len(x) / (len(x) - 3))  # the parabola's 3 coefficients absorb part of the scatter
    return (inflate * (np.log(loss) - np.log(np.polyval(coef, x)))).tolist()


def predict(law: dict, budget_flops: float) -> tuple[float, np.ndarray]:
    """L*(C) of the fit and of every bootstrap draw."""
    draws = np.asarray(law["draws"]["K"], dtype=float) * budget_flops ** -np.asarray(law["draws"]["gamma"], dtype=float)
    return law["K"] * budget_flops ** -law["gamma"], draws


def prediction_interval(draws: list[float], residuals: list[float], seed: int = 0) -> tuple[float, float, float]:
    """5/50/95% of (law draw) x exp(resampled residual): where a single new run is expected to land."""
    rng = np.random.default_rng(seed)
    law = np.asarray(draws, dtype=float)
    noise = rng.choice(np.asarray(residuals, dtype=float), size=(law.size, 50))
    samples = (law[:, None] * np.exp(noise)).ravel()
    lo, mid, hi = percentiles(samples, [LO_Q, 50.0, HI_Q])
    return float(lo), float(mid), float(hi)


def predict_at(law: dict, budget_flops: float) -> dict:
    """L*(C) at `budget_flops`: the prediction, the law's 5-95% interval over its draws (None without draws),
    and the prediction interval of one new run (the law's draws widened by the run-to-run scatter)."""
    predicted, draws = predict(law, budget_flops)
    draws = draws[np.isfinite(draws)]
    lo, _, hi = prediction_interval(draws.tolist() or [predicted], law["scatter_log"] or [0.0])
    law_interval = [float(x) for x in percentiles(draws, [LO_Q, HI_Q])] if draws.size else None
    return {
        "budget_flops": float(budget_flops),
        "loss_pred": float(predicted),
        "law_interval": law_interval,
        "prediction_interval": [lo, hi],
    }
