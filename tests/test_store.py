"""The DuckDB store: ingest of run directories, idempotence, migrations, locking, `workbench db`."""

from __future__ import annotations

import json
import math
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from workbench.cli import app
from workbench.core.configfile import dump_yaml
from workbench.core.errors import WorkbenchError
from workbench.model.shapes import ModelShape
from workbench.store.database import SCHEMA_VERSION, IngestStats, Store, migrate
from workbench.train.config import TrainConfig

runner = CliRunner()
SHAPE = ModelShape("tiny", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, ffn_dim=224, vocab_size=256)
N, N_TOTAL = SHAPE.params, SHAPE.params_total


def make_run(
    root: Path,
    sweep: str,
    run_id: str,
    steps: int = 10,
    *,
    status: str | None = "completed",
    val_loss: float = 3.0,
    budget_flops: float = 1e15,
    lr_peak: float = 1e-3,
    rows: list[dict] | None = None,
    tail: str = "",
) -> Path:
    """A run directory as the trainer writes it: config.yaml, metrics.jsonl (+ `tail` text), final.json."""
    run_dir = root / sweep / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(
        name=run_id,
        run_dir=str(run_dir),
        meta={"sweep": sweep, "budget_flops": budget_flops, "target_params": 1e5, "kind": "run"},
        model={key: value for key, value in SHAPE.as_dict().items() if key != "name"},
        data={"sources": [{"path": "data/tiny"}], "seq_len": 64},
        optim={"lr_peak": lr_peak},
        batch={"batch_tokens": 1024},
        stop={"tokens": max(steps, 1) * 1024},
    )
    (run_dir / "config.yaml").write_text(dump_yaml(config))
    if rows is None:
        rows = [_row(step, 5.0 - 0.1 * step) for step in range(steps)]
    if rows or tail:
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows) + tail)
    if status is not None:
        final = {
            "status": status,
            "val_loss": val_loss,
            "params": N,
            "params_total": N_TOTAL,
            "tokens": steps * 1024,
            "flops": 6 * N * steps * 1024,
            "steps": steps,
            "wall_s": 1.5,
            "error": None,
            "versions": {"torch": "2.13.0"},
        }
        (run_dir / "final.json").write_text(json.dumps(final))
    return run_dir


def _row(step: int, loss: float, **extra) -> dict:
    return {
        "step": step,
        "tokens": step * 1024,
        "flops": step * 6e8,
        "loss": loss,
        "lr": 1e-3,
        "grad_norm": 0.5,
        "batch_tokens": 1024,
        "tokens_per_s": 5e4,
        "wall_s": 0.1 * step,
        **extra,
    }


def _count(store: Store, sql: str) -> int:
    return int(store.query(sql).iloc[0, 0])


def _duplicates(store: Store) -> int:
    return _count(store, "SELECT count(*) - count(DISTINCT (run_id, step)) FROM metrics")


# --- ingest ----------------------------------------------------------------------------------------------


def test_ingest_reads_every_state_and_repeating_it_changes_nothing(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "iso", "a", 10)
    make_run(root, "iso", "b", 20, val_loss=2.5)
    make_run(root, "iso", "c", 7, status=None)  # running: metrics, no final.json
    make_run(root, "iso", "d", 0, status=None, rows=[])  # pending: config only
    store = Store(tmp_path / "wb.duckdb")

    assert store.ingest(root) == IngestStats(runs=4, metric_rows=37, skipped=0, unchanged=0)
    runs = store.runs().set_index("run_id")
    assert runs["status"].to_dict() == {"a": "completed", "b": "completed", "c": "running", "d": "pending"}
    assert set(runs["sweep"]) == {"iso"}
    assert runs.loc["b", "val_loss"] == 2.5 and runs.loc["b", "tokens"] == 20 * 1024
    assert runs.loc["c", "last_step"] == 6 and runs.loc["c", "params"] == N  # size from the config's shape
    assert json.loads(runs.loc["a", "final"])["versions"] == {"torch": "2.13.0"}

    assert store.ingest(root) == IngestStats(runs=0, metric_rows=0, skipped=0, unchanged=4)
    assert store.ingest(root, force=True) == IngestStats(runs=4, metric_rows=37, skipped=0, unchanged=0)
    assert _count(store, "SELECT count(*) FROM runs") == 4
    assert _count(store, "SELECT count(*) FROM metrics") == 37
    assert _duplicates(store) == 0


