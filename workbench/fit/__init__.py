"""Scaling-law fits: isoFLOP minima, the parametric law, bootstrap intervals, held-out checks.

A planner calls `predict_loss`, `optimal_allocation`, `optimal_loss` and `isoflop_allocation` on a loaded
fits/NAME.json (`workbench.records.read_fit`), on the point estimate or on the bootstrap draws.
"""

from workbench.laws import isoflop_allocation, optimal_allocation, optimal_loss, predict_loss

__all__ = ["isoflop_allocation", "optimal_allocation", "optimal_loss", "predict_loss"]
