"""The one error hierarchy of fmrec.

Every error fmrec raises on purpose derives from :class:`FmrecError`.  The CLI
prints ``str(error)`` on one line and exits non-zero, so messages must say what
was wrong and where (file, line, column, value) in a single line.
"""

from __future__ import annotations

from typing import Any


class FmrecError(Exception):
    """Base class of every error fmrec raises on purpose."""


class DataError(FmrecError, ValueError):
    """Bad input data.  Carries the location of the problem when known.

    ``DataError("non-numeric rating", path="u.data", line=3, column="rating", value="x")``
    renders as ``u.data:3: column 'rating': non-numeric rating (value 'x')``.
    """

    def __init__(
        self,
        message: str,
        *,
        path: Any = None,
        line: int | None = None,
        column: str | None = None,
        value: Any = None,
        has_value: bool | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        self.column = column
        self.value = value
        self.has_value = (value is not None) if has_value is None else has_value
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        elif self.line is not None:
            where = f"row {self.line}: "
        col = f"column {self.column!r}: " if self.column is not None else ""
        val = f" (value {_short(self.value)})" if self.has_value else ""
        return f"{where}{col}{self.message}{val}".replace("\n", " ")


class ConfigError(FmrecError, ValueError):
    """A parameter or configuration value is invalid."""


class NotFittedError(FmrecError, AttributeError):
    """A model was used before ``fit``."""


class DivergenceError(FmrecError, ArithmeticError):
    """Training produced a non-finite loss or parameters."""


class ArtifactError(FmrecError):
    """A saved model or index is missing, corrupt, or from an incompatible version."""


class StoreError(FmrecError):
    """Writing or publishing recommendations failed."""


class DownloadError(FmrecError):
    """Fetching or extracting a data set failed."""


def _short(value: Any, limit: int = 60) -> str:
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        value = value.item()  # np.int64(1) -> 1: show the value as the file has it
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text
