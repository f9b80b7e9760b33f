"""`workbench report NAME --watch`: regenerate the page as runs finish, with the fit so far.

Refresh: the page reloads itself (`location.reload()` every interval, the scroll position kept in
sessionStorage and restored once the charts are drawn). A page opened from a file cannot fetch a data
file, and a local server would need a port, a process that outlives the command and a URL that cannot be
mailed; a reload keeps the report one self-contained file that also works when copied elsewhere. The
page being regenerated atomically, a reload never sees half a file. The last page (no run queued or
running) no longer reloads.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from workbench.core.errors import WorkbenchError
from workbench.fit.pipeline import FitOptions, fit_all, to_record
from workbench.fit.points import validate_points
from workbench.report.inputs import gather, resolve_sweep
from workbench.sweep.status import sweep_status
from workbench.train import rundir

log = logging.getLogger(__name__)
FIT_BOOTSTRAP = 50  # resamples of the fit so far: intervals, cheaply, at every regeneration
FIT_METHOD = "isoflop"  # seconds per refit; the parametric law (tens of seconds on few runs) waits for `workbench fit`


def run_counts(runs_root: Path | None, runs) -> dict[str, int]:
    """finished / failed / running / queued: from the run directories (sweep status) and the store's rows."""
    counts = {"finished": 0, "failed": 0, "running": 0, "queued": 0}
    if runs_root is not None and runs_root.is_dir():
        for run in sweep_status(runs_root).runs:
            started = rundir.metrics_path(runs_root / run.run_id).is_file()
            kind = {
                "completed": "finished",
                "diverged": "failed",
                "failed": "failed",
                "cancelled": "failed",
                "running": "running",
                "pending": "queued",
            }.get(run.state, "running" if started else "queued")  # noqa: E501
            counts[kind] += 1
        return counts
    for status in runs["status"]:
        kind = {"completed": "finished", "running": "running", "pending": "queued"}.get(status, "failed")
        counts[kind] += 1
    return counts


def fit_so_far(inputs) -> tuple[dict | None, str]:
    """The fit pipeline on the completed runs so far (None and why when they do not suffice yet)."""

    if inputs.points is None:
        return None, "no completed run yet"
    try:
        points = validate_points(inputs.points, f"sweep '{inputs.sweep}'")
        results = fit_all(points, FitOptions(method=FIT_METHOD, bootstrap=FIT_BOOTSTRAP))
    except WorkbenchError as err:
        return None, f"not fitted yet: {err.args[0]}"
    record = to_record(results, f"{inputs.sweep}-live", f"sweep:{inputs.sweep}", inputs.sweep)
    return record, f"{FIT_METHOD} fit on the {len(points)} completed runs so far ({FIT_BOOTSTRAP} bootstrap resamples)"


def regenerate(sweep: str, db: Path, out: Path, runs_root: Path | None, interval_s: float, command: str) -> tuple:
    """Ingest the run directories, refit, write the page; (path, status line, whether runs are still live)."""
    from workbench.report.page import render, write_text_atomic
    from workbench.store.database import Store

    if runs_root is not None and runs_root.is_dir():
        Store(db).ingest(runs_root)
    inputs = gather(sweep, db)
    counts = run_counts(runs_root, inputs.runs)
    fit, note = fit_so_far(inputs)
    if fit is not None:
        inputs = dataclasses.replace(inputs, fit=fit, fit_source=f"--watch: {note}")
    live = counts["running"] + counts["queued"] > 0
    line = (
        f"{counts['running']} running, {counts['queued']} queued, {counts['failed']} failed, "
        f"{counts['finished']} finished; fit: {note}"
    )
    stamp = datetime.now(UTC).strftime("%H:%M:%S UTC")
    banner = {
        "line": f"Live sweep, updated {stamp}: {line}. "
        + (f"This page reloads every {interval_s:g} s." if live else "The sweep has ended."),
        "reload_s": interval_s if live else 0,
    }
    path = write_text_atomic(out, render(inputs, command, banner))
    return path, line, live


def watch_report(
    sweep: str | None,
    db: Path,
    out: Path | None = None,
    runs_dir: Path | None = None,
    interval_s: float = 10.0,
    max_cycles: int | None = None,
    command: str = "",
) -> Iterator[tuple]:  # noqa: E501
    """Regenerate the page every interval_s until no run is queued or running (or max_cycles pages)."""

    if sweep is None:
        sweep = resolve_sweep(db, None)
    runs_root = runs_dir if runs_dir is not None else Path("runs") / sweep
    out = out if out is not None else Path("reports") / f"{sweep}.html"
    cycle = 0
    while True:
        path, line, live = regenerate(sweep, db, out, runs_root, interval_s, command)
        cycle += 1
        yield path, line
        if not live or (max_cycles is not None and cycle >= max_cycles):
            return
        time.sleep(interval_s)
