"""Foundation: parameter and FLOP accounting, the size rule, `workbench model show`, the CLI."""

import json
import math
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from workbench.cli import app
from workbench.model import flops
from workbench.model.shapes import LLAMA3_VOCAB, PRESETS, ideal_ratio, ladder, resolve_size, shape_for, shape_for_params

runner = CliRunner()

LLAMA3 = {  # the Llama 3 report, Table 3, and the published checkpoints' parameter counts
    "8b": (32, 4096, 14336, 32, 8, 8_030_261_248),
    "70b": (80, 8192, 28672, 64, 8, 70_553_706_496),
    "405b": (126, 16384, 53248, 128, 8, 405_853_388_800),
}


@pytest.mark.parametrize("name", sorted(LLAMA3))
def test_model_show_json_gives_published_llama3_counts(name):
    result = runner.invoke(app, ["model", "show", name, "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    layers, d_model, ffn, heads, kv, total = LLAMA3[name]
    assert (record["n_layers"], record["d_model"], record["ffn_dim"]) == (layers, d_model, ffn)
    assert (record["n_heads"], record["n_kv_heads"], record["vocab_size"]) == (heads, kv, 128256)
    assert record["params_total"] == total
    assert record["params"] == total - 128256 * d_model
    assert set(record) >= {
        "name",
        "n_layers",
        "d_model",
        "n_heads",
        "n_kv_heads",
        "ffn_dim",
        "vocab_size",
        "params_total",
        "params",
        "flops_per_token",
    }


def test_flops_per_token_formula_for_8b():
    shape = PRESETS["8b"]
    n = shape.params
    assert flops.flops_per_token(shape, 8192, "6N") == 6 * n
    assert flops.flops_per_token(shape, 8192) == 6 * n + 12 * 32 * 8192 * 4096  # attention not halved
    tokens = flops.tokens_for_budget(shape, 1e22, 8192)
    assert tokens * flops.flops_per_token(shape, 8192) <= 1e22 < (tokens + 1) * flops.flops_per_token(shape, 8192)


def test_readme_example_llama3_405b_compute():
    # 6 N D with the report's 405B and 15.6T tokens is close to the stated 3.8e25 FLOPs
    shape = PRESETS["405b"]
    assert 6 * shape.params * 15.6e12 == pytest.approx(3.8e25, rel=0.01)


TARGETS = [4e7 * (16e9 / 4e7) ** (i / 19) for i in range(20)]


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t:.3g}")
def test_formula_count_equals_torch_module_on_meta(target):
    from workbench.model.config import ModelConfig
    from workbench.model.transformer import build, count_parameters

    shape = shape_for_params(target)
    module = build(ModelConfig.from_shape(shape), max_seq_len=16, device="meta")
    assert count_parameters(module) == shape.params_total


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_count_on_meta(name):
    from workbench.model.config import ModelConfig
    from workbench.model.transformer import build, count_parameters

    module = build(ModelConfig.from_shape(PRESETS[name]), max_seq_len=16, device="meta")
    assert count_parameters(module) == LLAMA3[name][-1]


@settings(max_examples=300, deadline=None)
@given(a=st.floats(4e7, 1.6e10), b=st.floats(4e7, 1.6e10))
def test_size_rule_monotone_and_within_10_percent_llama_vocab(a, b):
    low, high = sorted((a, b))
    small, large = shape_for_params(low), shape_for_params(high)
    assert small.params <= large.params
    for target, shape in ((low, small), (high, large)):
        assert abs(shape.params / target - 1) <= 0.10


@settings(max_examples=200, deadline=None)
@given(a=st.floats(2e4, 3e5), b=st.floats(2e4, 3e5))
def test_size_rule_monotone_and_within_10_percent_cpu_sizes(a, b):
    low, high = sorted((a, b))
    small, large = shape_for_params(low, 256), shape_for_params(high, 256)
    assert small.params <= large.params
    assert abs(small.params / low - 1) <= 0.10 and abs(large.params / high - 1) <= 0.10


def test_size_rule_shapes_are_hardware_friendly_and_llama_like():
    for n, shape in [rung for vocab in (256, LLAMA3_VOCAB) for rung in zip(*ladder(vocab), strict=True)]:
        assert shape.n_heads % shape.n_kv_heads == 0 and shape.d_model % shape.n_heads == 0
        assert shape.head_dim % 2 == 0 and shape.n_layers >= 2
        if 4e7 <= n <= 1.6e10 and shape.vocab_size == LLAMA3_VOCAB:
            assert shape.d_model % 64 == 0 and shape.ffn_dim % 64 == 0
            assert shape.head_dim in (64, 128)
            # the ideal ratio r(d) within a factor 2; Llama 3: 128 (8B), 102 (70B), 130 (405B)
            assert 0.5 <= shape.d_model / shape.n_layers / ideal_ratio(shape.d_model) <= 2


def test_size_rule_monotone_over_whole_ladder():
    for vocab in (256, LLAMA3_VOCAB):
        counts, _ = ladder(vocab)
        picks = [
            shape_for_params(t, vocab).params for t in (counts[0] * 1.01**k for k in range(1500)) if t <= counts[-1]
        ]
        assert picks == sorted(picks)


@pytest.mark.parametrize(
    "size, words",
    [
        ("12parrots", "neither a preset nor a number"),
        ("-5", "must be positive"),
        ("1e15", "outside"),
        ("0", "must be positive"),
    ],
)
def test_model_show_bad_sizes_are_one_line_errors(size, words):
    result = runner.invoke(app, ["model", "show", size])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and words in lines[0]
    assert "Traceback" not in result.output


def test_a_size_may_name_its_shape():
    shape = resolve_size("L3-d20", 256)
    assert shape == shape_for(3, 20, 256) and (shape.n_layers, shape.d_model, shape.n_heads) == (3, 20, 1)
    assert shape.params == 23020  # 3 x (2 x 20 x 20 + 2 x 20 x 20 + 3 x 20 x 72 + 2 x 20) + 20 + 256 x 20
    result = runner.invoke(app, ["model", "show", "L3-d21"])
    assert result.exit_code == 1 and "even d_model" in result.output and "Traceback" not in result.output


def test_model_show_parses_suffixes():
    for text, target in (("350M", 350e6), ("1.2e9", 1.2e9), ("16B", 16e9)):
        assert resolve_size(text).params == shape_for_params(target).params


def test_help_lists_groups_without_importing_torch_or_duckdb():
    code = (
        "import sys; from typer.testing import CliRunner; from workbench.cli import app;"
        "r = CliRunner().invoke(app, ['--help']); print(r.output);"
        "print('HEAVY', [m for m in ('torch', 'duckdb', 'scipy', 'matplotlib') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for group in ("model", "data", "train", "sweep", "db", "fit", "plan", "report"):
        assert group in out
    assert "HEAVY []" in out


HELP_RUN = (
    "import sys; {preload}from workbench.cli import main; sys.argv = ['workbench'{args}]\n"
    "try:\n    main()\nexcept SystemExit:\n    pass\n"
    "print('LOADED', sorted(m for m in ('rich.markdown', 'rich.traceback') if m in sys.modules))"
)


@pytest.mark.parametrize("args", ["", ", '--help'", ", 'fit', '--help'", ", 'sweep', 'launch', '--help'"])
def test_help_renders_the_same_without_the_markdown_parser(args):
    """The help is loaded against stand-ins for rich.markdown and rich.traceback: same text, neither module."""

    def run(preload: str) -> str:
        code = HELP_RUN.format(preload=preload, args=args)
        env = {**os.environ, "COLUMNS": "100"}
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout

    fast, usual = run(""), run("import rich.markdown, rich.traceback; ")
    assert "Usage: workbench" in fast and fast.count("\n") > 8
    assert fast.replace("LOADED []", "") == usual.replace("LOADED ['rich.markdown', 'rich.traceback']", "")
    assert fast.rstrip().endswith("LOADED []")


def test_the_help_stand_ins_build_the_real_classes():
    from rich.markdown import Markdown
    from rich.traceback import Traceback

    from workbench.commands.help_render import _deferred, wants_help

    assert isinstance(_deferred("rich.markdown", "Markdown")("**x**"), Markdown)
    try:
        raise ValueError("x")
    except ValueError as err:
        rendered = _deferred("rich.traceback", "Traceback").from_exception(type(err), err, err.__traceback__)
    assert isinstance(rendered, Traceback)
    assert wants_help([]) and wants_help(["fit", "--help"]) and not wants_help(["fit", "sweeps/a.yaml"])


def test_debug_flag_shows_traceback():
    result = runner.invoke(app, ["--debug", "model", "show", "12parrots"])
    assert result.exit_code != 0 and result.exception is not None
    assert type(result.exception).__name__ == "WorkbenchError"


def test_console_script_prints_error_and_exits_1():
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "model", "show", "12parrots"], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("Error: SIZE '12parrots'") and "Traceback" not in proc.stderr
    assert math.isfinite(1.0)
