"""A tiny run logged to W&B (offline) and TensorBoard: the files read back with those tools' own readers, and
`db import` of each gives the rows that ingesting the run directory gives. Named held-out sets."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from workbench.cli import app
from workbench.core.errors import WorkbenchError
from workbench.store.database import Store
from workbench.train import trainer

RUN_COLUMNS = [
    "status",
    "sweep",
    "val_loss",
    "params",
    "tokens",
    "flops",
    "steps",
    "lr_peak",
    "batch_tokens",
    "seq_len",
    "n_layers",
    "d_model",
    "budget_flops",
    "config",
    "final",
]
METRIC_COLUMNS = [
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
]


@pytest.fixture(scope="module")
def corpus():
    from workbench.data.prepare import ensure_default_corpus

    return str(ensure_default_corpus())


def tiny_config(tmp_path: Path, corpus: str, **extra) -> dict:
    return {
        "name": "tiny",
        "run_dir": str(tmp_path / "runs" / "demo" / "tiny-1"),
        "meta": {"sweep": "demo", "budget_flops": 1e12},
        "model": {"n_layers": 1, "d_model": 16, "n_heads": 2, "n_kv_heads": 1, "ffn_dim": 32, "vocab_size": 256},
        "data": {"sources": [{"path": corpus}], "seq_len": 32},
        "optim": {"lr_peak": 3e-3},
        "batch": {"batch_tokens": 256, "micro_batch": 8},
        "stop": {"tokens": 24 * 256},
        "eval": {"every_tokens": 6 * 256, "batches": 2, "batch_seqs": 4, "per_source": True},
        "checkpoint": {"every_tokens": 0},
        "faults": {"max_rollbacks": 0},
        "runtime": {"device": "cpu", "threads": 1, "log_every_steps": 1000},
    } | extra


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory, corpus):
    tmp = tmp_path_factory.mktemp("tracked")
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    mp.setenv("WANDB_DISABLE_GIT", "true")
    logging = {"wandb": {"project": "workbench-test", "mode": "offline"}, "tensorboard": True}
    record = trainer.main(tiny_config(tmp, corpus, logging=logging))
    mp.undo()
    assert record["status"] == "completed"
    return tmp, Path(tiny_config(tmp, corpus)["run_dir"]), record


def training_rows(run_dir: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if "event" not in r}


def test_files_read_back_with_the_trackers_own_readers(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from workbench.store.importers import wandb_records

    _, run_dir, record = logged_run
    rows = training_rows(run_dir)
    assert len(rows) == 24 and sum("val_loss" in r for r in rows.values()) == 4
    assert "val_loss_shakespeare_bytes" in record and math.isfinite(record["val_loss_shakespeare_bytes"])

    (log,) = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    records = wandb_records(log)
    history = [r.history for kind, r in records if kind == "history"]
    assert len(history) == 24
    for h in history:
        values = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in h.item}
        row = rows[h.step.num]
        assert values["_step"] == h.step.num
        assert values["loss"] == row["loss"] and values["tokens"] == row["tokens"]
        assert values.get("val_loss") == row.get("val_loss")
    (run,) = [r.run for kind, r in records if kind == "run"]
    assert run.run_id == "tiny-1" and {"sweep:demo", "budget:1e+12"} <= set(run.tags)
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["sweep"] == "demo" and config["N"] == record["params"]

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    loss = acc.Scalars("loss")
    assert [e.step for e in loss] == sorted(rows)
    np.testing.assert_allclose([e.value for e in loss], [rows[s]["loss"] for s in sorted(rows)], rtol=1e-6)
    assert len(acc.Scalars("val_loss")) == 4 and len(acc.Scalars("val_loss_shakespeare_bytes")) == 4


def import_and_read(tmp: Path, source: Path, name: str):
    db = tmp / f"{name}.duckdb"
    result = CliRunner().invoke(app, ["db", "import", str(source), "--runs", str(tmp / name), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "Imported 1 runs (24 metric rows)" in result.output
    store = Store(db, read_only=True)
    return store.runs(), store.metrics()


def test_db_import_equals_ingest_of_the_run_directory(logged_run):
    tmp, run_dir, _ = logged_run
    Store(tmp / "direct.duckdb").ingest(run_dir)
    runs, metrics = Store(tmp / "direct.duckdb", read_only=True).runs(), Store(tmp / "direct.duckdb").metrics()
    assert len(metrics) == 24
    for source, name, exact in ((run_dir / "wandb", "wandb", True), (run_dir / "tensorboard", "tb", False)):
        got_runs, got_metrics = import_and_read(tmp, source, name)
        assert got_runs["run_id"].tolist() == [{"wandb": "wandb-tiny-1", "tb": "tensorboard-tiny-1"}[name]]
        for column in RUN_COLUMNS:
            want, got = runs[column].iloc[0], got_runs[column].iloc[0]
            if column in ("config", "final"):
                assert json.loads(got) == json.loads(want), (name, column)
            else:
                assert got == want, (name, column)
        for column in METRIC_COLUMNS:
            want, got = metrics[column].to_numpy(float), got_metrics[column].to_numpy(float)
            if exact:
                np.testing.assert_array_equal(got, want, err_msg=f"{name} {column}")
            else:  # TensorBoard keeps float32
                np.testing.assert_allclose(got, want, rtol=2**-23, equal_nan=True, err_msg=f"{name} {column}")


def test_db_import_of_a_wandb_csv_export(tmp_path):
    csv = tmp_path / "export.csv"
    csv.write_text('"_step","_runtime","loss","val_loss"\n1,0.5,3.0,\n2,1.0,2.5,2.7\n3,1.5,2.0,\n')
    db = tmp_path / "db.duckdb"
    args = ["db", "import", str(csv), "--runs", str(tmp_path / "imp"), "--db", str(db), "--sweep", "old"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    store = Store(db, read_only=True)
    assert store.metrics()["loss"].tolist() == [3.0, 2.5, 2.0]
    run = store.runs().iloc[0]
    assert (run["run_id"], run["sweep"], run["val_loss"], run["steps"]) == ("csv-export", "old", 2.7, 3)


def test_missing_tracker_package_is_one_line(tmp_path, corpus, monkeypatch):
    from workbench.train.config import TrainConfig

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: import raises ImportError
    cfg = TrainConfig.model_validate(tiny_config(tmp_path, corpus, logging={"wandb": {"project": "p"}}))
    with pytest.raises(WorkbenchError, match=r"needs the Python package `wandb`.*pip install") as err:
        trainer.Trainer(cfg, trainer.distributed.setup("cpu"))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "runs").exists()


def test_named_sets_and_fit_metric_choice(tmp_path, corpus):
    from workbench.data.prepare import prepare

    other = tmp_path / "other"
    (tmp_path / "o.txt").write_text("All the world's a stage, and all the men and women merely players.\n" * 300)
    prepare([str(tmp_path / "o.txt")], other, val_fraction=0.2)
    cfg = tiny_config(tmp_path, corpus)
    cfg["eval"] = {"batches": 2, "batch_seqs": 4, "sets": {"stage": str(other)}}
    record = trainer.main(cfg)
    assert record["val_loss_stage"] != record["val_loss"] and math.isfinite(record["val_loss_stage"])
    Store(tmp_path / "db.duckdb").ingest(tmp_path / "runs")
    points = Store(tmp_path / "db.duckdb", read_only=True).points("demo", metric="val_loss_stage")
    assert points["loss"].tolist() == [pytest.approx(record["val_loss_stage"])]
    with pytest.raises(WorkbenchError, match="no metric 'val_loss_nope'.*val_loss_stage"):
        Store(tmp_path / "db.duckdb", read_only=True).points("demo", metric="val_loss_nope")
    bad = tiny_config(tmp_path, corpus, name="bad")
    bad["eval"] = {"sets": {"bad-name": str(other)}}
    with pytest.raises(WorkbenchError, match="must be letters, digits and _"):
        trainer.main(bad)
    yaml.safe_dump(cfg)  # the config with named sets is plain YAML


def test_the_final_evaluation_reaches_every_tracker(tmp_path, corpus, monkeypatch):
    """A run of 26 steps evaluated every 6: the loop's last evaluation is at step 24, the final one at 26."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from workbench.store.importers import wandb_records

    for key, value in (("WANDB_MODE", "offline"), ("WANDB_SILENT", "true"), ("WANDB_DISABLE_GIT", "true")):
        monkeypatch.setenv(key, value)
    logging = {"wandb": {"project": "workbench-test", "mode": "offline"}, "tensorboard": True}
    record = trainer.main(tiny_config(tmp_path, corpus, logging=logging, stop={"tokens": 26 * 256}))
    run_dir = Path(tiny_config(tmp_path, corpus)["run_dir"])
    assert record["steps"] == 26 and 24 in training_rows(run_dir) and "val_loss" not in training_rows(run_dir)[26]

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    for key in ("val_loss", "val_loss_shakespeare_bytes"):
        events = acc.Scalars(key)
        assert [e.step for e in events] == [6, 12, 18, 24, 26], key  # before: the last was step 24
        assert events[-1].value == pytest.approx(record[key], rel=2**-23)  # float32
    (log,) = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    history = {}
    for kind, r in wandb_records(log):
        if kind == "history":
            values = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            history.setdefault(values["_step"], {}).update(values)
    assert history[26]["val_loss"] == record["val_loss"] and history[26]["loss"] == training_rows(run_dir)[26]["loss"]
    assert sum("val_loss" in row for row in history.values()) == 5


