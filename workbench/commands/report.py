"""`workbench report [SWEEP ...]`: one self-contained HTML page per sweep, a comparison of sweeps, or a live page."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from workbench.commands.options import ALL_VERSIONS, SWEEP_HELP, db_option, echo_json, json_option, runs_option
from workbench.core.errors import WorkbenchError
from workbench.core.files import output_file


def _command(sweeps: list[str], pairs: list[tuple[str, object]], flags: list[str]) -> str:
    words = ["workbench", "report", *sweeps]
    for flag, value in pairs:
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                words += [flag, str(item)]
    return shlex.join(words + flags)


def report(
    sweeps: list[str] = typer.Argument(
        None,
        metavar="SWEEP",
        help=SWEEP_HELP + " Default: the store's only sweep; two or more: a comparison.",
        show_default=False,
    ),
    db: Path = db_option(),
    fit: Path = typer.Option(None, "--fit", help="Fit JSON (default: the sweep's latest fit, else fits/SWEEP.json)."),
    plan: Path = typer.Option(
        None, "--plan", help="Plan JSON from `workbench plan --json` (default: latest plan row)."
    ),
    out: Path = typer.Option(None, "--out", help="Output HTML (default: reports/SWEEP.html)."),
    at: list[float] = typer.Option(
        None, "--at", help="Comparison: target budget in FLOPs (first --at), more --at add table rows."
    ),
    watch: bool = typer.Option(False, "--watch", help="Regenerate the page as runs finish until the sweep ends."),
    interval: float = typer.Option(10.0, "--interval", min=0.5, help="--watch: seconds between regenerations."),
    runs: Path = runs_option(),
    all_versions: bool = ALL_VERSIONS,
    as_json: bool = json_option(),
) -> None:
    """Write a self-contained HTML report of a sweep (curves, fits, frontier, plan, runs) or compare sweeps."""
    from workbench.report.inputs import resolve_sweep
    from workbench.report.watch import watch_report
    from workbench.store.database import default_db_path
    from workbench.sweep.spec import sweep_name_of

    db_path = db or default_db_path()
    if out is not None:
        output_file(out, "--out", (db_path, fit, plan))
    names = [sweep_name_of(s) for s in sweeps or []]
    if len(names) > 1:
        if watch or fit or plan:
            raise WorkbenchError("--watch, --fit and --plan report one sweep", "Drop them to compare sweeps.")
        from workbench.report.compare_page import write_comparison

        targets = list(at or [])
        command = _command(names, [("--db", db_path), ("--at", targets), ("--out", out)], [])
        path = write_comparison(db_path, names, targets[0] if targets else None, targets[1:], out, command)
        _done(path, as_json)
        return
    name = names[0] if names else None
    pairs = [("--db", db_path), ("--fit", fit), ("--plan", plan), ("--out", out)]
    command = _command(names, pairs, ["--watch"] if watch else [])
    if watch:
        name = name or resolve_sweep(db_path, None)
        for path, line in watch_report(name, db_path, out, (runs or Path("runs")) / name, interval, command=command):
            typer.echo(f"{path}: {line}", err=as_json)
        _done(path, as_json)
        return
    from workbench.report.page import write_report
    from workbench.store.database import Store

    name = name or resolve_sweep(db_path, None)
    path = write_report(name, db_path, fit, plan, out, command=command, all_versions=all_versions)
    typer.echo(f"sweep {name}: {Store(db_path).scope(name, all_versions).describe()}", err=True)
    _done(path, as_json)


def _done(path: Path, as_json: bool) -> None:
    if as_json:
        echo_json({"report": str(path)})
    else:
        typer.echo(str(path))
