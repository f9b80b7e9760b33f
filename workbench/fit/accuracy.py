"""Llama 3's second stage: a sigmoid from loss to downstream accuracy, composed with the law. Pure numpy/scipy.

accuracy(L) = floor + (ceiling - floor) / (1 + exp(slope (L - midpoint_loss))), slope > 0 (accuracy falls as
loss rises). Composed with the parametric law: accuracy*(C) = accuracy(L*(C)).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from workbench.core.errors import WorkbenchError
from workbench.fit.laws import optimal_loss


@dataclass(frozen=True)
class AccuracyFit:
    """The sigmoid of one task (accuracy as a fraction, loss in nats/token)."""

    task: str
    floor: float
    ceiling: float
    slope: float
    midpoint_loss: float
    rmse: float
    n_points: int

    def as_dict(self) -> dict:
        """JSON-ready fields."""
        return asdict(self)


def sigmoid(loss: ArrayLike, floor: float, ceiling: float, slope: float, midpoint_loss: float) -> np.ndarray:
    """Accuracy at `loss` for the given sigmoid."""
    z = np.clip(slope * (np.asarray(loss, float) - midpoint_loss), -500, 500)
    return floor + (ceiling - floor) / (1.0 + np.exp(z))


def fit_accuracy(loss: ArrayLike, accuracy: ArrayLike, task: str) -> AccuracyFit:
    """Least-squares sigmoid of accuracy (0..1) on loss; rows with NaN accuracy are skipped."""
    from scipy.optimize import curve_fit

    loss, accuracy = np.asarray(loss, float), np.asarray(accuracy, float)
    keep = np.isfinite(accuracy)
    loss, accuracy = loss[keep], accuracy[keep]
    column = f"acc_{task}"
    if len(loss) < 5:
        raise WorkbenchError(f"column '{column}': {len(loss)} runs with a value; a sigmoid needs 5", "Fill the column.")
    if accuracy.min() < 0 or accuracy.max() > 1:
        raise WorkbenchError(f"column '{column}': values outside 0..1", "Give accuracy as a fraction (0.62, not 62).")
    spread = max(float(np.ptp(loss)), 1e-6)
    p0 = [accuracy.min(), accuracy.max(), 8.0 / spread, float(np.median(loss))]
    bounds = ([0.0, 0.0, 1e-6, loss.min() - 5 * spread], [1.0, 1.0, 1e4, loss.max() + 5 * spread])
    try:
        popt, _ = curve_fit(sigmoid, loss, accuracy, p0=p0, bounds=bounds, maxfev=20000)
    except RuntimeError as err:  # scipy's "optimal parameters not found": a user-facing fact about the data
        raise WorkbenchError(
            f"column '{column}': the sigmoid fit did not converge ({err})", "Check the values."
        ) from None
    rmse = float(np.sqrt(np.mean((sigmoid(loss, *popt) - accuracy) ** 2)))
    return AccuracyFit(task, *(float(p) for p in popt), rmse=rmse, n_points=int(len(loss)))


def fit_accuracy_columns(points: pd.DataFrame) -> list[AccuracyFit]:
    """One sigmoid per acc_<task> column of the points."""
    return [fit_accuracy(points["loss"], points[c], c[len("acc_") :]) for c in points.columns if c.startswith("acc_")]


def accuracy_at(fit: AccuracyFit, law: Mapping[str, object], at_flops: Sequence[float]) -> list[dict]:
    """Predicted accuracy at the law's optimal loss for each C (FLOPs)."""
    rows = []
    for c in at_flops:
        loss = float(optimal_loss(law, c))
        rows.append({"budget_flops": float(c), "loss_opt": loss, "accuracy": float(sigmoid(loss, *_params(fit)))})
    return rows


def _params(fit: AccuracyFit) -> tuple[float, float, float, float]:
    return fit.floor, fit.ceiling, fit.slope, fit.midpoint_loss
