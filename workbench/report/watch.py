"""`workbench report NAME --watch`: regenerate the page as runs finish, with the fit so far.

Refresh: next to the page the watcher keeps a status file, SWEEP.live.js (`stamp_path`), one line of
JavaScript that hands the page {version, state, line}. The page loads it every interval through a <script>
tag (a page opened from a file may load a script beside it, where `fetch` of a data file is refused, and a
local server would need a port and a process that outlives the command) and reloads only when the version
differs from its own: the version is a hash of what the page shows (the runs' states and losses, the metric
rows, the fit), so a page whose data did not change is neither rewritten nor reloaded. When the watcher
exits (the sweep ended, --max-cycles, or Ctrl-C) it writes state "stopped" with the time: the open page
then says "Stopped" with the time of its last update and stops polling; a page copied elsewhere, without its
status file, says so and stops too. Both files are written atomically; the scroll position is kept across
reloads in sessionStorage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from workbench.core.errors import WorkbenchError
from workbench.core.files import atomic_write_text
from workbench.fit.pipeline import FitOptions, fit_all, to_record
from workbench.fit.points import validate_points
from workbench.report.inline import script_json
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


def stamp_path(out: Path) -> Path:
    """The live page's status file: reports/SWEEP.live.js beside reports/SWEEP.html."""
    return out.with_name(out.stem + ".live.js")


def write_stamp(out: Path, version: str, state: str, line: str) -> Path:
    """Write the status file the live page polls: {version, state (running | stopped), line}."""
    payload = script_json({"version": version, "state": state, "line": line})
    return atomic_write_text(stamp_path(out), f"window.wbLiveStamp && window.wbLiveStamp({payload});\n")


def data_version(inputs, note: str) -> str:
    """A hash of what the live page shows: each run's state, loss and progress, the metric rows, the fit."""
    cols = [c for c in ("run_id", "status", "val_loss", "metric_rows", "last_step", "last_loss") if c in inputs.runs]
    digest = hashlib.sha256(inputs.runs[cols].to_csv(index=False).encode())
    digest.update(f"{len(inputs.metrics)}|{note}".encode())
    return digest.hexdigest()[:16]


def _now() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S UTC")


def regenerate(
    sweep: str, db: Path, out: Path, runs_root: Path | None, interval_s: float, command: str, last: str | None = None
) -> tuple:
    """Ingest the run directories and, when what the page shows changed (or the sweep ended), refit and write the
    page; always refresh the status file. (path, status line, whether runs are still live, version)."""
    from workbench.report.page import render, write_text_atomic
    from workbench.store.database import Store

    if runs_root is not None and runs_root.is_dir():
        Store(db).ingest(runs_root)
    inputs = gather(sweep, db)
    counts = run_counts(runs_root, inputs.runs)
    live = counts["running"] + counts["queued"] > 0
    line = ", ".join(f"{counts[k]} {k}" for k in ("running", "queued", "failed", "finished"))
    version = data_version(inputs, line)
    if version == last and live and out.is_file():
        write_stamp(out, version, "running", "")
        return out, line + " (unchanged)", live, version
    fit, note = fit_so_far(inputs)
    if fit is not None:
        inputs = dataclasses.replace(inputs, fit=fit, fit_source=f"--watch: {note}")
    line = f"{line}; fit: {note}"
    stamp = _now()
    text = f"Live sweep, updated {stamp}: {line}. " + (
        f"This page checks for new results every {interval_s:g} s and reloads when there are some."
        if live
        else "Stopped: the sweep has ended, and the watcher with it."
    )
    banner = {"line": text, "reload_s": interval_s if live else 0, "version": version, "updated": stamp}
    banner["stamp"] = stamp_path(out).name
    path = write_text_atomic(out, render(inputs, command, banner))
    write_stamp(out, version, "running" if live else "stopped", text)
    return path, line, live, version


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
    cycle, version, updated, why = 0, None, None, "interrupted"
    try:
        while True:
            path, line, live, new = regenerate(sweep, db, out, runs_root, interval_s, command, version)
            updated = updated if new == version else _now()
            version = new
            cycle += 1
            yield path, line
            if not live:
                why = "the sweep has ended"
                return
            if max_cycles is not None and cycle >= max_cycles:
                why = f"it made its {max_cycles} regenerations"
                return
            time.sleep(interval_s)
    finally:  # the sweep ended, the cycles ran out, Ctrl-C or an error: the open page stops polling
        if version is not None:
            write_stamp(
                out,
                version,
                "stopped",
                f"Stopped: the watcher exited at {_now()} ({why}); this page shows the sweep as of {updated}.",
            )
