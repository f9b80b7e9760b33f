"""Fuzz the front doors: generated sweep YAMLs, train configs, fit CSVs and plan arguments go
through the CLI in-process; every outcome is exit 0, or exit 1 with one `Error:` line on stderr, never a
traceback, within a time and memory bound. Train configs stop after validation (before the model is
built). A few hundred cases, under 2 minutes on 2 cores.
"""

import resource
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from workbench.cli import app

ROOT = Path(__file__).resolve().parents[1]
TINY = yaml.safe_load((ROOT / "tests" / "data" / "tiny.yaml").read_text())
MEMORY_BOUND_KB = 1 << 20  # peak RSS may grow by at most 1 GiB over the whole fuzz run
FUZZ = settings(
    deadline=10_000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same cases on every run of the suite: a failure is reproducible
    database=None,
)
runner = CliRunner()


class Stop(Exception):
    """Raised where the trainer would build the model: the config passed every check."""


def check(args: list[str]) -> None:
    """Exit 0, or exit 1 with one `Error:` line; never a traceback (an exception escaping the CLI)."""
    result = runner.invoke(app, args, catch_exceptions=True)
    if isinstance(result.exception, Stop):
        return
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{args}: {type(result.exception).__name__}: {result.exception}"
    )
    assert result.exit_code in (0, 1), (args, result.exit_code, result.output[-2000:])
    if result.exit_code == 1:
        lines = result.stderr.strip().splitlines()
        errors = [line for line in lines if line.startswith("Error: ")]
        assert len(errors) == 1 and lines[-1] == errors[0], (args, result.stderr[-2000:])


@pytest.fixture(scope="module", autouse=True)
def memory_bound():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < MEMORY_BOUND_KB, f"peak RSS grew by {grown / 1024:.0f} MiB"


# ------------------------------------------------------------------ values that users and files throw at us
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["auto", "1e18", "350M", "16B", "-1", "0", "1e400", "nan", "../x", "", "x" * 300, "@default"]),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def mutate(tree: dict, draw_path: list, value) -> dict:
    """`tree` with the value at `draw_path` replaced (or a new key added)."""
    import copy

    out = copy.deepcopy(tree)
    node = out
    for key in draw_path[:-1]:
        if not isinstance(node, dict):
            return out
        node = node.setdefault(key, {}) if isinstance(node.get(key), dict) else node.setdefault(key, {})
    if isinstance(node, dict):
        node[draw_path[-1]] = value
    return out


def key_paths(tree, prefix=()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield (*prefix, key)
            yield from key_paths(value, (*prefix, key))


SWEEP_PATHS = sorted(key_paths(TINY), key=str)


@settings(FUZZ, max_examples=120)
@given(
    mutations=st.lists(st.tuples(st.sampled_from(SWEEP_PATHS), values), min_size=1, max_size=3),
    raw=st.booleans(),
    junk=st.text(max_size=40),
)
def test_fuzz_sweep_plan(tmp_path_factory, mutations, raw, junk):
    spec = TINY
    for path, value in mutations:
        spec = mutate(spec, list(path), value)
    text = yaml.safe_dump(spec, sort_keys=False)
    if raw:  # hand-written YAML: anything may be appended
        text += junk
    path = tmp_path_factory.mktemp("sweep") / "s.yaml"
    path.write_bytes(text.encode("utf-8", errors="replace"))
    check(["sweep", "plan", str(path)])
    check(["sweep", "plan", str(path), "--json"])


@pytest.fixture(scope="module")
def corpus():
    from workbench.data.prepare import ensure_default_corpus

    return str(ensure_default_corpus())


def base_train(corpus: str, run_dir: str) -> dict:
    return {
        "name": "fuzz",
        "run_dir": run_dir,
        "model": {"n_layers": 2, "d_model": 24, "n_heads": 2, "n_kv_heads": 1, "ffn_dim": 88, "vocab_size": 256},
        "data": {"sources": [{"path": corpus}], "seq_len": 64},
        "optim": {"lr_peak": 3e-3},
        "batch": {"batch_tokens": 1024, "micro_batch": 4},
        "stop": {"tokens": 10240},
        "checkpoint": {"every_tokens": 0},
        "runtime": {"device": "cpu", "threads": 1},
    }


@pytest.fixture(scope="module")
def stop_before_model():
    from workbench.train import trainer

    original = trainer.Trainer._build_model

    def stop(self):
        raise Stop()

    trainer.Trainer._build_model = stop
    yield
    trainer.Trainer._build_model = original


@settings(FUZZ, max_examples=80)
@given(data=st.data())
def test_fuzz_train_config(tmp_path_factory, corpus, stop_before_model, data):
    folder = tmp_path_factory.mktemp("train")
    config = base_train(corpus, str(folder / "run"))
    paths = sorted(key_paths(config), key=str)
    for _ in range(data.draw(st.integers(1, 3))):
        config = mutate(config, list(data.draw(st.sampled_from(paths))), data.draw(values))
    path = folder / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    check(["train", str(path)])


numbers = st.one_of(
    st.floats(min_value=1e-3, max_value=1e25, allow_nan=False),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "x", "1e400", "-5", "0", "nan", "1,2"]),
    st.integers(-5, 10**20),
)


@settings(FUZZ, max_examples=60)
@given(
    rows=st.lists(st.tuples(numbers, numbers, numbers), min_size=0, max_size=30),
    header=st.sampled_from(["params,tokens,loss", "params,tokens,loss,budget", "n,d,l", "params,tokens", ""]),
    method=st.sampled_from(["isoflop", "parametric"]),
)
def test_fuzz_fit_csv(tmp_path_factory, rows, header, method):
    folder = tmp_path_factory.mktemp("fit")
    width = len(header.split(","))
    body = "\n".join(",".join(str(v) for v in (row * 2)[:width]) for row in rows)
    (folder / "runs.csv").write_text(f"{header}\n{body}\n")
    args = ["fit", "--from-csv", str(folder / "runs.csv"), "--method", method, "--bootstrap", "0"]
    check([*args, "--starts", "2", "--no-plots", "--out", str(folder / "f.json")])


@settings(FUZZ, max_examples=100)
@given(
    compute=st.one_of(st.none(), numbers.map(str)),
    gpus=st.one_of(st.none(), numbers.map(str)),
    days=st.one_of(st.none(), numbers.map(str)),
    law=st.sampled_from(["chinchilla", "llama3", "epoch", "nosuch", "fits/none.json", "../x"]),
    gpu=st.sampled_from(["h100", "a100", "h200", "b200", "1000", "0", "-3", "tpu"]),
    mfu=st.floats(-1, 2),
    inference=st.one_of(st.none(), numbers.map(str)),
)
def test_fuzz_plan_arguments(tmp_path_factory, compute, gpus, days, law, gpu, mfu, inference):
    folder = tmp_path_factory.mktemp("plan")
    args = ["plan", "--law", law, "--gpu", gpu, "--mfu", repr(mfu), "--db", str(folder / "none.duckdb")]
    for flag, value in (("--compute", compute), ("--gpus", gpus), ("--days", days), ("--inference-tokens", inference)):
        if value is not None:
            args += [flag, value]
    check(args)
