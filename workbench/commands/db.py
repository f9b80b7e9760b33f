"""`workbench db`: ingest run directories into DuckDB and query it (duckdb is imported inside the commands)."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from workbench.commands.options import db_option, echo_json, json_option
from workbench.core.errors import WorkbenchError

app = typer.Typer(no_args_is_help=True)
MAX_TABLE_ROWS = 1000  # a table longer than this is cut; --csv and --json print every row
MAX_CELL_CHARS = 60


@app.command("ingest")
def ingest(
    path: Path = typer.Argument(Path("runs"), help="A runs folder, one sweep's folder, or one run directory."),
    db: Path | None = db_option(),
    force: bool = typer.Option(False, "--force", help="Re-read runs whose files have not changed."),
    as_json: bool = json_option(),
) -> None:
    """Read run directories (config.yaml, metrics.jsonl, final.json) into the database; safe to repeat."""
    from workbench.store.database import Store

    store = Store(db)
    stats = store.ingest(path, force=force)
    if as_json:
        echo_json({"db": str(store.path), "path": str(path), **vars(stats)})
        return
    typer.echo(
        f"Ingested {stats.runs} runs ({stats.metric_rows:,} metric rows) from {path} into {store.path}; "
        f"{stats.unchanged} runs unchanged, {stats.skipped} metric lines skipped."
    )


@app.command("import")
def import_runs(
    path: Path = typer.Argument(
        ..., help="A W&B offline run folder (or its .wandb file), a W&B CSV export, or a TensorBoard event folder."
    ),
    runs: Path = typer.Option(Path("runs"), "--runs", help="Folder of run directories; runs go to RUNS/imported."),
    run_id: str | None = typer.Option(
        None, "--run-id", help="The run id (default: SOURCE-ID: wandb-, tensorboard- or csv- and the tracker's id)."
    ),
    sweep: str | None = typer.Option(None, "--sweep", help="The sweep the runs belong to (default: their config's)."),
    db: Path | None = db_option(),
    as_json: bool = json_option(),
) -> None:
    """Bring runs logged to W&B or TensorBoard into the store (as run directories under RUNS/imported)."""
    from workbench.store.database import Store
    from workbench.store.importers import import_path

    into = runs / "imported"
    run_dirs = import_path(path, into, run_id=run_id, sweep=sweep)
    store = Store(db)
    rows = n_runs = unchanged = 0
    for run_dir in run_dirs:  # a run imported before from the same files is unchanged: nothing is rewritten
        stats = store.ingest(run_dir)
        rows, n_runs, unchanged = rows + stats.metric_rows, n_runs + stats.runs, unchanged + stats.unchanged
    names = ", ".join(d.name for d in run_dirs)
    if as_json:
        dirs = [str(d) for d in run_dirs]
        echo_json(
            {"db": str(store.path), "runs": n_runs, "unchanged": unchanged, "metric_rows": rows, "run_dirs": dirs}
        )
        return
    typer.echo(
        f"Imported {n_runs} runs ({rows:,} metric rows) from {path} into {store.path}: {names} (in {into})"
        + (f"; {unchanged} already imported, unchanged." if unchanged else ".")
    )


@app.command("query")
def query(
    sql: str = typer.Argument(..., help='SQL, e.g. "SELECT sweep, count(*) FROM runs GROUP BY sweep".'),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array of row objects (stdout)."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV with a header row."),
    db: Path | None = db_option(),
    allow_files: bool = typer.Option(
        False, "--allow-files", help="Let the SQL read and write files (COPY TO, read_csv, ATTACH) and load extensions."
    ),
) -> None:
    """Run SQL on the database (read-only) and print the result as a table, JSON or CSV.

    The SQL runs under DuckDB's lockdown: no file or network access (COPY ... TO, read_text, read_csv,
    ATTACH), no extension INSTALL or LOAD, and the configuration locked; --allow-files lifts it."""
    from workbench.store.database import Store

    if as_json and as_csv:
        raise WorkbenchError("--json and --csv exclude each other", "Give one of them.")
    frame = Store(db, read_only=True).query(sql, allow_files=allow_files)
    if as_json:
        typer.echo(frame.to_json(orient="records", date_format="iso"))
    elif as_csv:
        typer.echo(frame.to_csv(index=False), nl=False)
    else:
        _print_table(frame)


def _print_table(frame) -> None:
    """A plain aligned table (as psql prints one): never wrapped into slivers, no markup read into cells."""
    shown = frame.head(MAX_TABLE_ROWS).astype(object)
    for column in shown.columns:
        shown[column] = shown[column].map(_cell)
    if shown.empty:
        typer.echo("  ".join(str(column) for column in frame.columns))
    else:
        typer.echo(shown.to_string(index=False))
    if len(frame) > MAX_TABLE_ROWS:
        typer.echo(f"... {len(frame) - MAX_TABLE_ROWS:,} more rows (use --csv or --json for all)")
    typer.echo(f"({len(frame):,} rows)")


def _cell(value: object) -> str:
    """A table cell: empty for NULL, 6 significant digits for floats, long text cut (--json has it all)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    if text in ("<NA>", "NaT", "nan"):
        return ""
    return text if len(text) <= MAX_CELL_CHARS else text[: MAX_CELL_CHARS - 3] + "..."
