"""A sweep checked before anything is written (workbench.sweep.preflight), its versions (workbench.sweep.versions),
the launch's summary, and the shipped sweeps: every one passes its own checks and can be fitted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from workbench.cli import app
from workbench.data.shards import read_manifest
from workbench.sweep.grid import plan_file

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.yaml"
runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def sweep_yaml(path: Path, **changes) -> Path:
    """tests/data/tiny.yaml with top-level sections updated (one level deep) and written to `path`."""
    data = yaml.safe_load(TINY.read_text())
    for section, values in changes.items():
        data[section] = {**data[section], **values} if isinstance(values, dict) else values
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_tokenizer_that_does_not_match_the_vocabulary_is_refused_before_anything_is_written(workdir):
    from workbench.data.prepare import prepare

    (workdir / "text.txt").write_text("the quick brown fox jumps over the lazy dog. " * 400)
    prepare([str(workdir / "text.txt")], workdir / "data" / "bpe", tokenizer="bpe", vocab_size=300)
    vocab = read_manifest(workdir / "data" / "bpe")["tokenizer"]["vocab_size"]  # 289: the merges this text allows
    path = sweep_yaml(workdir / "bpe.yaml", data={"sources": [{"path": "data/bpe"}]})  # model.vocab_size 256
    for args in (["sweep", "plan", path], ["sweep", "launch", path, "--dry-run"], ["sweep", "launch", path]):
        result = invoke(*args)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1, (args, result.output)
        assert lines[0].startswith("Error: sweep tiny: model.vocab_size 256 does not match the tokenizer of data/bpe")
        assert f"Set model.vocab_size: {vocab}" in lines[0]
    assert not (workdir / "runs").exists() and not (workdir / "workbench.duckdb").exists()
    fixed = invoke("sweep", "plan", path, f"model.vocab_size={vocab}", "--json")
    assert fixed.exit_code == 0 and json.loads(fixed.stdout)["checks"]["problems"] == []


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="this machine has Slurm")
def test_a_slurm_sweep_on_a_machine_without_slurm_is_one_line_and_writes_nothing(workdir):
    isoflop = ROOT / "sweeps" / "isoflop.yaml"
    missing = invoke("sweep", "launch", isoflop)
    assert missing.exit_code == 1 and len(missing.output.strip().splitlines()) == 1
    assert "data set data/pretrain (data.sources) not found (and 1 more problem" in missing.output
    # with its data present, the one problem left is Slurm's absence
    folder = workdir / "data" / "pretrain"
    folder.mkdir(parents=True)
    tokenizer = {"kind": "file", "vocab_size": 128256, "sha256": "0" * 64, "name": "Llama 3 (tokenizer.json)"}
    (folder / "manifest.json").write_text(json.dumps({"tokenizer": tokenizer}))
    for args in ([], ["--dry-run"]):
        result = invoke("sweep", "launch", isoflop, *args)
        assert result.exit_code == 1 and result.output.strip().splitlines() == [
            "Error: sweep isoflop: no Slurm on this machine (sbatch and srun not found). Launch from a Slurm "
            "login node, or on this machine with --executor local."
        ]
    assert not (workdir / "runs").exists()  # before: 75 config.yaml files, then submitit's traceback
    review = invoke("sweep", "plan", isoflop)  # a review anywhere: the machine's gaps are notes
    assert review.exit_code == 0 and "note: not launchable here: sweep isoflop: no Slurm" in review.output


def test_every_shipped_sweep_passes_its_own_checks_and_can_be_fitted():
    from workbench.fit.design import MIN_SIZES
    from workbench.sweep import preflight

    shipped = sorted((ROOT / "sweeps").glob("*.yaml"))
    assert {p.name for p in shipped} >= {"cpu.yaml", "isoflop.yaml", "small.yaml"} and not any(
        p.name == "tiny.yaml" for p in shipped
    )
    for path in shipped:
        plan = plan_file(path)
        report = preflight.check(plan, ROOT, plan.spec.launch.executor)
        assert [p.message for p in report.problems if not p.here] == [] and report.notes == (), path.name
        sizes: dict[float, set[int]] = {}
        for run in plan.runs:
            sizes.setdefault(run.budget_flops, set()).add(run.params)
        assert min(len(s) for s in sizes.values()) >= MIN_SIZES, path.name
    # the test fixture says what it lacks (2 sizes a budget), and is launched anyway (its min_sizes_per_budget)
    notes = preflight.check(plan_file(TINY), ROOT, "local").notes
    assert notes == (
        "sweep tiny: budgets 3e+09 (2), 6e+09 (2) have fewer sizes than the 3 a fit needs (a parabola): "
        "`workbench fit` leaves them out (grid.min_sizes_per_budget 2)",
    )


def test_the_launch_summary_counts_failed_runs_and_exits_1(workdir):
    from workbench.data.prepare import ensure_default_corpus

    broken = workdir / "data" / "broken"
    shutil.copytree(ensure_default_corpus(), broken)
    (broken / "train_000.bin").unlink()  # the manifest is there (the checks pass), a shard is not
    path = sweep_yaml(
        workdir / "broken.yaml", data={"sources": [{"path": "data/broken"}]}, grid={"budgets_flops": [3e9]}
    )
    result = invoke("sweep", "launch", path)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1
    assert "sweep tiny (version 1): ran 2 of 2 runs (local): 0 completed, 2 failed, 0 skipped" in result.output
    assert lines[-1].startswith("Error: 2 of 2 runs failed, first c3e9-") and "train_000.bin is missing" in lines[-1]


def test_a_changed_sweep_is_refused_and_a_new_version_is_what_fit_uses(workdir):
    grid = {"sizes": ["10K", "15K", "20K"], "min_sizes_per_budget": 3}
    path = sweep_yaml(workdir / "ver.yaml", name="ver", grid=grid)
    first = invoke("sweep", "launch", path)
    assert first.exit_code == 0 and "sweep ver (version 1): ran 6 of 6 runs (local): 6 completed" in first.output
    v1 = {r.run_id for r in plan_file(path).runs}

    sweep_yaml(path, name="ver", grid={**grid, "budgets_flops": [3e9, 9e9]})  # was [3e9, 6e9]
    refused = invoke("sweep", "launch", path)
    assert refused.exit_code == 1 and refused.output.strip().splitlines() == [
        "Error: sweep ver changed since version 1 was launched: grid.budgets_flops. Relaunch with --new-version to "
        "start version 2 (status, fit and report then use its runs), --force to replace version 1's runs, or give "
        "the sweep another name."
    ]
    dry = invoke("sweep", "launch", path, "--new-version", "--dry-run")
    assert dry.exit_code == 0 and "(would start new version 2 (grid.budgets_flops changed)): would submit 3 of 6" in (
        dry.output
    )
    versions = workdir / "runs" / "ver" / "versions.json"
    assert len(json.loads(versions.read_text())["versions"]) == 1  # a dry run writes nothing

    second = invoke("sweep", "launch", path, "--new-version")
    assert second.exit_code == 0, second.output
    assert (
        "sweep ver (new version 2 (grid.budgets_flops changed)): ran 3 of 6 runs (local): 3 completed, 0 failed, "
        "3 skipped" in second.output
    )  # the 3e9 runs are the same runs: reused, not retrained
    v2 = {r.run_id for r in plan_file(path).runs}
    assert len(v1 & v2) == 3 and [v["run_ids"] for v in json.loads(versions.read_text())["versions"]] == [
        sorted(v1),
        sorted(v2),
    ]
    status = json.loads(invoke("sweep", "status", "ver", "--json").stdout)
    assert status["counts"] == {"completed": 6} and status["scope"]["left_out"] == 3
    assert {r["run_id"] for r in status["runs"]} == v2

    fit = invoke("fit", "ver", "--method", "parametric", "--starts", "2", "--bootstrap", "0", "--no-plots")
    assert fit.exit_code == 0, fit.output
    assert "fit of sweep ver: 6 completed runs, version 2 of 2 (spec " in fit.output
    assert "left out 3 runs of other versions (--all-versions includes them)" in fit.output
    record = json.loads((workdir / "fits" / "ver.json").read_text())
    assert record["n_points"] == 6 and sorted(set(record["points"]["budget_flops"])) == [3e9, 9e9]
    assert record["sweep_version"] == {
        "version": 2,
        "versions": 2,
        "spec_hash": record["sweep_version"]["spec_hash"],
        "runs": 6,
        "left_out": 3,
    }
    every = invoke(
        "fit", "ver", "--method", "parametric", "--starts", "2", "--bootstrap", "0", "--no-plots", "--all-versions"
    )
    assert every.exit_code == 0 and json.loads((workdir / "fits" / "ver.json").read_text())["n_points"] == 9
    # each run records the hash of the spec that made it
    hashes = {
        rid: yaml.safe_load((workdir / "runs" / "ver" / rid / "config.yaml").read_text())["meta"]["sweep_hash"]
        for rid in v1 | v2
    }
    assert len({hashes[r] for r in v1}) == 1 and {hashes[r] for r in v2 - v1} == {record["sweep_version"]["spec_hash"]}
