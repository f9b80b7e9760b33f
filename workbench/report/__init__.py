"""The HTML report of a sweep: `write_report` (workbench.report.html; jinja2 and matplotlib are imported
only when it is first used, so `import workbench.report` stays light)."""

from __future__ import annotations


def __getattr__(name: str):
    if name == "write_report":
        from workbench.report.html import write_report

        return write_report
    raise AttributeError(f"module 'workbench.report' has no attribute {name!r}")


__all__ = ["write_report"]
