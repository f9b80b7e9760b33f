"""Points for fits: load a CSV or a store DataFrame, validate it, group runs into budgets.

The validated frame has one row per run: params (N, non-embedding), tokens (D), flops (C),
budget_flops (the nominal budget of the run's isoFLOP curve), loss, and any acc_<task> columns.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.core.errors import WorkbenchError

REQUIRED = ("params", "tokens", "loss")
COLUMNS_HINT = "Columns needed: params, tokens, loss; optional flops, budget, acc_<task>."
GROUP_DECADES = float(np.log10(1.05))  # default: runs whose FLOPs agree within 5% belong to one isoFLOP curve
MIN_GROUP_SIZES = 5  # a budget grouped from FLOPs with fewer sizes than this is warned about
log = logging.getLogger(__name__)


def load_csv(path: str | Path, group_decades: float = GROUP_DECADES) -> pd.DataFrame:
    """Read a CSV of runs and validate it (see `validate_points`; runs are grouped into budgets by FLOPs
    within `group_decades` when the CSV has no budget column)."""
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"{path}: no such file", "Pass --from-csv PATH to an existing CSV file.")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise WorkbenchError(f"{path}: the file is empty", COLUMNS_HINT) from None
    except pd.errors.ParserError as err:
        raise WorkbenchError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})", COLUMNS_HINT) from None
    except UnicodeDecodeError as err:
        raise WorkbenchError(f"{path}: not a UTF-8 text CSV (byte {err.start})", COLUMNS_HINT) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if "budget" in frame.columns and "budget_flops" not in frame.columns:
        frame = frame.rename(columns={"budget": "budget_flops"})
    return validate_points(frame, str(path), group_decades)


# what a run's numbers may be: anything outside is a typo, a unit slip or a diverged run, and would reach the
# fits as overflow (a loss of 1e300) or a law pulled to nonsense (a loss of 1e-300, a model of half a parameter)
RANGES = {
    "params": (1.0, 1e15),
    "tokens": (1.0, 1e17),
    "loss": (1e-6, 1e3),  # nats per token (a uniform guess over 128K tokens is 11.8)
    "flops": (1.0, 1e32),
    "budget_flops": (1.0, 1e32),
}


def _numeric(frame: pd.DataFrame, column: str, source: str, positive: bool = True) -> np.ndarray:
    """The column as floats; names the first bad data row (1-based) when one is not a positive number or is
    outside the column's RANGES."""
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values) | (values <= 0 if positive else False)
    low, high = RANGES.get(column, (-np.inf, np.inf))
    with np.errstate(invalid="ignore"):
        out = ~bad & ((values < low) | (values > high))
    if bad.any() or out.any():
        row = int(np.flatnonzero(bad | out)[0])
        raw = frame[column].iloc[row]
        shown = repr(raw) if isinstance(raw, str) else str(raw)
        what = f"outside [{low:g}, {high:g}]" if out[row] else "not a positive finite number"
        raise WorkbenchError(
            f"{source}: column '{column}' row {row + 1} has {shown}, {what}",
            f"Fix or drop that run; {(bad | out).sum()} row(s) of '{column}' are bad.",
        )
    return values


def validate_points(frame: pd.DataFrame, source: str = "data", group_decades: float = GROUP_DECADES) -> pd.DataFrame:
    """Check columns and values; fill flops (6 N D) and budget_flops (FLOPs grouped within `group_decades`,
    with a warning when a group has fewer than MIN_GROUP_SIZES sizes) when absent."""
    if len(frame) == 0:
        raise WorkbenchError(f"{source}: no runs (0 rows)", COLUMNS_HINT)
    for column in REQUIRED:
        if column not in frame.columns:
            raise WorkbenchError(f"{source}: missing column '{column}'", COLUMNS_HINT)
    out = pd.DataFrame({column: _numeric(frame, column, source) for column in REQUIRED})
    if "flops" in frame.columns and frame["flops"].notna().any():
        out["flops"] = _numeric(frame, "flops", source)
    else:
        out["flops"] = 6.0 * out["params"] * out["tokens"]
    if "budget_flops" in frame.columns and frame["budget_flops"].notna().any():
        out["budget_flops"] = _numeric(frame, "budget_flops", source)
    else:
        out["budget_flops"] = group_budgets(out["flops"].to_numpy(), 10.0**group_decades - 1.0)
    for column in frame.columns:
        if str(column).startswith("acc_"):
            out[column] = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    for column in ("run_id", "kind"):  # labels kept for approach 1 (a WSD sweep's kind: trunk, branch, run)
        if column in frame.columns:
            out[column] = frame[column].astype(str).to_numpy()
    repeated = int(out.duplicated(["params", "tokens", "loss"]).sum())
    if repeated:
        log.warning(
            "%s: %d rows repeat another row's params, tokens and loss (the same run twice?); each counts as a run",
            source,
            repeated,
        )
    budgets = np.unique(out["budget_flops"])
    if len(budgets) < 2:
        raise WorkbenchError(
            f"{source}: one budget only ({budgets[0]:.3g} FLOPs, column 'budget_flops')",
            "A scaling law needs runs at 2 or more compute budgets; add runs at other budgets.",
        )
    if "budget_flops" not in frame.columns or not frame["budget_flops"].notna().any():
        _warn_small_groups(out, source, group_decades)
    return out.sort_values(["budget_flops", "params"], kind="stable").reset_index(drop=True)


