"""Atomic file writes (results, configs, fits and reports are replaced whole or not at all), strict JSON and
the one check of names that become paths."""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from workbench.core.errors import WorkbenchError


def atomic_write_text(path: str | Path, text: str, mode: int = 0o644) -> Path:
    """Write `text` to a temp file in the same folder, fsync it, then os.replace it over `path`:
    a reader (or a crash) sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600; results are meant to be read by others
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def json_clean(value: Any) -> Any:
    """A JSON-safe copy: NaN and infinities become None (JSON has no NaN), numpy scalars and arrays become
    Python numbers and lists, tuples lists, paths and other objects their text. The one NaN-to-null rule
    of the package: run records, store columns and fits all go through it."""
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_clean(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays, without importing numpy
        return json_clean(value.tolist())
    return str(value)


def json_text(value: Any, indent: int | None = None) -> str:
    """Strict JSON text of `value` after json_clean (no NaN, no Infinity)."""
    return json.dumps(json_clean(value), indent=indent, allow_nan=False)


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")  # "+": run ids name budgets like c4e+11


def safe_name(value: object, what: str, where: str = "") -> str:
    """`value` if it is a plain file name (letters, digits, `_`, `.`, `+`, `-`; no `/`, no `..`), else a one-line
    error. Every name that becomes part of a path (sweep, run id, fit, report) is checked with this where
    it is read: a name from a file (a run's config.yaml, a fit JSON) can otherwise point anywhere."""
    text = str(value) if value is not None else ""
    if not SAFE_NAME.fullmatch(text) or ".." in text:
        shown = repr(text)[:80]
        place = f"{where}: " if where else ""
        raise WorkbenchError(
            f"{place}{what} {shown} is not a plain name (letters, digits, '_', '.', '+', '-'; at most 128)",
            f"Rename the {what}; it becomes part of a file path.",
        )
    return text
