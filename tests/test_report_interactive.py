"""Sweep comparisons from known laws, interactive figures in a real Chromium, --watch, layout."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from conftest import load_page
from test_report import SHOTS, _invoke, _visible_text, _write_run, fit_sweep, make_sweep

from workbench.fit.laws import optimal_loss
from workbench.report import compare as cmp
from workbench.report.page import write_report
from workbench.report.watch import watch_report
from workbench.store.database import Store

# Two laws with no irreducible term: L*(C) of each is exactly K C^-gamma, so the isoFLOP approach recovers it.
LAW_A = {"E": 0.0, "A": 400.0, "B": 410.0, "alpha": 0.34, "beta": 0.28}  # gamma 0.1535
_B = {"E": 0.0, "A": 400.0, "B": 410.0, "alpha": 0.40, "beta": 0.40}  # gamma 0.2: steeper, overtakes A
CROSS_FLOPS = 1e22
_SCALE = float(optimal_loss(LAW_A, CROSS_FLOPS) / optimal_loss(_B, CROSS_FLOPS))
LAW_B = {**_B, "A": _B["A"] * _SCALE, "B": _B["B"] * _SCALE}  # equal losses at CROSS_FLOPS
TARGET = 1e23


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """Sweeps 'base' (law A) and 'mix' (law B, vocabulary 256) in one database, and their comparison page."""
    root = tmp_path_factory.mktemp("compare")
    db = root / "two.duckdb"
    make_sweep(root, "base", steps=10, failures=False, law=LAW_A, db=db)
    make_sweep(root, "mix", steps=10, failures=False, law=LAW_B, db=db, seed=1, vocab=256)
    for name in ("base", "mix"):  # a comparison reads the stored fits: it never refits
        fit_sweep(db, name, root / "fits" / f"{name}.json", bootstrap=200)
    result = _invoke("base", "mix", "--db", db, "--at", TARGET, "--at", 1e21, "--out", root / "cmp.html")
    assert result.exit_code == 0, result.output
    return root, db, root / "cmp.html"


def test_comparison_recovers_the_known_overtaking_compute_and_gap(two):
    _, db, out = two
    result = cmp.compare(Store(db), ["base", "mix"], TARGET, [])
    p = result["pairs"][0]
    known_gap = float(optimal_loss(LAW_A, TARGET) - optimal_loss(LAW_B, TARGET))
    assert p["overtaker"] == "mix"
    assert p["cross_ci"]["lo"] <= CROSS_FLOPS <= p["cross_ci"]["hi"], p
    assert abs(np.log(p["cross"] / CROSS_FLOPS)) < np.log(1.5)
    assert p["gap_ci"]["lo"] <= known_gap <= p["gap_ci"]["hi"], (known_gap, p)
    assert abs(p["gap"] - known_gap) < 0.15 * known_gap
    text = _visible_text(out.read_text())
    assert f"mix overtakes at {p['cross']:.3g} FLOPs (5-95%: {p['cross_ci']['lo']:.3g}" in text
    assert "mix's law predicts a lower loss than base's" in text and "of bootstrap resamples" in text
    # comparability in words, not JSON, stated with the verdict; the target's distance past the swept budgets
    assert "use different tokenizers (base uses vocabulary 128,256" in text and "mix uses vocabulary 256" in text
    verdict = text.split("1. Verdict")[-1].split("Pairs")[0]
    assert "Not comparable: base and mix use different tokenizers" in verdict and '{"vocab_size"' not in verdict
    assert "At 1e+23 FLOPs, 3.0 decades past the largest budget swept (1e+20 FLOPs)" in verdict
    assert "The interval contains only the resampling of runs" in verdict
    assert "validation sets" not in verdict  # same (empty) data sections
    # and it still gives its figures
    figures = ("cmp-isoflop", "cmp-parameters", "cmp-tokens", "cmp-loss")
    assert all(f'data-fig="{f}"' in out.read_text() for f in figures)


def test_parallel_laws_never_overtake(two):
    _, db, _ = two
    law = cmp.fit_sweep_law(Store(db), "base")
    shifted = cmp.SweepLaw(
        "b2",
        law.points,
        law.iso,
        law.iso_draws,
        {  # the same law 10% higher everywhere: E and K scaled, draw by draw
            **law.loss,
            "E": law.loss["E"] * 1.1,
            "K": law.loss["K"] * 1.1,
            "draws": {
                "E": [e * 1.1 for e in law.loss["draws"]["E"]],
                "K": [k * 1.1 for k in law.loss["draws"]["K"]],
                "gamma": law.loss["draws"]["gamma"],
            },
        },
        law.data,
    )
    p = cmp.pair(law, shifted, TARGET)
    assert p["cross"] is None and "never within the range" in cmp.verdict(p)
    assert p["gap"] < 0 and p["p_a_lower"] == 1.0


def test_comparison_errors_are_one_line(two):
    _, db, _ = two
    result = _invoke("base", "nope", "--db", db)
    assert result.exit_code == 1 and "sweep 'nope' has no runs" in result.output and "Traceback" not in result.output
    result = _invoke("base", "mix", "--db", db, "--watch")
    assert result.exit_code == 1 and "report one sweep" in result.output


def test_report_command_stays_small():
    command = Path(__file__).resolve().parents[1] / "workbench" / "commands" / "report.py"
    assert len(command.read_text().splitlines()) < 150


# --- the real browser -----------------------------------------------------------------------------------


def _open(browser, html: Path, width: int = 1400, **kwargs):
    """A page and what went wrong on it: any request but the file itself, console errors, exceptions."""
    ctx = browser.new_context(viewport={"width": width, "height": 1000}, accept_downloads=True, **kwargs)
    page, seen = load_page(ctx, html)
    page.wait_for_function("document.body.dataset.ready === '1'", timeout=20_000)  # the first screen's charts
    page.wait_for_function("document.body.dataset.drawn === 'all'", timeout=20_000)  # then the others, lazily
    return ctx, page, seen


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    root = tmp_path_factory.mktemp("interactive")
    db = make_sweep(root)
    fit_sweep(db, "gen", root / "fits" / "gen.json")
    return write_report("gen", db, fit_path=root / "fits" / "gen.json", out=root / "gen.html")


def _click(page, selector: str) -> None:
    """A real mouse click at the centre of the first match (Vega's SVG takes the pointer events itself)."""
    box = page.locator(selector).first.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def _hover_first_point(page, fig: str, expect: str = "") -> str:
    """Hover the figure's first point; the tooltip's text once it is shown (and contains `expect`)."""
    point = page.locator(f'figure[data-fig="{fig}"] .chart g.mark-symbol.role-mark path').first
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    shown = "text => { const e = document.getElementById('vg-tooltip-element');"
    page.wait_for_function(
        shown + " return e && e.classList.contains('visible') && e.innerText.includes(text); }",
        arg=expect,
        timeout=5_000,
    )
    return page.inner_text("#vg-tooltip-element")


@pytest.mark.browser
def test_hover_legend_zoom_and_downloads_in_chromium(full, browser, tmp_path):
    ctx, page, seen = _open(browser, full)
    first_run = Store(full.parent / "gen.duckdb").points("gen")["run_id"].iloc[0]
    page.locator('figure[data-fig="isoflop"]').scroll_into_view_if_needed()
    tip = _hover_first_point(page, "isoflop")
    assert first_run in tip and "N (params)" in tip and "loss" in tip
    # legend click hides the series (its points leave the SVG), a second click brings it back
    count = "document.querySelectorAll('figure[data-fig=\"isoflop\"] g.mark-symbol.role-mark path').length"
    before = page.evaluate(count)
    _click(page, 'figure[data-fig="isoflop"] .legend button.key')
    page.wait_for_function(f"{count} < {before}", timeout=5_000)
    assert page.evaluate("wbViews.isoflop.signal('hidden')") == ["1e+17 FLOPs"]
    assert page.evaluate(count) == before - 6  # 5 runs and 1 minimum of that budget
    _click(page, 'figure[data-fig="isoflop"] .legend button.key')
    page.wait_for_function(f"{count} == {before}", timeout=5_000)
    # zoom: the wheel narrows the x domain
    domain = "wbViews.isoflop.scale('x').domain()"
    wide = page.evaluate(domain)
    box = page.locator('figure[data-fig="isoflop"] .chart svg').bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -400)
    page.wait_for_function(f"{domain}[1] / {domain}[0] < {wide[1] / wide[0]}", timeout=5_000)
    _check_holdout(page, full)
    files = {}
    for selector, name in (
        ('button[data-dl="svg"][data-fig="isoflop"]', "svg"),
        ('button[data-dl="png"][data-fig="isoflop"]', "png"),
        ('button[data-dl="data"][data-fig="isoflop"]', "figcsv"),
        ('button[data-name="gen-runs.csv"]', "runs"),
        ('button[data-name="gen-minima.csv"]', "minima"),  # noqa: E501
        ('button[data-name="gen-fits.csv"]', "fits"),
    ):
        with page.expect_download() as info:
            page.click(selector)
        files[name] = Path(info.value.path()).read_bytes()
    ctx.close()
    assert seen == {"requests": [], "console": [], "exceptions": []}
    svg = ET.fromstring(files["svg"])
    assert svg.tag.endswith("svg") and len(list(svg.iter())) > 50
    assert files["png"][:8] == b"\x89PNG\r\n\x1a\n" and len(files["png"]) > 5_000
    runs = list(csv.DictReader(io.StringIO(files["runs"].decode())))
    assert len(runs) == 22 and {r["status"] for r in runs} == {"completed", "diverged", "failed"}
    assert first_run in {r["run"] for r in csv.DictReader(io.StringIO(files["figcsv"].decode()))}
    minima = list(csv.DictReader(io.StringIO(files["minima"].decode())))
    assert len(minima) == 4 and all(float(m["params"]) > 0 for m in minima)
    fits = {
        (r["law"], r["parameter"]): float(r["estimate"]) for r in csv.DictReader(io.StringIO(files["fits"].decode()))
    }
    assert abs(fits[("parametric", "alpha")] - 0.34) < 0.08


