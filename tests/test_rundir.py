"""The run directory (workbench.train.rundir): what the trainer writes, what the store reads, and the
bit-identity record."""

import json
import math
from pathlib import Path

import pytest
import torch

from workbench.core.errors import WorkbenchError
from workbench.core.files import json_clean, json_text
from workbench.store.database import SCHEMA_VERSION, Store, migrate
from workbench.train import checkpoint, rundir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real 8-step run of a tiny model on one thread (a second or two), ingested into a fresh database."""
    from workbench.data.prepare import ensure_default_corpus
    from workbench.train.trainer import main

    base = tmp_path_factory.mktemp("rundir")
    run_dir = base / "runs" / "ident" / "r1"
    config = {
        "name": "r1",
        "run_dir": str(run_dir),
        "seed": 0,
        "meta": {"sweep": "ident"},
        "model": {"n_layers": 1, "d_model": 16, "n_heads": 2, "n_kv_heads": 1, "ffn_dim": 48, "vocab_size": 256},
        "data": {"sources": [{"path": str(ensure_default_corpus())}], "seq_len": 32},
        "optim": {"lr_peak": 3e-3},
        "schedule": {"kind": "cosine", "warmup_tokens": 256},
        "batch": {"batch_tokens": 256, "micro_batch": 8},
        "stop": {"tokens": 8 * 256},
        "eval": {"batches": 1, "batch_seqs": 4},
        "checkpoint": {"every_tokens": 4 * 256, "keep": 2},
        "runtime": {"threads": 1},
    }
    threads = torch.get_num_threads()
    try:
        record = main(config)
    finally:
        torch.set_num_threads(threads)
    db = base / "wb.duckdb"
    Store(db).ingest(base / "runs")
    return run_dir, record, db


def test_final_json_and_the_runs_row_carry_what_bit_identity_depends_on(trained):
    run_dir, record, db = trained
    final = rundir.read_final(run_dir)
    expected = {
        "torch": torch.__version__,
        "threads": 1,  # runtime.threads
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda_device": None,
    }
    assert final["bit_identity"] == record["bit_identity"] == expected
    assert final["status"] == "completed" and final["steps"] == 8
    row = Store(db, read_only=True).runs("ident").iloc[0]
    assert row["torch_version"] == torch.__version__ and int(row["torch_threads"]) == 1
    assert row["cpu_capability"] == expected["cpu_capability"] and row["cuda_device"] is None


def test_the_report_shows_the_runs_bit_identity(trained):
    from workbench.report.sections import bit_identity_text

    _, _, db = trained
    text = bit_identity_text(Store(db, read_only=True).runs("ident"))
    assert text == f"torch {torch.__version__}, 1 threads, CPU {torch.backends.cpu.get_cpu_capability()}: 1 runs"


def test_rundir_reads_back_what_the_trainer_wrote(trained):
    run_dir, record, _ = trained
    assert rundir.find_run_dirs(run_dir.parent.parent) == {"r1": run_dir}
    assert rundir.read_config(run_dir)["name"] == "r1" and rundir.final_status(run_dir) == "completed"
    metrics = rundir.read_metrics(run_dir)
    assert sorted(metrics.by_step) == list(range(1, 9)) and metrics.skipped == 0 and metrics.events == []
    assert metrics.last_sample["tokens"] == record["tokens"] == 8 * 256
    saved = checkpoint.run_checkpoints(run_dir)
    assert [p.name for p in saved] == ["step_00000004", "step_00000008"] and checkpoint.latest_of_run(run_dir) == saved[
        -1
    ]
    assert rundir.has_checkpoint(run_dir) and not rundir.has_checkpoint(run_dir.parent)
    summary = rundir.summary(run_dir, metrics)
    assert (summary["run_id"], summary["sweep"], summary["status"], summary["steps"]) == ("r1", "ident", "completed", 8)
    assert summary["torch_threads"] == 1 and summary["val_loss"] == pytest.approx(record["val_loss"])


def test_bad_run_files_are_one_line_errors(tmp_path):
    (tmp_path / "final.json").write_text("[1, 2]")
    with pytest.raises(WorkbenchError, match=r"final\.json: expected a JSON object"):
        rundir.read_final(tmp_path)
    (tmp_path / "config.yaml").write_text("a: [1,\n")
    with pytest.raises(WorkbenchError, match=r"config\.yaml:\d+: malformed YAML"):
        rundir.read_config(tmp_path)
    assert rundir.read_final(tmp_path / "none") is None and rundir.read_config(tmp_path / "none") == {}


def test_final_json_has_no_nan_and_json_clean_is_the_one_rule(tmp_path):
    import numpy as np

    rundir.write_final(tmp_path, {"status": "diverged", "val_loss": float("nan"), "flops": np.float32(2.5)})
    assert json.loads((tmp_path / "final.json").read_text()) == {"status": "diverged", "val_loss": None, "flops": 2.5}
    value = {"a": [math.inf, np.int64(3), (1, np.arange(2))], 4: Path("/x"), "b": True}
    assert json_clean(value) == {"a": [None, 3, [1, [0, 1]]], "4": "/x", "b": True}
    assert json_text({"x": -math.inf}) == '{"x": null}'


def test_a_version_2_database_gains_the_bit_identity_columns(tmp_path):
    path = tmp_path / "v2.duckdb"
    con = Store(path)._connect(read_only=False)  # a version-2 file, as the previous workbench left it
    assert migrate(con, target=2) == 2
    con.execute("INSERT INTO runs (run_id, sweep, status) VALUES ('old', 'iso', 'completed')")
    con.close()
    runs = Store(path).runs()
    assert SCHEMA_VERSION == 4 and list(runs["run_id"]) == ["old"]
    assert runs[["torch_version", "torch_threads", "cpu_capability", "cuda_device"]].isna().all().all()


def test_plan_written_run_ids_are_plain_names():
    """The flagship's run id names its budget as the plan prints it (c4e+11-L3-d16): ingest must accept it."""
    from workbench.core.errors import WorkbenchError
    from workbench.core.files import safe_name

    assert safe_name("c4e+11-L3-d16", "run id") == "c4e+11-L3-d16"
    for bad in ("../x", "a/b", "+x", "a..b"):
        with pytest.raises(WorkbenchError, match="not a plain name"):
            safe_name(bad, "run id")
