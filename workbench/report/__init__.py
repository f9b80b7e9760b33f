"""The HTML report of a sweep: `write_report` (jinja2 + matplotlib; both imported only when it runs)."""

from __future__ import annotations

from pathlib import Path


def write_report(
    sweep: str | None,
    db_path: str | Path | None,
    fit_path: str | Path | None = None,
    plan: dict | str | Path | None = None,
    out: str | Path | None = None,
    extra: dict | None = None,
    *,
    command: str | None = None,
) -> Path:
    """Write reports/SWEEP.html (or `out`) for the sweep; see workbench.report.html.write_report."""
    from workbench.report import html

    return html.write_report(sweep, db_path, fit_path, plan, out, extra, command=command)


__all__ = ["write_report"]
