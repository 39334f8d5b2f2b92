"""Zip archives as inputs: whole or cut short, intact or damaged, said in one line."""

from __future__ import annotations

import contextlib
import os
import zipfile
import zlib
from collections.abc import Iterator

from aoaffm.errors import first_line

from .errors import DataError

ZIP_MAGIC = b"PK\x03\x04"  # a zip's first local file header


def is_zip(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zip archive, whole or cut short: ``zipfile.is_zipfile`` looks
    for the central directory at the end, which a truncated download does not have."""
    with open(path, "rb") as f:
        return f.read(len(ZIP_MAGIC)) == ZIP_MAGIC


@contextlib.contextmanager
def open_zip(path: str | os.PathLike, label: str) -> Iterator[zipfile.ZipFile]:
    """``path`` opened as a zip; cut short, or a member that fails its CRC check while read
    inside the block, is a DataError naming ``label``."""
    try:
        with zipfile.ZipFile(path) as archive:
            yield archive
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise DataError(
            f"{label}: damaged or incomplete zip archive ({first_line(error)}); expected the "
            "whole archive: delete it and run the download stage again"
        ) from None
