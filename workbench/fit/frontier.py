"""The compute-optimal loss law L*(C) = E + K C^-gamma, fitted on the isoFLOP minima, with bootstrap draws.

The isoFLOP approach (Llama 3, Chinchilla approach 2) gives N*(C) and D*(C) from the parabolas' vertices;
their losses L*(C) give the loss the compute-optimal model reaches. A law with an irreducible term E (the
parametric law's own frontier has exactly this form when C = 6 N D: E + K C^-(alpha beta / (alpha + beta)))
predicts the next budget's best loss with three parameters, and does not fall through its floor far past
the data the way a pure power law K C^-gamma does. It is fitted with the parametric law's robust loss
(Huber in log space, workbench.fit.newton) from a small grid of starts; where the minima show no floor the
fit sends E to 0 and is flagged (`degenerate`), the pure power law being then what the data support.

Bootstrap: runs are resampled within each budget (the same scheme as the other fits), every parabola is
refitted by weights, and the law refitted on the valid vertices, all resamples as one batch. `scatter_log` is
the run-to-run scatter: each run's log loss minus its budget parabola's at the run's N.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workbench.core.errors import WorkbenchError
from workbench.fit.bootstrap import resample_counts
from workbench.fit.isoflop import budget_vertices
from workbench.fit.newton import Box, Points, minimize
from workbench.fit.points import budget_strata
from workbench.fit.stats import HI_Q, LO_Q, percentiles

FORM = "E + K C^-gamma"
FLOOR_STARTS = [(f, g) for f in (0.0, 0.3, 0.6, 0.85, 0.97) for g in (0.03, 0.1, 0.3)]  # E / min L*, gamma
SCREEN_STEPS, POLISHED = 6, 3  # every start takes 6 trust-region steps; the 3 lowest per row are polished
NO_FLOOR = 1e-4  # E below this fraction of the lowest minimum: the minima show no floor (a pure power law)


def _law_points(log_c: np.ndarray) -> tuple[Points, float]:
    """The minima's budgets as solver points: log L* = LSE(k' - gamma x, e), x = log C - mean."""
    center = float(log_c.mean())
    x = log_c - center
    zero, one = np.zeros_like(x), np.ones_like(x)
    features = np.stack([np.stack([zero, one, -x], axis=1), np.stack([one, zero, zero], axis=1)])
    return Points(features, np.zeros_like(x)), center


def fit_floor_laws(log_c: np.ndarray, log_loss: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(theta (R, 3) = (log E, log K, gamma), degenerate flags (R,)) of L* = E + K C^-gamma for each row of
    minima (R, B) over the budgets' log C (B,), fitted on the valid ones (R, B), all rows as one batch."""
    points, center = _law_points(log_c)
    rows = len(log_loss)
    y = np.where(valid, log_loss, 0.0)
    lowest = np.exp(np.where(valid, log_loss, np.inf).min(axis=1))
    mean_l = np.exp(np.where(valid, log_loss, 0.0).sum(1) / np.maximum(valid.sum(1), 1))
    floor = float(np.log(NO_FLOOR * lowest.min()))
    lowest = np.where(np.isfinite(lowest), lowest, 1.0)  # a resample with no valid minimum: any start will do
    starts = []
    for frac, gamma in FLOOR_STARTS:
        e = np.log(np.maximum(frac * lowest, 1e-6 * lowest))
        k = np.log(np.maximum(mean_l - np.exp(e), 1e-3 * mean_l))
        starts.append(np.stack([e, k, np.full(rows, gamma)], axis=1))
    starts = np.stack(starts, axis=1).reshape(-1, 3)
    per = len(FLOOR_STARTS)
    weights = np.repeat(valid.astype(float), per, axis=0)
    box = Box(lower=(floor, None, 1e-3), upper=(None, None, 3.0), names=("E", "K", "gamma"), term_names=("K C^-g", "E"))
    targets = np.repeat(y, per, axis=0)
    # screen: a few steps from every start, then the best POLISHED per row to convergence
    screen = minimize(points, starts, weights, targets=targets, box=box, maxiter=SCREEN_STEPS)
    order = np.argsort(np.where(np.isfinite(screen.f), screen.f, np.inf).reshape(rows, per), axis=1)
    chosen = (np.arange(rows)[:, None] * per + order[:, :POLISHED]).ravel()
    solved = minimize(points, screen.theta[chosen], weights[chosen], targets=targets[chosen], box=box)
    best = np.where(np.isfinite(solved.f), solved.f, np.inf).reshape(rows, POLISHED).argmin(axis=1)
    pick = np.arange(rows) * POLISHED + best
    theta = solved.theta[pick].copy()
    theta[:, 1] += theta[:, 2] * center  # k = k' + gamma mean(log C)
    bad = ~np.isfinite(solved.f[pick]) | (valid.sum(1) < 3)
    theta[bad] = np.nan
    return theta, solved.degenerate[pick]


