"""Benchmark: a 500-run sweep's report, its size and the time headless Chromium takes to open and draw it.

The sweep is generated (25 budgets x 20 sizes drawn from Chinchilla's law, 300 logged steps a run, as
tests/test_report.py's make_sweep writes them), ingested, fitted (100 bootstrap resamples) and reported.
"Open" is from navigation to the first screen drawn and interactive (the page sets body[data-ready] once the
charts in view are drawn; the others are drawn lazily after it), median of 5 loads in a fresh browser context
each; "load" is the load event alone, "as the page timed it" the page's own clock (performance.now()) when it set
body[data-ready], and "all charts" the time until every chart is drawn (body[data-drawn]).
The target is < 5 MB and < 3 s. The machine's load average is printed with the figures.
Run: .venv/bin/python benchmarks/report.py [--runs-per-budget 20] [--budgets 25] [--loads 5] [--keep DIR [--reuse]]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_report import fit_sweep, make_sweep  # noqa: E402

from workbench.report.page import write_report  # noqa: E402


def open_times(html: Path, loads: int = 5) -> tuple[list[float], ...]:
    from playwright.sync_api import sync_playwright

    scratch = tempfile.mkdtemp(prefix="chromium-")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=shutil.which("chromium"),
            env={**os.environ, "TMPDIR": scratch, "XDG_CONFIG_HOME": scratch},
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND"],
        )
        drawn, loaded, every, in_page = [], [], [], []
        for _ in range(loads):
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = ctx.new_page()
            start = time.perf_counter()
            page.goto("file://" + str(html.resolve()), wait_until="load", timeout=30_000)
            loaded.append(time.perf_counter() - start)
            page.wait_for_function("document.body.dataset.ready === '1'", timeout=30_000)
            drawn.append(time.perf_counter() - start)
            in_page.append(float(page.get_attribute("body", "data-ready-ms")) / 1e3)
            page.wait_for_function("document.body.dataset.drawn === 'all'", timeout=60_000)
            every.append(time.perf_counter() - start)
            ctx.close()
        browser.close()
    shutil.rmtree(scratch, ignore_errors=True)
    return drawn, loaded, every, in_page


def samples(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budgets", type=int, default=25)
    parser.add_argument("--runs-per-budget", type=int, default=20)
    parser.add_argument("--loads", type=int, default=5, help="page loads to time (median reported)")
    parser.add_argument("--keep", type=Path, help="keep the sweep, fit and report in this folder")
    parser.add_argument("--reuse", action="store_true", help="with --keep: re-report the kept sweep and fit")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="report-bench-"))
    if args.reuse and args.keep:
        return report_and_open(root, args, made=0.0)
    start = time.perf_counter()
    budgets = tuple(np.geomspace(1e17, 1e21, args.budgets))
    db = make_sweep(root, "big", budgets=budgets, sizes=args.runs_per_budget, steps=300, failures=False)
    fit_sweep(db, "big", root / "fits" / "big.json", bootstrap=100)
    report_and_open(root, args, time.perf_counter() - start)


def report_and_open(root: Path, args: argparse.Namespace, made: float) -> None:
    start = time.perf_counter()
    out = write_report("big", root / "big.duckdb", fit_path=root / "fits" / "big.json", out=root / "big.html")
    written = time.perf_counter() - start
    drawn, loaded, every, in_page = open_times(out, args.loads)
    runs = args.budgets * args.runs_per_budget
    print(f"runs                      {runs}")
    print(f"sweep + fit (s)           {made:.1f}")
    print(f"write_report (s)          {written:.2f}")
    print(f"report size (MB)          {out.stat().st_size / 1e6:.2f}   (limit 5)")
    print(f"load event (s, median)    {statistics.median(loaded):.2f}")
    print(f"open, first screen (s)    {statistics.median(drawn):.2f}   (limit 3; all: {samples(drawn)})")
    print(f"  as the page timed it    {statistics.median(in_page):.2f}   (all: {samples(in_page)})")
    print(f"all charts drawn (s)      {statistics.median(every):.2f}   (all: {samples(every)})")
    print(f"load average (1, 5, 15)   {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
