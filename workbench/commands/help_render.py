"""Typer's help renderer without the Markdown parser and traceback renderer it never uses here.

`typer.rich_utils` imports `rich.markdown` (markdown-it) and `rich.traceback` (pygments) at module level:
about 20 ms of `workbench --help` on 2 cores (`python -X importtime`). The parser only runs under
`rich_markup_mode="markdown"` and the traceback only with typer's pretty exceptions; workbench uses typer's
default "rich" markup and turns pretty exceptions off. So for help the renderer is loaded against stand-ins
that import the real class on first use. Nothing else changes: every later `import rich.markdown` or
`import rich.traceback` gets the real module.
"""

from __future__ import annotations

import importlib
import sys
import types

HELP_FLAGS = ("--help",)
DEFERRED = {"rich.markdown": "Markdown", "rich.traceback": "Traceback"}  # module -> the one name rich_utils takes


def _deferred(module: str, name: str) -> type:
    """A stand-in for `module.name`: calling it or reading an attribute (a classmethod) loads the real class."""

    def real():
        return getattr(importlib.import_module(module), name)

    meta = type(f"Deferred{name}Type", (type,), {"__getattr__": lambda cls, attr: getattr(real(), attr)})
    return meta(name, (), {"__new__": lambda cls, *args, **kwargs: real()(*args, **kwargs)})


def load_help_renderer() -> None:
    """Import typer.rich_utils without rich.markdown and rich.traceback (a no-op when any is already loaded)."""
    if any(name in sys.modules for name in ("typer.rich_utils", *DEFERRED)):
        return
    stand_ins = {}
    for module, name in DEFERRED.items():
        stand_ins[module] = types.ModuleType(module)
        setattr(stand_ins[module], name, _deferred(module, name))
    sys.modules.update(stand_ins)
    try:
        import typer.rich_utils  # noqa: F401  (binds the stand-ins)
    except ImportError:  # a typer that wants more of these modules: it loads them the usual way later
        sys.modules.pop("typer.rich_utils", None)
    finally:
        for module, stand_in in stand_ins.items():
            if sys.modules.get(module) is stand_in:
                del sys.modules[module]


def wants_help(argv: list[str]) -> bool:
    """Whether the command line prints help (an explicit flag, or nothing at all: the root shows help)."""
    return not argv or any(flag in argv for flag in HELP_FLAGS)
