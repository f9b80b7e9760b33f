"""Progress and warnings of the library go through `logging` under the `workbench` logger; only the CLI prints.

Every process gets plain `message` lines on stderr at INFO without any setup (a pool worker, a Slurm job,
a notebook), written to whatever sys.stderr is at the time, so a redirected or captured stream gets them.
The CLI calls `setup` once: a rich handler on a terminal, and DEBUG with --debug.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich loads only on a terminal: every process imports this module
    from rich.progress import Progress

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
        from rich.console import Console
        from rich.highlighter import NullHighlighter
        from rich.logging import RichHandler

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


@contextlib.contextmanager
def progress(what: str, total: int, unit: str = "", min_s: float = 2.0) -> Iterator[Callable[[int], None]]:
    """Report progress of `total` steps of work: yields advance(n). On a terminal a bar (after `min_s`
    seconds, so quick work shows nothing); otherwise a plain log line at every tenth of the way once `min_s`
    have passed; and the elapsed time at the end when the work took longer than `min_s`."""
    log = logging.getLogger(f"{LOGGER}.progress")
    start, done, next_line = time.perf_counter(), 0, 0.1
    bar: Progress | None = None
    task = None

    def advance(n: int) -> None:
        nonlocal done, next_line, bar, task
        done += n
        elapsed = time.perf_counter() - start
        if elapsed < min_s or not total:
            return
        if sys.stderr.isatty():
            if bar is None:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

                columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), TextColumn(unit), TimeElapsedColumn())
                bar = Progress(*columns, console=Console(stderr=True), transient=True)
                bar.start()
                task = bar.add_task(what, total=total)
            bar.update(task, completed=done)
        elif done / total >= next_line:
            log.info("%s: %d/%d %s (%.0f s)", what, done, total, unit, elapsed)
            next_line = (int(done / total * 10) + 1) / 10

    try:
        yield advance
    finally:
        if bar is not None:
            bar.stop()
        elapsed = time.perf_counter() - start
        if elapsed >= min_s:
            log.info("%s: done in %.1f s", what, elapsed)
