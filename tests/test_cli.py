"""The command line as one dialect: dotted overrides of any YAML key, --json on every command, --version, global
options anywhere on the line, no phantom subcommands, and commands that pick the only sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from workbench.cli import app, global_flags_first

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "workbench.cli"]
runner = CliRunner()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    from workbench.data.prepare import ensure_default_corpus

    return str(ensure_default_corpus(tmp_path_factory.mktemp("corpus") / "shakespeare-bytes"))


def _config(tmp_path: Path, corpus: str) -> Path:
    config = {
        "name": "over",
        "run_dir": str(tmp_path / "run"),
        "model": {"n_layers": 1, "d_model": 16, "n_heads": 2, "n_kv_heads": 1, "ffn_dim": 32, "vocab_size": 256},
        "data": {"sources": [{"path": corpus}], "seq_len": 32},
        "optim": {"lr_peak": 3e-3},
        "schedule": {"kind": "constant"},
        "batch": {"batch_tokens": 128, "micro_batch": 4},
        "stop": {"tokens": 8 * 128},
        "eval": {"batches": 1, "batch_seqs": 4},
        "runtime": {"device": "cpu", "threads": 1, "log_every_steps": 1000},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_an_override_trains_with_that_value_and_the_run_records_it(tmp_path, corpus):
    path = _config(tmp_path, corpus)
    result = runner.invoke(app, ["train", str(path), "optim.lr_peak=3e-4", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["status"] == "completed"
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert written["optim"]["lr_peak"] == pytest.approx(3e-4) and written["meta"]["overrides"] == "optim.lr_peak=3e-4"
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if "lr" in r]
    assert lrs and lrs == pytest.approx([3e-4] * len(lrs))  # a constant schedule: every step at the new peak
    assert yaml.safe_load(path.read_text())["optim"]["lr_peak"] == 3e-3  # the file itself is untouched


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.lr_peak=abc", "command line (optim.lr_peak=abc): optim.lr_peak:"),
        ("optim.lr_peek=1e-3", "command line (optim.lr_peek=1e-3): unknown key 'optim.lr_peek'"),
        ("optim.lr_peak=-1", "command line (optim.lr_peak=-1): optim.lr_peak:"),
        ("optim.lr_peak.x=1", "command line (optim.lr_peak.x=1): optim.lr_peak is a value, not a section"),
        ("optim.lr_peak=[1,", "command line (optim.lr_peak=[1,): cannot read the value"),
    ],
)
def test_a_bad_override_is_one_line_naming_the_key(tmp_path, corpus, override, expected):
    path = _config(tmp_path, corpus)
    proc = subprocess.run([*CLI, "train", str(path), override], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: " + expected), proc.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_word_without_equals_is_not_taken_for_an_override(tmp_path, corpus):
    path = _config(tmp_path, corpus)
    result = runner.invoke(
        app, ["sweep", "plan", str(ROOT / "tests" / "data" / "tiny.yaml"), "grid.budgets_flops=[3e9]"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train", str(path), "optim.lr_peak"])
    assert result.exit_code == 1 and "'optim.lr_peak' is not an override KEY=VALUE" in result.output


def test_sweep_plan_takes_overrides_and_validates_them_like_the_file():
    tiny = str(ROOT / "tests" / "data" / "tiny.yaml")
    base = json.loads(runner.invoke(app, ["sweep", "plan", tiny, "--json"]).stdout)
    assert {r["budget_flops"] for r in base["runs"]} == {3e9, 6e9}
    one = runner.invoke(app, ["sweep", "plan", tiny, "grid.budgets_flops=[3e9]", "train.lr_peak=1e-3", "--json"])
    runs = json.loads(one.stdout)["runs"]
    assert {r["budget_flops"] for r in runs} == {3e9} and {r["lr_peak"] for r in runs} == {1e-3}
    bad = runner.invoke(app, ["sweep", "plan", tiny, "grid.sizez=[1]"])
    assert bad.exit_code == 1 and "command line (grid.sizez=[1]): unknown key 'grid.sizez'" in bad.output


def _leaves(group, prefix: tuple = ()) -> list:
    found = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found += _leaves(command, (*prefix, name))
        else:
            found.append(((*prefix, name), command))
    return found


def test_every_command_accepts_json_and_no_usage_line_shows_a_phantom_subcommand():
    root = typer.main.get_command(app)
    leaves = _leaves(root)
    assert len(leaves) >= 17
    missing = [" ".join(path) for path, command in leaves if not any("--json" in p.opts for p in command.params)]
    assert not missing, f"commands without --json: {missing}"
    for name in ("train", "fit", "plan", "report", "demo"):
        usage = runner.invoke(app, [name, "--help"], prog_name="workbench").output
        assert f"workbench {name} [OPTIONS]" in usage and "COMMAND [ARGS]" not in usage, usage


def test_version_and_global_flags_anywhere_on_the_line():
    import workbench

    assert runner.invoke(app, ["--version"]).output.strip() == f"workbench {workbench.__version__}"
    assert global_flags_first(["model", "show", "8b", "--debug"]) == ["--debug", "model", "show", "8b"]
    assert global_flags_first(["db", "query", "--", "--debug"]) == ["db", "query", "--", "--debug"]
    proc = subprocess.run([*CLI, "model", "show", "12parrots", "--debug"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "WorkbenchError" in proc.stderr
    proc = subprocess.run([*CLI, "fit", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"workbench {workbench.__version__}"


def test_json_outputs_parse(tmp_path, corpus):
    shown = runner.invoke(app, ["data", "show", corpus, "--json"])
    assert json.loads(shown.stdout)["tokenizer"]["kind"] == "bytes"
    model = json.loads(runner.invoke(app, ["model", "show", "8b", "--json", "--vocab-size", "128256"]).stdout)
    assert model["params_total"] == 8_030_261_248
    ingest = runner.invoke(app, ["db", "ingest", str(tmp_path), "--db", str(tmp_path / "x.duckdb"), "--json"])
    assert json.loads(ingest.stdout)["runs"] == 0


@pytest.mark.parametrize(
    "args, code, stream, text",
    [
        (["--version"], 0, "stdout", "workbench 0.1.0"),
        (["train", "no-such-config.yaml"], 1, "stderr", "no-such-config.yaml not found"),
        (["model", "--bogus"], 2, "stderr", "No such option"),
    ],
)
def test_a_launched_worker_exits_with_the_command_code_and_its_output(tmp_path, args, code, stream, text):
    """A worker among several (WORLD_SIZE > 1) leaves without the interpreter's finalization; what it printed
    still arrives, and its exit code is the command's."""
    env = {**os.environ, "WORLD_SIZE": "2", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == code
    assert text in getattr(result, stream)
