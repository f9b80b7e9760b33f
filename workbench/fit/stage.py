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


def _as_read(record: dict, name: str) -> FitRecord:
    """The record as a reader of fits/NAME.json sees it (NaN as null). A fit no reader would accept (an exponent
    of the wrong sign, say) is an error of the data, said in one line before anything is written."""
    try:
        return parse_fit(json.loads(fitfile.dumps(record)), f"the fit of {name}")
    except WorkbenchError as err:
        raise WorkbenchError(
            f"{err.message}: the runs do not determine this law",
            "Add budgets (at least 3 to fit on) and sizes about each budget's optimum, or fit the other method "
            "alone (--method parametric or isoflop).",
        ) from None


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
        parsed = _as_read(record, name)  # checked once, before the plots and the file
        record["plots"] = [str(p) for p in save_plots(results, out)] if plots else []
        advance(1)
    try:
        atomic_write_text(out, fitfile.dumps(record))
    except OSError as err:  # e.g. --out inside a file, or a folder without write access
        raise WorkbenchError(f"cannot write {out} ({err.strerror})", "Pick a writable path for --out.") from None
    return parsed.model_copy(update={"plots": record["plots"]})
