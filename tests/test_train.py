"""The trainer: real torch training on the embedded corpus, resume, DDP/FSDP, faults, signals, errors."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from workbench.train.config import BatchConfig, RampStep, ScheduleConfig
from workbench.train.schedule import batch_tokens_at, lr_at

CLI = [sys.executable, "-m", "workbench.cli"]


@pytest.fixture(scope="session")
def corpus():
    from workbench.data.prepare import ensure_default_corpus

    return str(ensure_default_corpus())


def write_config(tmp_path: Path, corpus: str, name: str = "run", **overrides) -> Path:
    cfg = {
        "name": name,
        "run_dir": str(tmp_path / name),
        "seed": 0,
        "model": {"n_layers": 2, "d_model": 24, "n_heads": 2, "n_kv_heads": 1, "ffn_dim": 88, "vocab_size": 256},
        "data": {"sources": [{"path": corpus}], "seq_len": 64},
        "optim": {"lr_peak": 3e-3},
        "schedule": {"kind": "cosine", "warmup_tokens": 2048},
        "batch": {"batch_tokens": 1024, "micro_batch": 4},
        "stop": {"tokens": 200 * 1024},
        "eval": {"batches": 4, "batch_seqs": 8},
        "checkpoint": {"every_tokens": 20 * 1024, "keep": 2},
        "runtime": {"threads": 1},
    }
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        if field:
            cfg[section] = {**cfg.get(section, {}), field: value}
        else:
            cfg[section] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def read_metrics(run_dir: Path) -> dict[int, dict]:
    """The last row logged for each step (what ingest keeps), training rows only."""
    rows = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "event" not in row:
            rows[row["step"]] = row
    return rows


def run_cli(*args, env=None, timeout=300):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


# ------------------------------------------------------------------ schedules (pure)
def test_cosine_schedule_warmup_peak_and_floor():
    s = ScheduleConfig(kind="cosine", warmup_tokens=100, floor=0.1)
    assert lr_at(0, 1000, 1.0, s) == pytest.approx(0.01)
    assert lr_at(99, 1000, 1.0, s) == pytest.approx(1.0)
    assert lr_at(100, 1000, 1.0, s) == pytest.approx(1.0)
    assert lr_at(550, 1000, 1.0, s) == pytest.approx(0.55)
    assert lr_at(1000, 1000, 1.0, s) == pytest.approx(0.1)


def test_wsd_schedule_and_final_anneal():
    s = ScheduleConfig(kind="wsd", warmup_tokens=0, floor=0.0, decay_fraction=0.2)
    assert lr_at(700, 1000, 2.0, s) == 2.0
    assert lr_at(900, 1000, 2.0, s) == pytest.approx(1.0)
    a = ScheduleConfig(kind="cosine", warmup_tokens=0, floor=0.1, anneal_tokens=100)
    start = lr_at(899, 1000, 1.0, a)
    assert lr_at(950, 1000, 1.0, a) == pytest.approx(start * 0.5, rel=0.02)
    assert lr_at(1000, 1000, 1.0, a) == 0.0


def test_batch_ramp_by_tokens_like_llama3_405b():
    b = BatchConfig(
        batch_tokens=4_000_000,
        ramp=[RampStep(after_tokens=252e6, batch_tokens=8e6), RampStep(after_tokens=2.87e12, batch_tokens=16e6)],
    )
    assert batch_tokens_at(0, b) == 4e6
    assert batch_tokens_at(252e6, b) == 8e6
    assert batch_tokens_at(3e12, b) == 16e6


# ------------------------------------------------------------------ real training
def test_tiny_model_learns_english_on_cpu(tmp_path, corpus):
    from workbench.train.trainer import main

    config = write_config(
        tmp_path,
        corpus,
        model={"n_layers": 4, "d_model": 40, "n_heads": 2, "n_kv_heads": 1, "ffn_dim": 144, "vocab_size": 256},
        data={"sources": [{"path": corpus}], "seq_len": 256},
        batch={"batch_tokens": 4096, "micro_batch": 16},
        stop={"tokens": 1_500_000},
        schedule={"kind": "cosine", "warmup_tokens": 40960},
        runtime={"threads": 2},
    )
    record = main(config)  # about 20 s on 2 idle cores; not timed here (timed tests flake)
    assert record["status"] == "completed"
    assert 90_000 < record["params"] < 110_000
    assert record["val_loss"] < 2.2 < math.log(256)
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "metrics.jsonl", "final.json", "ckpt"}
    final = json.loads((run / "final.json").read_text())
    assert set(final) >= {
        "status",
        "val_loss",
        "params",
        "params_total",
        "tokens",
        "flops",
        "steps",
        "wall_s",
        "error",
        "versions",
    }
    rows = read_metrics(run)
    assert len(rows) == final["steps"]
    assert set(rows[1]) >= {
        "step",
        "tokens",
        "flops",
        "loss",
        "lr",
        "grad_norm",
        "batch_tokens",
        "tokens_per_s",
        "wall_s",
    }


def test_kill_9_then_rerun_is_bit_identical(tmp_path, corpus):
    clean = write_config(tmp_path, corpus, name="clean")
    killed = write_config(tmp_path, corpus, name="killed")
    assert run_cli("train", str(clean)).returncode == 0
    proc = subprocess.Popen([*CLI, "train", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name >= "step_00000060" for p in ckpt.glob("step_*")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "final.json").exists(), "killed too late: the run had finished"
    result = run_cli("train", str(killed))
    assert result.returncode == 0, result.stderr
    a, b = read_metrics(tmp_path / "clean"), read_metrics(tmp_path / "killed")
    assert sorted(a) == sorted(b)
    assert [a[s]["loss"] for s in sorted(a)] == [b[s]["loss"] for s in sorted(b)]
    fa = json.loads((tmp_path / "clean" / "final.json").read_text())
    fb = json.loads((tmp_path / "killed" / "final.json").read_text())
    assert fa["val_loss"] == fb["val_loss"]
    assert fa["bit_identity"] == fb["bit_identity"] and fa["bit_identity"]["threads"] == 1  # what it rests on
    events = [json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "resume" and e["from_step"] > 0 for e in events)
    assert [e["bit_identity"] for e in events if e.get("event") == "resume"] == [fb["bit_identity"]]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(config: Path, nproc: int, parallel: str):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        "-m",
        "workbench.cli",
        "train",
        str(config),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("parallel, tolerance", [("ddp", 1e-5), ("fsdp", 1e-4)])
def test_two_cpu_processes_match_one(tmp_path, corpus, parallel, tolerance):
    common = dict(
        stop={"tokens": 40 * 1024},
        checkpoint={"every_tokens": 0, "keep": 1},
        runtime={"threads": 1, "parallel": parallel},
    )
    single = write_config(tmp_path, corpus, name="single", **common)
    double = write_config(tmp_path, corpus, name="double", **common)
    assert run_cli("train", str(single)).returncode == 0
    result = torchrun(double, 2, parallel)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = read_metrics(tmp_path / "single"), read_metrics(tmp_path / "double")
    assert sorted(a) == sorted(b) and len(a) == 40
    for step in a:
        assert b[step]["loss"] == pytest.approx(a[step]["loss"], rel=tolerance)
    fa = json.loads((tmp_path / "single" / "final.json").read_text())
    fb = json.loads((tmp_path / "double" / "final.json").read_text())
    assert fb["val_loss"] == pytest.approx(fa["val_loss"], rel=tolerance)


def test_divergent_run_rolls_back_then_ends_diverged(tmp_path, corpus):
    config = write_config(
        tmp_path,
        corpus,
        optim={"lr_peak": 10.0},
        schedule={"kind": "constant"},
        faults={"max_rollbacks": 2, "spike_factor": 3.0},
    )
    before = (tmp_path / "run.yaml").read_text()
    result = run_cli("train", str(config))
    assert result.returncode == 3, result.stderr
    assert result.stderr.strip().startswith("Error: the run diverged") and "Traceback" not in result.stderr
    run = tmp_path / "run"
    events = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert sum(e.get("event") == "rollback" for e in events) == 2
    assert events[-1]["event"] == "diverged"
    final = json.loads((run / "final.json").read_text())
    assert final["status"] == "diverged" and final["rollbacks"] == 2
    assert (tmp_path / "run.yaml").read_text() == before
    from workbench.train import checkpoint

    saved = checkpoint.load(checkpoint.latest(run / "ckpt"))  # still a readable, finite checkpoint
    assert all(v.isfinite().all() for v in saved["model"].values())


def test_sigterm_saves_checkpoint_and_rerun_resumes(tmp_path, corpus):
    config = write_config(tmp_path, corpus, checkpoint={"every_tokens": 0, "keep": 2}, stop={"tokens": 2000 * 1024})
    proc = subprocess.Popen([*CLI, "train", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not metrics.exists() or metrics.read_text().count("\n") < 30):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 4, err
    assert "interrupted by SIGTERM" in err and "resume" in err
    from workbench.train import checkpoint

    saved = checkpoint.latest(tmp_path / "run" / "ckpt")
    assert saved is not None and checkpoint.read_meta(saved)["step"] >= 30


def test_cooldown_branch_starts_from_trunk_checkpoint(tmp_path, corpus):
    from workbench.train.trainer import main

    trunk = write_config(
        tmp_path,
        corpus,
        name="trunk",
        schedule={"kind": "wsd", "decay_fraction": 0.0},
        checkpoint={"every_tokens": 0, "keep": 1, "save_at_tokens": [50 * 1024]},
        stop={"tokens": 100 * 1024},
    )
    main(trunk)
    branch = write_config(
        tmp_path,
        corpus,
        name="branch",
        schedule={"kind": "wsd", "decay_fraction": 0.4},
        checkpoint={"init_from": f"{tmp_path / 'trunk'}@{50 * 1024}"},
        stop={"tokens": 80 * 1024},
    )
    record = main(branch)
    assert record["status"] == "completed" and record["steps"] == 80 and record["tokens"] == 80 * 1024
    rows = read_metrics(tmp_path / "branch")
    assert min(rows) == 51  # continues the trunk's step count and data stream
    trunk_rows = read_metrics(tmp_path / "trunk")
    assert rows[51]["loss"] == pytest.approx(trunk_rows[51]["loss"], rel=1e-6)  # same weights, data, LR at 51


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"optim": {"lr_peak": 1e-3, "betaz": [0.9, 0.95]}}, "unknown key 'optim.betaz'"),
        ({"data": {"sources": [{"path": "/nonexistent/corpus"}], "seq_len": 64}}, "/nonexistent/corpus"),
        (
            {"model": {"n_layers": 1, "d_model": 16, "n_heads": 1, "n_kv_heads": 1, "ffn_dim": 64, "vocab_size": 512}},
            "model.vocab_size 512",
        ),
        ({"batch": {"batch_tokens": 1000, "micro_batch": 4}}, "batch.batch_tokens 1000 is not a multiple"),
    ],
)
def test_bad_configs_give_one_line_errors(tmp_path, corpus, overrides, words):
    config = write_config(tmp_path, corpus, **overrides)
    result = run_cli("train", str(config))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and words in lines[0], result.stderr
