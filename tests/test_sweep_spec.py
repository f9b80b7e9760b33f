"""Sweep specs: parsing, isoFLOP and WSD expansion, the auto rules, `sweep plan`, fuzzed YAMLs."""

import json
import math
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from workbench.cli import app
from workbench.core.errors import WorkbenchError
from workbench.model import flops
from workbench.sweep.grid import expand, plan_file
from workbench.sweep.spec import load_spec, spec_hash
from workbench.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
ISOFLOP = ROOT / "sweeps" / "isoflop.yaml"
TINY = ROOT / "tests" / "data" / "tiny.yaml"
runner = CliRunner()


def write(tmp_path: Path, data: dict, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def tiny_data() -> dict:
    return yaml.safe_load(TINY.read_text())


def test_isoflop_plan_json_covers_llama3_budgets_and_sizes_within_1pct(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["sweep", "plan", str(ISOFLOP), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    runs = out["runs"]
    budgets = sorted({r["budget_flops"] for r in runs})
    assert budgets[0] == 6e18 and budgets[-1] == 1e22 and len(budgets) == 11
    assert all(40e6 <= r["target_params"] <= 16e9 for r in runs)
    assert all(0.95 * 40e6 <= r["params"] <= 1.05 * 16e9 for r in runs)
    assert min(r["params"] for r in runs) < 50e6 and max(r["params"] for r in runs) > 10e9
    for r in runs:  # the configured rule is 6N + attention: recompute it from the shape independently
        layers, d_model = (int(x) for x in r["shape"][1:].split("-d"))
        per_token = 6 * r["params"] + 12 * layers * 4096 * d_model  # attention unhalved
        assert abs(per_token * r["tokens"] / r["budget_flops"] - 1) <= 0.01, r["run_id"]
        assert r["tokens"] % r["batch_tokens"] == 0 and r["steps"] == r["tokens"] // r["batch_tokens"]
    assert out["totals"]["runs"] == len(runs) and out["totals"]["gpu_hours"] > 0
    assert not (tmp_path / "runs").exists()  # plan has no side effects


def test_auto_rules_follow_llama3_endpoints():
    plan = plan_file(ISOFLOP)
    by_budget = {r.budget_flops: r for r in plan.runs}
    assert by_budget[6e18].batch_tokens == 64 * 4096  # 250K rounded to a power of two of sequences
    assert by_budget[1e22].batch_tokens == 1024 * 4096  # 4M
    small = min(plan.runs, key=lambda r: r.params)
    big = max(plan.runs, key=lambda r: r.params)
    expected = lambda n: min(4e-4, 4e-4 * (n / 40e6) ** -0.116)  # noqa: E731
    assert small.lr_peak == pytest.approx(expected(small.params)) and 3.9e-4 < small.lr_peak <= 4e-4
    assert 2.0e-4 < big.lr_peak < 2.2e-4
    first = plan.runs[0]  # 40M at 6e18: 2,000 steps (Llama 3's warmup) are under 25% of its run
    assert first.config.schedule.warmup_tokens == 2000 * 64 * 4096
    last = [r for r in plan.runs if r.budget_flops == 6e18][-1]  # 2.3B: 1,508 steps, warmup capped at 25%
    assert last.config.schedule.warmup_tokens == (last.steps // 4) * last.batch_tokens


def test_runs_are_resolved_train_configs_with_stable_ids():
    first, second = plan_file(TINY), plan_file(TINY)
    assert [r.run_id for r in first.runs] == [r.run_id for r in second.runs]
    run = first.runs[0]
    assert run.run_id.startswith("c3e9-n9.93k-") and len(run.run_id.rsplit("-", 1)[1]) == 8  # 10K -> 9,926
    assert isinstance(run.config, TrainConfig) and run.config.run_dir == f"runs/tiny/{run.run_id}"
    assert run.config.meta == {
        "sweep": "tiny",
        "budget_flops": 3e9,
        "target_params": 10e3,
        "group": "3e9",
        "branch_of": None,
        "kind": "run",
        "sweep_hash": spec_hash(first.spec),  # the spec that wrote it (workbench.sweep.versions)
    }
    assert "auto" not in json.dumps(run.config.model_dump())
    again = TrainConfig.model_validate(run.config.model_dump(mode="json"))
    assert again == run.config


def test_changing_a_setting_changes_the_hash_not_the_prefix(tmp_path):
    data = tiny_data()
    data["train"]["lr_peak"] = "2e-3"
    changed = plan_file(write(tmp_path, data))
    old = plan_file(TINY)
    for a, b in zip(old.runs, changed.runs, strict=True):
        assert a.run_id.rsplit("-", 1)[0] == b.run_id.rsplit("-", 1)[0] and a.run_id != b.run_id


def test_numbers_with_suffixes_parse(tmp_path):
    data = tiny_data()
    data["grid"]["sizes"] = ["10K", 2e4]
    data["grid"]["budgets_flops"] = ["3e9", "6B"]
    plan = plan_file(write(tmp_path, data))
    assert sorted({r.budget_flops for r in plan.runs}) == [3e9, 6e9]
    assert sorted({r.target_params for r in plan.runs}) == [1e4, 2e4]


def test_sizes_may_name_shapes_and_a_bad_name_is_a_one_line_error(tmp_path):
    data = tiny_data()
    data["grid"]["sizes"] = ["L3-d20", "10K"]
    plan = plan_file(write(tmp_path, data))
    named = [r for r in plan.runs if r.config.model.n_layers == 3 and r.config.model.d_model == 20]
    assert len(named) == 2 and {r.target_params for r in named} == {23020}  # one per budget, at its own N
    assert all(r.run_id.split("-")[1] == "n23k" for r in named)
    data["grid"]["sizes"] = ["10K", "L3-d21"]
    with pytest.raises(WorkbenchError, match=r"s\.yaml:\d+: grid\.sizes\.1: shape 'L3-d21' needs .* even d_model"):
        plan_file(write(tmp_path, data))
    data["grid"]["sizes"] = ["8Q"]
    with pytest.raises(WorkbenchError, match=r"grid\.sizes\.0: '8Q' is neither a number of parameters .* nor a shape"):
        plan_file(write(tmp_path, data))


def test_unknown_key_names_file_line_and_valid_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(TINY.read_text().replace("  sizes: [10K, 20K]", "  sizez: [10K, 20K]"))
    with pytest.raises(WorkbenchError) as err:
        load_spec(path)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "sizez" in text)
    assert f"{path}:{line}: unknown key 'grid.sizez'" in str(err.value)
    assert "sizes_per_decade" in err.value.hint and "\n" not in str(err.value)


def test_budget_without_enough_sizes_is_a_one_line_error(tmp_path):
    data = tiny_data()
    data["grid"]["sizes"] = ["10K"]
    with pytest.raises(WorkbenchError, match=r"s\.yaml:\d+: budget 3e\+09 has 1 sizes"):
        plan_file(write(tmp_path, data))


def wsd_data() -> dict:
    data = tiny_data()
    data["grid"]["schedule"] = "wsd"
    data["grid"]["budgets_flops"] = [3e9, 6e9, 1.2e10]
    return data


def test_wsd_trunk_per_size_and_branches_from_its_checkpoints(tmp_path):
    plan = plan_file(write(tmp_path, wsd_data()))
    trunks = [r for r in plan.runs if r.kind == "trunk"]
    branches = [r for r in plan.runs if r.kind == "branch"]
    assert len(trunks) == 2 and len(branches) == 4
    for trunk in trunks:
        mine = [b for b in branches if b.branch_of == trunk.run_id]
        assert len(mine) == 2 and all(b.params == trunk.params and b.tokens < trunk.tokens for b in mine)
        assert plan.runs.index(trunk) < min(plan.runs.index(b) for b in mine)  # trunks launch first
        assert trunk.config.schedule.kind == "wsd" and trunk.budget_flops == 1.2e10
        assert sorted(trunk.config.checkpoint.save_at_tokens) == sorted(b.start_tokens for b in mine)
        for b in mine:
            cfg = b.config
            assert cfg.checkpoint.init_from == f"{trunk.config.run_dir}@{b.start_tokens}"
            assert cfg.meta["branch_of"] == trunk.run_id and cfg.meta["kind"] == "branch"
            # its decay starts exactly at the branch point, after the shared warmup
            assert cfg.stop.tokens * (1 - cfg.schedule.decay_fraction) == pytest.approx(b.start_tokens, abs=1e-6)
            assert cfg.schedule.warmup_tokens == trunk.config.schedule.warmup_tokens < b.start_tokens
            assert b.cost_flops == pytest.approx(b.flops * (b.tokens - b.start_tokens) / b.tokens)
            assert abs(b.start_tokens - 0.8 * b.tokens) <= b.batch_tokens
    assert plan.cost_flops == pytest.approx(sum(t.flops for t in trunks) + sum(b.cost_flops for b in branches))
    # trunk 12 units + cooldowns 0.2 x (3 + 6) of each size vs 3 + 6 + 12: saves ~ 1 - 13.8/21 = 34%
    assert plan.saved_fraction == pytest.approx(1 - 13.8 / 21, abs=0.02)


def test_plan_table_shows_wsd_savings(tmp_path):
    result = runner.invoke(app, ["sweep", "plan", str(write(tmp_path, wsd_data()))])
    assert result.exit_code == 0, result.output
    assert "trunk" in result.output and "branch" in result.output
    assert "for separate cosine runs (34% saved)" in result.output
    assert "GPU-hours at 30% MFU" in result.output


def test_points_grid(tmp_path):
    data = tiny_data()
    data["grid"] = {"kind": "points", "points": [{"params": "10K", "tokens": "40K"}, {"params": "20K", "tokens": 5e4}]}
    plan = plan_file(write(tmp_path, data))
    assert [r.run_id.rsplit("-", 1)[0] for r in plan.runs] == ["n9.93k-d40k", "n20.2k-d50k"]
    for r in plan.runs:
        assert r.flops == pytest.approx(flops.training_flops(r.config.model.shape(), r.tokens, 64))


def test_planning_1000_runs_costs_about_20_times_planning_50(tmp_path):
    """Expanding a sweep is linear in its runs: 1,000 runs (200 budgets x 5 sizes) cost at most 40x what 50 runs
    (10 x 5) cost in the same process (20x is linear, a quadratic step would be 400x); a ratio, not a time, so a
    loaded machine does not fail it. benchmarks/ times it absolutely."""

    def seconds(budgets: int) -> float:
        data = tiny_data()
        data["grid"].update(
            {"budgets_flops": [3e10 * 1.01**i for i in range(budgets)], "sizes": ["10K", "20K", "40K", "80K", "160K"]}
        )
        path = write(tmp_path, data)
        spec, lines = load_spec(path)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            plan = expand(spec, str(path), lines)
            times.append(time.perf_counter() - start)
        assert len(plan.runs) == 5 * budgets
        return min(times)

    small, large = seconds(10), seconds(200)
    assert large < 40 * small, f"50 runs {small:.3f} s, 1000 runs {large:.3f} s"


# ---------------------------------------------------------------- fuzz

_PATHS = []


def _key_paths(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _key_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield (*prefix, i)
            yield from _key_paths(value, (*prefix, i))


BASES = [tiny_data(), yaml.safe_load(ISOFLOP.read_text()), wsd_data()]
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["auto", "350M", "16B", "1e18", "-1", "0", "wsd", "points", "1e400"]),
    st.lists(st.sampled_from([1, "10K", "x", 0.5, None]), max_size=4),
    st.builds(dict, a=st.just(1)),  # a fresh dict each draw: a shared one could come to hold itself
)


@st.composite
def mutated(draw):
    data = json.loads(json.dumps(draw(st.sampled_from(BASES))))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_key_paths(data))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["value", "delete", "rename", "add"]))
        if action == "value":
            parent[path[-1]] = draw(VALUES)
        elif action == "delete":
            del parent[path[-1]]
        elif action == "rename" and isinstance(parent, dict):
            parent[str(path[-1]) + draw(st.sampled_from(["s", "_", "x"]))] = parent.pop(path[-1])
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(VALUES)
    return data


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=mutated())
def test_fuzzed_sweep_yaml_gives_a_plan_or_a_one_line_error(tmp_path, data):
    path = write(tmp_path, data)
    result = runner.invoke(app, ["sweep", "plan", str(path), "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code == 0:
        assert json.loads(result.stdout)["runs"]  # warnings (e.g. a micro_batch that changes) go to stderr
    else:
        assert result.exit_code == 1
        lines = result.output.strip().split("\n")  # not splitlines(): a fuzzed key may hold \x1e
        # one error line, last; before it only warnings that name the file and line (a micro_batch that changes):
        # whether the runner captures them depends on which invoke set up the log handler
        *warnings, error = lines
        assert error.startswith("Error: ") and all(w.startswith(f"{path}:") for w in warnings), result.output
        assert math.isfinite(len(error))
