"""Atomic file output: write to a temporary file beside the target, then rename.

An interrupted writer therefore never leaves a file that looks complete; what a killed one
leaves is a hidden ``.<name>.<random>.tmp`` that :func:`remove_stale_temporaries` clears on
the next start. Outputs get the usual permissions (the umask's), not the temporaries' private
0600/0700, so a shared results folder stays readable to colleagues.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aoaffm.errors import AoaffmError, UnreadableFile, first_line

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    # The only portable way to read it is to set it; restored at once (outputs are written
    # from the main thread, so no file is created under the placeholder meanwhile).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def naming_errors(name: Path, tmp: Path | None = None) -> Iterator[None]:
    """An OS error raised inside names the file the user knows: ``name`` where the error
    names no file (a failed ``write``), and for a path under ``tmp`` (the hidden temporary
    being written) the same path under ``name``. Errors about other files keep their name."""
    try:
        yield
    except OSError as error:
        if isinstance(error, AoaffmError) or error.errno is None:
            raise
        named = name
        if error.filename is not None:
            path = Path(os.fsdecode(error.filename))
            if tmp is None or not path.is_relative_to(tmp):
                raise  # about another file (e.g. an input read meanwhile): keep its name
            named = name / path.relative_to(tmp)
        raise type(error)(error.errno, error.strerror, os.fspath(named)) from error


def _make_temporary(make, target: Path) -> str:
    """``tempfile.mkstemp`` / ``mkdtemp`` beside ``target``, hidden and named after it."""
    try:
        return make(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent)
    except OSError as error:  # the folder refuses a new file (read-only, full): name it
        raise type(error)(error.errno, error.strerror, os.fspath(target.parent)) from error


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _make_temporary(tempfile.mkstemp, target)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with naming_errors(target, tmp_path):
            yield tmp_path
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp's 0600 would stay private
            os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target`` whole."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(_make_temporary(tempfile.mkdtemp, target))
    try:
        with naming_errors(target, tmp):
            yield tmp
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would stay private
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def remove_stale_temporaries(folder: str | os.PathLike, name: str = "*") -> None:
    """Delete the temporaries that killed writes of ``folder/<name>`` left behind.

    Call it where a process starts to write ``folder`` and no other writes there at the same
    time (one run per run folder, one build per dataset).
    """
    for stale in Path(folder).glob(f".{name}.*{TMP_SUFFIX}"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | os.PathLike, obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike, expected: str = "JSON") -> Any:
    """Parse a JSON file; malformed JSON is an :class:`UnreadableFile` naming its line."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        where = (
            f"line {error.lineno}, column {error.colno}: not valid JSON ({error.msg})"
            if isinstance(error, json.JSONDecodeError)
            else "not UTF-8 text"
        )
        raise UnreadableFile(
            f"{path}: {where}; expected {expected}. It was cut short or edited: delete it and "
            "rerun the stage that writes it"
        ) from None


def save_torch(target: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` atomically, through a Python file: a failed write (a full disk) is then
    an OSError that names the file, not torch's RuntimeError about a zip-stream position."""
    import torch

    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def load_torch(path: str | os.PathLike, what: str, remedy: str, map_location: Any = "cpu") -> Any:
    """``torch.load`` (weights only); a file cut short or not torch's is an
    :class:`UnreadableFile` saying it should be ``what`` and the ``remedy``."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise UnreadableFile(
            f"{path}: cannot read the {what} ({first_line(error)}); {remedy}"
        ) from None


def save_npy(target: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


UNUSED_FILE = "UNUSED.txt"


def mark_unused(folder: str | os.PathLike, reason: str) -> None:
    """Replace ``folder`` by one holding only a note: a pipeline output the current settings
    do not need (a dataset the profile does not use), present so that DVC's chain holds."""
    with atomic_dir(folder) as tmp:
        (tmp / UNUSED_FILE).write_text(reason + "\n", encoding="utf-8")
