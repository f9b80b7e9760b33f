"""The one error type the CLI turns into a one-line message."""

from __future__ import annotations


class WorkbenchError(Exception):
    """A user-facing error: what went wrong and what to do about it.

    The CLI prints `Error: <message>. <hint>` and exits with `exit_code` (1 unless a command needs a
    distinct code, e.g. a diverged training run). `where` (a `file:line`, optional) is written before
    the message; `at` moves the same problem to another place.
    """

    def __init__(self, message: str, hint: str = "", exit_code: int = 1, *, where: str = ""):
        self.detail = message.rstrip(".")
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)
        self.message = f"{where}: {self.detail}" if where else self.detail
        self.hint = hint
        self.exit_code = exit_code

    def at(self, where: str, context: str = "") -> WorkbenchError:
        """This problem placed at `where` (file:line), under `context` (what was being built), same hint."""
        detail = f"{context}: {self.detail}" if context else self.detail
        return WorkbenchError(detail, self.hint, self.exit_code, where=where)

    def __str__(self) -> str:
        text = self.message + "."
        return f"{text} {self.hint}" if self.hint else text
