"""Percentiles of bootstrap draws, defined once: the fit's intervals and the plan's. Pure numpy."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

LO_Q, HI_Q = 5.0, 95.0
Z90 = 1.6449  # a 5-95% interval is +-Z90 standard deviations of a normal


def percentiles(values: ArrayLike, qs: ArrayLike) -> np.ndarray:
    """numpy's linear percentiles, where two equal neighbours (also two infinities from extreme draws)
    give that value and a finite value next to +inf gives +inf (numpy's interpolation gives NaN there)."""
    v = np.asarray(values, dtype=float)
    lower = np.percentile(v, qs, method="lower")
    higher = np.percentile(v, qs, method="higher")
    with np.errstate(invalid="ignore"):
        linear = np.percentile(v, qs)
    return np.where(lower == higher, lower, np.where(np.isposinf(higher), np.inf, linear))


def interval(values: ArrayLike) -> dict[str, float]:
    """Median and 5-95% interval of the finite draws (NaN when none is finite)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return {"median": float("nan"), "lo": float("nan"), "hi": float("nan")}
    lo, med, hi = percentiles(finite, [LO_Q, 50.0, HI_Q])
    return {"median": float(med), "lo": float(lo), "hi": float(hi)}


def small_sample_inflation(n_runs: float, n_coef: int = 3, t_quantile: bool = True) -> float:
    """How much wider than +-Z90 bootstrap sd a 90% interval must be for an n_coef-coefficient fit to n_runs
    runs: sqrt(n / (n - k)) (a bootstrap shrinks the spread by sqrt((n - k) / n)), times t(0.95, n - k) / Z90
    with `t_quantile` (the normal quantile is too small for an estimate from few residual degrees of freedom:
    a held-out target's own parabola); 1 for large n."""
    n = float(n_runs)
    dof = max(n - n_coef, 1.0)
    factor = float(np.sqrt(max(n, dof + 1e-9) / dof))
    return factor * (t95(dof) / Z90 if t_quantile else 1.0)


# the 95% quantile of Student's t for 1..30 degrees of freedom (standard tables); beyond, the normal's
# with the first terms of its Cornish-Fisher expansion (error below 1e-4)
_T95 = (
    *(6.3138, 2.9200, 2.3534, 2.1318, 2.0150, 1.9432, 1.8946, 1.8595, 1.8331, 1.8125),
    *(1.7959, 1.7823, 1.7709, 1.7613, 1.7531, 1.7459, 1.7396, 1.7341, 1.7291, 1.7247),
    *(1.7207, 1.7171, 1.7139, 1.7109, 1.7081, 1.7056, 1.7033, 1.7011, 1.6991, 1.6973),
)


def t95(dof: float) -> float:
    """The 95% quantile of Student's t with `dof` degrees of freedom (interpolated between whole numbers)."""
    if dof <= 1:
        return _T95[0]
    if dof <= 30:
        lo = int(np.floor(dof))
        hi = min(lo + 1, 30)
        return float(_T95[lo - 1] + (dof - lo) * (_T95[hi - 1] - _T95[lo - 1]))
    z = Z90
    return float(z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2))


def robust_interval(point: float, values: ArrayLike, log: bool = False, inflate: float = 1.0) -> dict[str, float]:
    """Median of the finite draws, and point +- inflate Z90 x IQR / 1.349 (in log space when `log`): the
    interval of the isoFLOP estimates (workbench.fit.isoflop's vertices are ratios of fitted coefficients,
    whose bootstrap draws have heavy tails; the percentile interval covered the true exponent in 98% of 300
    repeats at 90% nominal, this one in 90%, with a width 0.93x the true spread). `inflate` is the
    small-sample factor of the parabolas behind the draws (small_sample_inflation of the runs per budget)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & ((v > 0) if log else True)]
    if v.size < 4 or not np.isfinite(point) or (log and point <= 0):
        return {"median": float("nan"), "lo": float("nan"), "hi": float("nan")}
    x = np.log(v) if log else v
    q25, med, q75 = np.percentile(x, [25.0, 50.0, 75.0])
    centre, half = (np.log(point) if log else point), inflate * Z90 * (q75 - q25) / 1.349
    lo, hi = centre - half, centre + half
    if log:
        return {"median": float(np.exp(med)), "lo": float(np.exp(lo)), "hi": float(np.exp(hi))}
    return {"median": float(med), "lo": float(lo), "hi": float(hi)}