def _check_holdout(page, full: Path) -> None:
    """The held-out figure is interactive: a hover shows a held-out run's id, N, D and loss; its legend hides."""
    points = Store(full.parent / "gen.duckdb").points("gen")
    held = points[points["budget_flops"] == points["budget_flops"].max()]
    tip = _hover_first_point(page, "holdout", held["run_id"].iloc[0])
    assert all(word in tip for word in ("N (params)", "D (tokens)", "loss", "runs at 1e+20 FLOPs"))
    alt = page.get_attribute('figure[data-fig="holdout"] .chartbox', "aria-label")
    assert alt.startswith("Final validation loss against model size N at the held-out budget 1e+20 FLOPs")
    count = "document.querySelectorAll('figure[data-fig=\"holdout\"] g.mark-symbol.role-mark path').length"
    before = page.evaluate(count)
    assert before >= len(held)
    _click(page, 'figure[data-fig="holdout"] .legend button.key')  # the first entry: the held-out runs
    page.wait_for_function(f"{count} == {before - len(held)}", timeout=5_000)
    assert page.evaluate("wbViews.holdout.signal('hidden')") == ["runs at 1e+20 FLOPs (observed)"]


def _overflow(page) -> int:
    return page.evaluate(
        "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
        " - document.documentElement.clientWidth"
    )