def test_imported_copies_keep_their_own_ids_and_reimporting_changes_nothing(logged_run):
    tmp, run_dir, _ = logged_run
    runs, db = tmp / "runs", tmp / "together.duckdb"

    def run_import(source: Path):
        result = CliRunner().invoke(app, ["db", "import", str(source), "--runs", str(runs), "--db", str(db)])
        assert result.exit_code == 0, result.output
        return result.output

    assert "wandb-tiny-1" in run_import(run_dir / "wandb")
    assert "tensorboard-tiny-1" in run_import(run_dir / "tensorboard")
    imported = runs / "imported"
    stamps = {p: p.stat().st_mtime_ns for p in imported.rglob("*") if p.is_file()}
    again = run_import(run_dir / "wandb")
    assert "Imported 0 runs (0 metric rows)" in again and "1 already imported, unchanged" in again
    assert {p: p.stat().st_mtime_ns for p in imported.rglob("*") if p.is_file()} == stamps  # not even rewritten
    # the run itself (runs/demo/tiny-1) and its two imported copies side by side: three runs, no clash
    stats = Store(db).ingest(runs)
    assert stats.runs + stats.unchanged == 3
    ids = Store(db, read_only=True).runs()["run_id"].tolist()
    assert sorted(ids) == ["tensorboard-tiny-1", "tiny-1", "wandb-tiny-1"]
