"""Bootstrap over runs for both fits: K resamples, medians and 5-95% intervals. Pure numpy, no I/O.

Two resampling schemes (workbench.fit.design chooses one for the data, `--bootstrap-mode` overrides):
- "budget": runs are resampled with replacement within each budget (an isoFLOP design is kept: every
  resample has as many runs per budget as the data);
- "runs": runs are resampled i.i.d. over all runs (scattered designs, e.g. Chinchilla's 240 runs at
  scattered FLOPs, where grouping by FLOPs leaves single-run "budgets" that would never vary).
Each resample enters the fits as integer weights.

Speed (parametric): each resample is not refit from the whole start grid. It starts from the full fit's
distinct local optima (up to `n_optima`: the full-data optimum first), every start of every resample
solved at once by the batched solver (workbench.fit.newton), and each resample keeps its best. A resample
moves the optimum only a little, so the warm starts land in its basin (in 1,000 resamples of 300 points,
no random grid start ever beat them). Resamples are solved in chunks so that progress can be reported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from workbench.fit.isoflop import budget_vertices, power_law
from workbench.fit.laws import SIX_N, FlopsPerToken, isoflop_allocation, optimal_allocation, optimal_loss
from workbench.fit.newton import minimize
from workbench.fit.parametric import BOX, PARAM_NAMES, LawPoints, ParametricFit
from workbench.fit.points import budget_strata
from workbench.fit.stats import interval, robust_interval

# problems x points per solver call: 1,000 resamples of 300 points, about 0.1 s (progress ticks on longer work;
# one call for all was 8% faster than four of 250, and 250 ~30% faster than 100)
CHUNK_WORK = 300_000


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


def warm_radius(law: LawPoints, theta: np.ndarray) -> float:
    """The first trust radius of a resample warm-started at the full fit's optimum: about how far a resample
    moves the fitted curve, the full fit's RMS log residual over sqrt(n) (the radius is an RMS change of the log
    prediction over the points, in the solver's metric)."""
    rms = float(law.points.rms_residual(theta)[0])
    return max(rms / np.sqrt(law.points.n), 1e-8) if np.isfinite(rms) else 1.0


def solve_warm(law: LawPoints, starts: np.ndarray, weights: np.ndarray, radius0: float | None = None):
    """Resampled fits from warm starts (one row of `starts` per row of `weights`): the batched solver with the
    first radius of `warm_radius` and the metric of the start (warm starts stay near where they began)."""
    radius0 = warm_radius(law, starts[0]) if radius0 is None else radius0
    return minimize(law.points, starts, weights, box=BOX, radius0=radius0, fixed_metric=True)


