"""`sweep tune`: a real Optuna study of tiny trials, resumed from its shared journal; LR/batch laws; plan --hparams."""

import json
import socket
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from typer.testing import CliRunner

from workbench.cli import app
from workbench.core.errors import WorkbenchError
from workbench.sweep.launch import materialize
from workbench.sweep.spec import load_spec
from workbench.sweep.tune import Where, fit_hparams, open_storage, scales, storage_path, trial_run, tune

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.yaml"
runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def _orphan_trial(spec, scale, storage) -> int:
    """A trial left RUNNING by a tuner that died before its run started (as after a kill -9)."""
    study = optuna.load_study(study_name=scale.study, storage=storage)
    dist = optuna.distributions
    trial = study.ask(
        {
            "lr": dist.FloatDistribution(1e-3, 3e-2, log=True),
            "batch_tokens": dist.CategoricalDistribution([256, 512]),
            "warmup_fraction": dist.FloatDistribution(0.0, 0.2),
        }
    )
    run = trial_run(spec, scale, trial.params, trial.number)
    config = materialize(run.config, Path.cwd())
    Path(config.run_dir).mkdir(parents=True)
    (Path(config.run_dir) / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    owner = {"host": socket.gethostname(), "pid": _dead_pid(), "job_id": None}
    for key, value in (
        ("run_id", run.run_id),
        ("run_dir", config.run_dir),
        ("params", run.params),
        ("owner", json.dumps(owner)),
    ):
        trial.set_user_attr(key, value)
    return trial.number


def test_study_finds_min_val_loss_resumes_from_journal_and_ingests(workdir):
    db = workdir / "wb.duckdb"
    result = tune(TINY, db=db, progress=False)  # 2 scales x 3 trials
    spec, lines = load_spec(TINY)
    journal = storage_path(spec, workdir)
    assert journal == workdir / "runs/tiny/tune/optuna.log" and journal.is_file()
    assert Path(result["path"]) == workdir / "fits/tiny-hparams.json"
    assert json.loads(Path(result["path"]).read_text())["hparams"] == result["hparams"]
    found = scales(spec, Where(str(TINY), lines))
    storage = open_storage(journal)
    for scale, best in zip(found, result["best"], strict=True):
        run_dirs = sorted((workdir / "runs/tiny/tune" / scale.label).iterdir())
        assert len(run_dirs) == 3
        finals = {d.name: json.loads((d / "final.json").read_text()) for d in run_dirs}
        assert all(f["status"] == "completed" for f in finals.values())
        best_run = min(finals, key=lambda rid: finals[rid]["val_loss"])
        assert best["run_id"] == best_run and best["val_loss"] == pytest.approx(finals[best_run]["val_loss"])
        config = yaml.safe_load((workdir / "runs/tiny/tune" / scale.label / best_run / "config.yaml").read_text())
        assert config["optim"]["lr_peak"] == pytest.approx(best["lr"]) and 1e-3 <= best["lr"] <= 3e-2
        assert config["batch"]["batch_tokens"] == best["batch_tokens"] in (256, 512)
        tokens, batch = config["stop"]["tokens"], best["batch_tokens"]
        assert config["schedule"]["warmup_tokens"] == int(best["warmup_fraction"] * tokens) // batch * batch
        assert config["meta"]["sweep"] == "tiny-tune" and config["meta"]["budget_flops"] == scale.budget_flops
        study = optuna.load_study(study_name=scale.study, storage=storage)
        assert study.best_trial.number == best["trial"] and study.best_value == best["val_loss"]

    # a tuner killed mid-trial leaves a RUNNING trial: the next call adopts and finishes it, and tops up
    orphan = _orphan_trial(spec, found[0], storage)
    again = invoke("sweep", "tune", TINY, "--trials", 4, "--db", db, "--json")
    assert again.exit_code == 0, again.output
    record = json.loads(again.stdout)
    for scale in found:
        study = optuna.load_study(study_name=scale.study, storage=open_storage(journal))
        assert [t.number for t in study.trials] == [0, 1, 2, 3]  # resumed: grown, not restarted
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    adopted = optuna.load_study(study_name=found[0].study, storage=open_storage(journal)).trials[orphan]
    final = json.loads((Path(adopted.user_attrs["run_dir"]) / "final.json").read_text())
    assert adopted.user_attrs["status"] == "completed" and adopted.value == final["val_loss"]
    assert [b["trials"] for b in record["best"]] == [{"complete": 4}, {"complete": 4}]

    from workbench.store.database import Store

    runs = Store(db, read_only=True).runs("tiny-tune")
    assert len(runs) == 8 and set(runs["status"]) == {"completed"}
    for best in record["best"]:
        group = runs[runs["budget_flops"] == best["budget_flops"]]
        assert group["val_loss"].min() == pytest.approx(best["val_loss"])


def test_fit_hparams_recovers_known_power_laws():
    budgets = np.logspace(17, 20, 6)
    rng = np.random.default_rng(0)
    noise = np.exp(rng.normal(0, 0.05, (2, budgets.size)))
    exact = [{"budget_flops": c, "lr": 0.3118 * c**-0.125, "batch_tokens": 0.292 * c**0.3271} for c in budgets]
    laws = fit_hparams(exact)
    assert laws["lr"]["coef"] == pytest.approx(0.3118, rel=1e-8) and laws["lr"]["exp"] == pytest.approx(-0.125)
    assert laws["batch"]["coef"] == pytest.approx(0.292, rel=1e-8) and laws["batch"]["exp"] == pytest.approx(0.3271)
    noisy = [
        {**b, "lr": b["lr"] * n1, "batch_tokens": b["batch_tokens"] * n2}
        for b, n1, n2 in zip(exact, *noise, strict=True)
    ]
    laws = fit_hparams(noisy)
    assert abs(laws["lr"]["exp"] + 0.125) < 0.03 and abs(laws["batch"]["exp"] - 0.3271) < 0.03
    one = fit_hparams([{"budget_flops": 1e11, "lr": 0.01, "batch_tokens": 2048}])
    assert one == {
        "lr": {"coef": pytest.approx(0.01), "exp": None},
        "batch": {"coef": pytest.approx(2048), "exp": None},
    }
    with pytest.raises(WorkbenchError, match="no scale has a completed trial"):
        fit_hparams([])


def test_plan_takes_lr_and_batch_from_hparams_file(tmp_path):
    path = tmp_path / "tuned-hparams.json"
    budgets = [1e18, 1e19, 1e20]
    best = [{"budget_flops": c, "lr": 2.0 * c**-0.15, "batch_tokens": 0.5 * c**0.3} for c in budgets]
    path.write_text(json.dumps({"hparams": fit_hparams(best), "best": best, "source": "test"}))
    result = invoke("plan", "--compute", "1e21", "--hparams", path, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["lr_peak"] == pytest.approx(2.0 * 1e21**-0.15, rel=1e-6)
    seq = record["shape"]["seq_len"]
    seqs = record["batch_tokens"] // seq  # the tuned batch, rounded to 2^k or 3 x 2^k whole sequences
    assert record["batch_tokens"] == seqs * seq and (
        seqs & (seqs - 1) == 0 or (seqs % 3 == 0 and (s3 := seqs // 3) & (s3 - 1) == 0)
    )
    assert record["batch_tokens"] == pytest.approx(0.5 * record["spent_flops"] ** 0.3, rel=0.2)
    assert "tuned-hparams.json" in record["law"]["hparams_source"]

    one = fit_hparams([{"budget_flops": 1e11, "lr": 0.012, "batch_tokens": 2048}])
    path.write_text(json.dumps({"hparams": one}))
    record = json.loads(invoke("plan", "--compute", "3e11", "--hparams", path, "--json").stdout)
    assert record["lr_peak"] == pytest.approx(0.012) and record["batch_tokens"] == 2048
    assert "one budget" in record["law"]["hparams_source"]

    for text, message in (("{}", "has no hparams laws"), ("{", "is not valid JSON")):
        path.write_text(text)
        bad = invoke("plan", "--compute", "1e21", "--hparams", path)
        assert bad.exit_code == 1 and message in bad.output and len(bad.output.strip().splitlines()) == 1
    missing = invoke("plan", "--compute", "1e21", "--hparams", tmp_path / "nope.json")
    assert missing.exit_code == 1 and "not found" in missing.output


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["tune"].update(trails=3), "unknown key 'tune.trails'"),
        (lambda d: d["tune"].update(batch_tokens=[256, 300]), "tune.batch_tokens 300 is not a multiple of"),
        (lambda d: d["tune"].update(lr={"low": 0.1, "high": 0.01}), "low 0.1 must be below high 0.01"),
        (lambda d: d["tune"].update(sizes=["10K", "20K", "30K"]), "sizes must hold 1 size or one per budget"),
        (lambda d: d["tune"].update(batch_tokens=[65536]), "tune batch 65536 at scale c3e9-n9.93k"),
        (lambda d: d.pop("tune"), "has no `tune:` section"),
    ],
)
def test_bad_tune_sections_are_one_line_errors_before_training(workdir, edit, message):
    data = yaml.safe_load(TINY.read_text())
    edit(data)
    path = workdir / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = invoke("sweep", "tune", path, "--executor", "local")
    assert result.exit_code == 1 and message in result.output, result.output
    assert result.output.startswith(f"Error: {path}") and len(result.output.strip().splitlines()) == 1
    assert not (workdir / "runs").exists()


def test_trial_runs_are_distinct_and_named_by_scale():
    spec, lines = load_spec(TINY)
    scale = scales(spec, Where(str(TINY), lines))[0]
    params = {"lr": 0.01, "batch_tokens": 512, "warmup_fraction": 0.1}
    a, b = trial_run(spec, scale, params, 0), trial_run(spec, scale, params, 1)
    assert a.run_id.startswith("t000-c3e9-n9.93k-") and b.run_id.startswith("t001-c3e9-n9.93k-")
    assert a.config.run_dir == f"runs/tiny/tune/c3e9-n9.93k/{a.run_id}"
    assert a.config.optim.lr_peak == 0.01 and a.config.batch.batch_tokens == 512
    assert a.budget_flops == 3e9 and a.config.meta["tune_trial"] == 0 and a.config.meta["group"] == scale.label


@pytest.mark.slow
def test_parallel_local_trials_in_a_process_pool(workdir):
    result = tune(TINY, db=workdir / "wb.duckdb", parallel=2, progress=False)
    assert [sum(b["trials"].values()) for b in result["best"]] == [3, 3]
    assert all((Path(b["run_dir"]) / "train.log").is_file() for b in result["best"])  # pool workers log there
