"""Chinchilla approach 3: L = E + A/N^alpha + B/D^beta fitted in log space. Pure numpy, no I/O.

log L_hat = LSE(a - alpha log N, b - beta log D, e) with A = exp(a), B = exp(b), E = exp(e); the
objective is the mean Huber(delta) of log L_hat - log L over runs. The starts: a grid (per_axis^5 rows
over Chinchilla's ranges) is evaluated in one vectorised pass, the best `n_polish` are solved to the
convergence criterion of workbench.fit.newton (exact Hessian, trust region, all starts as one batch; each
start's first radius is its RMS log residual: the optimum's predictions lie within about that of the start's,
in the solver's metric), and the distinct optima are kept for warm starts (the bootstrap's resamples start
from them). Internally log N and log D are centred (a' = a - alpha mean(log N)) so that a and alpha are not
nearly collinear; results are reported in the usual (E, A, B, alpha, beta).

A fit that runs away (E to 0, an exponent through 0 or past 5, a term's share of the loss to 0) is stopped
early and flagged (`degenerate`): the data do not determine the law (workbench.fit.laws.degenerate_reasons
says what to add to the sweep).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from workbench.fit.laws import MIN_E, PARAM_NAMES, ParametricLaw
from workbench.fit.newton import Box, Points, grid_objectives, minimize


@dataclass(frozen=True)
class ParametricFit(ParametricLaw):
    """The fitted law (a workbench.fit.laws.ParametricLaw: loss, optimum, ... as for any law) and how it was
    fitted; `optima` holds distinct local optima (log-space theta rows) for warm starts."""

    objective: float
    n_starts: int
    n_points: int
    huber_delta: float
    overestimate_penalty: float
    optima: np.ndarray = field(repr=False, compare=False)
    converged: bool = True
    degenerate: str = ""  # the plausibility box's flags at the optimum (workbench.fit.newton.Box), "" if none

    @property
    def a(self) -> float:
        """Exponent of N_opt proportional to C^a: beta / (alpha + beta)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def theta(self) -> np.ndarray:
        """(e, a, b, alpha, beta) in log space."""
        return np.array([np.log(self.E), np.log(self.A), np.log(self.B), self.alpha, self.beta])

    def as_dict(self) -> dict:
        """The estimates as plain floats (keys E, A, B, alpha, beta, a)."""
        return {**{k: float(getattr(self, k)) for k in PARAM_NAMES}, "a": float(self.a)}


def start_grid(per_axis: int = 4) -> np.ndarray:
    """per_axis^5 starts (e, a, b, alpha, beta) over Chinchilla's ranges: e -1..1.5, a and b 0..25, exponents 0..2."""
    axes = [
        np.linspace(-1.0, 1.5, per_axis),
        np.linspace(0.0, 25.0, per_axis),
        np.linspace(0.0, 25.0, per_axis),
        np.linspace(0.0, 2.0, per_axis),
        np.linspace(0.0, 2.0, per_axis),
    ]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 5)


def distinct_optima(theta: np.ndarray, f: np.ndarray, keep: int = 4, min_dist: float = 0.05) -> np.ndarray:
    """Up to `keep` best rows of theta (sorted by f) that differ from each other by more than min_dist."""
    chosen: list[np.ndarray] = []
    for i in np.argsort(f):
        if not np.isfinite(f[i]):
            break
        if all(np.abs(theta[i] - c).max() > min_dist for c in chosen):
            chosen.append(theta[i])
        if len(chosen) == keep:
            break
    return np.array(chosen)


# the plausibility box in internal coordinates (e, a', b', alpha, beta): E below a thousandth of MIN_E, an
# exponent below 0.02 (a constant over the data) or above 5 (a step), a term's share of the loss below 1e-8
BOX = Box(
    lower=(float(np.log(MIN_E * 1e-1)), None, None, 0.02, 0.02),
    upper=(None, None, None, 5.0, 5.0),
    names=("E", "A", "B", "alpha", "beta"),
    term_names=("A/N^alpha", "B/D^beta", "E"),
)


