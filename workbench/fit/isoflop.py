"""Chinchilla approach 2 / Llama 3: isoFLOP parabolas, their minima and power laws. Pure numpy, no I/O.

Per budget C: loss = c0 + c1 x + c2 x^2 with x = log N (centred); the vertex gives N*(C). D*(C) is the
budget over the FLOPs per token at N* (the rule the budgets were counted with:
workbench.fit.laws.FlopsPerToken; C / (6 N*) for C = 6 N D); without one, from the budget's own runs (log D
on log N). Then N* = G C^a and D* = H C^b by least squares in log space (where the budgets count attention,
D*(C) = C / FLOPs per token at N*(C) is the allocation: workbench.fit.laws.isoflop_allocation). Every step
is batched over weight rows (bootstrap counts) so the full fit is the one-row case of the bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from workbench.core.errors import WorkbenchError
from workbench.core.units import human
from workbench.fit.laws import FlopsPerToken


@dataclass(frozen=True)
class IsoflopFit:
    """Minima of the budgets kept, the excluded budgets with reasons, and N* = G C^a, D* = H C^b."""

    budgets: tuple[float, ...]
    minima: tuple[dict, ...]  # budget_flops, params, tokens, loss, n_sizes
    excluded: tuple[dict, ...]  # budget_flops, reason
    G: float
    a: float
    H: float
    b: float

    def as_dict(self) -> dict:
        """Plain JSON-ready fields (keys budgets, minima, excluded, G, a, H, b)."""
        return {
            "budgets": [float(b) for b in self.budgets],
            "minima": [dict(m) for m in self.minima],
            "excluded": [dict(e) for e in self.excluded],
            "G": self.G,
            "a": self.a,
            "H": self.H,
            "b": self.b,
        }


@dataclass(frozen=True)
class Vertices:
    """Per weight row (K) the vertex of one budget's parabola: log N*, log D*, L*, and why it is invalid."""

    log_n: np.ndarray
    log_d: np.ndarray
    loss: np.ndarray
    code: np.ndarray  # 0 valid, 1 fewer than 3 sizes, 2 opens downward, 3 below sizes, 4 above sizes


def budget_vertices(
    params: np.ndarray,
    tokens: np.ndarray,
    loss: np.ndarray,
    weights: np.ndarray,
    budget_flops: float | None = None,
    flops: FlopsPerToken | None = None,
) -> Vertices:
    """Vertex of the weighted parabola of loss in log N for one budget, for each row of weights (K, m); D* is
    budget_flops / flops(N*) when both are given, else read off the runs' tokens."""
    x_raw = np.log(params)
    mid = x_raw.mean()
    x = x_raw - mid
    w = np.asarray(weights, float)
    design = np.stack([np.ones_like(x), x, x * x], axis=1)
    present = w > 0
    n_sizes = np.array([len(np.unique(x[row])) for row in present])
    gram = np.einsum("km,mi,mj->kij", w, design, design)
    rhs = np.einsum("km,mi,m->ki", w, design, loss)
    ok = n_sizes >= 3
    coef = np.full((len(w), 3), np.nan)
    coef[ok] = np.linalg.solve(gram[ok], rhs[ok][..., None])[..., 0]
    c0, c1, c2 = coef.T
    with np.errstate(divide="ignore", invalid="ignore"):
        x_star = -c1 / (2.0 * c2)
    lo = np.where(present, x[None, :], np.inf).min(axis=1)
    hi = np.where(present, x[None, :], -np.inf).max(axis=1)
    code = np.select([~ok, ~(c2 > 0), x_star < lo, x_star > hi], [1, 2, 3, 4], default=0)
    # log D on log N by weighted least squares (exactly linear for an isoFLOP grid)
    d_gram = np.einsum("km,mi,mj->kij", w, design[:, :2], design[:, :2])
    d_rhs = np.einsum("km,mi,m->ki", w, design[:, :2], np.log(tokens))
    d_coef = np.full((len(w), 2), np.nan)
    d_ok = n_sizes >= 2
    d_coef[d_ok] = np.linalg.solve(d_gram[d_ok], d_rhs[d_ok][..., None])[..., 0]
    log_d = d_coef[:, 0] + d_coef[:, 1] * x_star
    if budget_flops is not None and flops is not None:
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            log_d = np.log(budget_flops) - np.log(flops(np.exp(x_star + mid)))
    return Vertices(
        log_n=x_star + mid,
        log_d=log_d,
        loss=c0 + c1 * x_star + c2 * x_star**2,
        code=code,
    )


