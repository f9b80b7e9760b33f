"""The laws' closed forms on a fit record's mappings. Defined once in workbench.laws; re-exported here
for the fit package's callers."""

from workbench.laws import isoflop_allocation, optimal_allocation, optimal_loss, predict_loss

__all__ = ["isoflop_allocation", "optimal_allocation", "optimal_loss", "predict_loss"]
