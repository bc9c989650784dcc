"""The one exception type users see: a message that says what is wrong, where, and how to fix it."""

from __future__ import annotations


class LmtuneError(Exception):
    """An error caused by the user's input (config, data, paths), reported without a traceback.

    The CLI prints ``str(error)`` and exits with a non-zero code; the Python API raises it as is.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  hint: {hint}")


class DataError(LmtuneError):
    """Bad training data: the message names the file, the line (or row) and the field."""

    def __init__(self, source: str, line: int | None, field: str | None, problem: str, hint: str | None = None) -> None:
        where = source if line is None else f"{source}:{line}"
        what = f"{where}: field '{field}': {problem}" if field else f"{where}: {problem}"
        self.source, self.line, self.field, self.problem = source, line, field, problem
        super().__init__(what, hint)


class Interrupted(Exception):
    """Raised after Ctrl-C once a checkpoint of the last finished step is safely on disk."""

    def __init__(self, step: int) -> None:
        self.step = step
        super().__init__(f"interrupted after step {step}")
