"""What every command shares, so that each concept has one name on the command line: a sweep is the first
positional argument (its name or its YAML file), `KEY=VALUE` arguments override YAML keys, `--runs` is the
folder of run directories, `--db` the DuckDB file, `--json` prints the result as JSON."""

from __future__ import annotations

from pathlib import Path

import typer

from workbench.core.files import json_text

SWEEP_HELP = "A sweep: its name (as in the store and runs/NAME) or its YAML file (sweeps/NAME.yaml)."
OVERRIDES_HELP = "Overrides of the YAML's keys, KEY.SUB=VALUE (e.g. optim.lr_peak=3e-4), validated like the file."


ALL_VERSIONS = typer.Option(
    False, "--all-versions", help="Use the runs of every version of the sweep (default: its current version's)."
)


def db_option() -> typer.models.OptionInfo:
    return typer.Option(None, "--db", help="DuckDB file (default: $WORKBENCH_DB, else workbench.duckdb).")


def json_option() -> typer.models.OptionInfo:
    return typer.Option(False, "--json", help="Print the result as JSON (messages go to stderr).")


def runs_option() -> typer.models.OptionInfo:
    return typer.Option(None, "--runs", help="Folder holding the sweeps' run directories runs/SWEEP (default: runs).")


def echo_json(value: object) -> None:
    """One JSON document on stdout (NaN and inf written as null)."""
    typer.echo(json_text(value, indent=1))


def split_overrides(args: list[str] | None) -> tuple[list[str], list[str]]:
    """(positional arguments, KEY=VALUE overrides) of a command's trailing arguments."""
    args = args or []
    return [a for a in args if "=" not in a], [a for a in args if "=" in a]


def sweep_or_only(sweep: str | None, db: Path | None) -> str:
    """The sweep named (by name or YAML file), else the store's only sweep (a one-line error when it has
    none or several)."""
    from workbench.store.database import Store, default_db_path
    from workbench.sweep.spec import sweep_name_of

    if sweep is not None:
        return sweep_name_of(sweep)
    with Store(db or default_db_path(), read_only=True) as store:
        return store.sweep_with_runs(None)