class CentredCoordinates:
    """The law's parameters (e, a, b, alpha, beta) with log N and log D centred on `center` (their means): a' = a -
    alpha mean(log N), b' = b - beta mean(log D), which decorrelates each coefficient from its exponent."""

    center: np.ndarray

    def to_internal(self, theta: np.ndarray) -> np.ndarray:
        """(e, a, b, alpha, beta) -> centred coordinates."""
        out = np.array(theta, dtype=float, ndmin=2)
        out[:, 1] -= out[:, 3] * self.center[0]
        out[:, 2] -= out[:, 4] * self.center[1]
        return out

    def to_external(self, theta: np.ndarray) -> np.ndarray:
        """Centred coordinates -> (e, a, b, alpha, beta)."""
        out = np.array(theta, dtype=float, ndmin=2)
        out[:, 1] += out[:, 3] * self.center[0]
        out[:, 2] += out[:, 4] * self.center[1]
        return out


class LawPoints(CentredCoordinates):
    """The runs as the solver's points: centred log N and log D, the law's three terms as features."""

    def __init__(self, params, tokens, loss, delta: float = 1e-3, penalty: float = 1.0):
        log_n, log_d = np.log(np.asarray(params, float)), np.log(np.asarray(tokens, float))
        self.center = np.array([log_n.mean(), log_d.mean()])
        x, y = log_n - self.center[0], log_d - self.center[1]
        zero, one = np.zeros_like(x), np.ones_like(x)
        features = np.stack(
            [
                np.stack([zero, one, zero, -x, zero], axis=1),  # a' - alpha x
                np.stack([zero, zero, one, zero, -y], axis=1),  # b' - beta y
                np.stack([one, zero, zero, zero, zero], axis=1),  # e
            ]
        )
        self.points = Points(features, np.log(np.asarray(loss, float)), delta, penalty)


def fit_parametric(
    params: np.ndarray,
    tokens: np.ndarray,
    loss: np.ndarray,
    starts: np.ndarray | None = None,
    huber_delta: float = 1e-3,
    overestimate_penalty: float = 1.0,
    n_polish: int = 32,
) -> ParametricFit:
    """Fit L(N, D) to runs (N params, D tokens, loss in nats): the grid `starts` (default start_grid()) in one
    pass, the best n_polish solved, the best optimum kept (with the distinct others for warm starts)."""
    law = LawPoints(params, tokens, loss, huber_delta, overestimate_penalty)
    starts = start_grid() if starts is None else np.asarray(starts, float)
    internal = law.to_internal(starts)
    screened = grid_objectives(law.points, internal, np.ones((1, law.points.n)))[0]
    order = [i for i in np.argsort(screened, kind="stable")[: max(n_polish, 1)] if np.isfinite(screened[i])]
    if not order:
        order = [0]
    # each start's first trust radius: its RMS log residual
    radius0 = np.clip(np.nan_to_num(law.points.rms_residual(internal[order]), nan=1.0), 1e-6, 1.0)
    solved = minimize(law.points, internal[order], box=BOX, radius0=radius0)
    plausible = solved.f <= 2.0 * np.nanmin(solved.f)  # a far worse local optimum warm-starts no resample's best
    optima = distinct_optima(solved.theta[plausible], solved.f[plausible], keep=4)
    best = int(np.argmin(solved.f))
    e, a, b, alpha, beta = law.to_external(solved.theta[best])[0]
    return ParametricFit(
        E=float(np.exp(e)),
        A=float(np.exp(a)),
        B=float(np.exp(b)),
        alpha=float(alpha),
        beta=float(beta),
        objective=float(solved.f[best]),
        n_starts=len(starts),
        n_points=len(loss),
        huber_delta=huber_delta,
        overestimate_penalty=overestimate_penalty,
        optima=law.to_external(optima),
        converged=bool(solved.converged[best]),
        degenerate=str(solved.degenerate[best]),
    )
