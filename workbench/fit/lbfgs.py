"""L-BFGS for a batch of independent small problems at once (numpy, no I/O).

Each row of x is its own problem (a start, or a start of one bootstrap resample). The rows share
nothing but the array operations: every row keeps its own curvature pairs, step length and
convergence state, and converged rows drop out of later evaluations. This replaces a Python loop
of scipy.optimize.minimize calls, whose per-call overhead dominates for 5 parameters and 300 points.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# fun(x (b, P), rows (b,) indices into the batch) -> (f (b,), grad (b, P))
BatchObjective = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class BatchResult:
    """Final points, values and iteration counts of every row."""

    x: np.ndarray
    f: np.ndarray
    n_iter: np.ndarray
    n_evals: int


def _two_loop(g: np.ndarray, s_mem: np.ndarray, y_mem: np.ndarray, rho: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """H g for each row by the L-BFGS two-loop recursion; memory index 0 is the newest pair (zeros are no-ops)."""
    q = g.copy()
    alphas = []
    for i in range(s_mem.shape[0]):
        a_i = rho[i] * np.einsum("bp,bp->b", s_mem[i], q)
        q -= a_i[:, None] * y_mem[i]
        alphas.append(a_i)
    r = gamma[:, None] * q
    for i in reversed(range(s_mem.shape[0])):
        b_i = rho[i] * np.einsum("bp,bp->b", y_mem[i], r)
        r += s_mem[i] * (alphas[i] - b_i)[:, None]
    return r


def minimize_batch(
    fun: BatchObjective,
    x0: np.ndarray,
    max_iter: int = 400,
    memory: int = 8,
    ftol: float = 1e-10,
    gtol: float = 1e-12,
    patience: int = 3,
) -> BatchResult:
    """Minimise every row of x0 independently by L-BFGS with Armijo backtracking.

    A row stops when its gradient max-norm is below gtol, when its relative decrease stays below ftol
    for `patience` iterations, or when the line search cannot decrease it.
    """
    x = np.array(x0, dtype=float)
    n_rows, n_par = x.shape
    f, g = fun(x, np.arange(n_rows))
    n_evals = 1
    s_mem = np.zeros((memory, n_rows, n_par))
    y_mem = np.zeros((memory, n_rows, n_par))
    rho = np.zeros((memory, n_rows))
    # first step of each row has length 1 along -g; later ones use the usual s.y / y.y scaling
    gamma = 1.0 / np.maximum(np.linalg.norm(g, axis=1), 1e-300)
    stall = np.zeros(n_rows, dtype=int)
    n_iter = np.zeros(n_rows, dtype=int)
    active = np.isfinite(f)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        g_i = g[idx]
        d = -_two_loop(g_i, s_mem[:, idx], y_mem[:, idx], rho[:, idx], gamma[idx])
        slope = np.einsum("bp,bp->b", g_i, d)
        uphill = ~(slope < 0)
        d[uphill] = -g_i[uphill] * gamma[idx][uphill, None]
        slope[uphill] = np.einsum("bp,bp->b", g_i[uphill], d[uphill])
        local, f_new, g_new, step, evals = _backtrack(fun, x, f, idx, d, slope)
        rows = idx[local]
        n_evals += evals
        active[np.setdiff1d(idx, rows)] = False  # no decrease found: as good as this row gets
        n_iter[rows] += 1
        s = step[:, None] * d[local]
        y = g_new - g[rows]
        sy = np.einsum("bp,bp->b", s, y)
        yy = np.einsum("bp,bp->b", y, y)
        valid = (sy > 1e-12 * np.linalg.norm(s, axis=1) * np.sqrt(yy)) & (yy > 1e-280)
        upd = rows[valid]
        s_mem[1:, upd] = s_mem[:-1, upd]
        y_mem[1:, upd] = y_mem[:-1, upd]
        rho[1:, upd] = rho[:-1, upd]
        s_mem[0, upd], y_mem[0, upd], rho[0, upd] = s[valid], y[valid], 1.0 / sy[valid]
        gamma[upd] = sy[valid] / yy[valid]
        decrease = (f[rows] - f_new) / np.maximum(np.abs(f[rows]), 1e-300)
        stall[rows] = np.where(decrease < ftol, stall[rows] + 1, 0)
        x[rows] += s
        f[rows], g[rows] = f_new, g_new
        done = (stall[rows] >= patience) | (np.abs(g_new).max(axis=1) < gtol)
        active[rows[done]] = False
    return BatchResult(x=x, f=f, n_iter=n_iter, n_evals=n_evals)


def _backtrack(fun: BatchObjective, x: np.ndarray, f: np.ndarray, idx: np.ndarray, d: np.ndarray, slope: np.ndarray):
    """Armijo backtracking per row, all pending rows evaluated together; returns the positions in idx that moved."""
    step = np.ones(idx.size)
    pending = np.arange(idx.size)
    moved, f_out, g_out, evals = [], [], [], 0
    for _ in range(40):
        rows = idx[pending]
        f_t, g_t = fun(x[rows] + step[pending, None] * d[pending], rows)
        evals += 1
        ok = np.isfinite(f_t) & (f_t <= f[rows] + 1e-4 * step[pending] * slope[pending])
        moved.append(pending[ok])
        f_out.append(f_t[ok])
        g_out.append(g_t[ok])
        pending = pending[~ok]
        if pending.size == 0:
            break
        step[pending] *= 0.3
    local = np.concatenate(moved)
    order = np.argsort(local)
    local = local[order]
    return local, np.concatenate(f_out)[order], np.concatenate(g_out)[order], step[local], evals
