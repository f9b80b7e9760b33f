"""fits/NAME.json: atomic write, load, and the fit objects back from a loaded record."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.errors import WorkbenchError
from workbench.fit.isoflop import IsoflopFit
from workbench.fit.parametric import ParametricFit


def clean(value: object) -> object:
    """JSON-safe copy: numpy scalars to Python, NaN and inf to None."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return [clean(v) for v in value.tolist()]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def dumps(record: dict) -> str:
    """The record as strict JSON (no NaN)."""
    return json.dumps(clean(record), indent=1, allow_nan=False)


def write_json_atomic(path: str | Path, record: dict) -> Path:
    """Write the record as JSON, atomically (workbench.files)."""
    from workbench.files import atomic_write_text

    try:
        return atomic_write_text(path, dumps(record))
    except OSError as err:
        raise WorkbenchError(f"cannot write {path} ({err.strerror})", "Pick a writable path for --out.") from None


def load_fit(path: str | Path) -> dict:
    """Read fits/NAME.json."""
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"{path}: no such fit", "Run `workbench fit` first, or pass the path of a fit JSON.")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise WorkbenchError(f"{path}: not valid JSON (line {err.lineno})", "Rerun `workbench fit`.") from None
    except UnicodeDecodeError:
        raise WorkbenchError(
            f"{path}: not a UTF-8 JSON file", "Pass the fit JSON that `workbench fit` wrote."
        ) from None
    if not isinstance(record, dict):
        raise WorkbenchError(
            f"{path}: a fit JSON holds one object, got a {type(record).__name__}",
            "Pass the fit JSON that `workbench fit` wrote.",
        )
    return record


def points_from_record(record: dict) -> pd.DataFrame:
    """The points the fit used."""
    return pd.DataFrame(record["points"])


def isoflop_from_record(record: dict) -> IsoflopFit | None:
    """The IsoflopFit of a loaded record (None if the fit had no isoFLOP part)."""
    iso = record.get("isoflop")
    if not iso:
        return None
    keys = ("G", "a", "H", "b")
    return IsoflopFit(tuple(iso["budgets"]), tuple(iso["minima"]), tuple(iso["excluded"]), *(iso[k] for k in keys))


def parametric_from_record(record: dict) -> ParametricFit | None:
    """The ParametricFit of a loaded record (None if the fit had no parametric part)."""
    par = record.get("parametric")
    if not par:
        return None
    settings = record.get("settings", {})
    theta = np.array([[math.log(par["E"]), math.log(par["A"]), math.log(par["B"]), par["alpha"], par["beta"]]])
    return ParametricFit(
        E=par["E"],
        A=par["A"],
        B=par["B"],
        alpha=par["alpha"],
        beta=par["beta"],
        objective=par.get("objective", float("nan")),
        n_starts=settings.get("starts", 0),
        n_points=record.get("n_points", 0),
        huber_delta=settings.get("huber_delta", 1e-3),
        overestimate_penalty=settings.get("overestimate_penalty", 1.0),
        optima=theta,
    )
