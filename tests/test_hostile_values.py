"""Hostile input, second campaign (part 2): one domain per value, a lock that owns itself, one line instead of
a traceback, and bounded work (docs/LIMITS.md).

Each test is one numbered case of the campaign: values outside their domain (configs, run records, fits),
locks deleted, replaced or malformed under a trainer, damaged jobs.json and JSON/CSV/environment values
that used to escape as tracebacks, and inputs that used to run without bound.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hostile import invoke, one_line

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "workbench.cli"]
MODEL = {"n_layers": 2, "d_model": 24, "n_heads": 2, "n_kv_heads": 1, "ffn_dim": 88, "vocab_size": 256}


def train_config(folder: Path, data: str = "nowhere", **sections) -> Path:
    """A small train config; values of `sections` replace or extend its sections."""
    cfg = {
        "name": "run",
        "run_dir": str(folder / "run"),
        "model": dict(MODEL),
        "data": {"sources": [{"path": data}], "seq_len": 64},
        "optim": {"lr_peak": 3e-3},
        "batch": {"batch_tokens": 1024, "micro_batch": 4},
        "stop": {"tokens": 60 * 1024},
        "eval": {"batches": 2, "batch_seqs": 4},
        "runtime": {"threads": 1, "device": "cpu"},
    }
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values} if isinstance(values, dict) else values
    path = folder / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def corpus():
    from workbench.data.prepare import ensure_default_corpus

    return str(ensure_default_corpus())


# ------------------------------------------------------------------ 6: one domain per value
@pytest.mark.parametrize(
    "section, values, words",
    [
        ("model", {"norm_eps": -1}, "model.norm_eps"),
        ("model", {"norm_eps": 0}, "model.norm_eps"),
        ("model", {"rope_theta": 0}, "model.rope_theta"),
        ("model", {"init_std": "1e400"}, "model.init_std"),
        ("model", {"vocab_size": 2**40}, "model.vocab_size"),
        ("schedule", {"warmup_tokens": "1e30"}, "beyond a 64-bit count"),
        ("schedule", {"warmup_tokens": 10**9}, "schedule.warmup_tokens 1,000,000,000 is longer than the run"),
        ("schedule", {"anneal_tokens": 10**9}, "schedule.anneal_tokens"),
        ("optim", {"betas": [0.9, 1.0]}, "optim.betas.1"),
        ("optim", {"betas": [1.5, 0.95]}, "optim.betas.0"),
        ("optim", {"betas": [-0.1, 0.95]}, "optim.betas.0"),
        ("stop", {"tokens": 2**64}, "stop.tokens"),
    ],
)
def test_config_values_outside_their_domain_are_one_line_naming_the_field(tmp_path, section, values, words):
    one_line(invoke("train", train_config(tmp_path, **{section: values})), words)


def test_a_model_of_astronomical_size_is_refused_at_once_in_bounded_memory(tmp_path):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    one_line(invoke("train", train_config(tmp_path, model={"n_layers": 99999999999999999999999})), "n_layers")
    one_line(invoke("train", train_config(tmp_path, model={"n_layers": 10**12})), "above the cap of 1e+13")
    one_line(invoke("train", train_config(tmp_path, model={"d_model": 2**40, "n_heads": 2**10})), "cap")
    assert time.perf_counter() - start < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB


def test_the_size_cap_is_overridable(tmp_path, monkeypatch):
    from workbench.model.config import ModelConfig

    big = {**MODEL, "n_layers": 5000, "d_model": 16384, "n_heads": 128, "n_kv_heads": 8, "ffn_dim": 53248}
    with pytest.raises(Exception, match="above the cap"):
        ModelConfig(**big)
    monkeypatch.setenv("WORKBENCH_MAX_PARAMS", "1e14")
    assert ModelConfig(**big).shape().params_total > 1e13
    monkeypatch.setenv("WORKBENCH_MAX_PARAMS", "inf")
    with pytest.raises(Exception, match="WORKBENCH_MAX_PARAMS='inf' is not a number"):
        ModelConfig(**big)


def _fit(tmp_path: Path, **iso) -> Path:
    minima = [
        {"budget_flops": c, "params": 1e7 * (c / 1e18) ** 0.5, "tokens": c / (6e7 * (c / 1e18) ** 0.5), "loss": 3.0}
        for c in (1e18, 1e19, 1e20)
    ]
    record = {
        "name": "f",
        "sweep": "s",
        "method": "all",
        "parametric": {"E": 1.7, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28},
        "isoflop": {"budgets": [1e18, 1e19, 1e20], "minima": minima, "G": 1e-2, "a": 0.5, "H": 1.6e1, "b": 0.5} | iso,
    }
    path = tmp_path / "f.json"
    path.write_text(json.dumps(record).replace('"INF"', "1e400"))
    return path


@pytest.mark.parametrize(
    "iso, words",
    [
        ({"a": -0.5}, "isoflop.a: must be a positive number"),
        ({"b": 0}, "isoflop.b"),
        ({"G": "INF"}, "isoflop.G: must be a positive number (got inf)"),
        ({"minima": []}, "at least 2 budgets (got 0)"),
        ({"minima": [{"budget_flops": 1e18, "params": -1, "tokens": 1, "loss": 3}] * 2}, "minimum params"),
        ({"a": 25}, "at most 10"),
    ],
)
def test_fit_json_outside_its_domain_is_one_line_in_plan_and_report(tmp_path, iso, words):
    fit = _fit(tmp_path, **iso)
    one_line(invoke("plan", "--law", fit, "--compute", "1e21"), words)
    db = _small_db(tmp_path)
    one_line(invoke("report", "s", "--fit", fit, "--db", db, "--out", tmp_path / "r.html"), words)
    assert not (tmp_path / "r.html").exists()


def test_intact_fit_json_still_plans(tmp_path):
    assert invoke("plan", "--law", _fit(tmp_path), "--compute", "1e21").exit_code == 0


def _hand_run(root: Path, run_id: str = "r1", final: dict | None = None, meta: dict | None = None) -> Path:
    run = root / "s" / run_id
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"name": run_id, "meta": {"sweep": "s", **(meta or {})}}))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "tokens": 10, "loss": 3.0}) + "\n")
    (run / "final.json").write_text(json.dumps({"status": "completed", "val_loss": 3.0, "tokens": 10} | (final or {})))
    return run


def _small_db(tmp_path: Path) -> Path:
    from workbench.store.database import Store

    _hand_run(tmp_path / "db-runs")
    db = tmp_path / "wb.duckdb"
    Store(db).ingest(tmp_path / "db-runs")
    return db


@pytest.mark.parametrize(
    "final, meta, words",
    [
        ({}, {"budget_flops": "1e400"}, "meta.budget_flops"),
        ({}, {"budget_flops": -6e18}, "meta.budget_flops"),
        ({}, {"target_params": "many"}, "meta.target_params"),
        ({"params": -5}, {}, "params: -5 must be at least 0"),
        ({"val_loss": "abc"}, {}, "val_loss: 'abc' is not a number"),
        ({"tokens": 1e30}, {}, "tokens"),
        ({"steps": 2.5}, {}, "steps"),
        ({"wall_s": -1.0}, {}, "wall_s"),
        ({"val_loss_web": "x"}, {}, "val_loss_web"),
    ],
)
def test_run_record_values_outside_their_domain_are_one_line_at_ingest(tmp_path, final, meta, words):
    run = _hand_run(tmp_path / "runs", final=final, meta=meta)
    if "1e400" in json.dumps(meta):  # YAML 1.1 reads 1.0e+400 as a float (inf) and 1e400 as text: try both
        (run / "config.yaml").write_text("name: r1\nmeta: {sweep: s, budget_flops: 1.0e+400}\n")
    line = one_line(invoke("db", "ingest", tmp_path / "runs", "--db", tmp_path / "wb.duckdb"), words)
    assert str(run) in line


def test_csv_with_nan_or_inf_losses_is_not_a_completed_run(tmp_path):
    from workbench.store.database import Store

    db = tmp_path / "wb.duckdb"
    (tmp_path / "ok.csv").write_text("_step,loss,val_loss,tokens\n1,4.0,4.1,1024\n2,3.8,3.9,2048\n")
    for name, bad in (("nan", "nan"), ("inf", "inf"), ("big", "1e400"), ("ok", None)):
        if bad is not None:
            (tmp_path / f"{name}.csv").write_text(f"_step,loss,val_loss\n1,4.0,4.1\n2,{bad},3.9\n3,3.5,3.6\n")
        args = ["db", "import", tmp_path / f"{name}.csv", "--runs", tmp_path / "runs", "--sweep", "s", "--db", db]
        result = invoke(*args)
        assert result.exit_code == 0, result.output
    runs = Store(db).runs("s").set_index("run_id")
    assert runs.loc[["csv-nan", "csv-inf", "csv-big"], "status"].tolist() == ["diverged"] * 3
    assert runs.loc["csv-ok", "status"] == "completed"
    assert Store(db).points("s")["run_id"].tolist() == ["csv-ok"]


# ------------------------------------------------------------------ 7: the lock owns itself
def test_a_trainer_whose_lock_is_deleted_stops_and_the_new_holder_keeps_its_lock(tmp_path, corpus):
    config = train_config(tmp_path, data=corpus, stop={"tokens": 20000 * 1024})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORKBENCH_LOCK_STALE_S": "1"}  # a heartbeat every 0.1 s
    lock = tmp_path / "run" / ".lock"
    first = subprocess.Popen([*CLI, "train", str(config)], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while time.time() < deadline and not (tmp_path / "run" / "metrics.jsonl").exists():
        time.sleep(0.05)
    assert lock.exists(), first.communicate(timeout=60)[1][-3000:]
    lock.unlink()
    second = subprocess.Popen([*CLI, "train", str(config)], stderr=subprocess.PIPE, text=True, env=env)
    try:
        _, err = first.communicate(timeout=60)
        assert first.returncode == 1, err[-2000:]
        lines = [line for line in err.splitlines() if line.startswith("Error: ")]
        assert len(lines) == 1 and "is no longer this trainer's (the lock file was deleted)" in lines[0]
        deadline = time.time() + 60
        while time.time() < deadline and not lock.exists():
            time.sleep(0.05)
        time.sleep(0.5)  # several heartbeats of the second; the first is gone and touched nothing since
        assert second.poll() is None
        assert json.loads(lock.read_text())["pid"] == second.pid
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=120)
        first.kill()


MALFORMED = {
    "dangling link": lambda p: os.symlink(p.parent / "gone", p),
    "directory": lambda p: p.mkdir(),
    "not JSON": lambda p: p.write_bytes(b"\x00\xffgarbage"),
    "not a lock record": lambda p: p.write_text("[1, 2, 3]"),
    "record without a pid": lambda p: p.write_text(json.dumps({"host": "h", "pid": "x", "token": "t"})),
    "deep JSON": lambda p: p.write_text("[" * 100000 + "]" * 100000),
    "huge number": lambda p: p.write_text('{"pid": ' + "9" * 5000 + "}"),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_lock_says_what_it_is_and_goes_stale_by_the_heartbeat_rule(tmp_path, monkeypatch, kind):
    from workbench.train.runlock import Locked, RunLock

    monkeypatch.setenv("WORKBENCH_LOCK_STALE_S", "60")
    run = tmp_path / "run"
    run.mkdir()
    lock = run / ".lock"
    MALFORMED[kind](lock)
    with pytest.raises(Locked) as err:
        RunLock(run).acquire()
    text = str(err.value)
    assert "None" not in text and "counts as held until it is 60 s old" in text and "\n" not in text
    old = time.time() - 120
    os.utime(lock, (old, old), follow_symlinks=False)
    with RunLock(run) as held:
        assert held.took_over["malformed"]
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists() and not lock.is_symlink()


def test_lock_naming_a_live_pid_without_its_start_time_goes_stale(tmp_path, monkeypatch):
    from workbench.train.runlock import Locked, RunLock

    monkeypatch.setenv("WORKBENCH_LOCK_STALE_S", "60")
    run = tmp_path / "run"
    run.mkdir()
    lock = run / ".lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": 1, "token": "t"}))  # pid 1 lives forever
    with pytest.raises(Locked, match=f"pid 1 on {socket.gethostname()}"):
        RunLock(run).acquire()
    old = time.time() - 120
    os.utime(lock, (old, old))
    with RunLock(run) as held:
        assert held.took_over["pid"] == 1


def test_heartbeat_sees_a_replaced_lock_and_never_touches_it(tmp_path, monkeypatch):
    from workbench.train.runlock import LockLost, RunLock

    monkeypatch.setenv("WORKBENCH_LOCK_STALE_S", "0.5")
    run = tmp_path / "run"
    with RunLock(run) as held:
        (run / ".lock").unlink()
        other = {"host": "elsewhere", "pid": 7, "token": "theirs"}
        (run / ".lock").write_text(json.dumps(other))
        old = time.time() - 1000
        os.utime(run / ".lock", (old, old))
        time.sleep(0.3)  # several heartbeats
        assert held.lost == "the lock file was replaced"
        with pytest.raises(LockLost, match="replaced"):
            held.check()
        assert (run / ".lock").stat().st_mtime == pytest.approx(old)  # not touched
    assert json.loads((run / ".lock").read_text()) == other  # release leaves the other holder's lock


# ------------------------------------------------------------------ tracebacks that are one line now
def _sweep_root(tmp_path: Path, jobs_text: str) -> Path:
    root = tmp_path / "runs" / "tiny"
    (root / "r1").mkdir(parents=True)
    (root / "r1" / "config.yaml").write_text("name: r1\n")
    (root / "jobs.json").write_text(jobs_text)
    return tmp_path / "runs"


@pytest.mark.parametrize(
    "jobs, words",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected an object"),
        ('{"runs": {"r1": {"job_id": "1; scancel -u $USER"}}}', "is not a Slurm job id"),
        ('{"runs": {"r1": 5}}', "is not a Slurm job id"),
        ('{"runs": {"../x": {"job_id": "12"}}}', "not a plain name"),
        ('{"runs": {}, "submissions": 3}', "'submissions' is not a list"),
        ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ],
)
def test_damaged_jobs_json_is_one_line_for_status_and_cancel(tmp_path, jobs, words):
    runs = _sweep_root(tmp_path, jobs)
    for command in ("status", "cancel"):
        one_line(invoke("sweep", command, "tiny", "--runs", runs), "jobs.json", words)


def test_damaged_jobs_json_is_one_line_for_launch(tmp_path):
    runs = _sweep_root(tmp_path, '{"runs": {"r1": {"job_id": "7\\nscancel -u $USER"}}}')
    spec = yaml.safe_load((ROOT / "tests" / "data" / "tiny.yaml").read_text()) | {"runs_root": str(runs)}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(spec))
    one_line(invoke("sweep", "launch", tmp_path / "tiny.yaml", "--dry-run"), "jobs.json", "is not a Slurm job id")


@pytest.mark.parametrize(
    "text, words",
    [
        (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
        (b'{"status": "completed", "val_loss": ' + b"9" * 5000 + b"}", "not valid JSON"),
        (b'{"status": "completed", "val_loss": 1e400}', "val_loss: inf is not finite"),
        (b'{"status": "completed", "tokens": ' + b"9" * 30 + b"}", "tokens"),
        (b"\xff\xfe not text", "not UTF-8"),
    ],
)
def test_deep_or_huge_numbers_in_final_json_are_one_line(tmp_path, text, words):
    run = _hand_run(tmp_path / "runs")
    (run / "final.json").write_bytes(text)
    one_line(invoke("db", "ingest", tmp_path / "runs", "--db", tmp_path / "wb.duckdb"), words)


def test_deep_and_huge_metric_lines_are_skipped(tmp_path):
    from workbench.store.database import Store

    run = _hand_run(tmp_path / "runs")
    lines = [
        json.dumps({"step": 1, "tokens": 10, "loss": 3.0}),
        "[" * 100000 + "]" * 100000,
        '{"step": ' + "9" * 40 + ', "loss": 1}',
        '{"step": 2, "tokens": ' + "9" * 30 + ', "loss": 1e400}',
        json.dumps({"step": 3, "tokens": 30, "loss": 2.5}),
    ]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    result = invoke("db", "ingest", tmp_path / "runs", "--db", tmp_path / "wb.duckdb")
    assert result.exit_code == 0, result.output
    metrics = Store(tmp_path / "wb.duckdb").metrics()
    assert metrics["step"].tolist() == [1, 2, 3] and metrics["tokens"].isna().tolist() == [False, True, False]


@pytest.mark.parametrize("step", ["1e400", "inf", "nan", "-3", "1.5", "9" * 40])
def test_csv_import_with_a_step_that_is_no_step_is_one_line(tmp_path, step):
    (tmp_path / "h.csv").write_text(f"_step,loss\n1,4.0\n{step},3.0\n")
    one_line(invoke("db", "import", tmp_path / "h.csv", "--runs", tmp_path / "runs"), "h.csv:3", "step")


def test_deep_fit_json_is_one_line(tmp_path):
    (tmp_path / "f.json").write_text("[" * 100000 + "]" * 100000)
    one_line(invoke("plan", "--law", tmp_path / "f.json", "--compute", "1e21"), "nested too deeply")


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0", "soon", "1e300"])
def test_lock_stale_environment_value_is_one_line_before_training(tmp_path, value):
    result = invoke("train", train_config(tmp_path), env={"WORKBENCH_LOCK_STALE_S": value})
    one_line(result, f"WORKBENCH_LOCK_STALE_S={value!r}")


@pytest.mark.parametrize(
    "args, name, value",
    [
        (["db", "ingest", "{runs}", "--db", "{db}"], "WORKBENCH_DB_TIMEOUT_S", "nan"),
        (["db", "ingest", "{runs}", "--db", "{db}"], "WORKBENCH_DB_TIMEOUT_S", "-inf"),
        (["data", "prepare", "{text}", "--out", "{out}"], "WORKBENCH_PREPARE_BATCH_CHARS", "inf"),
        (["train", "{config}"], "WORLD_SIZE", "nan"),
        (["train", "{config}"], "RANK", "inf"),
        (["train", "{config}"], "WORKBENCH_MAX_PARAMS", "nan"),
    ],
)
def test_environment_values_that_are_no_numbers_are_one_line(tmp_path, args, name, value):
    (tmp_path / "t.txt").write_text("some text\n" * 100)
    _hand_run(tmp_path / "runs")
    places = {"runs": tmp_path / "runs", "db": tmp_path / "wb.duckdb", "text": tmp_path / "t.txt"}
    places |= {"out": tmp_path / "out", "config": train_config(tmp_path)}
    result = invoke(*[a.format(**places) for a in args], env={name: value})
    one_line(result, f"{name}={value!r}")


# ------------------------------------------------------------------ unbounded work
def test_a_35_mb_sweep_yaml_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    text = (ROOT / "tests" / "data" / "tiny.yaml").read_text()
    path.write_text(text + "#" + "x" * 35_000_000 + "\n")
    start = time.perf_counter()
    one_line(invoke("sweep", "plan", path), "over the 1,048,576-byte limit")
    assert time.perf_counter() - start < 5


def test_report_under_a_virtual_memory_limit_is_one_line_then_works_from_the_cache(tmp_path):
    db = _small_db(tmp_path)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    limit = 8 << 30  # `ulimit -v 8388608`: V8 cannot reserve its address space under it

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    args = [*CLI, "report", "s", "--db", str(db), "--out", str(tmp_path / "r.html")]
    result = subprocess.run(args, capture_output=True, text=True, env=env, preexec_fn=limited, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: the report's chart bundle could not be built") and len(lines) == 1
    assert "ulimit -v 8388608" in lines[-1] and not (tmp_path / "r.html").exists()
    build = subprocess.run([*CLI, "report", "s", "--db", str(db), "--out", str(tmp_path / "r0.html")], env=env)
    assert build.returncode == 0  # without the limit: the bundle is built and cached
    again = subprocess.run(args, capture_output=True, text=True, env=env, preexec_fn=limited, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "vegaEmbed" in (tmp_path / "r.html").read_text()


def test_a_fit_whose_optimum_shrinks_with_compute_is_one_line_and_writes_nothing(tmp_path):
    """Parabolas whose vertices move to smaller models as compute grows: the isoFLOP law's N* exponent comes out
    negative, which no reader of a fit file accepts; `workbench fit` says so in one line and writes no file."""
    import numpy as np

    rows = []
    for budget in (1e17, 1e18, 1e19, 1e20):
        n_opt = 1e8 * (budget / 1e17) ** -0.2
        for params in n_opt * np.geomspace(0.25, 4, 7):
            loss = 2.0 + 3.0 * (budget / 1e17) ** -0.05 + 0.1 * np.log(params / n_opt) ** 2
            rows.append(f"{params:.6g},{budget / (6 * params):.6g},{loss:.6g},{budget:g}")
    (tmp_path / "shrinking.csv").write_text("params,tokens,loss,budget_flops\n" + "\n".join(rows) + "\n")
    out = tmp_path / "fits" / "shrinking.json"
    args = ["fit", "--from-csv", tmp_path / "shrinking.csv", "--method", "isoflop", "--bootstrap", 10]
    result = invoke(*args, "--no-rollout", "--no-plots", "--out", out)
    one_line(result, "isoflop.a", "must be a positive number", "do not determine this law")
    assert not out.exists()
