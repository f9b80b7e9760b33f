"""The DuckDB store: schema and forward migrations, idempotent ingest of run directories, queries.

The only module that imports duckdb, and SQL only: run directories are read by workbench.train.rundir. Every call
opens the database file, does its work (writes in one transaction) and closes it, so DuckDB's single-writer
file lock is held only while a call runs. A lock held by another process is waited for with back-off (one
notice on stderr) up to `lock_timeout_s` (default: env WORKBENCH_DB_TIMEOUT_S or 300), then a one-line
WorkbenchError.

Ingest reads `runs/SWEEP/RUN_ID/` directories (rundir.find_run_dirs, rundir.summary): run_id is the
directory's name, the sweep is `meta.sweep` of config.yaml (else the parent directory's name). Training rows
that repeat a step (a resumed run) are resolved by the LAST row for that step; rows with an "event" key
(resume, rollback, ...) go to the `events` table and never replace a training row (rundir.read_metrics).
Each changed run is replaced whole (delete, then a bulk insert of a DataFrame), so ingest is idempotent and
`metrics` has one row per (run_id, step). Runs whose files have not changed since the last ingest are left
alone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from workbench.core.errors import WorkbenchError
from workbench.core.files import disk_error, env_number, json_text, safe_name, writing
from workbench.core.units import as_float, as_int, as_text
from workbench.store.scope import Scope, scope_of
from workbench.train import rundir
from workbench.train.rundir import MetricFile

log = logging.getLogger(__name__)
METRIC_COLUMNS = (
    "step",
    "tokens",
    "flops",
    "loss",
    "lr",
    "grad_norm",
    "batch_tokens",
    "tokens_per_s",
    "wall_s",
    "val_loss",
    "event",
)
_BIGINT_METRICS = ("tokens", "batch_tokens")
_FLUSH_ROWS = 250_000  # metric rows buffered before a bulk insert (bounds memory on huge ingests)
_NO_DB_HINT = "Run `workbench db ingest` or a sweep first."
NO_RUNS = "Run a sweep (`workbench sweep launch sweeps/NAME.yaml`) and `workbench db ingest runs/`, or pass --db"

# Ordered forward migrations: MIGRATIONS[i] takes a database from version i to version i + 1. Never edit a
# released step; append a new one.
MIGRATIONS: list[list[str]] = [
    [  # 1: sweeps, runs and metrics
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP DEFAULT current_timestamp)",
        "CREATE TABLE sweeps (name VARCHAR PRIMARY KEY, spec JSON, spec_path VARCHAR,"
        " created_at TIMESTAMP DEFAULT current_timestamp, updated_at TIMESTAMP DEFAULT current_timestamp)",
        "CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, sweep VARCHAR, name VARCHAR, run_dir VARCHAR, status VARCHAR,"
        " budget_flops DOUBLE, target_params DOUBLE, branch_of VARCHAR, params BIGINT, params_total BIGINT,"
        " tokens BIGINT, flops DOUBLE, steps BIGINT, val_loss DOUBLE, wall_s DOUBLE, error VARCHAR,"
        " config JSON, final JSON, source_sig VARCHAR, ingested_at TIMESTAMP DEFAULT current_timestamp)",
        "CREATE TABLE metrics (run_id VARCHAR NOT NULL, step BIGINT NOT NULL, tokens BIGINT, flops DOUBLE, loss DOUBLE,"
        " lr DOUBLE, grad_norm DOUBLE, batch_tokens BIGINT, tokens_per_s DOUBLE, wall_s DOUBLE, val_loss DOUBLE,"
        " event VARCHAR, PRIMARY KEY (run_id, step))",
    ],
    [  # 2: fits, plans and events; run settings that fits of LR and batch need; progress of running runs
        "ALTER TABLE runs ADD COLUMN lr_peak DOUBLE",
        "ALTER TABLE runs ADD COLUMN batch_tokens BIGINT",
        "ALTER TABLE runs ADD COLUMN seq_len BIGINT",
        "ALTER TABLE runs ADD COLUMN n_layers BIGINT",
        "ALTER TABLE runs ADD COLUMN d_model BIGINT",
        "ALTER TABLE runs ADD COLUMN schedule VARCHAR",
        "ALTER TABLE runs ADD COLUMN meta JSON",
        "ALTER TABLE runs ADD COLUMN metric_rows BIGINT",
        "ALTER TABLE runs ADD COLUMN last_step BIGINT",
        "ALTER TABLE runs ADD COLUMN last_loss DOUBLE",
        "CREATE TABLE fits (name VARCHAR PRIMARY KEY, sweep VARCHAR, method VARCHAR, data_hash VARCHAR,"
        " created VARCHAR, fit JSON, recorded_at TIMESTAMP DEFAULT current_timestamp)",
        "CREATE TABLE plans (name VARCHAR PRIMARY KEY, fit VARCHAR, budget_flops DOUBLE, created VARCHAR,"
        " plan JSON, recorded_at TIMESTAMP DEFAULT current_timestamp)",
        # trainer events (resume, rollback, interrupted, diverged, ...), seq = order in metrics.jsonl
        "CREATE TABLE events (run_id VARCHAR NOT NULL, seq BIGINT NOT NULL, step BIGINT, event VARCHAR,"
        " detail JSON, PRIMARY KEY (run_id, seq))",
    ],
    [  # 3: what a run's bit-identity depends on (final.json's bit_identity)
        "ALTER TABLE runs ADD COLUMN torch_version VARCHAR",
        "ALTER TABLE runs ADD COLUMN torch_threads BIGINT",
        "ALTER TABLE runs ADD COLUMN cpu_capability VARCHAR",
        "ALTER TABLE runs ADD COLUMN cuda_device VARCHAR",
    ],
    [  # 4: sweep versions (runs/SWEEP/versions.json, workbench.sweep.versions): each spec hash and its runs
        "CREATE TABLE sweep_versions (sweep VARCHAR NOT NULL, version INTEGER NOT NULL, spec_hash VARCHAR,"
        " created_at VARCHAR, spec_path VARCHAR, spec JSON, run_ids JSON, PRIMARY KEY (sweep, version))",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)

RUN_COLUMNS = (
    "run_id",
    "sweep",
    "name",
    "run_dir",
    "status",
    "budget_flops",
    "target_params",
    "branch_of",
    "params",
    "params_total",
    "tokens",
    "flops",
    "steps",
    "val_loss",
    "wall_s",
    "error",
    "config",
    "final",
    "source_sig",
    "lr_peak",
    "batch_tokens",
    "seq_len",
    "n_layers",
    "d_model",
    "schedule",
    "meta",
    "metric_rows",
    "last_step",
    "last_loss",
    "torch_version",
    "torch_threads",
    "cpu_capability",
    "cuda_device",
)


@dataclass(frozen=True)
class IngestStats:
    """What one ingest wrote: runs (run directories written), metric_rows (rows written), skipped (metric
    lines not stored: malformed, or a last line still being written), unchanged (runs already up to date)."""

    runs: int
    metric_rows: int
    skipped: int
    unchanged: int = 0


LOCKDOWN = (  # DuckDB settings for `db query` without --allow-files; the last one freezes them
    "SET enable_external_access = false",
    "SET autoinstall_known_extensions = false",
    "SET autoload_known_extensions = false",
    "SET allow_community_extensions = false",
    "SET lock_configuration = true",
)


def default_db_path() -> Path:
    """The database file: env WORKBENCH_DB, else workbench.duckdb in the current directory."""
    return Path(os.environ.get("WORKBENCH_DB") or "workbench.duckdb")


def migrate(con: duckdb.DuckDBPyConnection, target: int = SCHEMA_VERSION) -> int:
    """Apply the missing migrations up to `target`, each step in its own transaction; the new version."""
    version = _not_newer(_version(con))
    for step in range(version, target):
        con.execute("BEGIN TRANSACTION")
        try:
            for sql in MIGRATIONS[step]:
                con.execute(sql)
            con.execute("INSERT INTO schema_version (version) VALUES (?)", [step + 1])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return max(version, target)


def _not_newer(version: int) -> int:
    if version > SCHEMA_VERSION:
        raise WorkbenchError(
            f"database schema version {version} is newer than this workbench knows ({SCHEMA_VERSION})",
            "Upgrade workbench, or point --db at another file.",
        )
    return version


def _version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version' AND table_schema = 'main'"
    ).fetchone()[0]
    return int(con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]) if exists else 0


class Store:
    """The workbench database; a context manager (each call opens and closes the file itself)."""

    def __init__(self, path: str | Path | None = None, read_only: bool = False, lock_timeout_s: float | None = None):
        self.path = Path(path) if path is not None else default_db_path()
        self.read_only = read_only
        if lock_timeout_s is None:
            lock_timeout_s = env_number("WORKBENCH_DB_TIMEOUT_S", 300.0, 0.0, 1e6, low_open=False)
        self.lock_timeout_s = float(lock_timeout_s)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    # --- connections -------------------------------------------------------------------------------

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """Open the file, waiting with back-off while another process holds DuckDB's lock."""
        _refuse_sqlite(self.path)
        deadline = time.monotonic() + self.lock_timeout_s
        delay_s, told = 0.05, False
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.Error as err:
                message = str(err).splitlines()[0]
                disk = _disk_error(message, self.path)
                if disk is not None and not read_only:
                    raise disk from None
                if "lock" not in message.lower():
                    raise WorkbenchError(
                        f"cannot open database {self.path}: {message}", "Point --db or WORKBENCH_DB at a DuckDB file."
                    ) from None
                holder = re.search(r"PID (\d+)", message)
                who = f" (PID {holder.group(1)})" if holder else ""
                if time.monotonic() >= deadline:
                    raise WorkbenchError(
                        f"database {self.path} is still locked by another process{who} after {self.lock_timeout_s:g} s",
                        "Wait for the other workbench command to finish, or raise WORKBENCH_DB_TIMEOUT_S.",
                    ) from None
                if not told:
                    log.warning(
                        "workbench: database %s is locked by another process%s; waiting up to %g s",
                        self.path,
                        who,
                        self.lock_timeout_s,
                    )
                    told = True
                time.sleep(min(delay_s * random.uniform(0.5, 1.0), max(deadline - time.monotonic(), 0.0)))
                delay_s = min(delay_s * 2, 1.0)

    @contextmanager
    def _writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection on a migrated database, inside one transaction (rolled back on error)."""
        if self.read_only:
            raise WorkbenchError(f"database {self.path} was opened read-only", "Open the Store without read_only.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._connect(read_only=False)
        try:
            migrate(con)
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException as err:
                with contextlib.suppress(duckdb.Error):  # a failed COMMIT has ended the transaction already
                    con.execute("ROLLBACK")
                if isinstance(err, duckdb.Error):
                    raise self._write_error(err) from None
                raise
        except duckdb.Error as err:  # migrate, or BEGIN on a full disk
            raise self._write_error(err) from None
        finally:
            with contextlib.suppress(duckdb.Error):
                con.close()

    def _write_error(self, err: duckdb.Error) -> WorkbenchError:
        """A one-line error for a DuckDB failure while writing: a full or read-only disk names the file and the
        free space (the transaction was rolled back: the database holds what it held before)."""
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        disk = _disk_error(message, self.path)
        if disk is not None:
            return disk
        return WorkbenchError(
            f"writing database {self.path} failed ({message[:200]}); the change was rolled back",
            "Check the disk, then rerun the same command.",
        )

    @contextmanager
    def _reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection on an existing, current database (migrated first if it is older)."""
        if not self.path.is_file():
            raise WorkbenchError(f"no database at {self.path}", _NO_DB_HINT)
        con = self._connect(read_only=True)
        try:
            version = _not_newer(_version(con))
            if version == 0:
                raise WorkbenchError(f"database {self.path} is empty", _NO_DB_HINT)
            if version < SCHEMA_VERSION:
                if self.read_only:
                    raise WorkbenchError(
                        f"database {self.path} has schema version {version}, this workbench needs {SCHEMA_VERSION}",
                        "Run `workbench db ingest` once to migrate it.",
                    )
                con.close()
                with self._writer():
                    pass
                con = self._connect(read_only=True)
            yield con
        finally:
            con.close()

    def _read(self, sql: str, params: list | None = None) -> pd.DataFrame:
        with self._reader() as con:
            return con.execute(sql, params or []).df()

    # --- ingest --------------------------------------------------------------------------------------

    def ingest(self, path: str | Path, force: bool = False) -> IngestStats:
        """Read run directories under `path` (a run, a sweep or a root of sweeps) into the database, in one
        transaction; runs whose files are unchanged since the last ingest are skipped unless `force`."""
        path = Path(path)
        if not path.exists():
            raise WorkbenchError(f"{path} not found", "Pass the runs folder (runs/, runs/SWEEP or one run directory).")
        if not path.is_dir():
            raise WorkbenchError(
                f"{path} is a file, not a folder", "Pass the runs folder (runs/, runs/SWEEP or one run directory)."
            )
        run_dirs = rundir.find_run_dirs(path)
        written = rows = skipped = unchanged = 0
        with self._writer() as con:
            known = dict(con.execute("SELECT run_id, source_sig FROM runs").fetchall())
            runs: list[dict] = []
            files: list[tuple[str, MetricFile]] = []
            buffered = 0
            for run_id, run_dir in run_dirs.items():
                sig = rundir.signature(run_dir)
                if not force and known.get(run_id) == sig:
                    unchanged += 1
                    continue
                metric_file = rundir.read_metrics(run_dir)
                runs.append(_run_row(rundir.summary(run_dir, metric_file), sig))
                files.append((run_id, metric_file))
                written, rows = written + 1, rows + len(metric_file.by_step)
                skipped += metric_file.skipped
                buffered += len(metric_file.by_step)
                if buffered >= _FLUSH_ROWS:
                    _write_runs(con, runs, files)
                    runs, files, buffered = [], [], 0
            _write_runs(con, runs, files)
            roots = {path} | {d.parent for d in run_dirs.values()} | {d.parent.parent for d in run_dirs.values()}
            for record in filter(None, (rundir.read_versions(r) for r in sorted(roots))):
                _write_versions(con, record)
        return IngestStats(runs=written, metric_rows=rows, skipped=skipped, unchanged=unchanged)

    # --- reads ---------------------------------------------------------------------------------------

    def versions(self, sweep: str) -> list[dict]:
        """The sweep's versions in order ({version, spec_hash, created_at, spec_path, spec, run_ids}); [] if none."""
        frame = self._read("SELECT * FROM sweep_versions WHERE sweep = ? ORDER BY version", [sweep])
        out = []
        for row in frame.to_dict("records"):
            spec, run_ids = json.loads(row["spec"] or "null"), json.loads(row["run_ids"] or "[]")
            out.append({**row, "spec": spec, "run_ids": run_ids})
        return out

    def sweep_spec(self, sweep: str) -> dict | None:
        """The spec (as JSON) of the sweep's current version, else the one its last launch recorded, else None."""
        versions = self.versions(sweep)
        if versions and versions[-1]["spec"]:
            return versions[-1]["spec"]
        rows = self._read("SELECT spec FROM sweeps WHERE name = ? AND spec IS NOT NULL", [sweep])
        return json.loads(rows["spec"].iloc[0]) if len(rows) else None

    def scope(self, sweep: str, all_versions: bool = False) -> Scope:
        """The runs of `sweep` that fits and reports use: its current version's (workbench.sweep.versions) unless
        `all_versions`, with how many other runs of the sweep that leaves out."""
        present = set(self._read("SELECT run_id FROM runs WHERE sweep = ?", [sweep])["run_id"])
        return scope_of(sweep, self.versions(sweep), present, all_versions)

    def points(self, sweep: str, metric: str = "val_loss", all_versions: bool = False) -> pd.DataFrame:
        """Completed runs of `sweep` with a finite loss, for fits: the final validation loss, or with `metric`
        a named held-out set's (val_loss_NAME, from final.json); the current version's runs unless
        `all_versions` (Store.scope)."""
        loss = _metric_sql(metric)
        frame = self._read(
            f"SELECT run_id, sweep, budget_flops, params, params_total, tokens, flops, {loss} AS loss, status,"
            " lr_peak, batch_tokens, seq_len, target_params, branch_of, json_extract_string(meta, '$.kind') AS kind,"
            " steps, wall_s, n_layers, d_model, schedule"
            f" FROM runs WHERE sweep = ? AND status = 'completed' AND isfinite({loss})"
            " ORDER BY budget_flops, params, run_id",
            [sweep],
        )
        frame = _in_scope(frame, self.scope(sweep, all_versions))
        if frame.empty and metric != "val_loss":
            self._no_metric(sweep, metric)
        if frame.empty:
            known = self._read("SELECT DISTINCT sweep FROM runs WHERE status = 'completed' ORDER BY sweep")
            names = ", ".join(known["sweep"].dropna()) or "none"
            raise WorkbenchError(
                f"sweep '{sweep}' has no completed runs with a loss in {self.path}",
                f"Sweeps with completed runs: {names}. Run `workbench db ingest` after the runs finish.",
            )
        return frame

    def _no_metric(self, sweep: str, metric: str) -> None:
        finals = self._read("SELECT final FROM runs WHERE sweep = ? AND final IS NOT NULL", [sweep])["final"]
        names = sorted({k for f in finals for k in json.loads(f) if k.startswith("val_loss")}) or ["val_loss"]
        raise WorkbenchError(
            f"sweep '{sweep}' has no metric '{metric}' in its completed runs", f"Metrics there: {', '.join(names)}."
        )

    def runs(self, sweep: str | None = None, all_versions: bool = False) -> pd.DataFrame:
        """All ingested runs (of one sweep if given: its current version's unless `all_versions`), one row per
        run_id, by sweep, budget_flops and params."""
        where, params = ("WHERE sweep = ?", [sweep]) if sweep is not None else ("", [])
        frame = self._read(f"SELECT * FROM runs {where} ORDER BY sweep, budget_flops, params, run_id", params)
        if frame.empty and sweep is None:
            raise WorkbenchError(f"database {self.path} has no runs", _NO_DB_HINT)
        return frame if sweep is None else _in_scope(frame, self.scope(sweep, all_versions))

    def metrics(self, run_ids: list[str] | None = None) -> pd.DataFrame:
        """Metric rows (one per run_id and step) of the given runs, or of all runs, ordered by run and step."""
        if run_ids is not None and not run_ids:
            return self._read("SELECT * FROM metrics WHERE false")
        where, params = ("WHERE run_id IN (SELECT unnest(?))", [list(run_ids)]) if run_ids else ("", [])
        return self._read(f"SELECT * FROM metrics {where} ORDER BY run_id, step", params)

    def sweeps(self) -> pd.DataFrame:
        """Sweeps recorded by the launcher or seen in runs, with run counts by status."""
        return self._read(
            "SELECT coalesce(s.name, r.sweep) AS name, s.spec_path, s.spec, s.created_at, s.updated_at,"
            " coalesce(r.runs, 0) AS runs, coalesce(r.completed, 0) AS completed"
            " FROM sweeps s FULL OUTER JOIN (SELECT sweep, count(*) AS runs,"
            " count(*) FILTER (WHERE status = 'completed') AS completed FROM runs GROUP BY sweep) r"
            " ON s.name = r.sweep ORDER BY name"
        )

    def sweep_with_runs(self, sweep: str | None) -> str:
        """`sweep` if it has runs here; without a name, the only sweep with runs (a one-line error when there
        are none or several, naming them)."""
        frame = self.sweeps()
        names = sorted(frame.loc[frame["runs"] > 0, "name"].dropna().astype(str))
        if not names:
            raise WorkbenchError(f"database {self.path} has no runs", NO_RUNS + ".")
        if sweep is None:
            if len(names) > 1:
                raise WorkbenchError(
                    f"database {self.path} has {len(names)} sweeps: {', '.join(names)}",
                    "Name one: `workbench fit NAME`, `workbench report NAME`.",
                )
            return names[0]
        if sweep not in names:
            raise WorkbenchError(
                f"sweep '{sweep}' has no runs in {self.path}", f"Sweeps with runs: {', '.join(names)}."
            )
        return sweep

    def fits(self, sweep: str | None = None) -> pd.DataFrame:
        """Recorded fits (of one sweep if given); column `fit` holds the whole fit JSON."""
        where, params = ("WHERE sweep = ?", [sweep]) if sweep is not None else ("", [])
        return self._read(f"SELECT * FROM fits {where} ORDER BY created, name", params)

    def plans(self) -> pd.DataFrame:
        """Recorded plans; column `plan` holds the whole plan JSON."""
        return self._read("SELECT * FROM plans ORDER BY created, name")

    def query(self, sql: str, allow_files: bool = False) -> pd.DataFrame:
        """Run any SQL (read-only unless the Store is writable); a bad statement is a one-line error.
        Unless `allow_files`, DuckDB's lockdown is on first: no file or network access (COPY TO, read_*,
        ATTACH), no extension install or load, and the configuration locked so the SQL cannot undo it."""
        if not self.path.is_file():
            raise WorkbenchError(f"no database at {self.path}", _NO_DB_HINT)
        if not sql.strip(" \t\n;"):
            raise WorkbenchError("the SQL is empty", 'Give a statement, e.g. "SELECT count(*) FROM runs".')
        context = self._reader() if self.read_only else self._writer()
        with context as con:
            if not allow_files:
                for setting in LOCKDOWN:
                    con.execute(setting)
            try:
                cursor = con.execute(sql)
            except duckdb.Error as err:
                raise WorkbenchError(
                    f"query failed: {str(err).splitlines()[0]}",
                    "Check the SQL; tables: runs, metrics, events, sweeps, fits, plans, schema_version.",
                ) from None
            return cursor.df() if cursor is not None and cursor.description else pd.DataFrame()

    # --- small writes --------------------------------------------------------------------------------

    def upsert_sweep(self, name: str, spec: dict, spec_path: str | None) -> None:
        """Record a sweep's spec (created_at kept from the first time, updated_at now)."""
        with self._writer() as con:
            con.execute(
                "INSERT INTO sweeps (name, spec, spec_path) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE"
                " SET spec = excluded.spec, spec_path = excluded.spec_path, updated_at = now()",
                [name, _to_json(spec), spec_path],
            )

    def record_fit(self, fit: dict) -> None:
        """Record a fit (keys name, sweep, method, data_hash, created, ...), replacing one of the same name."""
        name = _required_name(fit, "fit")
        with self._writer() as con:
            con.execute(
                "INSERT OR REPLACE INTO fits (name, sweep, method, data_hash, created, fit) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    name,
                    fit.get("sweep"),
                    fit.get("method"),
                    fit.get("data_hash"),
                    as_text(fit.get("created")),
                    _to_json(fit),
                ],
            )

    def record_plan(self, plan: dict) -> None:
        """Record a plan (keys name, fit or law, budget_flops, created, ...), replacing one of the same name."""
        name = _required_name(plan, "plan")
        fit = plan.get("fit", plan.get("law"))
        fit = fit.get("name") if isinstance(fit, dict) else fit
        budget = plan.get("budget_flops")
        with self._writer() as con:
            con.execute(
                "INSERT OR REPLACE INTO plans (name, fit, budget_flops, created, plan) VALUES (?, ?, ?, ?, ?)",
                [name, as_text(fit), as_float(budget), as_text(plan.get("created")), _to_json(plan)],
            )