def optimal_loss_law(points: pd.DataFrame, n_bootstrap: int = 1000, seed: int = 0, mode: str = "budget") -> dict:
    """{E, K, gamma, form, degenerate, budgets, draws: {E, K, gamma}, scatter_log}: L*(C) = E + K C^-gamma over
    the points' budgets with an interior minimum (3 needed; 2 give a power law through them, E = 0)."""
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
            f"L*(C): {valid[0].sum()} budgets with an interior minimum, and the law needs 2",
            "Add sizes around the optimum of each budget.",
        )
    log_c = np.log(np.asarray(budgets, float))
    if valid[0].sum() == 2:  # two minima: the power law through them, no floor to fit
        theta, flags = _two_point(log_c, log_loss, valid), np.full(rows, "E -> 0 (2 minima)", dtype=object)
    else:
        theta, flags = fit_floor_laws(log_c, log_loss, valid)
    e, k, gamma = theta.T
    keep = np.isfinite(k[1:]) & np.isfinite(gamma[1:]) & ~np.isnan(e[1:])  # E = 0 (log -inf) is a law
    return {
        "form": FORM,
        "E": float(np.exp(e[0])),
        "K": float(np.exp(k[0])),
        "gamma": float(gamma[0]),
        "degenerate": str(flags[0]),
        "budgets": [float(b) for b in budgets],
        "draws": {
            "E": np.exp(e[1:][keep]).tolist(),
            "K": np.exp(k[1:][keep]).tolist(),
            "gamma": gamma[1:][keep].tolist(),
        },
        "scatter_log": scatter,
    }


def _two_point(log_c: np.ndarray, log_loss: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(log E = -inf, log K, gamma) of the power law through each row's valid minima (the 2-budget case)."""
    m = valid.astype(float)
    count = m.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        xm = (m * log_c).sum(1) / count
        ym = (m * np.where(valid, log_loss, 0.0)).sum(1) / count
        dx = np.where(valid, log_c - xm[:, None], 0.0)
        slope = (dx * (np.where(valid, log_loss, 0.0) - ym[:, None])).sum(1) / (dx * dx).sum(1)
    theta = np.stack([np.full_like(xm, -np.inf), ym - slope * xm, -slope], axis=1)
    theta[count < 2] = np.nan
    return theta


def _scatter(params: np.ndarray, loss: np.ndarray) -> list[float]:
    """Log residuals of one budget's runs about its parabola in log N (empty with < 4 runs)."""
    if len(np.unique(params)) < 3 or len(params) < 4:
        return []
    x = np.log(params)
    coef = np.polyfit(x, loss, 2)
    inflate = np.sqrt(len(x) / (len(x) - 3))  # the parabola's 3 coefficients absorb part of the scatter
    return (inflate * (np.log(loss) - np.log(np.polyval(coef, x)))).tolist()


def predict(law: dict, budget_flops: float) -> tuple[float, np.ndarray]:
    """L*(C) of the fit and of every bootstrap draw (a record without E is the power law K C^-gamma)."""
    draws = law.get("draws") or {}
    k, gamma = np.asarray(draws.get("K", []), float), np.asarray(draws.get("gamma", []), float)
    e = np.asarray(draws.get("E", np.zeros_like(k)), float)
    with np.errstate(over="ignore", invalid="ignore"):
        value = law.get("E", 0.0) + law["K"] * budget_flops ** -law["gamma"]
        return float(value), e + k * budget_flops**-gamma


def prediction_interval(draws: list[float], residuals: list[float], seed: int = 0) -> tuple[float, float, float]:
    """5/50/95% of (law draw) x exp(resampled residual): where a single new run is expected to land."""
    rng = np.random.default_rng(seed)
    law = np.asarray(draws, dtype=float)
    noise = rng.choice(np.asarray(residuals, dtype=float), size=(law.size, 50))
    samples = (law[:, None] * np.exp(noise)).ravel()
    lo, mid, hi = percentiles(samples, [LO_Q, 50.0, HI_Q])
    return float(lo), float(mid), float(hi)


def predict_at(law: dict, budget_flops: float, widen_log_sd: float = 0.0) -> dict:
    """L*(C) at `budget_flops`: the prediction, the law's 5-95% interval over its draws (None without draws),
    the extrapolation interval (the draws' log spread widened in quadrature by `widen_log_sd`, the model error
    the rollout measured at this distance: workbench.fit.calibration), and the prediction interval of one new
    run (the widened law draws and the run-to-run scatter)."""
    predicted, draws = predict(law, budget_flops)
    draws = draws[np.isfinite(draws) & (draws > 0)]
    law_interval = [float(x) for x in percentiles(draws, [LO_Q, HI_Q])] if draws.size else None
    widened = _widen(predicted, draws, widen_log_sd)
    lo, _, hi = prediction_interval(widened.tolist() or [predicted], law["scatter_log"] or [0.0])
    interval = [float(x) for x in percentiles(widened, [LO_Q, HI_Q])] if widened.size else None
    return {
        "budget_flops": float(budget_flops),
        "loss_pred": float(predicted),
        "law_interval": law_interval,
        "interval": interval,
        "model_error_log_sd": float(widen_log_sd),
        "prediction_interval": [lo, hi],
    }


def _widen(predicted: float, draws: np.ndarray, log_sd: float, seed: int = 0) -> np.ndarray:
    """The draws with the model error added: each draw x exp(N(0, log_sd)) (log_sd 0: the draws as they are)."""
    if log_sd <= 0 or not draws.size:
        return draws
    rng = np.random.default_rng(seed + 7)
    return draws * np.exp(log_sd * rng.standard_normal(draws.size))
