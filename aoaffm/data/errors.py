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
    call this, so the line-by-line Python check costs nothing on good data. ``lines`` are
    decoded with ``surrogateescape`` (see :func:`text_lines`): a byte that is not UTF-8 is
    reported as such, before ``check`` sees the line.
    """
    for offset, line in enumerate(lines):
        problem = utf8_problem(line) or check(line)
        if problem is not None:
            return at_line(source, first_line + offset, problem)
    return DataError(f"{file_label(source)}, lines {first_line} and on: {fallback}")


def text_lines(block: bytes) -> list[str]:
    """The lines of ``block``; a byte that is not UTF-8 becomes a lone surrogate that
    :func:`utf8_problem` finds (``errors="replace"`` would hide which byte it was)."""
    return block.decode("utf-8", errors="surrogateescape").split("\n")


def utf8_problem(line: str) -> str | None:
    """What is wrong with a line of :func:`text_lines` that holds a byte that is not UTF-8."""
    try:
        line.encode("utf-8")
    except UnicodeEncodeError as error:
        byte = ord(line[error.start]) - 0xDC00  # surrogateescape's code point for the byte
        return (
            f"byte 0x{byte:02x} at column {error.start + 1} is not UTF-8; expected UTF-8 text "
            "(re-save the file as UTF-8)"
        )
    return None


def check_utf8(source: str | os.PathLike, data: bytes, first_line: int = 1) -> None:
    """A whole text file (read with pandas) is UTF-8, else a DataError naming the line."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        start = data.rfind(b"\n", 0, error.start) + 1
        end = data.find(b"\n", error.start)
        line = text_lines(data[start : end if end >= 0 else len(data)])[0]
        raise at_line(
            source, first_line + data.count(b"\n", 0, start), utf8_problem(line)
        ) from None
