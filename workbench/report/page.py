"""The HTML report: gather the inputs, build the sections, render them with jinja2, write one file atomically.

The page is self-contained: static figures are <img> tags with data: URIs, interactive ones Vega-Lite specs
drawn by the Vega bundle inlined in the page (report.interactive), the CSS, data and scripts are inline,
and nothing is fetched, so it opens offline and makes no request.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from markupsafe import Markup, escape

import workbench
from workbench.core.errors import WorkbenchError
from workbench.core.files import atomic_write_text, safe_name
from workbench.report import charts, sections
from workbench.report.crosscheck_section import crosscheck_section
from workbench.report.decision import decision_section
from workbench.report.inputs import ReportInputs, gather
from workbench.report.interactive import spec_json, vega_bundle

TEMPLATES = Path(__file__).parent / "templates"
_TICKS = re.compile(r"`([^`]+)`")


def _codify(text: object):
    """Escape the text, then show `command` spans as <code>."""

    return Markup(_TICKS.sub(r"<code>\1</code>", str(escape(str(text)))))


def build_sections(inputs: ReportInputs, command: str | None = None) -> list[dict]:
    """The ten sections of the report, in order (each says what is missing instead of failing)."""
    built = [
        decision_section(inputs),
        sections.summary_section(inputs),
        sections.curves_section(inputs),
        sections.isoflop_section(inputs),
        sections.frontier_section(inputs),
        sections.parametric_section(inputs),
        sections.holdout_section(inputs),
        crosscheck_section(inputs),
        sections.plan_section(inputs),
        sections.runs_section(inputs, command),
    ]
    for section in built:
        for table in section["tables"]:
            table.setdefault("sortable", False)
    return built


def environment():
    """The jinja2 environment of the report templates (autoescaped; `codify` filter)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["codify"] = _codify
    return env


def assets(charts: bool = True) -> dict:
    """The page's inline CSS and script, and the Vega bundle when the page has charts (as Markup)."""

    return {
        "css": Markup((TEMPLATES / "page.css").read_text()),
        "js": Markup((TEMPLATES / "slider.js").read_text() + (TEMPLATES / "page.js").read_text()),
        "vega": Markup(vega_bundle()) if charts else "",
    }


def prepare_charts(built: list[dict]) -> bool:
    """Serialise every section's charts for the template; whether the page has any."""

    found = False
    for section in built:
        for c in section.setdefault("charts", []):
            c["spec_json"] = Markup(spec_json(c["spec"]))
            found = True
    return found


def render(inputs: ReportInputs, command: str | None = None, live: dict | None = None) -> str:
    """The report page as one HTML string (`live`: the watch banner {line, reload_s}, see report.watch)."""

    built = build_sections(inputs, command)
    files = charts.attach(inputs, built)
    return (
        environment()
        .get_template("report.html.j2")
        .render(
            sweep=inputs.sweep,
            version=workbench.__version__,
            generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            sections=built,
            downloads=files,
            assets=assets(prepare_charts(built)),
            live=live,
        )
    )


def write_text_atomic(path: Path, text: str) -> Path:
    """Write the report atomically (workbench.core.files); an unwritable path is a one-line error."""

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
    all_versions: bool = False,
) -> Path:
    """Write the sweep's report (default reports/SWEEP.html) and return its path.

    fit_path: a fits/NAME.json (default: the sweep's latest fit in the store, else fits/SWEEP.json).
    plan: a plan record or the path of `workbench plan --json` output (default: the sweep's latest plan row).
    extra: outcomes to show in the held-out and plan sections ({"demo": run_demo's record} or key -> value).
    command: the command line for the provenance (default: this process's).
    all_versions: report the runs of every version of the sweep (default: its current version's).
    """
    from workbench.store.database import default_db_path

    db = Path(db_path) if db_path is not None else default_db_path()
    inputs = gather(sweep, db, Path(fit_path) if fit_path is not None else None, plan, extra, all_versions)
    if out is None:
        safe_name(inputs.sweep, "sweep name", f"{db} (from a run's config.yaml meta.sweep)")
    html = render(inputs, command)
    return write_text_atomic(Path(out) if out is not None else Path("reports") / f"{inputs.sweep}.html", html)