def test_resumed_run_keeps_the_last_row_of_each_step(tmp_path):
    root = tmp_path / "runs"
    first = [_row(step, 5.0) for step in range(10)]
    resumed = [_row(step, 4.0) for step in range(6, 13)]  # requeued from a checkpoint at step 6
    run_dir = make_run(root, "iso", "r", status=None, rows=first + resumed)
    store = Store(tmp_path / "wb.duckdb")
    assert store.ingest(root).metric_rows == 13
    losses = store.metrics(["r"]).set_index("step")["loss"]
    assert list(losses.index) == list(range(13))
    assert (losses.loc[:5] == 5.0).all() and (losses.loc[6:] == 4.0).all()

    # the run goes on: its file grows, the next ingest replaces the run's rows, still one per step
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write("".join(json.dumps(_row(step, 3.0)) + "\n" for step in range(12, 15)))
    assert store.ingest(root) == IngestStats(runs=1, metric_rows=15, skipped=0, unchanged=0)
    assert _count(store, "SELECT count(*) FROM metrics") == 15 and _duplicates(store) == 0
    assert store.metrics(["r"]).set_index("step").loc[12, "loss"] == 3.0


def test_bookkeeping_events_before_the_first_step_are_not_metric_rows(tmp_path):
    """A checkpoint rejected (or a SIGTERM) before step 1 logs an event at step 0: it is an event, never
    a metrics row, so a finished run holds exactly one metrics row per trained step (the chaos test)."""
    rows = [{"step": 0, "event": "checkpoint_rejected", "checkpoint": "step_00000010", "reason": "truncated"}]
    rows += [{"step": 0, "event": "interrupted", "signal": "SIGTERM"}]
    rows += [_row(step, 5.0) for step in range(1, 6)]
    make_run(tmp_path / "runs", "iso", "r", rows=rows)
    store = Store(tmp_path / "wb.duckdb")
    assert store.ingest(tmp_path / "runs").metric_rows == 5
    assert list(store.metrics(["r"])["step"]) == [1, 2, 3, 4, 5]
    assert _count(store, "SELECT count(*) FROM events") == 2


def test_event_rows_never_replace_training_rows_and_are_kept_as_events(tmp_path):
    rows = [_row(step, 5.0) for step in range(1, 6)]  # the trainer's rows, as workbench.train.trainer writes them
    rows += [{"step": 5, "event": "interrupted", "signal": "SIGUSR2"}]
    rows += [{"step": 4, "event": "resume", "from_step": 4}]  # requeued: resumes from the step-4 checkpoint
    rows += [_row(5, 4.5), _row(6, 4.4)]
    rows += [{"event": "rollback", "step": 7, "loss": "nan", "reason": "loss is nan", "to_step": 6}]
    rows += [_row(7, 4.3), {"event": "diverged", "step": 8, "loss": 99.0, "reason": "loss spike"}]
    make_run(tmp_path / "runs", "iso", "r", status="diverged", rows=rows)
    store = Store(tmp_path / "wb.duckdb")
    assert store.ingest(tmp_path / "runs").metric_rows == 8
    metrics = store.metrics(["r"]).set_index("step")
    assert list(metrics.index) == list(range(1, 9))
    assert metrics.loc[4, "loss"] == 5.0 and metrics.loc[5, "loss"] == 4.5 and metrics.loc[7, "loss"] == 4.3
    assert metrics.loc[:7, "event"].isna().all() and metrics.loc[:7, "tokens"].notna().all()
    assert (metrics.loc[8, "event"], metrics.loc[8, "loss"]) == ("diverged", 99.0)  # the spike, alone at its step
    events = store.query("SELECT seq, step, event, detail FROM events ORDER BY seq")
    assert list(events["event"]) == ["interrupted", "resume", "rollback", "diverged"]
    assert list(events["step"]) == [5, 4, 7, 8]
    assert json.loads(events.loc[2, "detail"]) == {"loss": "nan", "reason": "loss is nan", "to_step": 6}
    assert store.runs().loc[0, "last_loss"] == 4.3  # the last training row, not the event


