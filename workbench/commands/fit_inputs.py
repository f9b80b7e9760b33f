"""What `workbench fit` reads and where it records: a sweep's points and loss curves from the store, or a CSV's;
the fit's row in the store's fits table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    import pandas as pd


def load_points(
    sweep: str | None, from_csv: Path | None, db_path: Path, metric: str, group_decades: float, all_versions: bool
) -> tuple[pd.DataFrame, dict]:
    """(validated points, the record's sweep keys: the version fitted and its spec, which a plan inherits)."""
    from workbench.fit.points import load_csv, validate_points

    if from_csv is not None:
        return load_csv(from_csv, group_decades), {}
    from workbench.store.database import Store

    with Store(db_path) as store:
        frame = store.points(sweep, metric=metric, all_versions=all_versions)
        scope, spec = store.scope(sweep, all_versions), store.sweep_spec(sweep)
    typer.echo(f"fit of sweep {sweep}: {len(frame)} completed runs, {scope.describe()}", err=True)
    extra = {"sweep_version": scope.as_dict(), "sweep_spec": spec}
    return validate_points(frame, f"sweep {sweep!r} in {db_path}"), extra


def loss_curves(points: pd.DataFrame, sweep: str | None, db_path: Path, csv: Path | None) -> list | None:
    """The runs' loss curves for Chinchilla approach 1 (workbench.fit.envelope): a sweep's from the store, else
    those of a CSV given with --curves (None without one)."""
    from workbench.fit.envelope import run_curves, sweep_curves
    from workbench.fit.points import load_curves

    if sweep is not None:
        from workbench.store.database import Store

        with Store(db_path) as store:
            return sweep_curves(points, store.metrics)
    if csv is None:
        return None
    return run_curves(load_curves(csv, points), points) or None


def record_in_store(db_path: Path, record: dict) -> None:
    """The fit's row in the store's fits table."""
    from workbench.store.database import Store

    with Store(db_path) as store:
        store.record_fit(record)
