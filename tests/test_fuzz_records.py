"""Fuzz what files and the environment hand the package: run records (final.json, metrics.jsonl), jobs.json, run
locks, fit JSON, CSV imports, train configs, environment variables and Slurm fields, in this process. Every
outcome is a value or a one-line WorkbenchError, never another exception; imports write nothing outside
their folder; scripts parse back; work stays bounded (a deadline per case, a cap on the memory growth).
About 1,400 cases, derandomized (the same cases every run), in about a minute on 2 cores.
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import time
from pathlib import Path

import pytest
import yaml
from hostile import files_under, invoke
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.core.errors import WorkbenchError

FUZZ = settings(
    deadline=10_000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
    database=None,
)
MEMORY_BOUND_KB = 1 << 20


@pytest.fixture(scope="module", autouse=True)
def memory_bound():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < MEMORY_BOUND_KB, f"peak RSS grew by {grown / 1024:.0f} MiB"


def outcome(call, *args, **kwargs):
    """call(...) -> its value, or the WorkbenchError it raised (a one-line message); anything else fails."""
    try:
        return call(*args, **kwargs)
    except WorkbenchError as err:
        assert "\n" not in str(err), str(err)
        return err


# ------------------------------------------------------------------ hostile values
HUGE = "<an int of 5000 digits>"  # written out by json_text (hypothesis cannot repr such an int)
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1e400, -1e400, 2**63, 2**63 - 1, 1e-320, 0.5, 3.0, HUGE]),
)
texts = st.one_of(
    st.text(max_size=16),
    st.sampled_from(["", "../x", "a/b", "..", "x" * 300, "nan", "inf", "1e400", "completed", "<script>", "\n"]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
DEEP = "[" * 5000 + "]" * 5000


def json_text(value) -> str:
    """JSON as a hand editor might leave it: NaN and Infinity literals allowed, HUGE written as its digits."""
    return json.dumps(value, allow_nan=True).replace(json.dumps(HUGE), "1" + "0" * 5000)


# ------------------------------------------------------------------ run records: final.json and metrics.jsonl
FINAL = {"status": "completed", "val_loss": 3.0, "params": 1000, "params_total": 2000, "tokens": 10240}
FINAL |= {"flops": 6e7, "steps": 10, "wall_s": 1.5, "error": None, "seq_len": 64}


@settings(FUZZ, max_examples=220)
@given(
    changes=st.lists(st.tuples(st.sampled_from([*FINAL, "val_loss_web", "bit_identity"]), values), max_size=3),
    raw=st.one_of(st.none(), st.sampled_from([DEEP, "{", "[]", "null", '{"status": "completed"}', "\xff"])),
    meta=st.dictionaries(st.sampled_from(["sweep", "kind", "budget_flops", "target_params"]), values, max_size=2),
    lines=st.lists(st.one_of(values.map(json_text), st.sampled_from([DEEP, '{"step": 1e400}', "{", ""])), max_size=4),
)
def test_fuzz_run_records_at_ingest(tmp_path_factory, changes, raw, meta, lines):
    import pandas as pd

    from workbench.store.database import Store

    root = tmp_path_factory.mktemp("runs")
    run = root / "s" / "r1"
    run.mkdir(parents=True)
    config = {"name": "r1", "meta": {"sweep": "s"} | meta}
    (run / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    final = FINAL | dict(changes)
    (run / "final.json").write_text(raw if raw is not None else json_text(final), errors="surrogateescape")
    rows = [json.dumps({"step": 1, "tokens": 10, "loss": 3.0}), *lines]
    (run / "metrics.jsonl").write_text("\n".join(rows) + "\n", errors="surrogateescape")
    result = outcome(Store(root / "wb.duckdb").ingest, root)
    if not isinstance(result, WorkbenchError):
        runs = Store(root / "wb.duckdb").runs()
        assert runs["status"].isin(["completed", "diverged", "failed", "interrupted"]).all()
        for column in ("budget_flops", "target_params", "val_loss", "params", "tokens"):
            assert all(pd.isna(v) or math.isfinite(v) for v in runs[column]), column


# ------------------------------------------------------------------ jobs.json
@settings(FUZZ, max_examples=150)
@given(
    record=st.one_of(
        values,
        st.fixed_dictionaries(
            {"runs": st.dictionaries(texts, st.one_of(values, st.fixed_dictionaries({"job_id": values})), max_size=3)},
            optional={"submissions": values, "cancelled_at": values},
        ),
    ),
    raw=st.one_of(st.none(), st.sampled_from([DEEP, "{", "", "\x00"])),
)
def test_fuzz_jobs_json(tmp_path_factory, record, raw):
    from workbench.sweep import status

    root = tmp_path_factory.mktemp("sweep")
    (root / "r1").mkdir()
    (root / "r1" / "config.yaml").write_text("name: r1\n")
    (root / "jobs.json").write_text(raw if raw is not None else json_text(record))
    result = outcome(status.sweep_status, root, query_slurm=False)
    if not isinstance(result, WorkbenchError):
        jobs = status.read_jobs(root)
        for entry in jobs["runs"].values():
            assert entry.get("job_id") is None or re.fullmatch(r"\d+(_\d+)?", entry["job_id"])


# ------------------------------------------------------------------ run locks
LOCK_SHAPES = ["json", "bytes", "dangling", "directory", "link to a file", "empty"]


@settings(FUZZ, max_examples=150)
@given(shape=st.sampled_from(LOCK_SHAPES), record=values, blob=st.binary(max_size=64), age_s=st.sampled_from([0, 1e4]))
def test_fuzz_run_locks(tmp_path_factory, monkeypatch, shape, record, blob, age_s):
    from workbench.train.runlock import Locked, RunLock

    monkeypatch.setenv("WORKBENCH_LOCK_STALE_S", "300")
    run = tmp_path_factory.mktemp("run")
    lock = run / ".lock"
    if shape == "json":
        lock.write_text(json_text(record))
    elif shape == "bytes":
        lock.write_bytes(blob)
    elif shape == "dangling":
        os.symlink(run / "gone", lock)
    elif shape == "directory":
        lock.mkdir()
    elif shape == "link to a file":
        (run / "target").write_text(json_text(record))
        os.symlink(run / "target", lock)
    else:
        lock.write_text("")
    then = time.time() - age_s
    os.utime(lock, (then, then), follow_symlinks=False)
    held = RunLock(run)
    try:
        held.acquire()
    except Locked as err:
        assert "\n" not in str(err) and "pid None on None" not in str(err)
        assert age_s == 0, f"a lock {age_s:g} s old is stale: {err}"
        return
    try:
        assert json.loads(lock.read_text())["token"] == held.record["token"]
    finally:
        held.release()
    assert not lock.exists() and not lock.is_symlink()


# ------------------------------------------------------------------ fit JSON
def _fit() -> dict:
    minima = [
        {"budget_flops": c, "params": 1e7 * (c / 1e18) ** 0.5, "tokens": c / (6e7 * (c / 1e18) ** 0.5), "loss": 3.0}
        for c in (1e18, 1e19, 1e20)
    ]
    return {
        "name": "f",
        "method": "all",
        "parametric": {"E": 1.7, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28},
        "isoflop": {"budgets": [1e18, 1e19, 1e20], "minima": minima, "G": 1e-2, "a": 0.5, "H": 16.0, "b": 0.5},
    }


FIT_PATHS = [
    ("method",),
    ("schema_version",),
    ("parametric",),
    *[("parametric", k) for k in ("E", "A", "B", "alpha", "beta", "draws")],
    ("isoflop",),
    *[("isoflop", k) for k in ("G", "a", "H", "b", "minima", "budgets", "excluded", "loss_law")],
    ("isoflop", "minima", 0),
    ("isoflop", "minima", 0, "params"),
    ("hparams",),
    ("points",),
]


def _set(tree, path, value):
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@settings(FUZZ, max_examples=200)
@given(changes=st.lists(st.tuples(st.sampled_from(FIT_PATHS), values), min_size=1, max_size=2))
def test_fuzz_fit_json_through_plan(tmp_path_factory, changes):
    from workbench.records import read_fit

    fit = _fit()
    for path, value in changes:
        try:
            _set(fit, path, value)
        except (KeyError, IndexError, TypeError):
            continue
    path = tmp_path_factory.mktemp("fit") / "f.json"
    path.write_text(json_text(fit))
    outcome(read_fit, path)
    result = invoke("plan", "--law", path, "--compute", "1e21", "--json")
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 1), result.output[-1000:]
    if result.exit_code == 1:
        lines = result.stderr.strip().splitlines()
        assert len([line for line in lines if line.startswith("Error: ")]) == 1 and lines[-1].startswith("Error: ")
    else:
        plan = json.loads(result.stdout)
        assert math.isfinite(plan["params"]) and plan["params"] > 0 and math.isfinite(plan["tokens"])


# ------------------------------------------------------------------ CSV imports
cells = st.one_of(
    st.sampled_from(["", "nan", "inf", "-inf", "1e400", "abc", "1,5", "9" * 400, "-3", "0", "1.5", '"q"']),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.integers(-10, 10**6).map(str),
)


@settings(FUZZ, max_examples=160)
@given(
    header=st.sampled_from(["_step,loss,val_loss", "step,loss", "Step,run - loss,run - loss__MIN", "loss", ""]),
    rows=st.lists(st.lists(cells, min_size=1, max_size=4), max_size=6),
    name=st.sampled_from(["h", "...", "..", "a b", "ok-1", ".x"]),
    run_id=st.one_of(st.none(), texts),
)
def test_fuzz_csv_imports_stay_in_their_folder(tmp_path_factory, header, rows, name, run_id):
    from workbench.store.importers import import_path

    top = tmp_path_factory.mktemp("imp")
    source = top / "in" / f"{name}.csv"
    source.parent.mkdir()
    source.write_text(header + "\n" + "".join(",".join(row) + "\n" for row in rows))
    outside = files_under(top)
    into = top / "deep" / "runs" / "imported"
    result = outcome(import_path, source, into, run_id=run_id)
    written = {k for k in files_under(top) if k not in outside}
    assert all(k.startswith("deep") for k in written), written  # nothing outside --into
    if not isinstance(result, WorkbenchError):
        from workbench.store.database import Store

        assert all(d.parent == into for d in result)
        outcome(Store(top / "wb.duckdb").ingest, into)


# ------------------------------------------------------------------ train configs
BASE = {
    "name": "fuzz",
    "run_dir": "run",
    "model": {"n_layers": 2, "d_model": 24, "n_heads": 2, "n_kv_heads": 1, "ffn_dim": 88, "vocab_size": 256},
    "data": {"sources": [{"path": "nowhere"}], "seq_len": 64},
    "optim": {"lr_peak": 3e-3},
    "batch": {"batch_tokens": 1024, "micro_batch": 4},
    "stop": {"tokens": 10240},
}
CONFIG_PATHS = [
    ("model", k) for k in ("n_layers", "d_model", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size", "norm_eps")
] + [
    ("model", "rope_theta"),
    ("model", "init_std"),
    ("optim", "betas"),
    ("optim", "eps"),
    ("optim", "lr_peak"),
    ("schedule", "warmup_tokens"),
    ("schedule", "anneal_tokens"),
    ("stop", "tokens"),
    ("stop", "budget_flops"),
    ("batch", "batch_tokens"),
    ("data", "seq_len"),
    ("seed",),
    ("meta",),
]


@settings(FUZZ, max_examples=200)
@given(changes=st.lists(st.tuples(st.sampled_from(CONFIG_PATHS), values), min_size=1, max_size=3))
def test_fuzz_train_config_domains(changes):
    from workbench.core.configfile import parse_model
    from workbench.model.config import max_params
    from workbench.train.config import TrainConfig

    config = json.loads(json.dumps(BASE))
    for path, value in changes:
        node = config
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    cfg = outcome(parse_model, TrainConfig, config, "fuzz.yaml")
    if not isinstance(cfg, WorkbenchError):
        assert cfg.model.shape().params_total <= max_params()
        assert all(0 <= b < 1 for b in cfg.optim.betas) and cfg.model.norm_eps > 0 and cfg.model.rope_theta > 0
        if cfg.stop.tokens is not None:
            assert cfg.schedule.warmup_tokens <= cfg.stop.tokens


# ------------------------------------------------------------------ environment variables
ENV_READERS = {
    "WORKBENCH_LOCK_STALE_S": lambda: __import__("workbench.train.runlock", fromlist=["x"]).stale_after_s(),
    "WORKBENCH_DB_TIMEOUT_S": lambda: __import__("workbench.store.database", fromlist=["x"]).Store().lock_timeout_s,
    "WORKBENCH_MAX_PARAMS": lambda: __import__("workbench.model.config", fromlist=["x"]).max_params(),
}


@settings(FUZZ, max_examples=120)
@given(name=st.sampled_from(sorted(ENV_READERS)), raw=st.one_of(texts, numbers.map(str)))
def test_fuzz_environment_numbers(monkeypatch, name, raw):
    if "\x00" in raw:
        return
    monkeypatch.setenv(name, raw)
    value = outcome(ENV_READERS[name])
    if not isinstance(value, WorkbenchError):
        assert math.isfinite(value) and value >= 0


@settings(FUZZ, max_examples=40)
@given(
    name=st.sampled_from(["WORLD_SIZE", "RANK", "LOCAL_RANK", "SLURM_NTASKS"]), raw=st.one_of(texts, numbers.map(str))
)
def test_fuzz_launcher_environment_through_train(tmp_path_factory, name, raw):
    if "\x00" in raw or not raw.strip():
        return
    folder = tmp_path_factory.mktemp("env")
    config = {**BASE, "run_dir": str(folder / "run"), "runtime": {"device": "cpu", "threads": 1}}
    (folder / "c.yaml").write_text(yaml.safe_dump(config))
    result = invoke("train", folder / "c.yaml", env={name: raw})
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1 and result.stderr.strip().splitlines()[-1].startswith("Error: ")


# ------------------------------------------------------------------ Slurm fields
@settings(FUZZ, max_examples=150)
@given(
    field=st.sampled_from(["partition", "account", "qos"]),
    value=st.one_of(texts, st.from_regex(r"[A-Za-z0-9_.\-]{1,20}(,[A-Za-z0-9_.\-]{1,8})?", fullmatch=True)),
)
def test_fuzz_slurm_fields_render_or_refuse(tmp_path_factory, field, value):
    from workbench.core.configfile import parse_model
    from workbench.sweep.executors import sbatch_script
    from workbench.sweep.spec import Launch

    spec = outcome(parse_model, Launch, {field: value, "timeout_min": 60, "slurm_signal_delay_s": 90}, "launch")
    if isinstance(spec, WorkbenchError):
        return
    script = sbatch_script(spec, Path("/tmp/x/%j"), array_size=None, job_name="wb-r1")
    lines = script.splitlines()
    body = lines[1 : next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))]
    options = dict(re.fullmatch(r"#SBATCH --([a-z-]+)=(\S+)", line).groups() for line in body if "SBATCH" in line)
    assert options[field] == value and options["time"] == "60" and options["signal"] == "USR2@90"
