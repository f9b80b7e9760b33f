"""`workbench plan` from a sweep's fit: it inherits the sweep (seq_len, vocabulary, tokenizer, init, schedule,
batch and LR rules), names published-run rules only when asked or far outside the sweep's budgets, prints one
predicted loss, no GPU-hours for a CPU sweep, and refuses a degenerate parametric law in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from workbench.cli import app
from workbench.sweep.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
LAW = {"E": 1.8, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.34}  # N* about 3.2K at 3e9, 4.5K at 6e9


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def fit_file(tmp_path: Path, law: dict = LAW, sizes=(2e3, 2e4), **spec_changes) -> Path:
    """A fit record of the tiny test sweep (budgets 3e9, 6e9; seq 64; cpu) with `law` and its spec."""
    spec, _ = load_spec(ROOT / "tests" / "data" / "tiny.yaml")
    body = spec.model_dump(mode="json")
    for section, values in spec_changes.items():
        body[section] = {**body[section], **values}
    record = {
        "name": "tiny",
        "sweep": "tiny",
        "parametric": law,
        "points": {"params": [sizes[0], sizes[1]] * 2, "budget_flops": [3e9, 3e9, 6e9, 6e9]},
        "sweep_spec": body,
        "sweep_version": {"version": 1, "versions": 1, "spec_hash": "0123456789ab", "runs": 4, "left_out": 0},
    }
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(record))
    return path


def plan(*args) -> tuple[dict, str]:
    text = CliRunner().invoke(app, ["plan", *map(str, args)])
    result = CliRunner().invoke(app, ["plan", *map(str, args), "--json"])
    assert result.exit_code == 0 and text.exit_code == 0, result.output
    return json.loads(result.stdout), text.output


def test_a_plan_from_a_sweeps_fit_trains_as_the_sweep_did(tmp_path):
    record, text = plan("--law", fit_file(tmp_path), "--compute", "1e11", "--out", "flagship.yaml")
    assert record["shape"]["seq_len"] == 64 and record["shape"]["vocab_size"] == 256  # before: 256, 256 by default
    inherited = record["inherited"]
    assert (inherited["sweep"], inherited["seq_len"], inherited["vocab_size"]) == ("tiny", 64, 256)
    assert inherited["tokenizer"] == "bytes (the embedded corpus)" and inherited["data"] == ["@default"]
    assert inherited["spec_hash"] == "0123456789ab"
    assert record["hparams"]["rule"] == "sweep" and record["hparams"]["warnings"] == []
    assert (record["batch_tokens"], record["lr_peak"]) == (256, 3e-3)  # train.batch_tokens and train.lr_peak
    assert record["schedule"]["kind"] == "cosine" and record["schedule"]["floor"] == 0.1
    assert record["target"] == "cpu" and record["gpu_hours"] is None and record["layout"] is None
    assert "GPU-hours on" not in text and text.count("predicted loss") == 1  # before: 2 losses, GPU-hours on h100
    assert record["predicted_loss"]["loss"] == pytest.approx(record["shape"]["loss"])
    config = yaml.safe_load((tmp_path / "flagship.yaml").read_text())
    assert config["data"]["seq_len"] == 64 and config["model"]["init_std"] == 0.02 and config["layout"] is None
    assert config["schedule"]["warmup_tokens"] <= 20 * 256 and config["batch"]["ramp"] == []
    assert config["runtime"]["device"] == "cpu" and config["eval"]["batches"] == 2


def test_published_rules_only_when_asked_or_far_outside_the_sweeps_budgets(tmp_path):
    path = fit_file(tmp_path)
    asked, _ = plan("--law", path, "--compute", "1e11", "--hparams", "published")
    assert asked["hparams"]["rule"] in ("law", "anchors")
    assert "batch and LR from published-run rules (asked for with --hparams published)" in asked["inherited"]["lines"]
    far, text = plan("--law", path, "--compute", "1e13")  # 3.2 decades past 6e9
    assert far["hparams"]["rule"] in ("law", "anchors")
    assert far["hparams"]["warnings"][0].startswith("the plan's 1e+13 FLOPs lie 3.2 decades outside the sweep's")
    assert "warning          batch/LR the plan's 1e+13 FLOPs" in text


def test_a_gpu_sweep_plans_gpu_hours(tmp_path):
    runtime = {"device": "cuda", "dtype": "bf16", "threads": 1, "log_every_steps": 10}
    record, text = plan("--law", fit_file(tmp_path, train={"runtime": runtime}), "--compute", "1e11")
    assert record["target"] == "gpu" and record["gpu_hours"] > 0 and record["layout"]["gpus"] >= 1
    assert "GPU-hours" in text and "h100 GPUs" in text and "memory per GPU" in text


@pytest.mark.parametrize(
    "law, sizes, reasons, hint",
    [
        (
            {**LAW, "alpha": 5.2, "E": 5e-7},
            (2e3, 2e4),
            "alpha 5.2 is outside [0.05, 2.5]; E 5e-07 is below 0.01 nats",
            "Add budgets (grid.budgets_flops: 3 or more over a decade) with 5 sizes each around their minima",
        ),
        (LAW, (5e4, 1e5), "its N* at 3e+09 FLOPs (3.2e+03) lies outside", "Add sizes below 50K"),
    ],
)
def test_a_degenerate_law_is_refused_in_one_line_with_what_to_add(tmp_path, law, sizes, reasons, hint):
    result = CliRunner().invoke(app, ["plan", "--law", str(fit_file(tmp_path, law, sizes)), "--compute", "1e11"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: {tmp_path / 'tiny.json'}: the parametric law cannot be planned with: ")
    assert reasons in lines[0] and hint in lines[0] and "--method isoflop" in lines[0]
