"""Bootstrap over runs for both fits: K resamples, medians and 5-95% intervals. Pure numpy, no I/O.

Two resampling schemes (workbench.fit.design chooses one for the data, `--bootstrap-mode` overrides):
- "budget": runs are resampled with replacement within each budget (an isoFLOP design is kept: every
  resample has as many runs per budget as the data);
- "runs": runs are resampled i.i.d. over all runs (scattered designs, e.g. Chinchilla's 240 runs at
  scattered FLOPs, where grouping by FLOPs leaves single-run "budgets" that would never vary).
Each resample enters the fits as integer weights.

Speed (parametric): each resample is not refit from the whole start grid. It starts from the full-data
optimum, the next distinct local optima of the full fit and a few random grid points (`n_grid_starts`);
each is one scipy L-BFGS-B call (`parametric.minimize_starts`), and each resample keeps its best.
A resample moves the optimum only a little, so the warm starts land in the same basin; the grid points
guard against a resample whose optimum jumps basin.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from workbench.fit.isoflop import budget_vertices, power_law
from workbench.fit.laws import isoflop_allocation, optimal_allocation, optimal_loss
from workbench.fit.parametric import PARAM_NAMES, LogHuberObjective, ParametricFit, minimize_starts, start_grid
from workbench.fit.points import budget_strata
from workbench.fit.stats import interval, robust_interval


def resample_counts(budget_flops: np.ndarray, n_resamples: int, seed: int, mode: str = "budget") -> np.ndarray:
    """(K, n) multiplicities: runs drawn with replacement within each budget (mode "budget") or over all
    runs (mode "runs")."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_resamples, len(budget_flops)))
    if mode == "runs":
        return rng.multinomial(len(budget_flops), np.full(len(budget_flops), 1.0 / len(budget_flops)), n_resamples)
    for rows in budget_strata(budget_flops):
        counts[:, rows] = rng.multinomial(len(rows), np.full(len(rows), 1.0 / len(rows)), size=n_resamples)
    return counts


def bootstrap_parametric(
    points: pd.DataFrame,
    fit: ParametricFit,
    n_resamples: int = 1000,
    seed: int = 0,
    n_grid_starts: int = 2,
    n_optima: int = 3,
    chunk_rows: int = 500,  # starts per objective (its weights rows), to bound memory
    mode: str = "budget",
) -> dict[str, np.ndarray]:
    """K refits of the law on resampled runs (`mode`: see resample_counts); draws {E, A, B, alpha, beta} (K,)."""
    rng = np.random.default_rng(seed + 1)
    counts = resample_counts(points["budget_flops"].to_numpy(), n_resamples, seed, mode)
    grid = start_grid()
    warm = fit.optima[:n_optima]
    per = len(warm) + n_grid_starts
    theta = np.empty((n_resamples, 5))
    chunk = max(1, chunk_rows // per)
    for lo in range(0, n_resamples, chunk):
        k = min(chunk, n_resamples - lo)
        starts = np.concatenate(
            [np.repeat(warm[None], k, axis=0), grid[rng.integers(0, len(grid), (k, n_grid_starts))]], axis=1
        ).reshape(k * per, 5)
        objective = LogHuberObjective(
            points["params"],
            points["tokens"],
            points["loss"],
            fit.huber_delta,
            fit.overestimate_penalty,
            weights=counts[lo : lo + k],
            group=np.repeat(np.arange(k), per),
        )
        x, f = minimize_starts(objective, objective.to_internal(starts))
        f = f.reshape(k, per)
        best = x.reshape(k, per, 5)[np.arange(k), f.argmin(axis=1)]
        theta[lo : lo + k] = objective.to_external(best)
    with np.errstate(over="ignore"):  # a degenerate resample's coefficient overflows to inf, kept as such
        return {
            "E": np.exp(theta[:, 0]),
            "A": np.exp(theta[:, 1]),
            "B": np.exp(theta[:, 2]),
            "alpha": theta[:, 3],
            "beta": theta[:, 4],
        }


def bootstrap_isoflop(
    points: pd.DataFrame, n_resamples: int = 1000, seed: int = 0, mode: str = "budget"
) -> dict[str, np.ndarray]:
    """K refits of the isoFLOP power laws; draws {G, a, H, b} (NaN where fewer than 2 budgets survive)."""
    counts = resample_counts(points["budget_flops"].to_numpy(), n_resamples, seed, mode)
    budgets = np.unique(points["budget_flops"])
    log_n = np.full((n_resamples, len(budgets)), np.nan)
    log_d = np.full_like(log_n, np.nan)
    valid = np.zeros_like(log_n, dtype=bool)
    for j, rows in enumerate(budget_strata(points["budget_flops"].to_numpy())):
        part = points.iloc[rows]
        vertex = budget_vertices(
            part["params"].to_numpy(), part["tokens"].to_numpy(), part["loss"].to_numpy(), counts[:, rows]
        )
        log_n[:, j], log_d[:, j], valid[:, j] = vertex.log_n, vertex.log_d, vertex.code == 0
    log_c = np.log(budgets)[None, :]
    g, a = power_law(log_c, log_n, valid)
    h, b = power_law(log_c, log_d, valid)
    return {"G": g, "a": a, "H": h, "b": b}


def parametric_ci(draws: dict[str, np.ndarray], at_flops: Sequence[float]) -> dict:
    """Intervals of E, A, B, alpha, beta, a and of N*, D*, L* at each C in at_flops."""
    ci = {name: interval(draws[name]) for name in PARAM_NAMES}
    ci["a"] = interval(draws["beta"] / (draws["alpha"] + draws["beta"]))
    ci["at"] = []
    for c in at_flops:
        n_opt, d_opt = optimal_allocation(draws, c)
        row = {"budget_flops": float(c), "N_opt": interval(n_opt), "D_opt": interval(d_opt)}
        ci["at"].append({**row, "L_opt": interval(optimal_loss(draws, c))})
    return ci


def isoflop_ci(draws: dict[str, np.ndarray], at_flops: Sequence[float], point=None) -> dict:
    """Intervals of G, a, H, b and of N*, D* at each C in at_flops: percentiles of the draws, or with the fit
    `point` (an IsoflopFit) the robust normal interval about it (workbench.fit.stats.robust_interval)."""
    if point is None:
        ci = {name: interval(draws[name]) for name in ("G", "a", "H", "b")}
    else:
        ci = {
            name: robust_interval(getattr(point, name), draws[name], log=name in "GH") for name in ("G", "a", "H", "b")
        }
    ci["n_failed"] = int((~np.isfinite(draws["a"])).sum())
    ci["at"] = []
    for c in at_flops:
        n_opt, d_opt = isoflop_allocation(draws, c)
        if point is None:
            n_ci, d_ci = interval(n_opt), interval(d_opt)
        else:
            n_ci = robust_interval(point.G * c**point.a, n_opt, log=True)
            d_ci = robust_interval(point.H * c**point.b, d_opt, log=True)
        ci["at"].append({"budget_flops": float(c), "N_opt": n_ci, "D_opt": d_ci})
    return ci
