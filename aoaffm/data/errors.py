"""The one error type of the data layer, and helpers that locate a problem in a file."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from aoaffm.errors import AoaffmError


class DataError(AoaffmError, ValueError):
    """Bad or missing input data; the message names the file, the line and what was expected."""


def file_label(source: str | os.PathLike) -> str:
    """A path is named by its base name (short messages); a string is a label used as is
    (e.g. ``Mobile_Frappe.zip:Mobile_Frappe/frappe/frappe.csv`` for an archive member)."""
    return os.path.basename(os.fspath(source)) if isinstance(source, os.PathLike) else source


def at_line(source: str | os.PathLike, line: int, message: str) -> DataError:
    """``<file>, line <n>: <message>``."""
    return DataError(f"{file_label(source)}, line {line}: {message}")


def first_bad_line(
    source: str | os.PathLike,
    lines: Iterable[str],
    first_line: int,
    check: Callable[[str], str | None],
    fallback: str,
) -> DataError:
    """The error for the first line that ``check`` rejects (it returns a message or None).

    The fast readers parse whole chunks with numpy/pandas; only when a chunk fails do they
    call this, so the line-by-line Python check costs nothing on good data.
    """
    for offset, line in enumerate(lines):
        problem = check(line)
        if problem is not None:
            return at_line(source, first_line + offset, problem)
    return DataError(f"{file_label(source)}, lines {first_line} and on: {fallback}")