def _disk_error(message: str, path: Path) -> WorkbenchError | None:
    """The one-line disk error of a DuckDB message that reports a full disk, a quota or a read-only file
    system (DuckDB raises its own IOException with the OS's words); None for any other message."""
    lowered = message.lower()
    for words, code in (("no space left", errno.ENOSPC), ("quota", errno.EDQUOT), ("read-only file", errno.EROFS)):
        if words in lowered:
            return disk_error(OSError(code, message), path)
    return None


# --- rows for the tables --------------------------------------------------------------------------------


def _run_row(summary: dict[str, Any], sig: str) -> dict[str, Any]:
    """A `runs` row from rundir.summary: its dicts as JSON text, and the files' signature."""
    json_columns = {key: _to_json(summary[key]) for key in ("config", "final", "meta")}
    return {**summary, **json_columns, "source_sig": sig}


def _in_scope(frame: pd.DataFrame, scope: Scope) -> pd.DataFrame:
    """The rows of `frame` whose run_id is in the scope (all of them when it names no run ids)."""
    if scope.run_ids is None:
        return frame
    return frame[frame["run_id"].isin(scope.run_ids)].reset_index(drop=True)


def _write_versions(con: duckdb.DuckDBPyConnection, record: dict) -> None:
    """Replace a sweep's rows of sweep_versions with runs/SWEEP/versions.json's list."""
    sweep = safe_name(record.get("sweep"), "sweep name", "versions.json")
    con.execute("DELETE FROM sweep_versions WHERE sweep = ?", [sweep])
    for v in record["versions"]:
        con.execute(
            "INSERT INTO sweep_versions VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                sweep,
                as_int(v.get("version")),
                as_text(v.get("spec_hash")),
                as_text(v.get("created_at")),
                as_text(v.get("spec_path")),
                _to_json(v.get("spec")),
                _to_json([str(r) for r in v.get("run_ids") or []]),
            ],
        )


