"""What a report shows, read from the store, the fit JSON and the plan: one `ReportInputs` per report.

Missing parts (no fit, no plan, no completed runs) are None here, with the command that makes them;
the page then says so in its section instead of failing.
"""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pandas as pd

import workbench
from workbench.core.errors import WorkbenchError
from workbench.fit.fitfile import load_fit
from workbench.records import parse_fit, parse_plan, read_plan

NO_RUNS_HINT = "Run a sweep (`workbench sweep launch sweeps/NAME.yaml`) and `workbench db ingest runs/`, or pass --db"


@dataclass(frozen=True)
class ReportInputs:
    """Everything one report renders (fit and plan records as loaded JSON; None where missing)."""

    sweep: str
    db_path: Path
    runs: pd.DataFrame  # every ingested run of the sweep
    metrics: pd.DataFrame  # metric rows of those runs
    points: pd.DataFrame | None  # completed runs with a final validation loss
    spec_path: str | None
    fit: dict | None
    fit_source: str | None
    plan: dict | None
    plan_source: str | None
    extra: dict = field(default_factory=dict)
    scope: str = ""  # which version of the sweep the runs are, and how many runs of other versions are left out


def resolve_sweep(db_path: Path, sweep: str | None) -> str:
    """The sweep to report: the one named (it must have runs), or the only sweep with runs in the database."""
    if not db_path.is_file():
        raise WorkbenchError(f"no database at {db_path}", NO_RUNS_HINT + ".")
    from workbench.store.database import Store

    with Store(db_path, read_only=True) as store:
        return store.sweep_with_runs(sweep)


def _loads(text: object) -> dict | None:
    if isinstance(text, dict):
        return text
    if not isinstance(text, str) or not text:
        return None
    return json.loads(text)


def find_fit(store, sweep: str, fit_path: Path | None) -> tuple[dict | None, str | None]:
    """(fit record, where it came from): --fit, else the sweep's latest fit in the store, else fits/SWEEP.json."""

    if fit_path is not None:
        return load_fit(fit_path), str(fit_path)
    rows = store.fits(sweep)
    if len(rows):
        row = rows.sort_values("recorded_at").iloc[-1]
        source = f"fits table of {store.path} (fit '{row['name']}')"
        return parse_fit(_loads(row["fit"]), source).as_dict(), source
    default = Path("fits") / f"{sweep}.json"
    if default.is_file():
        record = load_fit(default)
        if record.get("sweep") in (None, sweep):
            return record, str(default)
    return None, None


def find_plan(store, sweep: str, plan: dict | str | Path | None, fit: dict | None) -> tuple[dict | None, str | None]:
    """(plan record, source): a dict, a JSON file (`workbench plan --json`), else the sweep's latest plans row."""
    if isinstance(plan, dict):
        return plan, "given by the caller"
    if plan is not None:
        return read_plan(plan).as_dict(), str(plan)
    fits = set(store.fits(sweep)["name"].astype(str)) | {sweep} | ({str(fit.get("name"))} if fit else set())
    rows = store.plans()
    if not len(rows):
        return None, None
    mine = rows[rows["fit"].astype(str).isin(fits) | rows["name"].astype(str).str.startswith(f"{sweep}-")]
    if not len(mine):
        return None, None
    row = mine.sort_values("recorded_at").iloc[-1]

    source = f"plans table of {store.path} (plan '{row['name']}')"
    return parse_plan(_loads(row["plan"]), source).as_dict(), source


def gather(
    sweep: str | None,
    db_path: Path,
    fit_path: Path | None = None,
    plan: dict | str | Path | None = None,
    extra: dict | None = None,
    all_versions: bool = False,
) -> ReportInputs:
    """Read the sweep's runs and metrics (its current version's unless `all_versions`), its fit and its plan
    (fit and plan may be missing)."""
    from workbench.store.database import Store

    name = resolve_sweep(db_path, sweep)
    store = Store(db_path)
    runs = store.runs(name, all_versions)
    metrics = store.metrics(runs["run_id"].tolist())
    completed = runs[(runs["status"] == "completed") & runs["val_loss"].map(lambda v: v == v and math.isfinite(v))]
    points = store.points(name, all_versions=all_versions) if len(completed) else None
    spec = store.sweeps()
    spec_path = spec.loc[spec["name"] == name, "spec_path"]
    fit, fit_source = find_fit(store, name, fit_path)
    plan_record, plan_source = find_plan(store, name, plan, fit)
    return ReportInputs(
        sweep=name,
        db_path=db_path,
        runs=runs,
        metrics=metrics,
        points=points,
        spec_path=str(spec_path.iloc[0]) if len(spec_path) and spec_path.iloc[0] else None,
        fit=fit,
        fit_source=fit_source,
        plan=plan_record,
        plan_source=plan_source,
        extra=dict(extra or {}),
        scope=store.scope(name, all_versions).describe(),
    )


def version_of(package: str) -> str:
    """The installed version of a distribution (read from its metadata: torch is never imported here)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_commit(where: Path | None = None) -> str:
    """`git rev-parse HEAD` of the workbench checkout, or why there is none."""
    where = where or Path(workbench.__file__).resolve().parent
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unknown ({type(err).__name__})"
    return done.stdout.strip() if done.returncode == 0 else "not a git checkout"


def command_line() -> str:
    """This process's command line, as typed (the program name without its directory)."""

    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python"