def _warn_small_groups(points: pd.DataFrame, source: str, group_decades: float) -> None:
    sizes = points.groupby("budget_flops")["params"].nunique()
    small = int((sizes < MIN_GROUP_SIZES).sum())
    if small and (sizes >= 3).any():  # with no group of 3 sizes the isoFLOP fit's own error says it all
        log.warning(
            "%s: no budget column; runs grouped by FLOPs within %.3g decades into %d budgets, %d of them with fewer "
            "than %d sizes (their parabolas are loosely determined); widen the grouping with --group-decades or "
            "add a budget column",
            source,
            group_decades,
            len(sizes),
            small,
            MIN_GROUP_SIZES,
        )


def check_losses_vary(points: pd.DataFrame, source: str) -> None:
    """Flat losses fit every law with exponents ~0 and 'interior' minima: refuse them before fitting."""
    loss = points["loss"].to_numpy()
    if np.ptp(loss) <= 1e-6 * np.abs(loss).max():
        raise WorkbenchError(
            f"{source}: every run has the same loss ({loss[0]:.6g}, column 'loss')",
            "A scaling law needs losses that vary with size and data; check the loss column.",
        )


def group_budgets(flops: np.ndarray, rel_tol: float = 0.05) -> np.ndarray:
    """Label each run with its budget: sorted FLOPs within rel_tol of a group's first member share a label.

    The label is the group's geometric-mean FLOPs (runs of one nominal budget differ by rounding of tokens).
    """
    flops = np.asarray(flops, dtype=float)
    order = np.argsort(flops)
    labels = np.empty_like(flops)
    start = 0
    for i in range(1, len(order) + 1):
        if i == len(order) or flops[order[i]] > flops[order[start]] * (1.0 + rel_tol):
            members = order[start:i]
            labels[members] = float(np.exp(np.mean(np.log(flops[members]))))
            start = i
    return labels


def data_hash(points: pd.DataFrame) -> str:
    """sha256 (first 16 hex digits) of the points the fit used, independent of row order."""
    columns = [c for c in ("params", "tokens", "flops", "budget_flops", "loss") if c in points.columns]
    canonical = points[columns].sort_values(columns).to_csv(index=False, float_format="%.10g")
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def budget_strata(budget_flops: np.ndarray) -> list[np.ndarray]:
    """Row indices of each budget, budgets ascending (the strata of the bootstrap)."""
    budget_flops = np.asarray(budget_flops)
    return [np.flatnonzero(budget_flops == b) for b in np.unique(budget_flops)]


CURVE_HINT = "Columns needed: run_id, loss and flops (or tokens); optional step, val_loss."


def load_curves(path: str | Path, points: pd.DataFrame) -> pd.DataFrame:
    """Loss curves of the runs in `points` from a CSV (one row per logged step: run_id, flops or tokens,
    loss, optional step and val_loss), as the metric rows approach 1 reads (workbench.fit.envelope)."""
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"{path}: no such file", "Pass --curves PATH to a CSV of loss curves.")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise WorkbenchError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})", CURVE_HINT) from None
    if "run_id" not in points.columns:
        raise WorkbenchError("--curves needs a run_id column in the runs CSV too", "Add run_id to both files.")
    for column in ("run_id", "loss"):
        if column not in frame.columns:
            raise WorkbenchError(f"{path}: missing column '{column}'", CURVE_HINT)
    if len(frame) == 0:
        raise WorkbenchError(f"{path}: no rows (a header only)", CURVE_HINT)
    frame = frame.assign(run_id=frame["run_id"].astype(str))
    unknown = set(frame["run_id"]) - set(points["run_id"])
    if unknown:
        raise WorkbenchError(
            f"{path}: {len(unknown)} run ids not in the runs CSV (e.g. {sorted(unknown)[0]!r})",
            "Use the run_id values of the runs CSV.",
        )
    if "flops" not in frame.columns:
        if "tokens" not in frame.columns:
            raise WorkbenchError(f"{path}: needs a flops or a tokens column", CURVE_HINT)
        per_token = dict(zip(points["run_id"], points["flops"] / points["tokens"], strict=True))
        frame["flops"] = _numeric(frame, "tokens", str(path)) * frame["run_id"].map(per_token).to_numpy(float)
    else:
        frame["flops"] = _numeric(frame, "flops", str(path))
    frame["loss"] = _numeric(frame, "loss", str(path))
    if "step" not in frame.columns:
        frame["step"] = frame.groupby("run_id").cumcount()
    if "val_loss" not in frame.columns:
        frame["val_loss"] = np.nan
    return frame[["run_id", "step", "flops", "loss", "val_loss"]]
