"""fits/NAME.json: the atomic writer, and the fit objects (for plots) back from a FitRecord.

The one reader of the file is workbench.records.read_fit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.core.errors import WorkbenchError
from workbench.core.files import atomic_write_text, json_clean
from workbench.fit.isoflop import IsoflopFit
from workbench.fit.parametric import ParametricFit
from workbench.records import FitRecord, read_fit


def dumps(record: dict | FitRecord) -> str:
    """The record as strict JSON (NaN and inf as null)."""
    data = record.as_dict() if isinstance(record, FitRecord) else record
    return json.dumps(json_clean(data), indent=1, allow_nan=False)


def write_json_atomic(path: str | Path, record: dict | FitRecord) -> Path:
    """Write the record as JSON, atomically (workbench.core.files)."""
    try:
        return atomic_write_text(path, dumps(record))
    except OSError as err:
        raise WorkbenchError(f"cannot write {path} ({err.strerror})", "Pick a writable path for --out.") from None


def load_fit(path: str | Path) -> dict:
    """fits/NAME.json, validated (workbench.records.read_fit), as a plain dict for the report; a JSON with
    neither fit (`{}`, a tune study's hparams file, a demo outcome) is a one-line error."""
    record = read_fit(path)
    if record.isoflop is None and record.parametric is None:
        raise WorkbenchError(
            f"fit file {path} holds no fit (neither an isoflop nor a parametric block)",
            "Pass the fits/NAME.json that `workbench fit` wrote.",
        )
    return record.as_dict()


def points_from_record(record: FitRecord) -> pd.DataFrame:
    """The points the fit used."""
    return pd.DataFrame(record.points)


def isoflop_from_record(record: FitRecord) -> IsoflopFit | None:
    """The IsoflopFit of a record (None if the fit had no isoFLOP part)."""
    iso = record.isoflop
    if iso is None or not iso.has_laws:
        return None
    return IsoflopFit(tuple(iso.budgets), tuple(iso.minima), tuple(iso.excluded), iso.G, iso.a, iso.H, iso.b)


def parametric_from_record(record: FitRecord) -> ParametricFit | None:
    """The ParametricFit of a record (None if the fit had no parametric part)."""
    par = record.parametric
    if par is None:
        return None
    settings = record.settings
    theta = np.array([[math.log(par.E), math.log(par.A), math.log(par.B), par.alpha, par.beta]])
    return ParametricFit(
        E=par.E,
        A=par.A,
        B=par.B,
        alpha=par.alpha,
        beta=par.beta,
        objective=par.objective if par.objective is not None else float("nan"),
        n_starts=settings.get("starts", 0),
        n_points=record.n_points or 0,
        huber_delta=settings.get("huber_delta", 1e-3),
        overestimate_penalty=settings.get("overestimate_penalty", 1.0),
        optima=theta,
    )