def test_points_are_completed_runs_with_their_final_loss_and_settings(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "iso", "small", 10, val_loss=3.25, budget_flops=6e18, lr_peak=3e-4)
    make_run(root, "iso", "boom", 10, status="diverged", val_loss=float("nan"))
    make_run(root, "iso", "live", 10, status=None)
    make_run(root, "other", "x", 10)
    store = Store(tmp_path / "wb.duckdb")
    store.ingest(root)
    points = store.points("iso")
    assert list(points["run_id"]) == ["small"]
    point = points.iloc[0]
    assert (point["loss"], point["budget_flops"], point["lr_peak"]) == (3.25, 6e18, 3e-4)
    assert (point["params"], point["params_total"], point["tokens"]) == (N, N_TOTAL, 10 * 1024)
    assert (point["batch_tokens"], point["seq_len"], point["status"], point["kind"]) == (1024, 64, "completed", "run")
    assert point["flops"] == 6 * N * 10 * 1024
    with pytest.raises(WorkbenchError, match="sweep 'nope' has no completed runs.*Sweeps with completed runs: iso"):
        store.points("nope")


def test_ingest_accepts_a_run_a_sweep_or_a_root_and_nested_branches(tmp_path):
    root = tmp_path / "runs"
    trunk = make_run(root, "wsd", "trunk", 10)
    make_run(trunk, "branches", "cool1", 3)  # runs/wsd/trunk/branches/cool1: a run below a run
    (trunk / "ckpt" / "step10").mkdir(parents=True)  # never searched
    make_run(root, "iso", "a", 4)
    assert Store(tmp_path / "one.duckdb").ingest(root / "iso" / "a").runs == 1
    assert Store(tmp_path / "sweep.duckdb").ingest(root / "wsd").runs == 2
    store = Store(tmp_path / "all.duckdb")
    assert store.ingest(root).runs == 3
    assert set(store.runs()["run_id"]) == {"trunk", "cool1", "a"}

    make_run(root, "copy", "a", 4)  # the same run id twice would silently lose one run
    with pytest.raises(WorkbenchError, match="two run directories share the run id 'a'"):
        store.ingest(root)
    with pytest.raises(WorkbenchError, match="not found"):
        store.ingest(tmp_path / "missing")


def test_torn_last_line_is_left_for_later_and_damaged_lines_are_reported(tmp_path, capsys):
    root = tmp_path / "runs"
    make_run(root, "iso", "live", 5, status=None, tail='{"step": 5, "lo')  # the trainer is writing it now
    store = Store(tmp_path / "wb.duckdb")
    assert store.ingest(root) == IngestStats(runs=1, metric_rows=5, skipped=1, unchanged=0)
    assert "malformed" not in capsys.readouterr().err

    rows = [_row(0, 5.0), _row(1, 4.0)]
    bad = make_run(root, "iso", "bad", status=None, rows=rows)
    text = (bad / "metrics.jsonl").read_text()
    (bad / "metrics.jsonl").write_text(text + "not json\n" + '{"loss": 1.0}\n' + json.dumps(_row(2, 3.0)) + "\n")
    assert store.ingest(root) == IngestStats(runs=1, metric_rows=3, skipped=2, unchanged=1)
    err = capsys.readouterr().err
    assert f"{bad / 'metrics.jsonl'}:3: skipped 2 malformed metric line(s)" in err


def test_big_ingests_flush_in_chunks_within_one_transaction(tmp_path, monkeypatch):
    import workbench.store.database

    monkeypatch.setattr(workbench.store.database, "_FLUSH_ROWS", 15)  # a bulk insert every second run
    root = tmp_path / "runs"
    for i in range(5):
        make_run(root, "iso", f"r{i}", 10, rows=[_row(s, 5.0) for s in range(10)] + [{"step": 9, "event": "resume"}])
    monkeypatch.setenv("WORKBENCH_DB", str(tmp_path / "env.duckdb"))  # the default database path
    store = Store()
    assert store.path == tmp_path / "env.duckdb"
    assert store.ingest(root) == IngestStats(runs=5, metric_rows=50, skipped=0, unchanged=0)
    assert store.ingest(root, force=True).metric_rows == 50
    assert _count(store, "SELECT count(*) FROM metrics") == 50 and _duplicates(store) == 0
    assert _count(store, "SELECT count(*) FROM events") == 5


def test_a_failed_ingest_leaves_the_database_as_it_was(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "iso", "a", 10)
    store = Store(tmp_path / "wb.duckdb")
    store.ingest(root)
    make_run(root, "iso", "b", 5)
    make_run(root, "iso", "a", 20)  # changed: would be replaced
    broken = make_run(root, "iso", "z", 5)
    (broken / "final.json").write_text('{"status": "completed", ')
    with pytest.raises(WorkbenchError, match=r"final\.json: not valid JSON"):
        store.ingest(root)
    assert list(store.runs()["run_id"]) == ["a"]
    assert _count(store, "SELECT count(*) FROM metrics") == 10


