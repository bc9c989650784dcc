"""The one exception type users see: a message that says what is wrong, where, and how to fix it."""

from __future__ import annotations


class LmtuneError(Exception):
    """An error caused by the user's input (config, data, paths), reported without a traceback.

    The CLI prints ``str(error)`` and exits with ``exit_code``; the Python API raises it as is.
    """

    exit_code = 2  # the input is wrong: fix it and run again

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


class EnvironmentFault(LmtuneError):
    """The machine, not the input: a full disk, a read-only directory, a run directory another process holds."""

    exit_code = 3


class DivergedError(LmtuneError):
    """Training stopped because its loss or gradient norm kept coming out non-finite; the run directory keeps the
    last good weights and says so."""

    exit_code = 3


class Diverged(Exception):
    """Raised by the loop when more updates were skipped as non-finite than train.max_bad_steps allows (or by a
    checkpoint that finds non-finite weights: `reason`); the recipe turns it into a DivergedError once the last good
    weights are put back."""

    def __init__(self, step: int, first_bad: int, bad_steps: int, reason: str | None = None) -> None:
        self.step, self.first_bad, self.bad_steps, self.reason = step, first_bad, bad_steps, reason
        super().__init__(reason or f"diverged at step {step} ({bad_steps} non-finite steps, the first at {first_bad})")


class Interrupted(Exception):
    """Raised after Ctrl-C once a checkpoint of the last finished step is safely on disk."""

    def __init__(self, step: int) -> None:
        self.step = step
        super().__init__(f"interrupted after step {step}")
