"""The fit stage: validated points -> every fit, check and plot -> fits/NAME.json (a FitRecord).

`workbench fit` and the demo both call `fit_stage`; the store records the result (`Store.record_fit`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from workbench.core.errors import WorkbenchError
from workbench.core.files import atomic_write_text
from workbench.core.logs import progress
from workbench.fit import fitfile
from workbench.fit.pipeline import FitOptions, FitResults, fit_all, to_record
from workbench.records import FitRecord, parse_fit


def save_plots(results: FitResults, out: Path) -> list[Path]:
    """The isoFLOP, parametric and rollout figures next to the fit JSON (PNG and SVG)."""
    from workbench.fit import figures

    stem = Path(out).with_suffix("")
    paths = []
    if results.isoflop is not None:
        paths += figures.save_figure(figures.isoflop_figure(results.points, results.isoflop), f"{stem}.isoflop")
    if results.parametric is not None:
        paths += figures.save_figure(
            figures.parametric_figure(results.points, results.parametric), f"{stem}.parametric"
        )
    if results.rollout:
        paths += figures.save_figure(figures.rollout_figure(results.rollout), f"{stem}.rollout")
    return paths


def fit_stage(
    points: pd.DataFrame,
    options: FitOptions,
    *,
    name: str,
    source: str,
    out: Path,
    sweep: str | None = None,
    plots: bool = True,
    curves: list | None = None,
    extra: dict | None = None,
) -> FitRecord:
    """Fit validated points (workbench.fit.points) as `options` say, save the plots and write `out` atomically;
    the elapsed time is logged at the end when the fit took more than two seconds. `extra`: more top-level keys of
    the record (the sweep's version and spec, which a plan inherits)."""
    with progress(f"fit {name}", 1) as advance:
        results = fit_all(points, options, curves)
        record = {**to_record(results, name, source, sweep), **(extra or {})}
        record["plots"] = [str(p) for p in save_plots(results, out)] if plots else []
        advance(1)
    text = fitfile.dumps(record)
    try:
        atomic_write_text(out, text)
    except OSError as err:  # e.g. --out inside a file, or a folder without write access
        raise WorkbenchError(f"cannot write {out} ({err.strerror})", "Pick a writable path for --out.") from None
    return parse_fit(json.loads(text), str(out))  # the record as a reader of the file sees it (NaN as null)