def _metrics_frame(run_id: str, by_step: dict[int, dict]) -> pd.DataFrame:
    """The run's metric rows as columns (missing keys are NULL; keys outside the contract are dropped)."""
    frame = pd.DataFrame(list(by_step.values()), columns=list(METRIC_COLUMNS))
    frame["step"] = list(by_step)  # the parsed integer steps
    frame.insert(0, "run_id", run_id)
    return frame


def _events_frame(run_id: str, events: list[dict]) -> pd.DataFrame:
    """The run's event rows: order in the file, step, event name, and the other keys as JSON."""
    return pd.DataFrame(
        {
            "run_id": run_id,
            "seq": range(len(events)),
            "step": [as_int(row.get("step")) for row in events],
            "event": [as_text(row.get("event")) for row in events],
            "detail": [_to_json({k: v for k, v in row.items() if k not in ("step", "event")}) for row in events],
        }
    )


def _write_runs(con: duckdb.DuckDBPyConnection, runs: list[dict], files: list[tuple[str, MetricFile]]) -> None:
    """Replace these runs, their metric rows and events (bulk inserts of DataFrames, in the caller's transaction)."""
    if not runs:
        return
    con.register("new_runs", pd.DataFrame(runs, columns=list(RUN_COLUMNS)))
    for table in ("metrics", "events", "runs"):
        con.execute(f"DELETE FROM {table} WHERE run_id IN (SELECT run_id FROM new_runs)")
    names = ", ".join(RUN_COLUMNS)
    con.execute(f"INSERT INTO runs ({names}) SELECT {names} FROM new_runs")
    con.unregister("new_runs")
    metrics = [_metrics_frame(run_id, f.by_step) for run_id, f in files if f.by_step]
    if metrics:
        frame = pd.concat(metrics, ignore_index=True)
        for key in METRIC_COLUMNS[1:-1]:  # a value that is not a number (a string, a list) becomes NULL
            if frame[key].dtype == object:
                frame[key] = pd.to_numeric(frame[key], errors="coerce")
            if key in _BIGINT_METRICS:  # a count beyond a 64-bit integer (or inf) is no count: NULL
                frame[key] = frame[key].where(frame[key].abs() < 2.0**63)
        frame["event"] = frame["event"].where(frame["event"].notna(), None).astype(object)
        _insert(con, "metrics", frame)
    events = [_events_frame(run_id, f.events) for run_id, f in files if f.events]
    if events:
        _insert(con, "events", pd.concat(events, ignore_index=True))