@pytest.mark.browser
@pytest.mark.parametrize("width", [1400, 420])
def test_no_horizontal_overflow_and_alt_text(full, two, browser, width):
    for name, html in (("report", full), ("compare", two[2])):
        ctx, page, seen = _open(browser, html, width)
        shot = SHOTS / f"{name}-{width}.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}-{width}-first-screen.png"))  # what docs/screenshots shows
        page.screenshot(path=str(shot), full_page=True)
        assert _overflow(page) <= 0, f"{name} at {width}px overflows"
        assert seen == {"requests": [], "console": [], "exceptions": []}
        assert page.evaluate("[...document.images].every(i => i.alt.length > 20)")
        least = 0.85 * (width - 20) if width < 700 else 400  # on a phone every figure takes the full width
        assert page.evaluate(
            "[...document.querySelectorAll('.chartbox')].every(c => c.getAttribute('aria-label').length"  # noqa: E501
            " > 40 && c.querySelector('svg') && "
            f"c.getBoundingClientRect().width > {least})"
        )
        if name == "compare":
            tip = _hover_first_point(page, "cmp-isoflop")
            assert "base" in tip or "mix" in tip
        ctx.close()


@pytest.mark.browser
def test_watch_shows_runs_that_finish_without_a_manual_reload(browser, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(3)
    db = make_sweep(tmp_path, "live", budgets=(1e17, 1e18), sizes=3, steps=20, failures=False)
    root = tmp_path / "runs" / "live"
    late = root / "late-run"  # started (metrics, no final.json): running
    _write_run(tmp_path / "staging", "live", 1e19, 2e8, 20, rng)
    staged = next((tmp_path / "staging").iterdir())
    late.mkdir()
    for name in ("config.yaml", "metrics.jsonl"):
        (late / name).write_text((staged / name).read_text())
    out = tmp_path / "live.html"
    lines: list[str] = []
    worker = threading.Thread(
        target=lambda: lines.extend(
            line for _, line in watch_report("live", db, out, root, interval_s=1.0, max_cycles=60)
        ),
        daemon=True,
    )
    worker.start()
    deadline = time.time() + 30
    while not out.exists() and time.time() < deadline:
        time.sleep(0.2)
    ctx, page, seen = _open(browser, out, 1400)
    assert "1 running" in page.inner_text("#live") and "late-run" in page.inner_text("#runs")
    page.evaluate("window.scrollTo(0, 900)")
    time.sleep(0.3)
    (late / "final.json").write_text((staged / "final.json").read_text())  # the run finishes
    page.wait_for_function("document.getElementById('live').innerText.includes('the sweep has ended')", timeout=90_000)
    page.wait_for_function("document.body.dataset.ready === '1'", timeout=20_000)
    assert "0 running" in page.inner_text("#live") and "7 finished" in page.inner_text("#live")
    assert abs(page.evaluate("window.scrollY") - 900) < 100  # the place is kept (content above may grow a little)
    worker.join(timeout=60)
    ctx.close()
    assert seen["exceptions"] == [] and {Path(r.split("?")[0]).name for r in seen["requests"]} <= {"live.live.js"}
    assert lines[0].startswith("1 running, 0 queued, 0 failed, 6 finished") and "7 finished" in lines[-1]
    text = json.dumps(lines)
    assert "isoflop fit on the 6 completed runs so far" in text
