"""`workbench report`: HTML from generated sweeps (a known law), partial reports, errors, a real Chromium."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import load_page
from typer.testing import CliRunner

import workbench.cli
from workbench.fit.laws import optimal_allocation, predict_loss
from workbench.fit.synthetic import CHINCHILLA
from workbench.report.page import write_report
from workbench.store.database import Store

SHOTS = Path(os.environ.get("REPORT_SHOTS", "/tmp/report-shots"))
CHROMIUM = shutil.which("chromium")
BAD_IMGS = (
    "Promise.all([...document.images].map(i => i.decode().catch(() => 0)))"
    ".then(() => [...document.images].filter(i => !i.naturalWidth).map(i => i.src.slice(0, 60)))"
)


# --- a generated sweep: runs drawn from a known law, written as run directories, ingested, fitted, planned ----


def _shape(params: float) -> dict:
    """A plausible Llama-style shape for a size (only its fields matter to the store; params come from final)."""
    d_model = int(64 * max(1, round((params / 12 / 4) ** (1 / 3) / 64 * 4)))
    return {
        "n_layers": max(2, int(params / (12 * d_model**2))),
        "d_model": d_model,
        "n_heads": max(1, d_model // 64),
        "n_kv_heads": 1,
        "ffn_dim": int(3.5 * d_model),
        "vocab_size": 128256,
    }


def _write_run(
    sweep_dir: Path,
    sweep: str,
    budget: float,
    params: float,
    steps: int,
    rng,
    status: str = "completed",
    law: dict = CHINCHILLA,
    vocab: int = 128256,
):
    budget, params = float(budget), float(params)
    tokens = budget / (6 * params)
    digest = hashlib.sha1(f"{sweep}{budget}{params}{status}".encode()).hexdigest()[:8]
    run_id = f"c{budget:.2g}-n{params:.3g}-{digest}".replace("+", "")
    run_dir = sweep_dir / run_id
    run_dir.mkdir(parents=True)
    batch = int(2 ** round(np.log2(max(tokens / steps, 1024))))
    lr_peak = float(min(3e-3, 3e-3 * (params / 1e8) ** -0.25))
    config = {
        "name": run_id,
        "meta": {"sweep": sweep, "budget_flops": budget, "target_params": params, "kind": "run", "branch_of": None},
        "model": {**_shape(params), "vocab_size": vocab},
        "data": {"seq_len": 2048},
        "optim": {"lr_peak": lr_peak},
        "batch": {"batch_tokens": batch},
        "schedule": {"kind": "cosine", "floor": 0.1},
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    stop = steps if status == "completed" else steps // 3
    seen = tokens * np.arange(1, stop + 1) / steps
    loss = predict_loss(law, params, seen) * (1 + 0.03 * rng.standard_normal(stop))
    loss = loss + 4.0 * np.exp(-30 * np.arange(1, stop + 1) / steps)  # the fast early drop of a real run
    if status == "diverged":
        loss[-5:] = [8.0, 15.0, 40.0, 1e3, float("nan")]
    rows = [
        {
            "step": i + 1,
            "tokens": int(seen[i]),
            "flops": 6 * params * seen[i],
            "loss": float(loss[i]),
            "lr": lr_peak,
            "grad_norm": 0.5,
            "batch_tokens": batch,
            "tokens_per_s": 1e5,
            "wall_s": 0.1 * (i + 1),
        }
        for i in range(stop)
    ]
    val_loss = float(predict_loss(law, params, tokens) * (1 + 0.004 * rng.standard_normal()))
    if status == "completed":
        rows.append({**rows[-1], "val_loss": val_loss})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r, allow_nan=True) + "\n" for r in rows))
    final = {
        "status": status,
        "val_loss": val_loss if status == "completed" else None,
        "params": int(params),
        "params_total": int(params + 128256 * _shape(params)["d_model"]),
        "tokens": int(seen[-1]),
        "flops": 6 * params * seen[-1],
        "steps": stop,
        "wall_s": 0.1 * stop,
        "error": {"completed": None, "diverged": "loss was NaN at step {stop}", "failed": "CUDA out of memory"}[status],
    }
    final["error"] = final["error"] and final["error"].format(stop=stop)
    (run_dir / "final.json").write_text(json.dumps(final))


def make_sweep(
    root: Path,
    name: str = "gen",
    budgets=(1e17, 1e18, 1e19, 1e20),
    sizes: int = 5,
    steps: int = 120,
    failures: bool = True,
    seed: int = 0,
    law: dict = CHINCHILLA,
    vocab: int = 128256,
    db: Path | None = None,
) -> Path:
    """Run directories of an isoFLOP sweep drawn from `law` (default Chinchilla's; sizes span 0.25x to 4x N*)
    plus, with `failures`, a diverged and a failed run at the smallest budget; ingested into `db` (default
    root/NAME.duckdb)."""
    rng = np.random.default_rng(seed)
    sweep_dir = root / "runs" / name
    for budget in budgets:
        n_opt, _ = optimal_allocation(law, budget)
        for params in float(n_opt) * np.geomspace(0.25, 4.0, sizes):
            _write_run(sweep_dir, name, budget, params, steps, rng, law=law, vocab=vocab)
    if failures:
        n_opt, _ = optimal_allocation(law, budgets[0])
        _write_run(sweep_dir, name, budgets[0], float(n_opt) * 8, steps, rng, "diverged", law, vocab)
        _write_run(sweep_dir, name, budgets[0], float(n_opt) * 12, steps, rng, "failed", law, vocab)
    db = db or root / f"{name}.duckdb"
    Store(db).ingest(sweep_dir)
    return db


def fit_sweep(db: Path, name: str, out: Path, bootstrap: int = 40) -> dict:
    """Fit the sweep as `workbench fit --holdout-largest` does, write fits/NAME.json and record it."""
    from workbench.fit.fitfile import load_fit, write_json_atomic
    from workbench.fit.pipeline import FitOptions, fit_all, to_record
    from workbench.fit.points import validate_points

    points = validate_points(Store(db).points(name), name)
    results = fit_all(points, FitOptions(bootstrap=bootstrap, starts_per_axis=3, holdout_largest=True))
    write_json_atomic(out, to_record(results, name, f"sweep:{name}", name))
    record = load_fit(out)
    Store(db).record_fit(record)
    return record


def plan_sweep(db: Path, record: dict, budget_flops: float) -> dict:
    """Plan a flagship from the fit as `workbench plan --law fits/NAME.json --db` does, and record it."""
    from workbench.fit.laws import law_from_fit
    from workbench.plan.hardware import resolve_gpu
    from workbench.plan.planner import default_seq_len, default_vocab, make_plan
    from workbench.plan.record import to_record
    from workbench.records import parse_fit

    plan = make_plan(
        law_from_fit(parse_fit(record, "fit"), "fit"),
        budget_flops,
        gpu=resolve_gpu("h100"),
        seq_len=default_seq_len(budget_flops),
        vocab_size=default_vocab(budget_flops),
    )
    rec = {
        **to_record(plan).public(),
        "name": f"flagship-{record['name']}",
        "budget_flops": budget_flops,
        "created": datetime.now(UTC).isoformat(),
    }
    Store(db).record_plan(rec)
    return rec


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """A fitted and planned generated sweep and its report: (root, db, fit record, plan record, html path)."""
    root = tmp_path_factory.mktemp("report")
    db = make_sweep(root)
    record = fit_sweep(db, "gen", root / "fits" / "gen.json")
    plan = plan_sweep(db, record, 1e22)
    out = write_report("gen", db, fit_path=root / "fits" / "gen.json", out=root / "reports" / "gen.html")
    return root, db, record, plan, out


def _visible_text(html: str) -> str:
    """The page's text as a reader sees it (no tags, style or script; entities decoded; spaces collapsed)."""
    import html as html_lib

    body = re.sub(r"<(style|script)[^>]*>.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", html_lib.unescape(re.sub(r"<[^>]+>", " ", body)))


# --- content ----------------------------------------------------------------------------------------------


def test_full_report_has_every_section_and_only_embedded_resources(full):
    _, db, record, plan, out = full
    html = out.read_text()
    markup = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", html, flags=re.S)  # the inlined Vega bundle names URLs
    assert not re.search(r"https?://", markup), "no http(s) reference in the markup"
    assert not re.search(r"""\s(src|href)=["'](?!data:|#)""", markup), "every src/href is a data: URI or an anchor"
    text = _visible_text(html)
    for title in (
        "Summary",
        "Training curves",
        "isoFLOP curves",
        "Compute-optimal frontier",
        "Parametric law",
        "Held-out check",
        "Cross-checks and diagnostics",
        "The plan",
        "Runs, exclusions and provenance",
    ):
        assert title in text
    assert "No fit" not in text and "No plan" not in text  # nothing reported missing
    assert record["rollout"]  # the fit rolls out its budgets; the held-out section draws the errors
    assert "Rollout: fit budgets 1..k, predict budget k+1" in text
    assert len(re.findall(r"<img src=\"data:image/(svg\+xml|png);base64,", html)) == 3  # parametric, rollout, plan
    # interactive: curves, isoFLOP, loss against compute, N*(C), D*(C), held out (no envelope: fitted without curves)
    assert len(re.findall(r'<figure data-fig="', html)) == 6
    # summary: the plan in one sentence, status counts, compute spent = sum of the runs' FLOPs
    assert f"train the {plan['shape']['name']} shape" in text
    assert "20 completed" in text and "1 diverged" in text and "1 failed" in text
    spent = Store(db).runs("gen")["flops"].sum()
    assert f"{spent:.3g} FLOPs" in text
    # the fitted law recovers Chinchilla's exponents closely enough to be printed as such
    assert abs(record["parametric"]["alpha"] - CHINCHILLA["alpha"]) < 0.08
    assert f"{record['isoflop']['a']:.3f}" in text
    # failures carry their reasons; provenance names the data hash and the versions
    assert "CUDA out of memory" in text and "loss was NaN at step 40" in text
    assert record["data_hash"] in text and "matches the store" in text
    assert "torch 2." in text and "workbench 0." in text


def test_runs_table_is_sortable_and_lists_every_run(full):
    _, db, *_, out = full
    html = out.read_text()
    table = html.split('<table class="sortable">')[1].split("</table>")[0]
    assert table.count("<tr>") == len(Store(db).runs("gen")) + 1  # header + one row a run
    assert 'th class="sort"' in table and "addEventListener" in html


def test_holdout_and_demo_outcomes_are_shown_when_given(full, tmp_path):
    root, db, record, plan, _ = full
    demo = {
        "flagship": {
            "params": plan["shape"]["params"],
            "tokens": plan["shape"]["tokens"],
            "val_loss": 2.0512,
            "predicted": 2.05,
            "interval": [2.01, 2.09],
            "law_interval": [2.03, 2.07],
            "vs_best": -0.004,
            "wall_s": 12.0,
        },
        "checks": {"interior_minima": True, "flagship_in_interval": True, "best_loss_within_2pct": False},
        "lr_check": {
            "budget_flops": 1e17,
            "worst_gap": 0.0042,
            "factors": [1.0, 0.5, 2.0],
            "sizes": [{"params": 2e7, "losses": {"1.0": 2.31, "0.5": 2.35, "2.0": 2.33}, "rule_vs_best": 0.0}],
        },
        "seed_scatter": [
            {"budget_flops": 1e17, "params": 2e7, "seeds": 3, "mean": 2.3, "scatter": 0.0123},
            {"budget_flops": 1e18, "params": 5e7, "seeds": 3, "mean": 2.1, "scatter": 0.0042},
        ],
        "branch_check": {
            "run_id": "c1e17-n20m-s0-abc",
            "branch_loss": 2.3,
            "separate_loss": 2.3023,
            "rel_diff": 0.001,
            "seed_scatter": 0.0123,
            "passed": True,
        },
        "experiment": {
            "fitted_span_10x": {"passed": True, "value": 10.0, "tolerance": 10.0},
            "seed_scatter_1pct": {"passed": False, "value": 0.0123, "tolerance": 0.01},
        },
        "passed": False,
    }
    out = write_report(
        "gen",
        db,
        fit_path=root / "fits" / "gen.json",
        plan=plan,
        out=tmp_path / "r.html",
        extra={"demo": demo, "note": "seed 0"},
    )
    text = _visible_text(out.read_text())
    # the experiment: LR scan, seed scatter per budget, WSD branch check, acceptance checks
    assert "20M 2.31 2.35 2.33 +0.00%" in text, text[text.find("LR scan") :][:400]
    assert "1.23%" in text and "0.42%" in text and "c1e17-n20m-s0-abc 2.3 2.302 +0.10% 1.23% PASS" in text
    assert "seed scatter 1pct 0.0123 0.01 FAIL" in text and "fitted span 10x 10 10.0 PASS" in text
    assert "validation loss 2.0512, inside the predicted 90% interval [2.0100, 2.0900]" in text
    assert "best loss within 2pct FAIL" in text and "interior minima PASS" in text
    assert "some checks FAILED" in text and "note: seed 0" in text and "worst gap 0.42%" in text
    held = record["holdout"]
    assert f"{held['parametric']['loss_rel_err']:+.2%}" in text


# --- partial reports and errors ----------------------------------------------------------------------


def _invoke(*args):
    return CliRunner().invoke(workbench.cli.app, ["report", *map(str, args)])


def test_sweep_without_fit_or_plan_gives_a_partial_report_that_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no fits/ here
    db = make_sweep(tmp_path, "bare", budgets=(1e17, 1e18), sizes=3, steps=30, failures=False)
    result = _invoke("--db", db)  # the only sweep: no name needed
    assert result.exit_code == 0, result.output
    out = Path(result.stdout.strip())
    assert out == Path("reports/bare.html") and out.is_file()
    text = _visible_text(out.read_text())
    assert f"No fit for sweep 'bare' yet: run workbench fit bare --db {db}" in text
    # no fit file exists, so the hint does not name one as if it did: fit first, then plan from the file it writes
    hint = f"No plan for sweep 'bare' yet: run workbench fit bare --db {db} (it writes fits/bare.json), then "
    assert hint in text
    assert "then workbench plan --law fits/bare.json" in text
    assert "No held-out check" in text and "Training curves" in text
    assert "report command workbench report --db" in text


def test_sweep_with_only_failed_runs_still_reports(tmp_path):
    rng = np.random.default_rng(1)
    _write_run(tmp_path / "runs" / "dead", "dead", 1e17, 1e7, 30, rng, "failed")
    Store(tmp_path / "d.duckdb").ingest(tmp_path / "runs")
    out = write_report("dead", tmp_path / "d.duckdb", out=tmp_path / "dead.html")
    text = _visible_text(out.read_text())
    assert "1 failed" in text and "CUDA out of memory" in text and "No fit for sweep 'dead'" in text


def test_errors_are_one_line(tmp_path):
    for args, expected in (
        (("--db", tmp_path / "none.duckdb"), "no database at"),
        (("--db", tmp_path / "none.duckdb"), "workbench db ingest"),
    ):
        result = _invoke(*args)
        assert result.exit_code == 1 and expected in result.output and "Traceback" not in result.output
    import duckdb

    duckdb.connect(str(tmp_path / "blank.duckdb")).close()  # a DuckDB file without workbench tables
    Store(tmp_path / "empty.duckdb").upsert_sweep("planned", {}, None)  # a migrated database, a sweep, no runs
    for name, expected in (("blank", "is empty"), ("empty", "has no runs")):
        result = _invoke("--db", tmp_path / f"{name}.duckdb")
        assert result.exit_code == 1 and expected in result.output and "ingest" in result.output
        assert len(result.output.strip().splitlines()) == 1
    db = make_sweep(tmp_path, "one", budgets=(1e17, 1e18), sizes=3, steps=10, failures=False)
    make_sweep(tmp_path, "two", budgets=(1e17, 1e18), sizes=3, steps=10, failures=False)
    Store(db).ingest(tmp_path / "runs" / "two")
    result = _invoke("--db", db)
    assert result.exit_code == 1 and "2 sweeps: one, two" in result.output and "workbench report NAME" in result.output
    result = _invoke("three", "--db", db)
    assert result.exit_code == 1 and "sweep 'three' has no runs" in result.output and "one, two" in result.output
    result = _invoke("one", "--db", db, "--fit", tmp_path / "nope.json")
    assert result.exit_code == 1 and "no such fit" in result.output
    (tmp_path / "bad.json").write_text("{")
    result = _invoke("one", "--db", db, "--plan", tmp_path / "bad.json")
    assert result.exit_code == 1 and "not valid JSON" in result.output


def test_report_help_does_not_import_matplotlib_or_duckdb():
    import subprocess
    import sys

    code = (
        "import sys, workbench.cli; sys.argv = ['workbench', 'report', '--help']\n"
        "try: workbench.cli.main()\nexcept SystemExit: pass\n"
        "print(sorted(m for m in ('duckdb', 'matplotlib', 'torch', 'jinja2') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_two_hundred_runs_stay_under_five_megabytes(tmp_path):
    budgets = tuple(np.geomspace(1e17, 1e21, 10))
    db = make_sweep(tmp_path, "big", budgets=budgets, sizes=20, steps=400, failures=False)
    record = fit_sweep(db, "big", tmp_path / "fits" / "big.json", bootstrap=20)
    plan_sweep(db, record, 1e23)
    out = write_report("big", db, fit_path=tmp_path / "fits" / "big.json", out=tmp_path / "big.html")
    size = out.stat().st_size
    assert len(Store(db).runs("big")) == 200
    assert size < 5_000_000, f"{size / 1e6:.2f} MB"
    assert out.read_text().count("<tr>") >= 201


# --- the real browser -----------------------------------------------------------------------------------


def open_in_browser(browser, html: Path, shot: Path, height: int = 2000, full_page: bool = False) -> dict:
    """Load the page; what went wrong: requests, console errors, exceptions, images that do not decode."""
    ctx = browser.new_context(viewport={"width": 1280, "height": height})
    page, seen = load_page(ctx, html)
    page.wait_for_function("!document.querySelector('figure[data-fig]') || document.body.dataset.drawn", timeout=15_000)
    seen["broken_imgs"] = page.evaluate(BAD_IMGS)
    seen["images"] = page.evaluate("document.images.length")
    # the sort script works: a click on 'val loss' orders the column
    if page.locator("table.sortable th", has_text="val loss").count():
        page.locator("table.sortable th", has_text="val loss").click()
        values = page.evaluate(
            "[...document.querySelectorAll('table.sortable tbody tr')].map(r => r.cells[6].dataset.v)"
        )
        numbers = [float(v) for v in values if v != ""]
        seen["sorted"] = numbers == sorted(numbers) and values[-1 - (len(values) - len(numbers))] != ""
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=full_page)
    ctx.close()
    return seen


def _grey_variance(path: Path) -> float:
    from PIL import Image, ImageStat

    return ImageStat.Stat(Image.open(path).convert("L")).var[0]


@pytest.mark.browser
def test_full_report_loads_cleanly_in_chromium(full, browser, tmp_path):
    out = full[4]
    seen = open_in_browser(browser, out, SHOTS / "full-after-sort-click.png")
    assert seen.pop("images") == 2 and seen.pop("sorted") is True
    assert seen == {"requests": [], "console": [], "exceptions": [], "broken_imgs": []}
    assert _grey_variance(SHOTS / "full-after-sort-click.png") > 100
    open_in_browser(browser, out, SHOTS / "full-page.png", full_page=True)
    assert _grey_variance(SHOTS / "full-page.png") > 100


@pytest.mark.browser
def test_partial_report_loads_cleanly_in_chromium(browser, tmp_path):
    db = make_sweep(tmp_path, "bare", budgets=(1e17, 1e18), sizes=3, steps=30)
    out = write_report("bare", db, out=tmp_path / "bare.html")
    seen = open_in_browser(browser, out, SHOTS / "partial.png", full_page=True)
    assert seen.pop("images") == 0 and seen.pop("sorted") is True
    assert seen == {"requests": [], "console": [], "exceptions": [], "broken_imgs": []}
    assert _grey_variance(SHOTS / "partial.png") > 100


@pytest.mark.browser
def test_the_check_catches_a_broken_page(browser, tmp_path):
    """The browser check can fail: a remote image, a broken data URI and a script error are all caught."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<html><body><img src="http://example.invalid/x.png"><img src="data:image/png;base64,AAAA">'
        "<script>undefinedFunction()</script></body></html>"
    )
    seen = open_in_browser(browser, bad, tmp_path / "bad.png")
    assert seen["requests"] == ["http://example.invalid/x.png"]
    assert len(seen["broken_imgs"]) == 2 and seen["exceptions"]
    assert _grey_variance(tmp_path / "bad.png") < 1


def test_a_report_reads_its_fit_and_never_calls_an_optimiser(full, tmp_path, monkeypatch):
    """Everything the page shows comes from the stored fit record: with every optimiser made to raise (scipy's
    minimize and least_squares, the batched solver and its callers' names for it), the report is written."""
    import scipy.optimize

    from workbench.fit import bootstrap, frontier, newton, parametric

    def refuse(*args, **kwargs):
        raise AssertionError("a report called an optimiser")

    for module, name in [(scipy.optimize, "minimize"), (scipy.optimize, "least_squares"), (newton, "minimize")]:
        monkeypatch.setattr(module, name, refuse)
    for module in (parametric, frontier, bootstrap):
        monkeypatch.setattr(module, "minimize", refuse)
    root, db, _, _, _ = full
    out = write_report("gen", db, fit_path=root / "fits" / "gen.json", out=tmp_path / "again.html")
    text = out.read_text()
    assert "Held-out check" in text and "parametric" in text
