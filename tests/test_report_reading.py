"""Reports read as a researcher decides from them: the decision panel, the compute slider against `workbench plan`,
legends that hide their series (mouse and keyboard), one colour per budget in every figure, legends that never
clip at 25 budgets, print of a 500-run report, keyboard sorting, a live page that stops, hostile inlined data."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import load_page
from test_report import SHOTS, _write_run, make_sweep, plan_sweep
from test_report import _invoke as _report
from typer.testing import CliRunner

import workbench.cli
from workbench.core.errors import WorkbenchError
from workbench.core.units import human
from workbench.fit.fitfile import load_fit, write_json_atomic
from workbench.fit.pipeline import FitOptions, fit_all, to_record
from workbench.fit.points import validate_points
from workbench.report.inline import script_json
from workbench.report.page import write_report
from workbench.report.watch import watch_report
from workbench.store.database import Store

SLIDER_BUDGETS = (3.3e19, 1e21, 4.7e22)


def _fit(db: Path, name: str, out: Path, holdout: bool = True, bootstrap: int = 40) -> dict:
    points = validate_points(Store(db).points(name), name)
    options = FitOptions(bootstrap=bootstrap, starts_per_axis=3, holdout_largest=holdout)
    write_json_atomic(out, to_record(fit_all(points, options), name, f"sweep:{name}", name))
    record = load_fit(out)
    Store(db).record_fit(record)
    return record


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    """A fitted (held out) and planned generated sweep and its report: (root, fit record, plan, html)."""
    root = tmp_path_factory.mktemp("reading")
    db = make_sweep(root)
    record = _fit(db, "gen", root / "fits" / "gen.json")
    plan = plan_sweep(db, record, 1e22)
    out = write_report("gen", db, fit_path=root / "fits" / "gen.json", out=root / "gen.html")
    return root, record, plan, out


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """500 runs over 25 budgets (20 sizes each), fitted and planned, and their report."""
    root = tmp_path_factory.mktemp("wide")
    db = make_sweep(root, "wide", budgets=tuple(np.geomspace(1e17, 1e21, 25)), sizes=20, steps=12, failures=False)
    record = _fit(db, "wide", root / "fits" / "wide.json", holdout=False, bootstrap=10)
    plan_sweep(db, record, 1e23)
    return write_report("wide", db, fit_path=root / "fits" / "wide.json", out=root / "wide.html")


def _open(browser, html: Path, width: int = 1400, height: int = 1000):
    ctx = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
    page, seen = load_page(ctx, html)
    page.wait_for_function("document.body.dataset.drawn === 'all'", timeout=60_000)
    return ctx, page, seen


# --- the one escaping function ----------------------------------------------------------------------------


def test_script_json_escapes_what_could_end_or_restructure_a_script():
    hostile = {"s": "failed<!--<script></script>&\u2028\u2029 --> x", "n": [1.5, None]}
    text = str(script_json(hostile))
    assert not set(text) & {"<", ">", "&", "\u2028", "\u2029"}
    assert json.loads(text) == hostile


@pytest.mark.browser
def test_a_hostile_status_leaves_every_section_and_chart_drawn(browser, tmp_path):
    db = make_sweep(tmp_path, "evil", budgets=(1e17, 1e18, 1e19), sizes=4, steps=20, failures=False)
    before = set((tmp_path / "runs" / "evil").iterdir())
    _write_run(tmp_path / "runs" / "evil", "evil", 1e17, 3e6, 20, np.random.default_rng(5), "failed")
    (bad,) = set((tmp_path / "runs" / "evil").iterdir()) - before
    final = json.loads((bad / "final.json").read_text())
    (bad / "final.json").write_text(json.dumps({**final, "status": "failed<!--<script>", "error": "x"}))
    with pytest.raises(WorkbenchError, match="status 'failed<!--<script>' is not one of"):
        Store(db).ingest(tmp_path / "runs" / "evil")  # an enumerated field is checked where it is read
    evil = "failed<!--<script></script><b>x"  # the same bytes in a free-text field reach the page, as text
    (bad / "final.json").write_text(json.dumps({**final, "status": "failed", "error": evil}))
    Store(db).ingest(tmp_path / "runs" / "evil")
    record = _fit(db, "evil", tmp_path / "fits" / "evil.json", holdout=False, bootstrap=10)
    plan_sweep(db, record, 1e21)
    out = write_report("evil", db, fit_path=tmp_path / "fits" / "evil.json", out=tmp_path / "evil.html")
    ctx, page, seen = _open(browser, out)
    assert seen == {"requests": [], "console": [], "exceptions": []}
    assert page.evaluate("document.querySelectorAll('main > section').length") == 10
    assert (
        page.evaluate("document.querySelectorAll('figure[data-fig] .chart svg').length")
        == page.evaluate("document.querySelectorAll('figure[data-fig]').length")
        >= 5
    )
    assert evil in page.inner_text("#runs")
    assert page.evaluate("document.querySelectorAll('b').length") == 0  # the error text stayed text
    ctx.close()


# --- the decision panel and the slider ---------------------------------------------------------------------


@pytest.mark.browser
def test_decision_panel_items_link_to_their_sections_and_match_the_records(gen, browser):
    _, record, plan, out = gen
    ctx, page, _ = _open(browser, out)
    items = page.evaluate(
        "[...document.querySelectorAll('#decision ul.panel li')].map(li => ({href: li.querySelector('a')"
        ".getAttribute('href'), label: li.querySelector('.pl').innerText, value: li.querySelector('.pv').innerText,"
        " detail: li.querySelector('.pd').innerText, top: li.getBoundingClientRect().top}))"
    )
    by_label = {i["label"].split(" at ")[0]: i for i in items}
    assert set(by_label) == {
        "Compute-optimal",
        "Planned shape",
        "Predicted loss",
        "Held-out check",
        "Methods",
        "Flagship",
    }
    for i in items:  # every item links to a target on the page, and the panel is on the first screen
        assert page.evaluate(f"!!document.querySelector({json.dumps(i['href'])})"), i
        assert i["top"] < 1000
    ci = plan["ci"]
    assert by_label["Compute-optimal"]["value"] == f"N* {human(plan['params'])}, D* {human(plan['tokens'])}"
    assert f"[{human(ci['params']['p5'])}, {human(ci['params']['p95'])}]" in by_label["Compute-optimal"]["detail"]
    shape = plan["shape"]
    assert by_label["Planned shape"]["value"].startswith(f"{shape['name']}: {human(shape['params'])}")
    reason = by_label["Planned shape"]["detail"]
    assert f"{shape['tokens'] / plan['tokens'] - 1:+.0%}" in reason and "ladder" in reason and "6N + 12 L T d" in reason
    assert by_label["Predicted loss"]["value"] == f"{shape['loss']:.4f} nats/token"
    assert f"[{ci['shape_loss']['p5']:.4f}, {ci['shape_loss']['p95']:.4f}]" in by_label["Predicted loss"]["detail"]
    held = record["holdout"]
    outcomes = [
        held[k][q]["truth_in_interval"] for k, q in (("loss_law", "loss"), ("parametric", "loss"), ("isoflop", "N_opt"))
    ]
    assert by_label["Held-out check"]["value"].startswith("FAIL" if False in outcomes else "PASS")
    assert f"{held['loss_law']['loss']['rel_err']:+.2%}" in by_label["Held-out check"]["detail"]
    flag = record["crosscheck"]["flag"]
    assert by_label["Methods"]["value"] == {True: "DISAGREE", False: "agree", None: "not comparable"}[flag]
    lay = plan["layout"]
    assert by_label["Flagship"]["value"] == f"{plan['days']:.3g} days on {lay['gpus']:,} {lay['gpu']}"
    assert f"{plan['gpu_hours']:.3g} GPU-hours" in by_label["Flagship"]["detail"]
    ctx.close()


@pytest.mark.browser
def test_slider_gives_what_workbench_plan_gives_from_the_same_fit(gen, browser, tmp_path):
    root, _, _, out = gen
    ctx, page, _ = _open(browser, out)
    for budget in SLIDER_BUDGETS:
        done = CliRunner().invoke(
            workbench.cli.app, ["plan", "--law", str(root / "fits" / "gen.json"), "--compute", f"{budget:g}", "--json"]
        )
        assert done.exit_code == 0, done.output
        plan = json.loads(done.stdout.strip().splitlines()[-1])
        page.fill("#sl-c", f"{budget:g}")
        page.dispatch_event("#sl-c", "change")
        got = page.evaluate(
            "(() => { const v = k => document.querySelector(`#slider [data-out='${k}']`); return {"
            "N: +v('N').dataset.value, D: +v('D').dataset.value, L: +v('L').dataset.value, N_lo: +v('N').dataset.nLo,"
            " N_hi: +v('N').dataset.nHi, D_lo: +v('D').dataset.dLo, D_hi: +v('D').dataset.dHi,"
            " L_lo: +v('L').dataset.lLo, L_hi: +v('L').dataset.lHi, where: v('where').innerText}; })()"
        )
        ci = plan["ci"]
        want = {
            "N": plan["params"],
            "D": plan["tokens"],
            "L": plan["loss"],
            "N_lo": ci["params"]["p5"],
            "N_hi": ci["params"]["p95"],
            "D_lo": ci["tokens"]["p5"],
            "D_hi": ci["tokens"]["p95"],
            "L_lo": ci["loss"]["p5"],
            "L_hi": ci["loss"]["p95"],
        }
        for k, v in want.items():
            assert abs(got[k] / v - 1) < 0.01, (budget, k, got[k], v)
        past = np.log10(budget / 1e20)  # the fitted budgets run to 1e20
        assert (f"{past:.1f} decades past the largest fitted budget" if past > 0 else "inside the fitted range") in got[
            "where"
        ]
    ctx.close()


# --- legends, colours, clipping ----------------------------------------------------------------------------


MARKS = "(id => document.querySelectorAll(`figure[data-fig='${id}'] .chart svg g.role-mark > *`).length)"


@pytest.mark.browser
def test_every_legend_button_hides_its_series_by_mouse_and_keyboard(gen, browser):
    ctx, page, seen = _open(browser, gen[3])
    figs = page.evaluate("[...document.querySelectorAll('figure[data-fig]')].map(f => f.dataset.fig)")
    assert {"curves", "isoflop", "frontier-loss", "holdout"} <= set(figs)
    checked = 0
    for fig in figs:
        buttons = page.locator(f"figure[data-fig='{fig}'] .legend button.key")
        for i in range(buttons.count()):
            button = buttons.nth(i)
            value = button.get_attribute("data-series")
            before = page.evaluate(f"{MARKS}('{fig}')")
            if i % 2:  # keyboard: focus the button, press Space
                button.focus()
                page.keyboard.press("Space")
            else:
                button.click()
            page.wait_for_function(f"wbViews['{fig}'].signal('hidden').includes({json.dumps(value)})", timeout=5_000)
            page.wait_for_function(f"{MARKS}('{fig}') < {before}", timeout=5_000)
            assert button.get_attribute("aria-pressed") == "false"
            button.click()
            page.wait_for_function(f"{MARKS}('{fig}') == {before}", timeout=5_000)
            checked += 1
    assert checked >= 20 and seen["exceptions"] == [] and seen["console"] == []
    # keyboard zoom: + narrows the focused chart's x domain, 0 restores it
    domain = "wbViews.isoflop.scale('x').domain()"
    wide = page.evaluate(domain)
    page.focus("figure[data-fig='isoflop'] .chartbox")
    page.keyboard.press("+")
    page.wait_for_function(f"{domain}[1] / {domain}[0] < {wide[1] / wide[0] * 0.9}", timeout=5_000)
    page.keyboard.press("0")
    page.wait_for_function(f"{domain}[1] / {domain}[0] == {wide[1] / wide[0]}", timeout=5_000)
    # a training curve's line has a tooltip: the pointer at one of its points names that run and draws it in black
    page.locator("figure[data-fig='curves']").scroll_into_view_if_needed()
    at = page.evaluate(
        """(() => { const v = wbViews.curves, y = v.scale('y').domain();
          const rows = v.data('curves').filter(d => d.l != null && d.t > 0 && d.l > y[0] && d.l < y[1]);
          const d = rows[Math.floor(rows.length / 2)], box = document.querySelector("figure[data-fig='curves'] svg")
          .getBoundingClientRect(), o = v.origin(), run = v.data('runs').find(r => r.i === d.r);
          const px = box.left + o[0] + v.scale('x')(d.t), py = box.top + o[1] + v.scale('y')(d.l);
          return {x: px, y: py, r: d.r, run: run.run}; })()"""
    )
    page.mouse.move(at["x"] + 3, at["y"] + 3)
    page.mouse.move(at["x"] + 1, at["y"] + 1)
    page.wait_for_function("(document.querySelector('.wbtip') || {style: {}}).style.display === 'block'", timeout=5_000)
    assert at["run"] in page.inner_text(".wbtip") and "training loss" in page.inner_text(".wbtip")
    assert page.evaluate("wbViews.curves.signal('hl')") == at["r"]
    ctx.close()


def _static_budget_colours(record: dict, plan: dict, runs) -> dict[str, str]:
    """{budget label: fill} of the report's static parametric figure, drawn as the page draws it (the page embeds
    it as PNG when its SVG is large), read from the SVG groups budget-<C> of its runs."""
    import io

    import pandas as pd

    from workbench.report.static_figures import parametric_figure
    from workbench.report.style import report_scale

    fig = parametric_figure(pd.DataFrame(record["points"]), record["parametric"], plan, report_scale(runs, record))
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    out = {}
    for gid, body in re.findall(r'<g id="budget-([^"]+)">(.*?)</g>', buffer.getvalue(), flags=re.S):
        out[f"{float(gid):.3g} FLOPs"] = re.search(r"fill: (#[0-9a-f]{6})", body).group(1)
    return out


@pytest.mark.browser
def test_one_budget_has_one_colour_in_every_figure(gen, browser):
    ctx, page, _ = _open(browser, gen[3])
    rendered = page.evaluate(
        """(() => {
        const out = {};
        const add = (fig, series, fill) => { (out[series] = out[series] || {})[fig] = fill; };
        for (const fig of ['isoflop', 'frontier-loss', 'frontier-parameters']) {
          document.querySelectorAll(`figure[data-fig='${fig}'] .chart svg g.mark-symbol path`).forEach(p => {
            const m = /(?:series|budget|which): ([0-9.e+]+ FLOPs)/.exec(p.getAttribute('aria-label') || '');
            const fill = (p.getAttribute('fill') || '').toLowerCase();  // the minima's stars are white
            if (m && fill && fill !== 'white') add(fig, m[1], fill);
          });
        }
        for (const fig of ['curves', 'isoflop']) {
          document.querySelectorAll(`figure[data-fig='${fig}'] .legend button.key`).forEach(b =>
            add(fig + ' legend', b.dataset.series, b.querySelector('svg [fill]').getAttribute('fill').toLowerCase()));
        }
        return out;
        })()"""
    )
    root, record, plan, _ = gen
    static = _static_budget_colours(record, plan, Store(root / "gen.duckdb").runs("gen"))
    assert len(rendered) == 4 and set(static) == set(rendered)
    held = f"{record['holdout']['budget_flops']:.3g} FLOPs"  # drawn apart in the loss frontier, not as a fitted one
    for series, fills in rendered.items():
        need = {"isoflop", "isoflop legend", "curves legend"} | ({"frontier-loss"} if series != held else set())
        assert need <= set(fills), (series, fills)
        assert len(set(fills.values()) | {static[series]}) == 1, (series, fills, static[series])
    assert len({static[s] for s in static}) == 4  # and the budgets differ
    ctx.close()


@pytest.mark.browser
@pytest.mark.parametrize("width", [1400, 420])
def test_no_legend_clips_at_25_budgets(wide, browser, width):
    ctx, page, seen = _open(browser, wide, width)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"report-500-runs-{width}-first-screen.png"))  # what docs/screenshots shows
    report = page.evaluate(
        """[...document.querySelectorAll('figure[data-fig] .legend')].map(l => {
          const box = l.getBoundingClientRect();
          const chart = l.closest('figure').querySelector('.chart').getBoundingClientRect();
          const keys = [...l.querySelectorAll('button.key')];
          return {fig: l.closest('figure').dataset.fig, n: keys.length, over: l.scrollWidth - l.clientWidth,
            outside: keys.filter(k => { const r = k.getBoundingClientRect();
              return r.width < 10 || r.left < box.left - 0.5 || r.right > box.right + 0.5; }).length,
            clipped: keys.filter(k => k.scrollWidth > k.clientWidth + 1).length,
            below: box.top >= chart.bottom - 0.5};
        })"""
    )
    by_fig = {r["fig"]: r for r in report}
    assert by_fig["isoflop"]["n"] == 25 and by_fig["curves"]["n"] == 25
    for r in report:
        assert r["over"] <= 0 and r["outside"] == 0 and r["clipped"] == 0 and r["below"], r
    assert seen["exceptions"] == [] and seen["console"] == []
    ctx.close()


@pytest.mark.browser
def test_print_keeps_every_runs_column_and_no_controls(wide, browser, tmp_path):
    ctx = browser.new_context(viewport={"width": 703, "height": 1000})  # A4 less 12 mm margins, at 96 dpi
    page, _ = load_page(ctx, wide)
    page.wait_for_function("document.body.dataset.ready === '1'", timeout=60_000)
    page.emulate_media(media="print")
    columns = page.evaluate(
        """(() => { const t = document.querySelector('table.sortable');
          return [...t.querySelectorAll('th')].map(th => ({text: th.innerText, right: th.getBoundingClientRect().right,
            arrow: getComputedStyle(th.querySelector('button'), '::after').content})); })()"""
    )
    assert [c["text"] for c in columns][-2:] == ["steps", "wall (s)"] and len(columns) == 11
    assert all(c["right"] <= 703 for c in columns), columns
    assert all(c["arrow"] in ("none", "normal") for c in columns)
    assert page.evaluate(
        "[...document.querySelectorAll('.tools, .controls, .slrow, .downloads')]"
        ".every(e => getComputedStyle(e).display === 'none')"
    )
    assert page.evaluate("document.querySelector('#decision ul.panel').getBoundingClientRect().top") < 400
    pdf = page.pdf(format="A4", margin={"top": "12mm", "bottom": "12mm", "left": "12mm", "right": "12mm"})
    assert pdf[:5] == b"%PDF-" and len(pdf) > 100_000
    ctx.close()


@pytest.mark.browser
def test_runs_table_sorts_by_keyboard(gen, browser):
    ctx, page, _ = _open(browser, gen[3])
    header = page.locator("table.sortable th", has_text="val loss")
    header.locator("button").focus()
    page.keyboard.press("Enter")
    assert header.get_attribute("aria-sort") == "ascending"
    values = page.evaluate("[...document.querySelectorAll('table.sortable tbody tr')].map(r => r.cells[6].dataset.v)")
    numbers = [float(v) for v in values if v != ""]
    assert numbers == sorted(numbers) and len(numbers) >= 20
    page.keyboard.press("Space")
    assert header.get_attribute("aria-sort") == "descending"
    values = page.evaluate("[...document.querySelectorAll('table.sortable tbody tr')].map(r => r.cells[6].dataset.v)")
    assert [float(v) for v in values if v != ""] == sorted(numbers, reverse=True)
    assert page.evaluate("[...document.querySelectorAll('th.sort button')].every(b => b.tabIndex === 0)")
    ctx.close()


# --- the live page ------------------------------------------------------------------------------------------


@pytest.mark.browser
def test_live_page_stops_polling_within_an_interval_once_the_watcher_exits(browser, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = make_sweep(tmp_path, "live", budgets=(1e17, 1e18), sizes=3, steps=20, failures=False)
    root = tmp_path / "runs" / "live"
    _write_run(tmp_path / "staging", "live", 1e19, 2e8, 20, np.random.default_rng(3))
    staged, late = next((tmp_path / "staging").iterdir()), root / "late-run"
    late.mkdir()
    for name in ("config.yaml", "metrics.jsonl"):  # started, never finishes: the watcher would go on
        (late / name).write_text((staged / name).read_text())
    out, interval = tmp_path / "live.html", 1.0
    cycles = iter(watch_report("live", db, out, root, interval_s=interval, max_cycles=6))
    next(cycles)  # the first page
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page, seen = load_page(ctx, out)
    page.wait_for_function("document.body.dataset.live === 'polling'", timeout=30_000)
    assert "Stopped" not in page.inner_text("#live")
    page.evaluate("window.wbMark = 1")
    worker = threading.Thread(target=lambda: list(cycles), daemon=True)
    worker.start()
    worker.join(timeout=60)
    exited = time.time()
    page.wait_for_function("document.body.dataset.live === 'stopped'", timeout=10_000)
    assert time.time() - exited <= interval + 1.0  # within one interval (and the page's own work)
    text = page.inner_text("#live")
    assert text.startswith("Stopped: the watcher exited at") and "made its 6 regenerations" in text
    assert page.evaluate("window.wbMark") == 1  # nothing changed on the page's data: it never reloaded
    polls = len(seen["requests"])
    time.sleep(3 * interval)
    assert len(seen["requests"]) == polls and page.evaluate("window.wbMark") == 1  # it stopped polling
    assert {Path(r.split("?")[0]).name for r in seen["requests"]} == {"live.live.js"}
    assert seen["exceptions"] == [] and seen["console"] == []
    html = out.read_text()  # the page names only files that exist: the live fit is never written to fits/
    assert not (tmp_path / "fits" / "live.json").exists() and "run <code>workbench plan --law" not in html
    assert "run <code>workbench fit live --db" in html and "(it writes fits/live.json), then" in html
    ctx.close()


def test_report_cli_still_writes_a_page(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = make_sweep(tmp_path, "tiny", budgets=(1e17, 1e18), sizes=3, steps=10, failures=False)
    result = _report("--db", db)
    assert result.exit_code == 0 and Path(result.stdout.strip()).is_file()
