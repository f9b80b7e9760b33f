"""Percentiles of bootstrap draws, defined once: the fit's intervals and the plan's. Pure numpy."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

LO_Q, HI_Q = 5.0, 95.0


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
