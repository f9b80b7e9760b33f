"""The fit stage: isoFLOP minima, the parametric law, bootstrap intervals, held-out and rollout checks.
Pure numpy/scipy science (no I/O) except `stage` and `fitfile`, which read and write fits/NAME.json.

The laws' closed forms (`predict_loss`, `optimal_allocation`, `optimal_loss`, `isoflop_allocation`) live in
workbench.fit.laws; a planner calls them on a loaded fits/NAME.json (workbench.records.read_fit).
"""
