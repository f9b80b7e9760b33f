"""The Vega JavaScript a report inlines (vega, vega-lite, vega-embed), from the vl-convert-python wheel.

vl-convert builds the bundle in an embedded V8, which aborts the whole process (a C stack dump) when it
cannot reserve its address space, as under a `ulimit -v` common on HPC login and compute nodes (any limit
from 2 to 16 GB was too small). So the bundle is built once in a child process and kept in the cache folder
(bundle_cache_path); a child that dies is a one-line error that says how to build the cache.
"""

from __future__ import annotations

import functools
import logging
import os
import resource
import subprocess
import sys
from pathlib import Path

from workbench.core.errors import WorkbenchError
from workbench.core.files import atomic_write_text
from workbench.report.inline import script_code

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def vega_bundle() -> str:
    """vega, vega-lite and vega-embed as one classic script (sets window.vegaEmbed), safe inside <script>:
    from the cache, else built in a child process and cached."""
    import vl_convert

    cache = bundle_cache_path(getattr(vl_convert, "__version__", "unknown"))
    if cache.is_file():
        return cache.read_text(encoding="utf-8")
    code = "import sys, vl_convert; sys.stdout.write(vl_convert.javascript_bundle())"
    try:
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    except subprocess.TimeoutExpired:
        child = None
    if child is None or child.returncode != 0 or not child.stdout:
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        under = f" under `ulimit -v {limit // 1024}`" if limit != resource.RLIM_INFINITY else ""
        how = "timed out" if child is None else f"exit {child.returncode}"
        raise WorkbenchError(
            f"the report's chart bundle could not be built: vl-convert's V8 engine failed{under} ({how})",
            f"Run `workbench report` once without a virtual-memory limit (e.g. on a login node): the bundle is "
            f"then cached in {cache}, or raise `ulimit -v`.",
        )
    bundle = str(script_code(child.stdout.decode("utf-8")))
    try:
        atomic_write_text(cache, bundle)
    except WorkbenchError as err:  # a read-only home: the page is still written, the next one rebuilds it
        log.warning("workbench: could not cache the chart bundle (%s)", err)
    return bundle


def bundle_cache_path(version: str) -> Path:
    """Where the chart bundle of vl-convert `version` is cached: $XDG_CACHE_HOME (else ~/.cache)/workbench."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "workbench" / f"vega-bundle-{version}.js"
