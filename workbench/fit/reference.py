"""The reference the batched solver (workbench.fit.newton) is tested and benchmarked against: the law's
log-space Huber objective with its analytic gradient, minimised by scipy's L-BFGS-B one start at a time.
Not on any code path of `workbench fit`; tests/test_fit_parametric.py and benchmarks/fit.py use it."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from workbench.fit.parametric import CentredCoordinates


class LogHuberObjective(CentredCoordinates):
    """Mean (optionally weighted) Huber loss of log-space residuals for a batch of theta rows.

    `weights` (R, n) are per-run multiplicities (bootstrap counts); `group` maps each batch row to its
    weights row. Residuals where the law predicts above the observation are multiplied by `penalty`.
    """

    def __init__(self, params, tokens, loss, delta=1e-3, penalty=1.0, weights=None, group=None):
        log_n, log_d = np.log(np.asarray(params, float)), np.log(np.asarray(tokens, float))
        self.center = np.array([log_n.mean(), log_d.mean()])
        self.x, self.y = log_n - self.center[0], log_d - self.center[1]
        self.log_loss = np.log(np.asarray(loss, float))
        self.delta, self.penalty = float(delta), float(penalty)
        self.weights, self.group = weights, group
        self.n = len(self.log_loss)

    def __call__(self, theta: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e, a, b, alpha, beta = (theta[:, i : i + 1] for i in range(5))
        u1 = a - alpha * self.x
        u2 = b - beta * self.y
        m = np.maximum(np.maximum(u1, u2), e)
        p1, p2, p3 = np.exp(u1 - m), np.exp(u2 - m), np.exp(e - m)
        total = p1 + p2 + p3
        r = m + np.log(total) - self.log_loss
        abs_r = np.abs(r)
        huber = np.where(abs_r <= self.delta, 0.5 * r * r, self.delta * (abs_r - 0.5 * self.delta))
        psi = np.clip(r, -self.delta, self.delta)
        if self.penalty != 1.0:
            scale = np.where(r > 0, self.penalty, 1.0)
            huber, psi = huber * scale, psi * scale
        if self.weights is not None:
            w = self.weights[self.group[rows]]
            huber, psi = huber * w, psi * w
        gp = psi / (total * self.n)
        q1, q2 = gp * p1, gp * p2
        grad = np.stack([(gp * p3).sum(1), q1.sum(1), q2.sum(1), -(q1 @ self.x), -(q2 @ self.y)], axis=1)
        return huber.sum(1) / self.n, grad


TOLERANCES = {"ftol": 0.0, "gtol": 1e-14, "maxiter": 5000}  # to convergence: scipy's ftol is absolute here


def minimize_starts(objective: LogHuberObjective, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, f): scipy L-BFGS-B from each internal start row; row i uses the objective's weights of group[i]
    (the bootstrap's resample), f is inf where the start gives no finite value."""
    starts = np.atleast_2d(np.asarray(starts, dtype=float))
    x, f = starts.copy(), np.full(len(starts), np.inf)
    for i, x0 in enumerate(starts):
        rows = np.array([i])

        def fun(t, rows=rows):
            value, grad = objective(t[None, :], rows)
            return float(value[0]), grad[0]

        if not np.isfinite(fun(x0)[0]):
            continue
        result = minimize(fun, x0, jac=True, method="L-BFGS-B", options=TOLERANCES)
        x[i], f[i] = result.x, float(result.fun) if np.isfinite(result.fun) else np.inf
    return x, f
