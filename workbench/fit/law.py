"""Closed forms of the fitted laws, vectorised over bootstrap draws. Pure numpy, no I/O.

A planner calls these on the loaded fits/NAME.json: `params` may be the point estimate
(`fit["parametric"]`, scalars) or the draws (`fit["parametric"]["draws"]`, lists of K floats);
N (parameters, non-embedding), D (tokens) and C (FLOPs) broadcast against them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike


def _arr(params: Mapping[str, object], key: str) -> np.ndarray:
    return np.asarray(params[key], dtype=float)


def predict_loss(params: Mapping[str, object], N: ArrayLike, D: ArrayLike) -> np.ndarray:
    """L(N, D) = E + A / N^alpha + B / D^beta (loss in nats/token; N params, D tokens)."""
    n = np.asarray(N, dtype=float)
    d = np.asarray(D, dtype=float)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # extreme draws give inf/NaN, kept
        return (
            _arr(params, "E")
            + _arr(params, "A") / n ** _arr(params, "alpha")
            + _arr(params, "B") / d ** _arr(params, "beta")
        )


def optimal_allocation(params: Mapping[str, object], C: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(N_opt params, D_opt tokens) minimising L at C FLOPs with C = 6 N D (DESIGN.md closed form)."""
    alpha, beta = _arr(params, "alpha"), _arr(params, "beta")
    c = np.asarray(C, dtype=float)
    g = (alpha * _arr(params, "A") / (beta * _arr(params, "B"))) ** (1.0 / (alpha + beta))
    n_opt = g * (c / 6.0) ** (beta / (alpha + beta))
    return n_opt, c / (6.0 * n_opt)


def optimal_loss(params: Mapping[str, object], C: ArrayLike) -> np.ndarray:
    """L*(C): the law's loss at its compute-optimal allocation for C FLOPs."""
    n_opt, d_opt = optimal_allocation(params, C)
    return predict_loss(params, n_opt, d_opt)


def isoflop_allocation(params: Mapping[str, object], C: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(N*(C) = G C^a params, D*(C) = H C^b tokens) from the isoFLOP power laws."""
    c = np.asarray(C, dtype=float)
    return _arr(params, "G") * c ** _arr(params, "a"), _arr(params, "H") * c ** _arr(params, "b")
