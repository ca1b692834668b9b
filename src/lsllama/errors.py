"""One error vocabulary for the whole package.

Library code raises these; only the CLI turns them into a one-line message and an exit code, so the
Python API keeps real exceptions and the command line never shows a traceback for a user's mistake.
"""

from __future__ import annotations

from pathlib import Path


class LsllamaError(Exception):
    """Base class; `exit_code` is what the CLI exits with."""

    exit_code = 1


class UsageError(LsllamaError):
    """A bad argument, option or configuration value."""

    exit_code = 2


class DataError(LsllamaError):
    """A bad input file: the message names the file and, where it applies, the line."""

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f":{line}"
            where += ": "
        super().__init__(where + message)
        self.path = path
        self.line = line


class RunError(LsllamaError):
    """A run folder that is missing, incomplete or corrupt."""

    exit_code = 2


class TrainingError(LsllamaError):
    """A failure while training that is not the user's input (e.g. the loss became NaN)."""

    exit_code = 1