# --- schema ----------------------------------------------------------------------------------------------


def test_an_old_version_database_is_migrated_forward_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.duckdb"
    con = Store(path)._connect(read_only=False)  # a version-1 file, as an older workbench left it
    assert migrate(con, target=1) == 1
    con.execute("INSERT INTO runs (run_id, sweep, status, val_loss) VALUES ('old', 'iso', 'completed', 3.5)")
    con.close()
    with pytest.raises(WorkbenchError, match="schema version 1, this workbench needs"):
        Store(path, read_only=True).runs()

    store = Store(path)
    runs = store.runs()
    assert list(runs["run_id"]) == ["old"] and runs.loc[0, "val_loss"] == 3.5
    assert "lr_peak" in runs.columns and runs["lr_peak"].isna().all()
    assert _count(store, "SELECT max(version) FROM schema_version") == SCHEMA_VERSION == 4
    store.record_fit({"name": "f", "sweep": "iso"})  # a table that version 2 added
    assert list(Store(path, read_only=True).fits()["name"]) == ["f"]

    store.query(f"INSERT INTO schema_version (version) VALUES ({SCHEMA_VERSION + 1})")
    with pytest.raises(WorkbenchError, match="newer than this workbench knows"):
        store.runs()


def test_read_commands_on_a_missing_or_empty_database_say_to_ingest_first(tmp_path):
    path = tmp_path / "none.duckdb"
    for call in (lambda s: s.runs(), lambda s: s.points("iso"), lambda s: s.query("SELECT 1"), lambda s: s.fits()):
        with pytest.raises(WorkbenchError, match="no database at .*Run `workbench db ingest` or a sweep first"):
            call(Store(path))
    assert not path.exists()  # reading never creates the file
    Store(path).upsert_sweep("iso", {"name": "iso"}, None)
    with pytest.raises(WorkbenchError, match="has no runs. Run `workbench db ingest`"):
        Store(path).runs()
    (tmp_path / "notes.txt").write_text("not a database")
    with pytest.raises(WorkbenchError, match="cannot open database .*notes.txt"):
        Store(tmp_path / "notes.txt").runs()


def test_sweeps_fits_and_plans_round_trip(tmp_path):
    store = Store(tmp_path / "wb.duckdb")
    store.upsert_sweep("iso", {"budgets": [6e18, 1e19]}, "sweeps/iso.yaml")
    first = store.sweeps().iloc[0]
    time.sleep(0.01)
    store.upsert_sweep("iso", {"budgets": [6e18]}, "sweeps/iso.yaml")
    sweeps = store.sweeps()
    assert len(sweeps) == 1 and json.loads(sweeps.loc[0, "spec"]) == {"budgets": [6e18]}
    assert sweeps.loc[0, "created_at"] == first["created_at"] and sweeps.loc[0, "updated_at"] > first["updated_at"]

    fit = {
        "name": "iso-isoflop",
        "sweep": "iso",
        "method": "isoflop",
        "data_hash": "abc",
        "created": "2025-01-01",
        "a": np.float64(0.5),
        "budgets": np.array([1.0, math.nan]),
        "excluded": [{"budget": 1e19}],
    }
    store.record_fit(fit)
    store.record_fit({**fit, "a": 0.49})  # refit under the same name replaces it
    store.record_fit({"name": "other", "sweep": "x", "method": "parametric"})
    fits = store.fits("iso")
    assert list(fits["name"]) == ["iso-isoflop"] and fits.loc[0, "method"] == "isoflop"
    assert json.loads(fits.loc[0, "fit"]) == {**fit, "a": 0.49, "budgets": [1.0, None]}
    assert len(store.fits()) == 2
    with pytest.raises(WorkbenchError, match="the fit has no 'name'"):
        store.record_fit({"sweep": "iso"})

    store.record_plan({"name": "flagship", "fit": "iso-isoflop", "budget_flops": 3.8e25, "params": 4e11})
    plans = store.plans()
    assert plans.loc[0, "budget_flops"] == 3.8e25 and json.loads(plans.loc[0, "plan"])["params"] == 4e11


# --- two processes -------------------------------------------------------------------------------------


def _ingest_in_child(db: str, path: str, barrier) -> None:
    barrier.wait()
    Store(db).ingest(path)


def _hold_lock_in_child(db: str, hold_s: float, ready, release) -> None:
    with Store(db)._writer():
        ready.set()
        release.wait(hold_s)