def bootstrap_parametric(
    points: pd.DataFrame,
    fit: ParametricFit,
    n_resamples: int = 1000,
    seed: int = 0,
    n_optima: int = 3,
    chunk: int | None = None,  # resamples per solver call (a progress tick each); None: CHUNK_WORK / points
    mode: str = "budget",
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """K refits of the law on resampled runs (`mode`: see resample_counts), warm-started from the full fit's
    distinct optima; draws {E, A, B, alpha, beta} (K,), plus `converged` and `degenerate` per resample.
    `progress(k)` is called after every chunk of k resamples."""
    counts = resample_counts(points["budget_flops"].to_numpy(), n_resamples, seed, mode)
    law = LawPoints(points["params"], points["tokens"], points["loss"], fit.huber_delta, fit.overestimate_penalty)
    warm = law.to_internal(fit.optima[:n_optima])
    per = len(warm)
    chunk = chunk or max(100, CHUNK_WORK // (per * len(points)))
    radius0 = warm_radius(law, warm[0])
    theta = np.empty((n_resamples, 5))
    converged = np.zeros(n_resamples, bool)
    degenerate = np.zeros(n_resamples, bool)
    for lo in range(0, n_resamples, chunk):
        k = min(chunk, n_resamples - lo)
        weights = np.repeat(counts[lo : lo + k], per, axis=0)
        solved = solve_warm(law, np.tile(warm, (k, 1)), weights, radius0)
        best = solved.f.reshape(k, per).argmin(axis=1)
        rows = np.arange(k) * per + best
        theta[lo : lo + k] = law.to_external(solved.theta[rows])
        converged[lo : lo + k] = solved.converged[rows]
        degenerate[lo : lo + k] = solved.degenerate[rows] != ""
        if progress is not None:
            progress(k)
    with np.errstate(over="ignore"):  # a degenerate resample's coefficient overflows to inf, kept as such
        return {
            "E": np.exp(theta[:, 0]),
            "A": np.exp(theta[:, 1]),
            "B": np.exp(theta[:, 2]),
            "alpha": theta[:, 3],
            "beta": theta[:, 4],
            "converged": converged,
            "degenerate": degenerate,
        }


def bootstrap_isoflop(
    points: pd.DataFrame, n_resamples: int = 1000, seed: int = 0, mode: str = "budget", flops: FlopsPerToken = SIX_N
) -> dict[str, np.ndarray]:
    """K refits of the isoFLOP power laws (D* = C / flops(N*)); draws {G, a, H, b} (NaN where fewer than 2
    budgets survive)."""
    counts = resample_counts(points["budget_flops"].to_numpy(), n_resamples, seed, mode)
    budgets = np.unique(points["budget_flops"])
    log_n = np.full((n_resamples, len(budgets)), np.nan)
    log_d = np.full_like(log_n, np.nan)
    valid = np.zeros_like(log_n, dtype=bool)
    for j, rows in enumerate(budget_strata(points["budget_flops"].to_numpy())):
        part = points.iloc[rows]
        vertex = budget_vertices(
            part["params"].to_numpy(),
            part["tokens"].to_numpy(),
            part["loss"].to_numpy(),
            counts[:, rows],
            float(budgets[j]),
            flops,
        )
        log_n[:, j], log_d[:, j], valid[:, j] = vertex.log_n, vertex.log_d, vertex.code == 0
    log_c = np.log(budgets)[None, :]
    g, a = power_law(log_c, log_n, valid)
    h, b = power_law(log_c, log_d, valid)
    return {"G": g, "a": a, "H": h, "b": b}


def parametric_ci(draws: dict[str, np.ndarray], at_flops: Sequence[float], flops: FlopsPerToken = SIX_N) -> dict:
    """Intervals of E, A, B, alpha, beta, a and of N*, D*, L* at each C in at_flops (C counted by `flops`)."""
    ci = {name: interval(draws[name]) for name in PARAM_NAMES}
    ci["a"] = interval(draws["beta"] / (draws["alpha"] + draws["beta"]))
    ci["at"] = []
    for c in at_flops:
        n_opt, d_opt = optimal_allocation(draws, c, flops)
        row = {"budget_flops": float(c), "N_opt": interval(n_opt), "D_opt": interval(d_opt)}
        ci["at"].append({**row, "L_opt": interval(optimal_loss(draws, c, flops))})
    return ci


def isoflop_ci(
    draws: dict[str, np.ndarray],
    at_flops: Sequence[float],
    point=None,
    inflate: float = 1.0,
    flops: FlopsPerToken | None = None,
) -> dict:
    """Intervals of G, a, H, b and of N*, D* at each C in at_flops: percentiles of the draws, or with the fit
    `point` (an IsoflopFit) the robust normal interval about it (workbench.fit.stats.robust_interval), widened
    by `inflate`, the small-sample factor of the parabolas (workbench.fit.stats.small_sample_inflation)."""
    names = ("G", "a", "H", "b")
    if point is None:
        ci = {name: interval(draws[name]) for name in names}
    else:
        ci = {name: robust_interval(getattr(point, name), draws[name], name in "GH", inflate) for name in names}
    ci["n_failed"] = int((~np.isfinite(draws["a"])).sum())
    ci["at"] = []
    for c in at_flops:
        n_opt, d_opt = isoflop_allocation(draws, c, flops)
        if point is None:
            n_ci, d_ci = interval(n_opt), interval(d_opt)
        else:
            n_ci = robust_interval(point.G * c**point.a, n_opt, True, inflate)
            d_point = float(isoflop_allocation(point.as_dict(), c, flops)[1])
            d_ci = robust_interval(d_point, d_opt, True, inflate)
        ci["at"].append({"budget_flops": float(c), "N_opt": n_ci, "D_opt": d_ci})
    return ci
