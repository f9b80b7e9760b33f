"""What kind of sweep the points are, and so how to bootstrap them. Pure numpy/pandas, no I/O.

An isoFLOP design has a few budgets, each a curve of 3 or more model sizes at one FLOP count: its runs
are resampled within their budget (the design is kept in every resample). A scattered design (e.g.
Chinchilla's 240 runs at scattered FLOPs, which grouping by FLOPs within 5% splits into 85 groups, 31
of one run) is resampled i.i.d. over runs: within-group resampling would never vary a single-run
group and gives intervals 20-40% too narrow (Besiroglu et al. 2024's bootstrap errors of that fit
are matched by run resampling).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from workbench.core.errors import WorkbenchError

BOOTSTRAP_MODES = ("auto", "budget", "runs")
MIN_SIZES = 3  # a parabola needs 3 sizes
ISOFLOP_SHARE = 0.9  # isoFLOP design: at least 90% of runs lie on curves of 3+ sizes


@dataclass(frozen=True)
class Design:
    """The sweep's design and the bootstrap scheme used for it, with the reason in words."""

    kind: str  # "isoflop" | "scattered"
    bootstrap_mode: str  # "budget" | "runs"
    reason: str
    n_budgets: int
    n_curves: int  # budgets with 3+ distinct sizes

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "bootstrap_mode": self.bootstrap_mode,
            "reason": self.reason,
            "n_budgets": self.n_budgets,
            "n_curves": self.n_curves,
        }


def classify(points: pd.DataFrame) -> tuple[str, str, int, int]:
    """(kind, why, budgets, curves): isoflop when >= 90% of runs lie on budgets with 3+ distinct sizes."""
    sizes = points.groupby("budget_flops")["params"].nunique()
    runs = points.groupby("budget_flops")["params"].size()
    curves = sizes >= MIN_SIZES
    share = float(runs[curves].sum() / runs.sum())
    n_budgets, n_curves = int(len(sizes)), int(curves.sum())
    detail = f"{n_budgets} budgets (FLOPs within 5%), {n_curves} with 3+ sizes, holding {100 * share:.0f}% of runs"
    kind = "isoflop" if share >= ISOFLOP_SHARE else "scattered"
    return kind, detail, n_budgets, n_curves


def choose(points: pd.DataFrame, mode: str = "auto") -> Design:
    """The design of the points and the bootstrap mode: `mode` if given, else budget for isoFLOP designs
    and runs (i.i.d.) for scattered ones."""
    if mode not in BOOTSTRAP_MODES:
        raise WorkbenchError(f"--bootstrap-mode: unknown mode {mode!r}", f"Use one of {', '.join(BOOTSTRAP_MODES)}.")
    kind, detail, n_budgets, n_curves = classify(points)
    if mode == "auto":
        chosen = "budget" if kind == "isoflop" else "runs"
        reason = f"auto: {kind} design ({detail}) -> resample " + (
            "runs within each budget" if chosen == "budget" else "runs i.i.d. over all runs"
        )
    else:
        chosen = mode
        reason = f"--bootstrap-mode {mode} ({kind} design: {detail})"
    return Design(kind, chosen, reason, n_budgets, n_curves)


def share_singletons(points: pd.DataFrame) -> float:
    """Share of budgets holding one run (never varied by within-budget resampling)."""
    runs = points.groupby("budget_flops")["params"].size()
    return float(np.mean(runs.to_numpy() == 1))
