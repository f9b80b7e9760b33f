"""The HTML report: gather the inputs, build the sections, render them with jinja2, write one file atomically.

The page is self-contained: figures are <img> tags with data: URIs, the CSS and the table-sorting script
are inline, and nothing names an http(s) resource, so it opens offline and makes no request.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import workbench
from workbench.errors import WorkbenchError
from workbench.report import sections
from workbench.report.data import ReportInputs, gather

TEMPLATES = Path(__file__).parent / "templates"
_TICKS = re.compile(r"`([^`]+)`")


def _codify(text: object):
    """Escape the text, then show `command` spans as <code>."""
    from markupsafe import Markup, escape

    return Markup(_TICKS.sub(r"<code>\1</code>", str(escape(str(text)))))


def build_sections(inputs: ReportInputs, command: str | None = None) -> list[dict]:
    """The eight sections of the report, in order (each says what is missing instead of failing)."""
    built = [
        sections.summary_section(inputs),
        sections.curves_section(inputs),
        sections.isoflop_section(inputs),
        sections.frontier_section(inputs),
        sections.parametric_section(inputs),
        sections.holdout_section(inputs),
        sections.plan_section(inputs),
        sections.runs_section(inputs, command),
    ]
    for section in built:
        for table in section["tables"]:
            table.setdefault("sortable", False)
    return built


def render(inputs: ReportInputs, command: str | None = None) -> str:
    """The report page as one HTML string."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["codify"] = _codify
    template = env.get_template("report.html.j2")
    return template.render(
        sweep=inputs.sweep,
        version=workbench.__version__,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        sections=build_sections(inputs, command),
    )


def write_text_atomic(path: Path, text: str) -> Path:
    """Write the report atomically (workbench.files); an unwritable path is a one-line error."""
    from workbench.files import atomic_write_text

    try:
        return atomic_write_text(path, text)
    except OSError as err:
        raise WorkbenchError(f"--out: cannot write {path} ({err.strerror})", "Pick a writable path.") from None


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
    """Write the sweep's report (default reports/SWEEP.html) and return its path.

    fit_path: a fits/NAME.json (default: the sweep's latest fit in the store, else fits/SWEEP.json).
    plan: a plan record or the path of `workbench plan --json` output (default: the sweep's latest plan row).
    extra: outcomes to show in the held-out and plan sections ({"demo": run_demo's record} or key -> value).
    command: the command line for the provenance (default: this process's).
    """
    from workbench.store import default_db_path

    db = Path(db_path) if db_path is not None else default_db_path()
    inputs = gather(sweep, db, Path(fit_path) if fit_path is not None else None, plan, extra)
    if out is None:
        from workbench.files import safe_name

        safe_name(inputs.sweep, "sweep name", f"{db} (from a run's config.yaml meta.sweep)")
    html = render(inputs, command)
    return write_text_atomic(Path(out) if out is not None else Path("reports") / f"{inputs.sweep}.html", html)