def test_two_ingests_at_once_from_two_processes_lose_nothing(tmp_path):
    root = tmp_path / "runs"
    for sweep in ("left", "right"):
        for i in range(6):
            make_run(root, sweep, f"{sweep}{i}", 2000)
    db = str(tmp_path / "wb.duckdb")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    children = [ctx.Process(target=_ingest_in_child, args=(db, str(root / s), barrier)) for s in ("left", "right")]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
    assert [child.exitcode for child in children] == [0, 0]
    store = Store(db)
    assert _count(store, "SELECT count(*) FROM runs") == 12
    assert _count(store, "SELECT count(*) FROM metrics") == 12 * 2000
    assert _duplicates(store) == 0


def test_a_second_writer_waits_for_the_lock_then_gives_a_one_line_error(tmp_path, capfd):
    root = tmp_path / "runs"
    make_run(root, "iso", "a", 10)
    db = tmp_path / "wb.duckdb"
    Store(db).upsert_sweep("iso", {}, None)
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock_in_child, args=(str(db), 1.0, ready, release))
    holder.start()
    assert ready.wait(60)
    start = time.monotonic()
    assert Store(db, lock_timeout_s=60).ingest(root).runs == 1  # waits for the holder, then writes
    assert time.monotonic() - start > 0.5
    holder.join(60)
    err = capfd.readouterr().err
    assert err.count("is locked by another process") == 1

    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock_in_child, args=(str(db), 60.0, ready, release))
    holder.start()
    assert ready.wait(60)
    with pytest.raises(WorkbenchError, match=r"still locked by another process \(PID \d+\) after 0.3 s") as caught:
        Store(db, lock_timeout_s=0.3).runs()
    assert "\n" not in str(caught.value)
    release.set()
    holder.join(60)
    assert _count(Store(db), "SELECT count(*) FROM metrics") == 10


# --- CLI -------------------------------------------------------------------------------------------------


def test_cli_ingest_and_query_as_table_json_and_csv(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "iso", "a", 10, val_loss=3.25)
    make_run(root, "iso", "b", 4, status=None)
    db = str(tmp_path / "wb.duckdb")
    result = runner.invoke(app, ["db", "ingest", str(root), "--db", db])
    assert result.exit_code == 0, result.output
    assert "Ingested 2 runs (14 metric rows)" in result.output and "0 runs unchanged" in result.output
    result = runner.invoke(app, ["db", "ingest", str(root), "--db", db])
    assert "Ingested 0 runs (0 metric rows)" in result.output and "2 runs unchanged" in result.output

    sql = "SELECT run_id, status, val_loss FROM runs ORDER BY run_id"
    result = runner.invoke(app, ["db", "query", sql, "--json", "--db", db])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [
        {"run_id": "a", "status": "completed", "val_loss": 3.25},
        {"run_id": "b", "status": "running", "val_loss": None},
    ]
    result = runner.invoke(app, ["db", "query", sql, "--csv", "--db", db])
    assert result.output.splitlines() == ["run_id,status,val_loss", "a,completed,3.25", "b,running,"]
    result = runner.invoke(app, ["db", "query", sql, "--db", db])
    assert result.exit_code == 0 and "completed" in result.output and "3.25" in result.output
    assert "(2 rows)" in result.output


def test_cli_errors_are_one_line(tmp_path, monkeypatch):
    db = str(tmp_path / "wb.duckdb")
    result = runner.invoke(app, ["db", "query", "SELECT 1", "--db", db])
    assert result.exit_code == 1 and result.output.strip().startswith("Error: no database at")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["db", "ingest", "--db", db])  # default PATH runs/ does not exist
    assert result.exit_code == 1 and "Error: runs not found" in result.output
    make_run(tmp_path / "runs", "iso", "a", 3)
    assert runner.invoke(app, ["db", "ingest", "--db", db]).exit_code == 0
    result = runner.invoke(app, ["db", "query", "SELEC * FROM runs", "--db", db])
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("Error: query failed: Parser Error") and "syntax error" in result.output
    result = runner.invoke(app, ["db", "query", "DELETE FROM runs", "--db", db])  # the CLI only reads
    assert result.exit_code == 1 and "read-only" in result.output
    result = runner.invoke(app, ["db", "query", "SELECT 1", "--json", "--csv", "--db", db])
    assert result.exit_code == 1 and "exclude each other" in result.output


def test_help_does_not_import_duckdb():
    code = "import sys; from workbench.cli import app; assert 'duckdb' not in sys.modules, 'duckdb imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
