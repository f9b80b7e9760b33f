"""Chinchilla approach 1: the envelope of the training curves. Pure numpy/pandas, no I/O.

Every run's loss curve (loss against FLOPs spent) is in the store. At each compute C on a log grid, the
run of lowest loss among the runs whose curve reaches C gives N*(C) (its size) and D*(C) = C / (6 N*);
then N*(C) = G C^a and D*(C) = H C^b by least squares in log space. The curve of a run is its evaluation
losses (val_loss rows) when it has 3 or more, else its training losses smoothed by a running median of
`window` logged steps (not the minimum of noisy single steps), interpolated linearly in log C. A grid
point counts only where its best run is an interior size among the runs whose curves reach it.

Caveat (Hoffmann et al. 2022, approach 1): a point in the middle of a cosine schedule is not the loss of
a run trained to that length (the LR has not decayed), so the envelope is biased towards larger models
unless the sweep trains each size to several lengths; WSD schedules' decay branches are the fair
points, and on a WSD sweep `endpoint_curves` builds each size's curve from them. Intervals: runs (or
sizes) resampled i.i.d. (a whole curve is one unit).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from workbench.core.errors import WorkbenchError
from workbench.fit.isoflop import power_law
from workbench.fit.laws import SIX_N, FlopsPerToken

GRID_POINTS = 40
MIN_EVALS = 3


def run_curves(
    metrics: pd.DataFrame, points: pd.DataFrame, window: int = 9
) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """[(N params, log C, loss)] per run of `points` with a curve in `metrics` (run_id, step, flops, loss, val_loss)."""
    params = dict(zip(points["run_id"], points["params"], strict=True))
    curves = []
    for run_id, rows in metrics.sort_values(["run_id", "step"]).groupby("run_id", sort=False):
        if run_id not in params:
            continue
        evals = rows[rows["val_loss"].notna() & rows["flops"].notna()] if "val_loss" in rows else rows.iloc[:0]
        if len(evals) >= MIN_EVALS:
            flops, loss = evals["flops"].to_numpy(float), evals["val_loss"].to_numpy(float)
        else:
            train = rows[rows["loss"].notna() & rows["flops"].notna()]
            flops = train["flops"].to_numpy(float)
            loss = train["loss"].rolling(window, center=True, min_periods=1).median().to_numpy(float)
        keep = (flops > 0) & np.isfinite(loss)
        if keep.sum() >= 2:
            curves.append((float(params[run_id]), np.log(flops[keep]), loss[keep]))
    return curves


def endpoint_curves(points: pd.DataFrame) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """[(N params, log C, loss)] per model size from the runs' final losses (params, flops, loss): each size's
    annealed end points, seeds averaged per budget. On a WSD sweep these are the fair approach-1 curves (a
    trunk and its cooldown branches: every point is a model trained to that length, Hagele et al. 2024),
    where a trunk's training curve in its stable phase is not; sizes with fewer than 2 budgets are left out."""
    curves = []
    for n, rows in points.groupby("params", sort=True):
        by_budget = rows.groupby("budget_flops", sort=True).agg(flops=("flops", "mean"), loss=("loss", "mean"))
        if len(by_budget) >= 2:
            curves.append((float(n), np.log(by_budget["flops"].to_numpy(float)), by_budget["loss"].to_numpy(float)))
    return curves


def _envelope_points(curves, grid: np.ndarray, runs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log C, log N*) at each grid point whose best run is neither the smallest nor the largest size whose
    curve covers it (a winner at the edge of the sizes is a bound, not a minimum)."""
    log_n = np.full(len(grid), np.nan)
    best = np.full(len(grid), np.inf)
    smallest = np.full(len(grid), np.inf)
    largest = np.full(len(grid), -np.inf)
    for i in runs:
        n, log_c, loss = curves[i]
        inside = (grid >= log_c[0]) & (grid <= log_c[-1])
        value = np.where(inside, np.interp(grid, log_c, loss), np.inf)
        smallest = np.where(inside, np.minimum(smallest, np.log(n)), smallest)
        largest = np.where(inside, np.maximum(largest, np.log(n)), largest)
        better = value < best
        best = np.where(better, value, best)
        log_n = np.where(better, np.log(n), log_n)
    ok = np.isfinite(best) & (log_n > smallest) & (log_n < largest)
    return grid[ok], log_n[ok]


def fit_envelope(curves, n_bootstrap: int = 200, seed: int = 0, flops: FlopsPerToken = SIX_N) -> dict:
    """{G, a, H, b, n_runs, grid: [[C, N*]], draws: {G, a}} of the envelope, D* = C / flops(N*) fitted as
    H C^b over the envelope's compute range; an error with fewer than 3 sizes."""
    sizes = {n for n, _, _ in curves}
    if len(sizes) < 3:
        raise WorkbenchError(
            f"approach 1: curves of {len(sizes)} model sizes, and the envelope needs 3 or more",
            "Ingest the runs' metrics (`workbench db ingest`) or use the isoFLOP and parametric fits.",
        )
    lo = max(np.min([c[1][0] for c in curves]), np.log(1.0))
    hi = np.max([c[1][-1] for c in curves])
    grid = np.linspace(lo, hi, GRID_POINTS)
    log_c, log_n = _envelope_points(curves, grid, np.arange(len(curves)))
    if len(np.unique(log_n)) < 2 or np.ptp(log_c) <= 0:
        raise WorkbenchError("approach 1: one model size is best at every compute", "Add smaller and larger sizes.")
    g, a = power_law(log_c[None, :], log_n[None, :], np.ones((1, len(log_c)), dtype=bool))
    rng = np.random.default_rng(seed)
    draws = np.full((n_bootstrap, 2), np.nan)
    for k in range(n_bootstrap):
        pick = rng.integers(0, len(curves), len(curves))
        bc, bn = _envelope_points(curves, grid, pick)
        if len(np.unique(bn)) >= 2 and np.ptp(bc) > 0:
            bg, ba = power_law(bc[None, :], bn[None, :], np.ones((1, len(bc)), dtype=bool))
            draws[k] = bg[0], ba[0]
    g0, a0 = float(g[0]), float(a[0])
    log_d = log_c - np.log(flops(g0 * np.exp(a0 * log_c)))  # D* = C / flops(N*): C^(1 - a) / (6 G) for 6ND
    h, b = power_law(log_c[None, :], log_d[None, :], np.ones((1, len(log_c)), dtype=bool))
    return {
        "G": g0,
        "a": a0,
        "H": float(h[0]),
        "b": float(b[0]),
        "n_runs": len(curves),
        "grid": [[float(np.exp(c)), float(np.exp(n))] for c, n in zip(log_c, log_n, strict=True)],
        "draws": {"G": draws[:, 0].tolist(), "a": draws[:, 1].tolist()},
    }


def sweep_curves(points: pd.DataFrame, metrics_of: Callable[[list[str]], pd.DataFrame]) -> list | None:
    """The loss curves of the runs in `points` (a frame with run_id and params) for approach 1: on a sweep
    with WSD branches each size's annealed end points (endpoint_curves), else each run's curve from its
    metric rows (run_curves; `metrics_of(run_ids)` reads them, e.g. Store.metrics); None when the frame
    has no run ids or no curve can be made."""
    if "kind" in points.columns and (points["kind"] == "branch").any():
        return endpoint_curves(points) or None
    if "run_id" not in points.columns:
        return None
    return run_curves(metrics_of(list(points["run_id"])), points) or None
