"""workbench plan: closed forms, built-in laws, fit files, inference-aware sizing, layout, flagship config."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from workbench.cli import app
from workbench.core.configfile import load
from workbench.fit.laws import CHINCHILLA, ParametricLaw, builtin_law, law_from_fit
from workbench.model import flops
from workbench.model.shapes import PRESETS, ModelShape, shape_for_params
from workbench.plan.hardware import GPUS, resolve_gpu
from workbench.plan.layout_cost import choose_layout, memory_per_gpu
from workbench.plan.planner import inference_optimal, make_plan, schedule_for
from workbench.records import parse_fit
from workbench.train.config import TrainConfig

KEYS = {
    "schema_version",
    "compute_flops",
    "params",
    "tokens",
    "tokens_per_param",
    "shape",
    "loss",
    "ci",
    "batch_tokens",
    "lr_peak",
    "hparams",
    "spent_flops",
    "schedule",
    "gpu_hours",
    "days",
    "layout",
    "law",
    "cost",
    "warnings",
    "target",
    "predicted_loss",
}
FIT = {"E": 1.8, "A": 520.0, "B": 1800.0, "alpha": 0.35, "beta": 0.36}


def closed_form(E, A, B, alpha, beta, budget_flops):
    """DESIGN.md: N_opt = G (C/6)^(beta/(alpha+beta)), G = (alpha A/(beta B))^(1/(alpha+beta)), D = C/(6N)."""
    g = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    n = g * (budget_flops / 6) ** (beta / (alpha + beta))
    return n, budget_flops / (6 * n)


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path, monkeypatch):
    """Each test plans from a folder without fits/: with exactly one fit there, `plan` would use it by default."""
    monkeypatch.chdir(tmp_path)


def run(*args: str):
    return CliRunner().invoke(app, ["plan", *args])


def plan_json(*args: str) -> dict:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


MINIMA = [{"budget_flops": c, "params": 0.1 * c**0.5, "tokens": 1.6 * c**0.5, "loss": 3.0} for c in (1e18, 1e19)]


@pytest.fixture
def fit_file(tmp_path):
    """A fit JSON with known parameters and 200 bootstrap draws (2% noise, one failed resample)."""
    rng = np.random.default_rng(0)
    draws = {k: (v * np.exp(rng.normal(0, 0.02, 200))).tolist() for k, v in FIT.items()}
    draws["E"][7] = None  # a failed resample: skipped
    data = {
        "name": "synthetic",
        "sweep": "iso",
        "data_hash": "abc",
        "parametric": {**FIT, "a": FIT["beta"] / (FIT["alpha"] + FIT["beta"]), "ci": {}, "draws": draws},
        "isoflop": {"budgets": [1e18, 1e19], "minima": MINIMA, "excluded": [], "G": 0.1, "a": 0.5, "H": 1.6, "b": 0.5},
    }
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(data))
    return path, draws


@pytest.mark.parametrize("budget", ["1e21", "3.8e25"])
def test_chinchilla_matches_closed_form_and_keys(budget):
    record = plan_json("--compute", budget, "--law", "chinchilla")
    assert set(record) == KEYS
    n, d = closed_form(1.69, 406.4, 410.7, 0.34, 0.28, float(budget))
    assert record["params"] == pytest.approx(n, rel=0.005)
    assert record["tokens"] == pytest.approx(d, rel=0.005)
    assert record["tokens_per_param"] == pytest.approx(d / n, rel=1e-9)
    assert record["loss"] == pytest.approx(1.69 + 406.4 / n**0.34 + 410.7 / d**0.28, rel=1e-9)
    assert record["ci"] is None  # a published law has no draws
    shape = record["shape"]
    built = ModelShape(**{k: shape[k] for k in ModelShape.__dataclass_fields__})
    # the rung near N* with the lowest predicted loss under 6N + attention: no worse than the nearest rung
    nearest = shape_for_params(n, 128256)
    # attention (12 L T d at 8K context) is a third or more of a ~2B model's FLOPs: a wider, shallower rung
    # buys more tokens, so the best rung can sit above N*
    assert 0.5 < shape["params"] / n < 1.5

    def predicted(s):
        tokens = flops.tokens_for_budget(s, float(budget), 8192)
        return 1.69 + 406.4 / s.params**0.34 + 410.7 / tokens**0.28

    assert predicted(built) <= predicted(nearest)
    assert shape["params"] == built.params
    assert shape["tokens"] == flops.tokens_for_budget(built, float(budget), 8192)
    assert shape["train_flops"] <= float(budget) < shape["train_flops"] + shape["flops_per_token"]


def test_fit_file_closed_form_and_bootstrap_intervals(fit_file):
    path, draws = fit_file
    record = plan_json("--compute", "1e21", "--law", str(path))
    n, d = closed_form(*FIT.values(), 1e21)
    assert record["params"] == pytest.approx(n, rel=0.005)
    assert record["tokens"] == pytest.approx(d, rel=0.005)
    rows = [r for r in zip(*(draws[k] for k in FIT), strict=True) if None not in r]
    optima = np.array([closed_form(*r, 1e21) for r in rows])
    ci = record["ci"]
    assert ci["draws"] == 199
    assert ci["params"]["p5"] == pytest.approx(np.percentile(optima[:, 0], 5), rel=1e-9)
    assert ci["tokens"]["p95"] == pytest.approx(np.percentile(optima[:, 1], 95), rel=1e-9)
    assert ci["params"]["p5"] < record["params"] < ci["params"]["p95"]
    assert ci["loss"]["p5"] < record["loss"] < ci["loss"]["p95"]
    assert record["law"]["isoflop_check"]["params"] == pytest.approx(0.1 * 1e21**0.5)


@pytest.mark.slow  # the 30-day plan's GPU search: about 20 s, 100 s under coverage
def test_llama3_lands_near_400b_16t_with_the_coefficient_note():
    result = run("--compute", "3.8e25", "--law", "llama3")
    assert result.exit_code == 0, result.output
    assert "0.29, 0.53" in result.output and "16.55T" in result.output
    record = plan_json("--compute", "3.8e25", "--law", "llama3")
    assert record["tokens"] == pytest.approx(0.299 * 3.8e25**0.537, rel=1e-9)
    assert 15.5e12 < record["tokens"] < 17e12
    assert 370e9 < record["params"] < 420e9
    assert record["params"] == pytest.approx(3.8e25 / (6 * record["tokens"]), rel=1e-9)
    assert record["loss"] is None
    assert any("10.5T" in note for note in record["law"]["notes"])
    assert "1.05e+13" in builtin_law("llama3", 3.8e25).notes[0]  # the text's coefficients at this C


def test_inference_aware_sizing():
    law = CHINCHILLA.parametric
    base = inference_optimal(law, 1e21, 0)
    n_opt, d_opt = law.optimum(1e21)
    assert (base.params, base.tokens) == (n_opt, d_opt)
    previous = base
    for served in (1e11, 1e12, 1e13, 1e14):
        result = inference_optimal(law, 1e21, served)
        assert result.params < previous.params and result.tokens > previous.tokens
        assert law.loss(result.params, result.tokens) == pytest.approx(base.loss, rel=1e-10)
        assert result.total_flops < result.compute_optimal_total_flops
        assert result.extra_train_flops > 0
        for factor in (0.99, 1.01):  # a true minimum of 6 N D + 2 N I along the loss contour
            n = result.params * factor
            assert 6 * n * law.tokens_for_loss(n, base.loss) + 2 * n * served > result.total_flops
        previous = result
    tiny = inference_optimal(law, 1e21, 1.0)
    assert tiny.params == pytest.approx(n_opt, rel=1e-6)
    steep = ParametricLaw(1.7, 400.0, 60.0, 0.34, 0.04)  # a small beta: D in log space, no overflow
    served = inference_optimal(steep, 1e21, 1e15)
    assert served.params < steep.optimum(1e21)[0] and served.total_flops < served.compute_optimal_total_flops


def test_inference_cli_trains_a_smaller_model_longer():
    plain = plan_json("--compute", "1e21")
    record = plan_json("--compute", "1e21", "--inference-tokens", "2T")
    inf = record["inference"]
    assert inf["params"] < record["params"] and inf["tokens"] > record["tokens"]
    assert record["shape"]["params"] < plain["shape"]["params"]
    assert record["shape"]["tokens"] > plain["shape"]["tokens"]
    assert inf["total_flops"] < inf["compute_optimal_total_flops"]
    assert set(record) == KEYS | {"inference"}


def test_gpus_days_become_the_budget():
    # the budget is what 1024 A100s deliver in 10 wall days at the plan's own modelled MFU and goodput
    record = plan_json("--gpus", "1024", "--days", "10", "--gpu", "a100")
    cost, lay = record["cost"], record["layout"]
    assert lay["gpus"] + lay["idle_gpus"] == 1024 and cost["mfu_source"] == "modelled"
    assert cost["days_with_failures"]["value"] == pytest.approx(10, rel=0.01)
    used = lay["gpus"] / 1024
    rate = cost["mfu"] * cost["goodput"]["fraction"] * used
    assert record["compute_flops"] == pytest.approx(1024 * 312e12 * rate * 10 * 86400, rel=0.01)
    assert record["gpu_hours"] == pytest.approx(record["shape"]["train_flops"] / (312e12 * cost["mfu"]) / 3600)
    assert record["days"] == pytest.approx(record["gpu_hours"] / lay["gpus"] / 24)
    assert record["warnings"] == []
    # an --mfu override sizes the budget and the GPU time instead, labelled as such
    fixed = plan_json("--gpus", "1024", "--days", "10", "--gpu", "a100", "--mfu", "0.5")
    assert fixed["cost"]["mfu"] == 0.5 and fixed["cost"]["mfu_source"] == "--mfu override"
    assert fixed["cost"]["days_with_failures"]["value"] == pytest.approx(10, rel=0.01)
    custom = plan_json("--compute", "1e22", "--gpu", "500", "--gpus", "64")
    assert custom["layout"]["peak_tflops"] == 500 and custom["layout"]["gpus"] <= 64
    assert any("no published run calibrates 500 TFLOPS" in w for w in custom["warnings"])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--compute", "1e25", "--gpus", "128"], "more than a year"),
        (["--compute", "1e26", "--gpus", "1024"], "more than a year"),
        # the two below search GPU counts against a target of days: 20-100 s each (--all only)
        pytest.param(["--compute", "3.8e25", "--law", "llama3"], "misses its 30-day target", marks=pytest.mark.slow),
        pytest.param(
            ["--compute", "3.8e25", "--law", "llama3", "--days", "20"],
            "misses its 20-day target",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_multi_year_and_missed_target_plans_warn_and_strict_exits_1(args, needle):
    record = plan_json(*args)
    assert any(needle in w for w in record["warnings"]), record["warnings"]
    lines = run(*args).output.splitlines()
    assert any(line.split()[0] == "warning" and needle in line for line in lines if line.startswith("  "))
    strict = run(*args, "--strict")
    assert strict.exit_code == 1
    last = strict.output.strip().splitlines()[-1]
    assert last.startswith("Error: --strict: the plan has") and needle in last


def test_a_plan_without_warnings_passes_strict_and_every_warning_is_in_one_list():
    result = run("--compute", "3e21", "--gpus", "64", "--strict", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["warnings"] == []
    # the batch/LR rule's warning (below its anchors) lands in the same list, as does a repeated-data warning
    record = plan_json("--compute", "1e21", "--gpus", "8", "--unique-tokens", "1e9")
    assert any(w.startswith("batch/LR extrapolated") for w in record["warnings"])
    assert record["hparams"]["warnings"] and record["data_constrained"]["warnings"]
    assert any("epochs" in w for w in record["warnings"])


def test_batch_and_lr_default_rule_and_fitted_hparams(tmp_path, fit_file):
    record = plan_json("--compute", "1e20")
    spent = record["spent_flops"]
    assert 0.999e20 < spent <= 1e20  # batch and LR follow the spent budget
    # DeepSeek's 0.292 C^0.3271 = 1.0M tokens = 124 sequences, rounded to 2^k or 3 x 2^k sequences: 128
    assert record["batch_tokens"] == 128 * 8192
    assert record["lr_peak"] == pytest.approx(0.3118 * spent**-0.125)
    assert "DeepSeek LLM" in record["law"]["hparams_source"] and record["hparams"]["rule"] == "law"
    assert record["hparams"]["warnings"] == []
    path, _ = fit_file
    data = json.loads(path.read_text())
    data["hparams"] = {"batch": {"coef": 0.5, "exp": 0.3}, "lr": {"coef": 2.0, "exp": -0.15}}
    tuned = tmp_path / "tuned.json"
    tuned.write_text(json.dumps(data))
    record = plan_json("--compute", "1e20", "--law", str(tuned))
    assert record["batch_tokens"] == 64 * 8192  # 0.5 C^0.3 = 61 sequences -> 64
    assert record["lr_peak"] == pytest.approx(2.0 * record["spent_flops"] ** -0.15)
    assert record["hparams"]["rule"] == "tuned"
    assert "tuned.json" in record["law"]["hparams_source"]


def test_schedule_scales_the_llama3_recipe():
    # at Llama 3's scale: 16.55T tokens, 16M batch -> warmup ~0.67% of the steps, ramp at 252M and 2.87T
    sched = schedule_for(int(16.55e12), 16 * 2**20, 8192)
    assert [b for _, b in sched.ramp] == [4 * 2**20, 8 * 2**20, 16 * 2**20]
    assert [a for a, _ in sched.ramp] == [0, pytest.approx(252e6, rel=1e-6), pytest.approx(2.87e12, rel=1e-6)]
    assert sched.warmup_steps == math.ceil(sched.steps * 8000 / 1.2e6)
    assert sched.anneal_tokens == 4 * 16 * 2**20  # 40M is under 4 steps of 16M
    assert sched.floor == 0.01
    small = schedule_for(1_000_000, 4096, 512)
    assert small.warmup_steps >= math.ceil(0.05 * small.steps)  # short runs warm up for 5% at least
    assert small.anneal_tokens == 4 * 4096
    assert sum(1 for _ in small.ramp) >= 2 and small.ramp[0][0] == 0


def test_memory_and_layout():
    shape = PRESETS["405b"]
    mem = memory_per_gpu(shape, 8192, 1, tp=8, pp=16, dp=1, recompute="full")
    assert mem.pp_rank == 0  # the first stage: the most micro-batches in flight and the embedding's gradient
    stage_params = (
        (8 * flops.layer_params(16384, 128, 8, 53248) - 8 * 2 * 16384) / 8 + 8 * 2 * 16384 + 128256 * 16384 / 8
    )
    # under PP FSDP2 keeps the stage unsharded: bf16 weights (2) and fp32 gradients (4), + fp32 master, AdamW / DP
    assert mem.weights + mem.optimizer == pytest.approx((2 + 12) * stage_params)
    sharded = memory_per_gpu(shape, 8192, 1, tp=8, pp=16, dp=64, recompute="full")
    assert sharded.weights + sharded.optimizer == pytest.approx((2 + 12 / 64) * stage_params)
    h100 = resolve_gpu("h100")
    layout = choose_layout(shape, 8192, 1, 2048, h100, 16384, fixed_gpus=True)
    assert layout.tp <= 8 and layout.memory.total <= layout.memory_limit_bytes <= 0.9 * 80e9
    assert layout.tp * layout.pp * layout.dp == layout.gpus <= 16384
    small = choose_layout(PRESETS["8b"], 8192, 1, 512, h100, 64, fixed_gpus=True)
    # 8B at FSDP 64 reshards every block: 2 GB of sharded state, 46.7 GB of activations without recompute, 12.6 GB
    # of cross-entropy: 62.6 GB fits the 89% of 80 GB the FSDP family may use, and no TP is fastest
    assert (small.tp, small.pp, small.dp, small.recompute) == (1, 1, 64, "none")
    assert small.memory.total == pytest.approx(62.6e9, rel=0.01)
    roomy = choose_layout(PRESETS["70b"], 8192, 1, 512, GPUS["b200"], 512, fixed_gpus=True)
    tight = choose_layout(PRESETS["70b"], 8192, 1, 512, h100, 512, fixed_gpus=True)
    assert roomy.tp * roomy.pp <= tight.tp * tight.pp


def test_flagship_yaml_loads_and_matches_the_plan(tmp_path):
    out = tmp_path / "flagship.yaml"
    result = run("--compute", "1e12", "--out", str(out), "--data", str(tmp_path / "corpus"), "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    loaded = load(TrainConfig, out)
    shape = record["shape"]
    assert loaded.data.seq_len == 256 and loaded.model.vocab_size == 256  # CPU-sized defaults
    assert loaded.model.shape().params == shape["params"]
    assert loaded.stop.tokens == shape["tokens"]
    assert loaded.optim.lr_peak == pytest.approx(record["lr_peak"])
    assert loaded.batch.batch_tokens == record["batch_tokens"]
    unit = loaded.data.seq_len * loaded.batch.micro_batch
    assert all(r.batch_tokens % unit == 0 for r in loaded.batch.ramp) and loaded.batch.ramp[0].after_tokens == 0
    assert loaded.schedule.warmup_tokens == record["schedule"]["warmup_tokens"]
    assert loaded.meta["law"] == "epoch" and loaded.meta["compute_flops"] == 1e12
    assert loaded.data.sources[0].path == str(tmp_path / "corpus")
    # one CPU process: nothing to lay out, so no layout block (the run trains as a sweep run does), and no
    # layout string in meta either
    lay = record["layout"]
    assert lay["gpus"] == 1 and (lay["tp"], lay["pp"], lay["dp"]) == (1, 1, 1)
    assert loaded.layout is None and "layout" not in loaded.meta


def test_plans_table_row(tmp_path):
    from workbench.store import database

    db = tmp_path / "wb.duckdb"
    result = run("--compute", "1e20", "--db", str(db))
    assert result.exit_code == 0, result.output
    assert "recorded plan" in result.output
    with database.Store(db) as s:
        rows = s.plans()
    assert len(rows) == 1 and rows["budget_flops"][0] == 1e20


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--compute", "-1e21"], "--compute"),
        (["--compute", "1e21", "--mfu", "0"], "--mfu"),
        (["--compute", "1e21", "--mfu", "1.5"], "--mfu"),
        (["--compute", "1e21", "--gpu", "x100"], "unknown GPU"),
        (["--compute", "1e21", "--law", "gopher"], "unknown law"),
        (["--compute", "1e21", "--law", "missing/fit.json"], "not found"),
        (["--gpus", "8"], "no compute budget"),
        (["--compute", "1e21", "--gpus", "8", "--days", "3"], "all given"),
        (["--compute", "3.8e25", "--law", "llama3", "--inference-tokens", "1e13"], "tokens only"),
        (["--compute", "1e25", "--gpus", "8"], "does not fit"),
    ],
)
def test_bad_input_is_one_line(args, needle):
    result = run(*args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], result.output


def test_bad_fit_files_are_one_line(tmp_path):
    cases = {
        "iso.json": json.dumps({"name": "iso", "parametric": None, "isoflop": {"G": 1, "a": 0.5}}),
        "text.json": "{not json",
        "neg.json": json.dumps({"parametric": {**FIT, "alpha": -0.3}}),
        "ragged.json": json.dumps({"parametric": {**FIT, "draws": {k: [1.0] * (3 if k != "B" else 2) for k in FIT}}}),
    }
    needles = {
        "iso.json": "no parametric law",
        "text.json": "not valid JSON",
        "neg.json": "parametric.alpha",
        "ragged.json": "differ in length",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        result = run("--compute", "1e21", "--law", str(tmp_path / name))
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and needles[name] in lines[0], result.output


def test_law_from_fit_keeps_good_draws_only():
    draws = {k: [v, float("nan"), v * 1.01] for k, v in FIT.items()}
    law = law_from_fit(parse_fit({"parametric": {**FIT, "draws": draws}}, "x.json"), "x.json")
    assert law.draws.size == 2 and law.draws.row(0) == ParametricLaw(**FIT)


def test_plan_modules_import_no_torch_or_scipy():
    code = (
        "import sys, workbench.cli, workbench.plan.planner, workbench.fit.laws, workbench.plan.layout_cost;"
        "print(any(m in sys.modules for m in ('torch', 'scipy', 'duckdb')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_epoch_law_and_make_plan_directly():
    law = builtin_law("epoch", 1e22)
    plan = make_plan(law, 1e22, gpu=resolve_gpu("989"), mfu=0.4, seq_len=8192, vocab_size=128256, days=10)
    n, d = closed_form(1.82, 482.01, 2085.43, 0.3478, 0.3658, 1e22)
    assert (plan.params, plan.tokens) == (pytest.approx(n, rel=1e-12), pytest.approx(d, rel=1e-12))
    assert plan.days <= 10.0 + 1e-9  # GPUs chosen to finish within the days asked


def test_cpu_flagship_trains(tmp_path):
    """The flagship YAML for a CPU budget on the embedded corpus trains unchanged with `workbench train`."""
    from workbench.data.prepare import ensure_default_corpus

    ensure_default_corpus()  # where the flagship YAML's default data path points
    out = tmp_path / "flagship.yaml"
    result = run("--compute", "3e11", "--out", str(out), "--run-dir", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    trained = CliRunner().invoke(app, ["train", str(out)])
    assert trained.exit_code == 0, trained.output
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    assert final["status"] == "completed" and math.isfinite(final["val_loss"])
    planned = load(TrainConfig, out).stop.tokens
    assert planned - load(TrainConfig, out).batch.batch_tokens < final["tokens"] <= planned


def test_without_law_the_only_fit_in_fits_is_used_and_named(tmp_path):
    default = plan_json("--compute", "1e21")
    assert default["law"]["name"] == "epoch"
    fits = tmp_path / "fits"
    fits.mkdir()
    record = {"name": "mine", "parametric": {"E": 1.9, "A": 400.0, "B": 1500.0, "alpha": 0.33, "beta": 0.33}}
    (fits / "mine.json").write_text(json.dumps(record))
    (fits / "mine-demo.json").write_text(json.dumps({"passed": True}))  # not a fit: ignored
    chosen = plan_json("--compute", "1e21")
    assert "fits/mine.json" in chosen["law"]["source"] + " ".join(chosen["law"]["notes"])
    assert chosen["params"] != pytest.approx(default["params"], rel=0.01)
    (fits / "other.json").write_text(json.dumps(record | {"name": "other"}))
    assert plan_json("--compute", "1e21")["law"]["name"] == "epoch"  # two fits: the default again