def power_law(log_c: np.ndarray, log_y: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least squares log y = log k + p log C over the budgets in mask (K, B); returns (k, p), NaN if < 2 budgets."""
    m = mask.astype(float)
    y = np.where(mask, log_y, 0.0)
    count = m.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        c_mean = (m * log_c).sum(1) / count
        y_mean = (m * y).sum(1) / count
        dc = np.where(mask, log_c - c_mean[:, None], 0.0)
        slope = (dc * (y - y_mean[:, None])).sum(1) / (dc * dc).sum(1)
    slope = np.where(count >= 2, slope, np.nan)
    return np.exp(y_mean - slope * c_mean), slope


def fit_power_law(x: ArrayLike, y: ArrayLike) -> tuple[float, float]:
    """(coef, exp) of y = coef x^exp by least squares on log y against log x (one row of `power_law`)."""
    log_x, log_y = np.log(np.asarray(x, float))[None, :], np.log(np.asarray(y, float))[None, :]
    coef, exp = power_law(log_x, log_y, np.ones_like(log_x, dtype=bool))
    return float(coef[0]), float(exp[0])


def _reason(code: int, budget: pd.DataFrame, vertex_n: float) -> str:
    sizes = budget["params"]
    if code == 1:
        return f"fewer than 3 sizes ({sizes.nunique()})"
    if code == 2:
        return "no minimum: the parabola in log N opens downward"
    side = "below the smallest" if code == 3 else "above the largest"
    return f"minimum at N={human(vertex_n)} is {side} tested size ({human(sizes.min())}..{human(sizes.max())})"


def fit_isoflop(points: pd.DataFrame, flops: FlopsPerToken | None = None) -> IsoflopFit:
    """Parabola per budget, exclusions with reasons, and the power laws of N*(C), D*(C) (D* = C / flops(N*))."""
    minima, excluded = [], []
    for budget_flops, budget in points.groupby("budget_flops", sort=True):
        vertex = budget_vertices(
            budget["params"].to_numpy(),
            budget["tokens"].to_numpy(),
            budget["loss"].to_numpy(),
            np.ones((1, len(budget))),
            float(budget_flops),
            flops,
        )
        code = int(vertex.code[0])
        if code:
            with np.errstate(over="ignore"):  # a vertex far off the grid only needs its side
                vertex_n = float(np.exp(vertex.log_n[0]))
            excluded.append({"budget_flops": float(budget_flops), "reason": _reason(code, budget, vertex_n)})
            continue
        minima.append(
            {
                "budget_flops": float(budget_flops),
                "params": float(np.exp(vertex.log_n[0])),
                "tokens": float(np.exp(vertex.log_d[0])),
                "loss": float(vertex.loss[0]),
                "n_sizes": int(budget["params"].nunique()),
            }
        )
    budgets = tuple(float(b) for b in sorted(points["budget_flops"].unique()))
    _require_budgets(minima, excluded)
    log_c = np.log([m["budget_flops"] for m in minima])[None, :]
    mask = np.ones_like(log_c, dtype=bool)
    g, a = power_law(log_c, np.log([m["params"] for m in minima])[None, :], mask)
    h, b = power_law(log_c, np.log([m["tokens"] for m in minima])[None, :], mask)
    return IsoflopFit(budgets, tuple(minima), tuple(excluded), float(g[0]), float(a[0]), float(h[0]), float(b[0]))


def _require_budgets(minima: list[dict], excluded: list[dict]) -> None:
    """Two kept budgets are the least a power law needs; say which budgets went and why."""
    if len(minima) >= 2:
        return
    reasons = "; ".join(f"budget {e['budget_flops']:.3g}: {e['reason']}" for e in excluded)
    what = "every budget excluded" if not minima else f"only budget {minima[0]['budget_flops']:.3g} kept"
    raise WorkbenchError(
        f"isoFLOP fit: {what} ({reasons})",
        "Add sizes on both sides of each budget's best run (at least 3 per budget), or use --method parametric.",
    )
