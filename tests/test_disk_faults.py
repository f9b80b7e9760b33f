"""Full and read-only disks: ENOSPC and EROFS injected at the n-th call of os.write, os.replace or os.link (every
byte the package writes goes through them: workbench.core.files) into train (checkpoints, metrics, the lock,
final.json), db import and ingest, data prepare and report. Each failure is one line naming the path (and,
for a full disk, the free space and what the write needed); nothing written earlier is lost, and the same
command continues once the disk is back. A tmpfs variant fills a real small file system and remounts it
read-only, where the test may mount one (root); it is skipped elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from hostile import files_under, invoke, one_line

CLI = [sys.executable, "-m", "workbench.cli"]
WORDS = {errno.ENOSPC: "no space left on the device", errno.EROFS: "read-only"}


class Faults:
    """os.write, os.replace and os.link counted; the `op` call number `at` and every later one fails with
    `code` (a full disk stays full). Writes to stdin, stdout and stderr are not counted."""

    def __init__(self, monkeypatch, op: str | None = None, at: int = 0, code: int = errno.ENOSPC):
        self.calls = {"write": 0, "replace": 0, "link": 0}
        self.op, self.at, self.code = op, at, code
        for name in self.calls:
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))

    def _wrap(self, name, real):
        def call(*args, **kwargs):
            if name == "write" and args[0] <= 2:
                return real(*args, **kwargs)
            self.calls[name] += 1
            if name == self.op and self.calls[name] >= self.at:
                raise OSError(self.code, os.strerror(self.code))
            return real(*args, **kwargs)

        return call


def positions(total: int, count: int) -> list[int]:
    """`count` call numbers spread over 1..total (the first and the last included)."""
    return sorted({1 + round(i * (total - 1) / max(count - 1, 1)) for i in range(count)})


def check_disk_line(result, code: int) -> str:
    line = one_line(result, WORDS[code])
    if code == errno.ENOSPC:
        assert " free)" in line
    return line


# ------------------------------------------------------------------ train: checkpoints, metrics, lock, final.json
@pytest.fixture(scope="module")
def corpus():
    from workbench.data.prepare import ensure_default_corpus

    return str(ensure_default_corpus())


def _train_config(folder: Path, corpus: str) -> Path:
    cfg = {
        "name": "run",
        "run_dir": str(folder / "run"),
        "model": {"n_layers": 2, "d_model": 24, "n_heads": 2, "n_kv_heads": 1, "ffn_dim": 88, "vocab_size": 256},
        "data": {"sources": [{"path": corpus}], "seq_len": 64},
        "optim": {"lr_peak": 3e-3},
        "batch": {"batch_tokens": 256, "micro_batch": 4},
        "stop": {"tokens": 20 * 256},
        "eval": {"batches": 1, "batch_seqs": 4},
        "checkpoint": {"every_tokens": 5 * 256, "keep": 2},
        "faults": {"max_rollbacks": 0},
        "runtime": {"threads": 1, "device": "cpu"},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "c.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "c.yaml"


@pytest.fixture(scope="module")
def clean_train(tmp_path_factory, corpus):
    """A run without faults: its final record and how many calls of each kind it made."""
    import pytest as _pytest

    folder = tmp_path_factory.mktemp("clean")
    with _pytest.MonkeyPatch.context() as mp:
        faults = Faults(mp)
        result = invoke("train", _train_config(folder, corpus))
    assert result.exit_code == 0, result.output
    final = json.loads((folder / "run" / "final.json").read_text())
    return final, dict(faults.calls)


def _cases(ops: dict[str, int]) -> list[tuple[str, int]]:
    return [(op, n) for op, count in ops.items() for n in range(1, count + 1)]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["ENOSPC", "EROFS"])
@pytest.mark.parametrize("op, share", [("write", 7), ("replace", 4), ("link", 1)])
def test_train_on_a_failing_disk_is_one_line_and_resumes_to_the_same_result(
    tmp_path, monkeypatch, corpus, clean_train, op, share, code
):
    from workbench.train import checkpoint

    reference, calls = clean_train
    for at in positions(calls[op], share):
        folder = tmp_path / f"{op}-{at}"
        config = _train_config(folder, corpus)
        with monkeypatch.context() as mp:
            Faults(mp, op, at, code)
            result = invoke("train", config)
        line = check_disk_line(result, code)
        assert str(folder) in line, line
        for step_dir in checkpoint.run_checkpoints(folder / "run"):  # every checkpoint written before is intact
            checkpoint.verify(step_dir)
        again = invoke("train", config)
        assert again.exit_code == 0, again.output[-2000:]
        final = json.loads((folder / "run" / "final.json").read_text())
        assert (final["status"], final["val_loss"], final["steps"]) == (
            "completed",
            reference["val_loss"],
            reference["steps"],
        )


# ------------------------------------------------------------------ db import and ingest
def _history(path: Path, losses: list[float]) -> Path:
    path.write_text("_step,loss,val_loss,tokens\n" + "".join(f"{i},{v},{v},{i * 256}\n" for i, v in enumerate(losses)))
    return path


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["ENOSPC", "EROFS"])
def test_db_import_on_a_failing_disk_keeps_what_was_imported(tmp_path, monkeypatch, code):
    from workbench.store.database import Store

    db, runs = tmp_path / "wb.duckdb", tmp_path / "runs"
    args = ["--runs", runs, "--sweep", "s", "--db", db]
    assert invoke("db", "import", _history(tmp_path / "a.csv", [4.0, 3.5, 3.2]), *args).exit_code == 0
    before = {p: p.read_bytes() for p in (runs / "imported" / "csv-a").iterdir()}
    rows_before = Store(db).runs("s")[["run_id", "val_loss"]].to_dict("records")
    for op, at in _cases({"write": 3, "replace": 3}):
        with monkeypatch.context() as mp:
            Faults(mp, op, at, code)
            # a new run each time: a re-import rewrites only files that differ (what a failed try left is kept)
            result = invoke("db", "import", _history(tmp_path / f"b{op}{at}.csv", [4.1, 3.6]), *args)
        check_disk_line(result, code)
        assert {p: p.read_bytes() for p in (runs / "imported" / "csv-a").iterdir()} == before
        assert Store(db).runs("s")[["run_id", "val_loss"]].to_dict("records") == rows_before
    assert invoke("db", "import", _history(tmp_path / "b.csv", [4.1, 3.6]), *args).exit_code == 0
    assert sorted(Store(db).runs("s")["run_id"]) == ["csv-a", "csv-b"]


def test_ingest_whose_commit_fails_names_the_disk_and_keeps_the_database(tmp_path, monkeypatch):
    """DuckDB writes in C++ (no os.write to patch): a COMMIT failing as DuckDB reports a full disk, then a
    ROLLBACK that finds no transaction, is one line about the disk, and the database holds what it held."""
    import duckdb

    from workbench.store import database
    from workbench.store.database import Store

    db = tmp_path / "wb.duckdb"
    args = ["--runs", tmp_path / "runs", "--sweep", "s", "--db", db]
    assert invoke("db", "import", _history(tmp_path / "a.csv", [4.0, 3.5]), *args).exit_code == 0
    connect = duckdb.connect

    class FullDisk:
        def __init__(self, con):
            self.con = con

        def execute(self, sql, *rest):
            if sql == "COMMIT":
                self.con.execute("ROLLBACK")  # DuckDB aborts the transaction on an I/O error
                raise duckdb.IOException('Could not write file "wb.duckdb.wal": No space left on device')
            return self.con.execute(sql, *rest)

        def __getattr__(self, name):
            return getattr(self.con, name)

    with monkeypatch.context() as mp:
        mp.setattr(database.duckdb, "connect", lambda *a, **k: FullDisk(connect(*a, **k)))
        result = invoke("db", "import", _history(tmp_path / "b.csv", [4.1, 3.6]), *args)
    line = check_disk_line(result, errno.ENOSPC)
    assert str(db) in line and "rollback" not in line
    assert sorted(Store(db).runs("s")["run_id"]) == ["csv-a"]


# ------------------------------------------------------------------ data prepare
@pytest.fixture(scope="module")
def text_inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    (folder / "a.txt").write_text("".join(f"line {i} of the first text\n" for i in range(3000)))
    (folder / "b.jsonl").write_text("".join(json.dumps({"text": f"record {i} " * 5}) + "\n" for i in range(500)))
    return [str(folder / "a.txt"), str(folder / "b.jsonl")]


def _prepare(inputs: list[str], out: Path, *extra: str):
    return invoke("data", "prepare", *inputs, "--out", out, "--shard-tokens", "20000", *extra)


@pytest.fixture(scope="module")
def clean_prepare(tmp_path_factory, text_inputs):
    import pytest as _pytest

    out = tmp_path_factory.mktemp("prep") / "out"
    with _pytest.MonkeyPatch.context() as mp:
        faults = Faults(mp)
        assert _prepare(text_inputs, out).exit_code == 0
    return json.loads((out / "manifest.json").read_text()), dict(faults.calls)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["ENOSPC", "EROFS"])
def test_prepare_on_a_failing_disk_is_one_line_and_a_rerun_gives_the_same_shards(
    tmp_path, monkeypatch, text_inputs, clean_prepare, code
):
    reference, calls = clean_prepare
    for op, at in [("write", n) for n in positions(calls["write"], 6)] + _cases({"replace": calls["replace"]}):
        out = tmp_path / f"{op}-{at}" / "out"
        with monkeypatch.context() as mp:
            Faults(mp, op, at, code)
            result = _prepare(text_inputs, out)
        check_disk_line(result, code)
        assert not (out / "manifest.json").exists()
        assert _prepare(text_inputs, out).exit_code == 0
        assert json.loads((out / "manifest.json").read_text())["data_sha256"] == reference["data_sha256"]


def test_prepare_force_on_a_failing_disk_keeps_the_earlier_data_set(tmp_path, monkeypatch, text_inputs):
    with monkeypatch.context() as mp:  # the renames a prepare makes before it publishes
        counter = Faults(mp)
        assert _prepare(text_inputs, tmp_path / "count").exit_code == 0
    own = counter.calls["replace"]
    for k in (1, 2, 4):  # the k-th rename of the publish fails
        out = tmp_path / f"out{k}"
        assert _prepare(text_inputs[:1], out).exit_code == 0
        (out / "NOTES.md").write_text("mine")
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        with monkeypatch.context() as mp:
            Faults(mp, "replace", own + k, errno.ENOSPC)
            result = _prepare(text_inputs, out, "--force")
        check_disk_line(result, errno.ENOSPC)
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the earlier data set, whole
        assert _prepare(text_inputs, out, "--force").exit_code == 0
        assert (out / "NOTES.md").read_text() == "mine"
        assert json.loads((out / "manifest.json").read_text())["sources"][1]["path"] == text_inputs[1]


# ------------------------------------------------------------------ report
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["ENOSPC", "EROFS"])
def test_report_on_a_failing_disk_keeps_the_earlier_report(tmp_path, monkeypatch, code):
    run = tmp_path / "runs" / "s" / "r1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("name: r1\nmeta: {sweep: s}\n")
    (run / "final.json").write_text(json.dumps({"status": "completed", "val_loss": 3.0, "tokens": 10}))
    db, page = tmp_path / "wb.duckdb", tmp_path / "r.html"
    assert invoke("db", "ingest", tmp_path / "runs", "--db", db).exit_code == 0
    assert invoke("report", "s", "--db", db, "--out", page).exit_code == 0
    earlier = page.read_bytes()
    for op in ("write", "replace"):
        with monkeypatch.context() as mp:
            Faults(mp, op, 1, code)
            result = invoke("report", "s", "--db", db, "--out", page)
        assert str(page) in check_disk_line(result, code)
        assert page.read_bytes() == earlier
        assert [p.name for p in tmp_path.glob(".r.html.*")] == []  # no temp file left


# ------------------------------------------------------------------ fit: its JSON and its figures
def test_fit_on_a_failing_disk_keeps_the_earlier_fit_and_figures(tmp_path, monkeypatch):
    import numpy as np

    from workbench.fit.synthetic import isoflop_sweep

    points = isoflop_sweep(seed=0, budgets_flops=np.geomspace(1e17, 1e21, 4), sizes_per_budget=7)
    csv = tmp_path / "toy.csv"
    points.drop(columns=["budget_flops", "flops"]).to_csv(csv, index=False)
    out = tmp_path / "fits" / "toy.json"
    args = ("fit", "--from-csv", csv, "--method", "isoflop", "--bootstrap", 0, "--no-rollout", "--out", out)
    with monkeypatch.context() as mp:
        faults = Faults(mp)
        assert invoke(*args).exit_code == 0
    earlier = files_under(tmp_path / "fits")
    assert {Path(name).suffix for name in earlier} == {".json", ".png", ".svg"}
    assert faults.calls["replace"] == len(earlier)  # each file, figures too, written to a temp name and renamed in
    for n, code in ((1, errno.ENOSPC), (len(earlier), errno.EROFS)):  # the first file and the last
        with monkeypatch.context() as mp:
            Faults(mp, "replace", n, code)
            line = check_disk_line(invoke(*args), code)
        assert str(tmp_path / "fits") in line
        now = files_under(tmp_path / "fits")
        assert sorted(now) == sorted(earlier)  # no temp file left, none missing
        assert json.loads(now["toy.json"]) == json.loads(earlier["toy.json"])
        assert all(now[k].startswith(b"\x89PNG") for k in now if k.endswith(".png"))  # whole files, old or new
        assert all(now[k].rstrip().endswith(b"</svg>") for k in now if k.endswith(".svg"))


# ------------------------------------------------------------------ a real small file system (tmpfs), read-only too
@contextlib.contextmanager
def small_disk(tmp_path: Path, size: str):
    """A tmpfs of `size` mounted at tmp_path/disk (root only; skipped where mount is not allowed)."""
    point = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True)
    if mounted.returncode != 0 or not shutil.which("umount"):
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()[:80]})")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _read_only(point: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True, capture_output=True)


def test_tmpfs_full_and_read_only_disks_are_one_line(tmp_path, corpus, text_inputs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def cli(*args):
        return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)

    def one(result, words):
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and lines[-1].startswith("Error: ") and words in lines[-1], result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        return lines[-1]

    with small_disk(tmp_path, "600k") as disk:  # prepare: shards larger than the disk
        big = tmp_path / "big.txt"
        big.write_text("".join(f"a line of text number {i}\n" for i in range(60000)))
        line = one(cli("data", "prepare", big, "--out", disk / "out"), "no space left on the device")
        assert "free)" in line and str(disk) in line
    with small_disk(tmp_path, "1m") as disk:  # ingest: DuckDB's own writes fill the disk
        runs = tmp_path / "many"
        for i in range(300):
            run = runs / "s" / f"r{i}"
            run.mkdir(parents=True)
            (run / "config.yaml").write_text(f"name: r{i}\nmeta: {{sweep: s}}\n")
            (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 3.0}) + "\n" for s in range(200)))
        one(cli("db", "ingest", runs, "--db", disk / "wb.duckdb"), "no space left on the device")
    with small_disk(tmp_path, "4m") as disk:  # train, prepare, ingest and report on a read-only disk
        config = _train_config(tmp_path / "ro", corpus)
        cfg = yaml.safe_load(config.read_text())
        cfg["run_dir"] = str(disk / "run")
        config.write_text(yaml.safe_dump(cfg))
        _read_only(disk)
        one(cli("train", config), "read-only")
        one(cli("data", "prepare", *text_inputs, "--out", disk / "out"), "read-only")
        one(cli("db", "ingest", runs, "--db", disk / "wb.duckdb"), "read-only")
        assert cli("db", "ingest", runs, "--db", tmp_path / "ok.duckdb").returncode == 0
        one(cli("report", "s", "--db", tmp_path / "ok.duckdb", "--out", disk / "r.html"), "read-only")
