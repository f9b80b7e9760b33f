"""The one error type the CLI turns into a one-line message."""


class WorkbenchError(Exception):
    """A user-facing error: what went wrong and what to do about it.

    The CLI prints `Error: <message>. <hint>` and exits with `exit_code` (1 unless a command needs a
    distinct code, e.g. a diverged training run).
    """

    def __init__(self, message: str, hint: str = "", exit_code: int = 1):
        super().__init__(message)
        self.message = message.rstrip(".")
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        text = self.message + "."
        return f"{text} {self.hint}" if self.hint else text
