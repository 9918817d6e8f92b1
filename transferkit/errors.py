"""The project's exception types.

Every error a user can cause is a :class:`UserInputError` (or a subclass): it carries a
``hint`` that says what to do, and the command line prints it without a traceback.
"""
from __future__ import annotations

import os


def shown(name: str | os.PathLike) -> str:
    """A file name or origin as messages show it: control characters (a newline in a file name)
    escaped, so one name is one line of output and cannot forge others."""
    s = os.fspath(name) if isinstance(name, os.PathLike) else str(name)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


class TransferkitError(Exception):
    """Base class of every exception raised on purpose by transferkit."""


class UserInputError(TransferkitError, ValueError):
    """Bad input from the user: a file, a column, an option.

    Args:
        message: what is wrong, naming the file, line or column.
        hint: what to do about it.
    """

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message}\n  hint: {hint}")


class DataValidationError(UserInputError):
    """The pre-flight check found problems; ``report`` lists every one of them."""

    def __init__(self, report, hint: str | None = None):  # report: transferkit.data.report.ValidationReport
        self.report = report
        super().__init__(
            report.summary(),
            hint=hint or "fix the files listed above, or pass --skip-bad (skip_bad=True) to leave them out "
            "and record them in the run directory",
        )


class MissingDependencyError(TransferkitError, ImportError):
    """An optional dependency is not installed; the message names the ``pip install`` that fixes it."""

    def __init__(self, what: str, pip: str):
        self.pip = pip
        super().__init__(f"{what} needs an optional package: run `pip install {pip}`")


class NotFittedError(TransferkitError, RuntimeError):
    """``predict`` (or a learned attribute) was used before ``fit``."""


class UnsafeFileError(UserInputError):
    """A file would need pickle (arbitrary code) to load and the user did not allow it."""
