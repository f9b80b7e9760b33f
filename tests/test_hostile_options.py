"""Hostile input, third campaign: options and files that escaped the one-line contract (docs/LIMITS.md).

Found by probing every command with values of the kinds the earlier campaigns covered, on options and files
they had not reached: a usage error is one `Error:` line (exit 2), an output path that is a pipe, a folder or
the command's own input is refused before any work, numbers outside an option's domain (zero layouts, NaN
failure rates, a peak of 1e-300 TFLOPS, 10^12 GPUs) are one line, and so are damaged versions.json files,
loss-curve CSVs, overrides of thousands of digits, sizes that collapse to one shape and SQLite files.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from pathlib import Path

import pytest
import yaml
from hostile import invoke, one_line

ROOT = Path(__file__).resolve().parents[1]
RUNS_CSV = ROOT / "tests" / "data" / "degenerate_sweep.csv"


def usage_line(result, *words: str) -> str:
    """A usage error: exit 2, exactly one line on stderr, `Error:` and the words, no box drawing."""
    assert result.exit_code == 2, (result.exit_code, result.output[-800:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr[-800:]
    assert "╭" not in result.stderr and "Usage:" not in result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# ------------------------------------------------------------------ usage errors
@pytest.mark.parametrize(
    "args, words",
    [
        (["fit", "--bootstrap", "-1"], ["workbench fit", "--bootstrap", "workbench fit --help"]),
        (["fit", "--seed", "-1"], ["--seed"]),
        (["memory", "--shape", "8b", "--tp", "0"], ["workbench memory", "--tp"]),
        (["memory", "--shape", "8b", "--pp", "0"], ["--pp"]),
        (["memory", "--shape", "8b", "--dp", "0"], ["--dp"]),
        (["memory", "--shape", "8b", "--micro-batch", "0"], ["--micro-batch"]),
        (["memory", "--shape", "8b", "--tp", "-1"], ["--tp"]),
        (["memory", "--shape", "8b", "--seq-len", "0"], ["--seq-len"]),
        (["memory", "--shape", "8b", "--vocab-size", "1"], ["--vocab-size"]),
        (["memory", "--shape", "8b", "--tp", "abc"], ["--tp"]),
        (["nosuch"], ["workbench:", "No such command"]),
        (["sweep", "nosuch"], ["workbench sweep", "No such command"]),
        (["plan", "--compute"], ["workbench plan", "--compute"]),
        (["--bogus"], ["No such option"]),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(args, words):
    usage_line(invoke(*args), *words)


# ------------------------------------------------------------------ output paths
@pytest.mark.parametrize("command", ["fit", "plan", "report"])
def test_an_output_that_is_a_pipe_or_a_folder_is_refused_and_kept(tmp_path, command):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    args = {
        "fit": ["fit", "--from-csv", RUNS_CSV, "--bootstrap", "0", "--no-plots"],
        "plan": ["plan", "--compute", "1e21", "--db", tmp_path / "p.duckdb"],
        "report": ["report", "--db", tmp_path / "none.duckdb"],
    }[command]
    one_line(invoke(*args, "--out", fifo), "--out", "not a regular file")
    assert fifo.is_fifo()
    one_line(invoke(*args, "--out", tmp_path), "--out", "is a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]  # nothing written, no database either


def test_an_output_that_is_the_input_is_refused_and_a_link_is_written_through(tmp_path):
    runs = tmp_path / "runs.csv"
    runs.write_bytes(RUNS_CSV.read_bytes())
    args = ("fit", "--from-csv", runs, "--method", "parametric", "--bootstrap", "0", "--no-plots", "--out")
    one_line(invoke(*args, runs), "--out", "input")
    assert runs.read_bytes() == RUNS_CSV.read_bytes()
    target = tmp_path / "target.json"
    target.write_text("old")
    (tmp_path / "link.json").symlink_to("target.json")
    result = invoke(*args, tmp_path / "link.json")
    assert result.exit_code == 0, result.output[-800:]
    assert (tmp_path / "link.json").is_symlink()  # the link stays; its target holds the fit
    assert json.loads(target.read_text())["source"] == str(runs)


def test_atomic_writes_refuse_what_is_not_a_regular_file(tmp_path):
    from workbench.core.errors import WorkbenchError
    from workbench.core.files import atomic_write_text

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(WorkbenchError, match="not a regular file"):
        atomic_write_text(fifo, "x")
    assert fifo.is_fifo()


# ------------------------------------------------------------------ numbers outside their domain
@pytest.mark.parametrize(
    "args, words",
    [
        (["--mfu", "1e-300"], ["--mfu", "outside"]),
        (["--failures-per-gpu-day", "inf"], ["--failures-per-gpu-day", "finite"]),
        (["--failures-per-gpu-day", "nan"], ["--failures-per-gpu-day"]),
        (["--restart-min", "nan"], ["--restart-min"]),
        (["--restart-min", "inf"], ["--restart-min"]),
        (["--checkpoint-gb-s", "nan"], ["--checkpoint-gb-s"]),
        (["--gpu-memory-gb", "inf"], ["--gpu-memory-gb", "outside"]),
        (["--gpu-memory-gb", "nan"], ["--gpu-memory-gb", "outside"]),
        (["--gpu", "1e-300"], ["--gpu", "outside"]),
        (["--gpus", "1e12"], ["--gpus", "10,000,000"]),
        (["--failures-per-gpu-day", "0.5", "--gpus", "16384"], ["never progress"]),
    ],
)
def test_plan_options_outside_their_domain_are_one_line(tmp_path, args, words):
    one_line(invoke("plan", "--compute", "1e24", "--db", tmp_path / "p.duckdb", *args), *words)
    assert not (tmp_path / "p.duckdb").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--dp", "99999999999999999999"], ["GPUs", "more than"]),
        (["--gpu", "1e-300"], ["--gpu", "outside"]),
        (["--gpu-memory-gb", "nan"], ["--gpu-memory-gb"]),
    ],
)
def test_memory_layouts_outside_their_domain_are_one_line(args, words):
    one_line(invoke("memory", "--shape", "8b", *args), *words)


def test_an_inference_aware_plan_far_past_its_budget_is_quick_bounded_and_warned(tmp_path):
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = invoke("plan", "--compute", "1e24", "--inference-tokens", "1e20", "--json")
    assert result.exit_code == 0, result.output[-800:]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KiB: no list of 10^11 steps
    record = json.loads(result.stdout)
    assert any("tokens per parameter" in w and "x the budget" in w for w in record["warnings"])


@pytest.mark.parametrize(
    "tokens, batch, unit", [(10**9, 2**20, 2**13), (3_000_000, 4096, 256), (16_550_000_000_000, 16 * 2**20, 2**13)]
)
def test_the_schedule_counts_steps_and_warmup_as_a_step_by_step_walk_does(tokens, batch, unit):
    from workbench.plan.planner import _ramp, schedule_for

    ramp = _ramp(tokens, batch, unit)
    sizes, bounds, seen = [], [after for after, _ in ramp[1:]] + [tokens], 0
    for (_, size), end in zip(ramp, bounds, strict=True):  # every step, as the planner once listed them
        count = max(0, math.ceil((min(end, tokens) - seen) / size))
        sizes += [size] * count
        seen += count * size
    schedule = schedule_for(tokens, batch, unit)
    assert schedule.steps == len(sizes) and len(set(sizes)) > 1
    assert schedule.warmup_tokens == sum(sizes[: schedule.warmup_steps])


@pytest.mark.parametrize("at", ["-1", "0"])
def test_fit_at_must_be_a_positive_flop_count(tmp_path, at):
    one_line(invoke("fit", "--from-csv", RUNS_CSV, "--bootstrap", "0", "--no-plots", "--at", at), "--at", "positive")


# ------------------------------------------------------------------ files and specs
def _tiny(tmp_path: Path, **launch) -> Path:
    spec = yaml.safe_load((ROOT / "tests" / "data" / "tiny.yaml").read_text())
    spec["runs_root"] = str(tmp_path / "runs")
    spec["launch"] |= launch
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    "versions",
    [
        [{"version": "x"}],
        [{"version": float("nan")}],
        [1, 2],
        [{"version": 1, "run_ids": "r1"}],
        [{"version": 0}],
    ],
)
def test_a_damaged_versions_json_is_one_line_for_status_and_launch(tmp_path, versions):
    spec = _tiny(tmp_path)
    root = tmp_path / "runs" / "tiny"
    root.mkdir(parents=True)
    (root / "versions.json").write_text(json.dumps({"sweep": "tiny", "versions": versions}))
    one_line(invoke("sweep", "status", "tiny", "--runs", tmp_path / "runs"), "versions.json", "versions[0]")
    one_line(invoke("sweep", "launch", spec, "--dry-run"), "versions.json", "versions[0]")


@pytest.mark.parametrize(
    "text, words",
    [
        ("run_id,tokens,loss\nr0,abc,3\n", ["'tokens'", "row 1", "'abc'"]),
        ("run_id,tokens,loss\n", ["no rows"]),
        ("run_id,tokens,loss\nr0,-1e9,3\n", ["'tokens'", "row 1"]),
        ("run_id,flops,loss\nr0,nan,3\n", ["'flops'", "row 1"]),
    ],
)
def test_damaged_loss_curves_are_one_line(tmp_path, text, words):
    runs = tmp_path / "runs.csv"
    lines = RUNS_CSV.read_text().splitlines()
    runs.write_text("\n".join([lines[0] + ",run_id"] + [f"{row},r{i}" for i, row in enumerate(lines[1:])]) + "\n")
    curves = tmp_path / "curves.csv"
    curves.write_text(text)
    args = (
        "fit",
        "--from-csv",
        runs,
        "--curves",
        curves,
        "--bootstrap",
        "0",
        "--no-plots",
        "--out",
        tmp_path / "f.json",
    )
    one_line(invoke(*args), "curves.csv", *words)
    assert not (tmp_path / "f.json").exists()


@pytest.mark.parametrize(
    "column, value, words",
    [("loss", "1e300", "outside"), ("loss", "1e-300", "outside"), ("params", "0.5", "outside")],
)
def test_run_values_outside_their_range_are_one_line_without_warnings(tmp_path, column, value, words):
    lines = RUNS_CSV.read_text().splitlines()
    header = lines[0].split(",")
    row = lines[3].split(",")
    row[header.index(column)] = value
    runs = tmp_path / "runs.csv"
    runs.write_text("\n".join([lines[0], *lines[1:3], ",".join(row), *lines[4:]]) + "\n")
    result = invoke("fit", "--from-csv", runs, "--bootstrap", "0", "--no-plots", "--out", tmp_path / "f.json")
    line = one_line(result, f"'{column}'", "row 3", words)
    assert result.stderr.strip() == line  # no numpy warnings before it


def test_an_override_of_thousands_of_digits_or_with_a_newline_is_one_line():
    spec = ROOT / "tests" / "data" / "tiny.yaml"
    line = one_line(invoke("sweep", "plan", spec, "train.lr_peak=" + "1" * 5000), "command line", "4300 digits")
    assert len(line) < 600
    one_line(invoke("sweep", "plan", spec, "train.lr_peak=1\nname: x"), "command line", "\\n")


def test_a_peak_of_1e_minus_300_flops_in_a_sweep_is_refused(tmp_path):
    one_line(invoke("sweep", "plan", _tiny(tmp_path, gpu_peak_flops=1e-300)), "gpu_peak_flops")


def test_sizes_that_resolve_to_one_shape_are_refused(tmp_path):
    spec = yaml.safe_load((ROOT / "tests" / "data" / "tiny.yaml").read_text())
    spec["grid"]["sizes"] = ["10K", "10.1K", "20K"]
    path = tmp_path / "near.yaml"
    path.write_text(yaml.safe_dump(spec))
    one_line(invoke("sweep", "plan", path), "near.yaml", "train the same model", "one shape")


def test_an_sqlite_file_is_not_a_database(tmp_path):
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as db:
        db.execute("create table t (x)")
    before = path.read_bytes()
    for args in (("db", "query", "select 1"), ("report",), ("fit",)):
        one_line(invoke(*args, "--db", path), "s.db", "SQLite file, not DuckDB")
    assert path.read_bytes() == before


def test_a_fit_name_that_is_no_plain_name_is_refused_also_with_out(tmp_path):
    args = ("fit", "--from-csv", RUNS_CSV, "--method", "parametric", "--bootstrap", "0", "--no-plots")
    one_line(invoke(*args, "--name", "../evil", "--out", tmp_path / "f.json"), "--name", "'../evil'")
    assert not (tmp_path / "f.json").exists()


def test_repeated_rows_are_fitted_with_a_note(tmp_path):
    runs = tmp_path / "runs.csv"
    lines = RUNS_CSV.read_text().splitlines()
    runs.write_text("\n".join([*lines, *lines[1:]]) + "\n")
    args = ("fit", "--from-csv", runs, "--method", "parametric", "--bootstrap", "0", "--no-plots")
    result = invoke(*args, "--out", tmp_path / "f.json")
    assert result.exit_code == 0, result.output[-800:]
    assert f"{len(lines) - 1} rows repeat another row's params, tokens and loss" in result.stderr


def test_too_few_sizes_without_a_spread_says_so_without_infinity(tmp_path):
    spec = yaml.safe_load((ROOT / "tests" / "data" / "tiny.yaml").read_text())
    spec["grid"]["min_sizes_per_budget"] = 100000
    path = tmp_path / "few.yaml"
    path.write_text(yaml.safe_dump(spec))
    line = one_line(invoke("sweep", "plan", path), "has 2 sizes, all of them (no grid.spread)", "100000")
    assert "inf" not in line


def test_a_fit_json_that_holds_no_fit_is_refused_by_the_report_reader(tmp_path):
    from workbench.core.errors import WorkbenchError
    from workbench.fit.fitfile import load_fit

    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(WorkbenchError, match="empty.json holds no fit"):
        load_fit(tmp_path / "empty.json")
