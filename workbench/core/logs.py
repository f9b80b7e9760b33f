"""Progress and warnings of the library go through `logging` under the `workbench` logger; only the CLI prints.

Every process gets plain `message` lines on stderr at INFO without any setup (a pool worker, a Slurm job,
a notebook), written to whatever sys.stderr is at the time, so a redirected or captured stream gets them.
The CLI calls `setup` once: a rich handler on a terminal, and DEBUG with --debug.
"""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.highlighter import NullHighlighter
from rich.logging import RichHandler

LOGGER = "workbench"


class _Stderr(logging.StreamHandler):
    """A handler that writes to the current sys.stderr, not the one of the time it was made."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def install_default() -> None:
    """Plain lines on stderr at INFO for the `workbench` logger, unless it already has a handler."""
    logger = logging.getLogger(LOGGER)
    if not logger.handlers:
        logger.addHandler(_Stderr())
        logger.setLevel(logging.INFO)


def setup(debug: bool = False) -> None:
    """The CLI's logging: a rich handler when stderr is a terminal (plain lines otherwise); DEBUG with --debug."""
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    if sys.stderr.isatty():
        handler: logging.Handler = RichHandler(
            console=Console(stderr=True),
            show_time=False,
            show_level=False,
            show_path=False,
            markup=False,
            highlighter=NullHighlighter(),
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = _Stderr()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
