"""A batched second-order solver for the laws' robust fits: many problems (starts x bootstrap resamples) at
once as one array problem. Pure numpy, no I/O.

The model family is a log-sum-exp of terms linear in the parameters theta (p of them):

    log L_hat_i = LSE_k(u_ik),   u_ik = F[k, i] . theta          (T terms, n points)
    f(theta)    = (1/n) sum_i w_i c_i huber_delta(log L_hat_i - log L_i),   c_i = penalty if r_i > 0 else 1

with w_i a problem's multiplicity of point i (its bootstrap counts). The parametric law
L = E + A/N^alpha + B/D^beta is the case T = 3, theta = (e, a, b, alpha, beta) (workbench.fit.parametric),
the compute-optimal loss law L*(C) = E + K C^-gamma the case T = 2 (workbench.fit.frontier).

Derivatives are exact: with s_k the softmax of u (each term's share of the predicted loss), the
residual's gradient is J_i = sum_k s_ik F[k, i] and its Hessian sum_k s_ik F F^T - J J^T; the objective's
gradient is sum_i c_i psi_i J_i and its Hessian sum_i c_i (rho''_i - psi_i) J_i J_i^T + c_i psi_i sum_k s_ik
F F^T (psi = Huber', rho'' = 1 inside delta). Every sum over points is a matrix product of per-problem
weights with a per-point basis of outer products (the feature columns among them, so the gradient's sums come
from the same product), so a block of problems costs a few GEMMs. Problems that start from the same row (the
bootstrap's resamples from the full fit's optima) differ only in their weights there: their first evaluation
is one product of the weights with that row's per-point terms.

Steps (More and Sorensen's trust region): the model's minimiser within a radius in the metric of the Gauss-
Newton matrix M = sum_i c_i J_i J_i^T (floored): the exact Newton step where H is positive definite and the
step fits, else a Levenberg-Marquardt step (H + mu M) p = -g with mu from the secular equation (indefinite H
and the hard case included). A step is accepted when f decreases; the radius shrinks x1/4 when the decrease
is under 1/4 of the model's and doubles when it is over 3/4 at the boundary. The radius is an RMS change of
the log prediction over the points (M's norm); `radius0` starts it (a warm start expects to move about a
residual's standard error). With `fixed_metric` (warm starts, which stay near where they began) M is
computed once at the start, which saves 6 of the 15 per-point weight rows of every evaluation.

Convergence (the stated criterion, checked before each step): H positive semi-definite and the Newton
decrement g^T H^-1 g / 2 at most `dec_tol` f (1e-13: the quadratic model promises less than that
fraction of the objective), or |g|_inf <= `gtol`; a problem whose radius collapses (no step decreases f)
is stalled, converged when its decrement is at most 1e-8 f. The cap is `maxiter` iterations. A problem that
stops is frozen: it leaves the active set and is never evaluated again. A problem outside a plausibility
box (`box`, per parameter, and a minimum share per term) whose steps keep moving further out for `patience`
accepted steps in a row is stopped as degenerate, with the box's flags named (the box lies beyond any law a
sweep can determine: the fit is running away along a flat valley, not converging).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BLOCK = 64  # problems per block: cache-sized working arrays (32-64 x 300 points measured fastest)


def _product_basis(F: np.ndarray, pairs: list[tuple[int, int]]) -> tuple[np.ndarray, dict, np.ndarray]:
    """The distinct per-point products of feature columns that the Hessian's sums need, as one basis (n, B),
    and per term pair a map (B, p * p) from the weighted basis sums to the pair's sum of F_k F_m^T: every sum
    over points then takes one matrix product (the law's features are 0, 1, x and y: 6 products)."""
    n, p = F.shape[1], F.shape[2]
    columns: list[np.ndarray] = []
    maps = {}
    for k, m in pairs:
        table = np.zeros((0, p * p))
        for a in range(p):
            for b in range(p):
                col = F[k, :, a] * F[m, :, b]
                if not col.any():
                    continue
                j, sign = _find(columns, col)
                if j < 0:
                    columns.append(col)
                    j, sign = len(columns) - 1, 1.0
                if table.shape[0] < len(columns):
                    table = np.vstack([table, np.zeros((len(columns) - table.shape[0], p * p))])
                table[j, a * p + b] += sign
        maps[(k, m)] = table
    linear = []  # (term, column, basis index, sign) of each feature column: the gradient's sums are read off the basis
    for t in range(F.shape[0]):
        for a in range(p):
            if F[t, :, a].any():
                j, sign = _find(columns, F[t, :, a])
                if j < 0:
                    columns.append(F[t, :, a])
                    j, sign = len(columns) - 1, 1.0
                linear.append((t, a, j, sign))
    size = len(columns)
    maps = {pair: np.vstack([tab, np.zeros((size - tab.shape[0], p * p))]) for pair, tab in maps.items()}
    grad_map = np.zeros((F.shape[0] * size, p))
    for t, a, j, sign in linear:
        grad_map[t * size + j, a] += sign
    basis = np.stack(columns, axis=1) if columns else np.zeros((n, 0))
    return np.ascontiguousarray(basis), maps, grad_map


def _find(columns: list[np.ndarray], col: np.ndarray) -> tuple[int, float]:
    for j, c in enumerate(columns):
        if np.array_equal(c, col):
            return j, 1.0
        if np.array_equal(c, -col):
            return j, -1.0
    return -1, 0.0


class Points:
    """The n points of one fit: features F (T, n, p) and log losses y (n,), Huber delta and penalty."""

    def __init__(self, features: np.ndarray, log_loss: np.ndarray, delta: float = 1e-3, penalty: float = 1.0):
        self.F = np.ascontiguousarray(features, dtype=float)
        self.T, self.n, self.p = self.F.shape
        self.FT = np.ascontiguousarray(self.F.transpose(0, 2, 1))  # (T, p, n): u_t = theta @ FT[t]
        self.y = np.asarray(log_loss, dtype=float).ravel()
        self.delta, self.penalty = float(delta), float(penalty)
        self.pairs = [(k, m) for k in range(self.T) for m in range(k, self.T)]
        self.basis, self.maps, self.grad_map = _product_basis(self.F, self.pairs)
        sym = [self._symmetric(pair) for pair in self.pairs]
        # rows of weights per point: h s_a s_b (the pairs), c psi s_t (the terms), c s_a s_b (the metric's pairs)
        self.hess_map = np.concatenate(sym + [self.maps[(t, t)] for t in range(self.T)])
        self.metric_map = np.concatenate(sym)
        self.n_rows = 2 * len(self.pairs) + self.T

    def _symmetric(self, pair: tuple[int, int]) -> np.ndarray:
        """The map (B, p * p) of a pair's weighted basis sums to its sum of F_k F_m^T, plus the transpose for
        k != m (the pair (m, k) that the upper triangle of pairs leaves out)."""
        table = self.maps[pair]
        if pair[0] == pair[1]:
            return table
        p = self.p
        return table + table.reshape(-1, p, p).transpose(0, 2, 1).reshape(-1, p * p)

    def residuals(
        self, theta: np.ndarray, y: np.ndarray | None = None, shares: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(r (k, n), shares (T, k, n), None unless `shares`) of theta rows (k, p) against log losses y ((k, n)
        per problem, default the points' own), by the max-shifted log-sum-exp."""
        with np.errstate(over="ignore", invalid="ignore"):
            u = theta @ self.FT  # (T, k, n)
            m = u.max(axis=0)
            ex = np.exp(u - m)
            total = ex.sum(axis=0)
            r = m + np.log(total) - (self.y if y is None else y)
            return r, ex / total if shares else None

    def rms_residual(self, theta: np.ndarray) -> np.ndarray:
        """Each theta row's RMS log residual over the points (inf or NaN where the prediction is not finite)."""
        r, _ = self.residuals(np.atleast_2d(theta), shares=False)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.sqrt(np.mean(r * r, axis=1))


def _point_weights(points: Points, r: np.ndarray, w) -> np.ndarray:
    """c = w penalty / n per point (the penalty where the prediction is over the loss, r > 0)."""
    c = w * (1.0 / points.n)
    return np.where(r > 0, c * points.penalty, c) if points.penalty != 1.0 else c


def _huber_value(points: Points, r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(|r|, |r| clipped at delta, Huber(r)) per point."""
    absr = np.abs(r)
    clipped = np.minimum(absr, points.delta)
    return absr, clipped, clipped * (absr - 0.5 * clipped)


def _huber(points: Points, r: np.ndarray, w: np.ndarray):
    """(c, huber, psi, inside) for residuals r (k, n) and weights w (k, n): c = w penalty / n per point."""
    absr, clipped, hub = _huber_value(points, r)
    return _point_weights(points, r, w), hub, np.copysign(clipped, r), absr <= points.delta


def objective(points: Points, theta: np.ndarray, w: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """f of theta rows (k, p) with weight rows (k, n) (and per-problem log losses y); inf where not finite."""
    r, _ = points.residuals(theta, y)
    c, hub, _, _ = _huber(points, r, w)
    with np.errstate(invalid="ignore"):
        f = np.einsum("ki,ki->k", c, hub)
    return np.where(np.isfinite(f), f, np.inf)


def derivatives(points: Points, theta: np.ndarray, w: np.ndarray, y: np.ndarray | None = None, metric: bool = True):
    """(f (k,), g (k, p), H (k, p, p), M (k, p, p), shares (k, T): each term's largest share over the points).
    The per-point weights of every sum are written into one (k, rows, n) array and reduced against the
    product basis by one matrix product; two more map the sums onto H and M."""
    k, p, T, npairs = len(theta), points.p, points.T, len(points.pairs)
    r, s = points.residuals(theta, y)
    c, hub, psi, inside = _huber(points, r, w)
    cpsi = c * psi
    h = c * inside - cpsi  # weight of J J^T: Huber's curvature minus the LSE's own (-psi J J^T)
    f = np.einsum("ki,ki->k", c, hub)
    split = npairs + T
    rows = points.n_rows if metric else split
    z = np.empty((k, rows, points.n))
    for i, (a, b) in enumerate(points.pairs):
        np.multiply(s[a], s[b], out=z[:, i])
        if metric:
            np.multiply(z[:, i], c, out=z[:, split + i])
        z[:, i] *= h
    for t in range(T):
        np.multiply(cpsi, s[t], out=z[:, npairs + t])
    sums = (z.reshape(k * rows, points.n) @ points.basis).reshape(k, rows, -1)
    g = sums[:, npairs:split].reshape(k, -1) @ points.grad_map
    H = (sums[:, :split].reshape(k, -1) @ points.hess_map).reshape(k, p, p)
    M = (sums[:, split:].reshape(k, -1) @ points.metric_map).reshape(k, p, p) if metric else None
    return f, g, H, M, s.max(axis=2).T


@dataclass
class Solution:
    """Per problem: theta, f, iterations, converged, reason, degenerate flags (comma-separated names)."""

    theta: np.ndarray
    f: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    reason: np.ndarray
    degenerate: np.ndarray
    evaluations: int = 0
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Box:
    """A plausibility box: per-parameter bounds (None: open) with names, and a minimum share per term."""

    lower: tuple[float | None, ...]
    upper: tuple[float | None, ...]
    names: tuple[str, ...]
    term_names: tuple[str, ...]
    min_share: float = 1e-8

    def flags(self, theta: np.ndarray, shares: np.ndarray) -> np.ndarray:
        """(k, 2p + T) violations: below each lower bound, above each upper bound, each term's share."""
        lo = np.array([-np.inf if v is None else v for v in self.lower])
        hi = np.array([np.inf if v is None else v for v in self.upper])
        return np.concatenate([theta < lo, theta > hi, shares < self.min_share], axis=1)

    def outward(self, step: np.ndarray) -> np.ndarray:
        """(k, 2p + T): whether a step moves further out along each flag's direction (a share: any move)."""
        return np.concatenate([step < 0, step > 0, np.ones((len(step), len(self.term_names)), bool)], axis=1)

    def describe(self, flags: np.ndarray) -> list[str]:
        labels = [f"{n} low" for n in self.names] + [f"{n} high" for n in self.names]
        labels += [f"{t} -> 0" for t in self.term_names]
        return [
            ",".join(label for label, on in zip(labels, row, strict=True) if on) if row.any() else "" for row in flags
        ]


def _tr_step(ev: np.ndarray, V: np.ndarray, c: np.ndarray, radius: np.ndarray, iters: int = 20) -> np.ndarray:
    """The minimiser of c.q + q.diag(ev).q/2 over |q| <= radius in the eigenbasis (More-Sorensen: mu from the
    secular equation by Newton from the left; the hard case adds the lowest eigenvector), returned as V q."""
    scale = np.abs(ev).max(axis=1) + 1e-300
    lo, eps = np.maximum(0.0, -ev[:, 0]), 1e-12 * scale + 1e-300
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        newton_ok = ev[:, 0] > eps
        pn = np.where(newton_ok[:, None], c / np.where(newton_ok[:, None], ev, 1.0), np.inf)
        inside = newton_ok & (np.sqrt((pn * pn).sum(1)) <= radius)
        mu = np.where(inside, 0.0, lo + eps)
        rows = np.flatnonzero(~inside)  # the problems still iterating, and their data (compressed as they finish)
        e, c2, rad, floor, m = ev[rows], c[rows] * c[rows], radius[rows], lo[rows] + eps[rows], mu[rows]
        for _ in range(iters if len(rows) else 0):
            den = e + m[:, None]
            norm2, q2 = (c2 / den**2).sum(1), (c2 / den**3).sum(1)
            step = (norm2 / q2) * (np.sqrt(norm2) - rad) / rad
            new = np.maximum(m + np.where(np.isfinite(step), step, 0.0), floor)
            moved = np.abs(new - m) > 1e-6 * np.abs(new) + 1e-300  # |q| within ~1e-6 of the radius
            mu[rows] = new
            if not moved.all():
                if not moved.any():
                    break
                rows, e, c2, rad, floor, new = rows[moved], e[moved], c2[moved], rad[moved], floor[moved], new[moved]
            m = new
        q = c / (ev + mu[:, None])
        q = np.where(np.isfinite(q), q, 0.0)
        norm = np.sqrt((q * q).sum(1))
        hard = ~inside & (norm < radius * (1 - 1e-6)) & (ev[:, 0] < 0)
        if hard.any():
            tau = np.sqrt(np.maximum(radius[hard] ** 2 - norm[hard] ** 2, 0.0))
            q[hard, 0] += tau * np.where(c[hard, 0] > 0, 1.0, -1.0)
    return -np.einsum("kij,kj->ki", V, q)


@dataclass
class _State:
    theta: np.ndarray
    f: np.ndarray
    g: np.ndarray
    H: np.ndarray
    M: np.ndarray
    shares: np.ndarray


def _evaluate(
    points: Points, theta: np.ndarray, w: np.ndarray, y: np.ndarray | None, metric: bool = True, rows=None
) -> _State:
    """The derivatives at theta, a block of problems at a time; the problems' weights (and targets) are rows
    `rows` of w (and y), all of them when None (gathered a block at a time: no copy of the whole matrix)."""
    rows = np.arange(len(theta)) if rows is None else rows
    parts = [
        derivatives(
            points, theta[i : i + BLOCK], w[rows[i : i + BLOCK]], None if y is None else y[rows[i : i + BLOCK]], metric
        )
        for i in range(0, len(theta), BLOCK)
    ]
    if len(parts) == 1:
        f, g, H, M, shares = parts[0]
        return _State(theta, f, g, H, M, shares)
    f, g, H, shares = (np.concatenate([p[j] for p in parts]) for j in (0, 1, 2, 4))
    M = np.concatenate([p[3] for p in parts]) if metric else None
    return _State(theta, f, g, H, M, shares)


def _metric_inverse(M: np.ndarray) -> np.ndarray:
    """The inverse Cholesky factor of the Gauss-Newton metric, floored at 1e-6 of its trace."""
    trace = np.trace(M, axis1=1, axis2=2)[:, None, None]
    return np.linalg.inv(np.linalg.cholesky(M + (1e-6 * trace + 1e-300) * np.eye(M.shape[-1])))


def _evaluate_shared(points: Points, theta: np.ndarray, w: np.ndarray, rows: np.ndarray, which: np.ndarray) -> _State:
    """_evaluate where many problems share a few distinct start rows (bootstrap resamples from warm starts): a
    start's per-point terms do not depend on the weights, so each distinct row (`rows`, problem i starting from
    rows[which[i]]) is evaluated once per point and every problem's f, g, H and M are one matrix product of its
    weights with those per-point terms."""
    k, p = len(theta), points.p
    f, g, shares = np.empty(k), np.empty((k, p)), np.empty((k, points.T))
    H, M = np.empty((k, p, p)), np.empty((k, p, p))
    for j, row in enumerate(rows):
        r, s = points.residuals(row[None])
        c, hub, psi, inside = _huber(points, r, np.ones_like(r))
        r, s, c, hub, psi, inside = r[0], s[:, 0], c[0], hub[0], psi[0], inside[0]
        J = np.einsum("ti,tia->ia", s, points.F)  # each point's gradient of log L_hat
        own = np.einsum("ti,tia,tib->iab", s, points.F, points.F)  # sum_t s_t F_t F_t^T per point
        outer = J[:, :, None] * J[:, None, :]
        per_point = np.concatenate(
            [
                (c * hub)[:, None],
                (c * psi)[:, None] * J,
                ((c * inside - c * psi)[:, None, None] * outer + (c * psi)[:, None, None] * own).reshape(-1, p * p),
                (c[:, None, None] * outer).reshape(-1, p * p),
            ],
            axis=1,
        )
        mine = np.flatnonzero(which == j)
        sums = w[mine] @ per_point
        f[mine], g[mine] = sums[:, 0], sums[:, 1 : 1 + p]
        H[mine] = sums[:, 1 + p : 1 + p + p * p].reshape(-1, p, p)
        M[mine] = sums[:, 1 + p + p * p :].reshape(-1, p, p)
        shares[mine] = s.max(axis=1)
    return _State(theta, f, g, H, M, shares)


def minimize(
    points: Points,
    starts: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    targets: np.ndarray | None = None,
    box: Box | None = None,
    maxiter: int = 200,
    dec_tol: float = 1e-13,
    gtol: float = 1e-15,
    patience: int = 3,
    radius0: float | np.ndarray = 1.0,
    fixed_metric: bool = False,
) -> Solution:
    """Minimise one problem per start row (P, p) at once; weights (P, n) multiplicities (None: all ones);
    targets (P, n) per-problem log losses (None: the points' own; a bootstrap of refitted minima)."""
    theta = np.array(starts, dtype=float, ndmin=2)
    P, n = len(theta), points.n
    w = np.ones((P, n)) if weights is None else np.broadcast_to(np.asarray(weights, float), (P, n))
    y = None if targets is None else np.broadcast_to(np.asarray(targets, float), (P, n))
    rows, which = np.unique(theta, axis=0, return_inverse=True)
    if y is None and 8 * len(rows) <= P:  # resamples from a few warm starts
        st = _evaluate_shared(points, theta.copy(), w, rows, which.ravel())
    else:
        st = _evaluate(points, theta.copy(), w, y)
    finite = np.isfinite(st.f) & np.isfinite(st.g).all(1) & np.isfinite(st.H).all((1, 2))
    st.f[~finite] = np.inf
    iters, out_count = np.zeros(P, int), np.zeros(P, int)
    radius = np.broadcast_to(np.asarray(radius0, float), (P,)).copy()
    converged = np.zeros(P, bool)
    reason = np.where(finite, "", "nonfinite start").astype(object)
    active, evaluations, eye = finite.copy(), P, np.eye(points.p)
    if fixed_metric:
        L_start = _metric_inverse(np.where(finite[:, None, None], st.M, eye))
    while active.any():
        idx = np.flatnonzero(active)
        th, fa, ga, Ha = st.theta[idx], st.f[idx], st.g[idx], st.H[idx]
        Li = L_start[idx] if fixed_metric else _metric_inverse(st.M[idx])
        ev, V = np.linalg.eigh(Li @ Ha @ Li.transpose(0, 2, 1))
        c = np.einsum("kji,kj->ki", V, np.einsum("kij,kj->ki", Li, ga))
        tau = 1e-10 * np.abs(ev).max(1, keepdims=True) + 1e-300
        psd = ev[:, 0] > -tau[:, 0]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            dec = np.where(psd, 0.5 * np.sum(c * c / np.maximum(ev, tau), 1), np.nan)
        done = (psd & (dec <= dec_tol * fa)) | (np.abs(ga).max(1) <= gtol)
        stalled = ~done & (radius[idx] < 1e-13 * (1.0 + np.abs(th).max(1)))
        capped = ~done & ~stalled & (iters[idx] >= maxiter)
        stop = done | stalled | capped
        converged[idx[done]] = True
        if stalled.any():
            converged[idx[stalled]] = np.nan_to_num(dec[stalled], nan=np.inf) <= 1e-8 * fa[stalled]
        reason[idx[done]], reason[idx[stalled]], reason[idx[capped]] = "converged", "stalled", "iteration cap"
        active[idx[stop]] = False
        keep = ~stop
        if not keep.any():
            break
        idx, th, fa, ga, Ha, ev, V, c, Li = (a[keep] for a in (idx, th, fa, ga, Ha, ev, V, c, Li))
        q = _tr_step(ev, V, c, radius[idx])
        with np.errstate(over="ignore", invalid="ignore"):
            step = np.einsum("kji,kj->ki", Li, q)
            trial = _evaluate(points, th + step, w, y, metric=not fixed_metric, rows=idx)
        evaluations += len(idx)
        iters[idx] += 1
        predicted = -(np.einsum("ki,ki->k", ga, step) + 0.5 * np.einsum("ki,kij,kj->k", step, Ha, step))
        actual = fa - trial.f
        ok = np.isfinite(trial.f) & np.isfinite(trial.g).all(1) & np.isfinite(trial.H).all((1, 2))
        accept = ok & (actual > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            rho = np.where(ok & (predicted > 0), actual / predicted, -1.0)
        with np.errstate(over="ignore", invalid="ignore"):
            qn, rad = np.sqrt((q * q).sum(1)), radius[idx]
        new = np.where(rho < 0.25, 0.25 * np.minimum(qn, rad), rad)
        radius[idx] = np.where((rho > 0.75) & (qn >= 0.99 * rad), np.minimum(2.0 * rad, 100.0), new)
        took = idx[accept]
        for name in ("theta", "f", "g", "H", "shares") if fixed_metric else ("theta", "f", "g", "H", "M", "shares"):
            getattr(st, name)[took] = getattr(trial, name)[accept]
        if box is not None and len(took):
            runaway = (box.flags(trial.theta[accept], trial.shares[accept]) & box.outward(step[accept])).any(1)
            out_count[took] = np.where(runaway, out_count[took] + 1, 0)
            gone = took[out_count[took] >= patience]
            active[gone], reason[gone] = False, "degenerate"
    flags = box.describe(box.flags(st.theta, np.nan_to_num(st.shares, nan=1.0))) if box else [""] * P
    return Solution(st.theta, st.f, iters, converged, reason.astype(str), np.array(flags, dtype=object), evaluations)


def grid_objectives(points: Points, grid: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(R, G) objective of every grid row for every weights row (R, n) in one pass: a start's per-point
    Huber terms do not depend on the weights, so the objectives are one matrix product."""
    grid = np.atleast_2d(grid)
    hub = np.empty((len(grid), points.n))
    for i in range(0, len(grid), BLOCK):  # cache-sized blocks; only the residuals' Huber values are needed
        r, _ = points.residuals(grid[i : i + BLOCK], shares=False)
        part = _huber_value(points, r)[2]
        hub[i : i + BLOCK] = np.where(np.isfinite(part), part, np.inf) * _point_weights(points, r, 1.0)
    finite = np.isfinite(hub).all(1)
    out = np.full((len(weights), len(hub)), np.inf)
    out[:, finite] = np.asarray(weights, float) @ hub[finite].T
    return out