def _insert(con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame) -> None:
    con.register("new_rows", frame)
    names = ", ".join(frame.columns)
    con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM new_rows")
    con.unregister("new_rows")


# --- small conversions ---------------------------------------------------------------------------------


def _metric_sql(metric: str) -> str:
    """The SQL of a fit metric: the val_loss column, or a named held-out set's loss in final.json."""
    if metric == "val_loss":
        return "val_loss"
    if not re.fullmatch(r"val_loss_[A-Za-z0-9_]+", metric):
        raise WorkbenchError(f"--metric {metric!r} is not val_loss or val_loss_NAME", "E.g. --metric val_loss_web.")
    return f"TRY_CAST(json_extract_string(final, '$.{metric}') AS DOUBLE)"


def _required_name(record: dict, what: str) -> str:
    name = record.get("name") if isinstance(record, dict) else None
    if not isinstance(name, str) or not name:
        raise WorkbenchError(f"the {what} has no 'name'", f"Give the {what} JSON a non-empty string 'name'.")
    return name


def _to_json(value: Any) -> str | None:
    """JSON text for a JSON column (NaN and infinities become null: workbench.core.files.json_text)."""
    return None if value is None else json_text(value)


def _refuse_sqlite(path: Path) -> None:
    """An SQLite file is not opened: DuckDB would try to download its sqlite extension (no network here) and
    say only that the download failed."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return  # missing (created on write) or unreadable: DuckDB's own error says which
    if head == b"SQLite format 3\x00":
        raise WorkbenchError(
            f"cannot open database {path}: it is an SQLite file, not DuckDB",
            "Point --db or WORKBENCH_DB at a DuckDB file.",
        )
