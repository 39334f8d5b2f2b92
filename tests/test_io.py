"""Atomic outputs: readable by colleagues (the umask's modes, not the temporaries' private
ones), what killed writes left is cleared on the next start, failed writes name the file."""

from __future__ import annotations

import errno
import os
import stat

import pytest
import torch

from aoaffm.errors import UnreadableFile
from aoaffm.io import (
    atomic_dir,
    atomic_path,
    naming_errors,
    read_json,
    remove_stale_temporaries,
    save_torch,
    write_json,
)


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_outputs_follow_the_umask_not_the_temporaries_private_modes(tmp_path, umask_022):
    write_json(tmp_path / "results" / "runs.json", [])
    save_torch(tmp_path / "run" / "model.pt", {"w": torch.zeros(2)})
    with atomic_dir(tmp_path / "processed") as folder:
        (folder / "meta.json").write_text("{}")
    assert _mode(tmp_path / "results" / "runs.json") == 0o644  # mkstemp makes 0600
    assert _mode(tmp_path / "run" / "model.pt") == 0o644
    assert _mode(tmp_path / "processed") == 0o755  # mkdtemp makes 0700
    os.umask(0o077)  # a user who wants private files still gets them
    write_json(tmp_path / "private.json", [])
    assert _mode(tmp_path / "private.json") == 0o600


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    for name in (".checkpoint.pt.a1b2.tmp", ".history.json.c3d4.tmp", "keep.tmp", ".part"):
        (tmp_path / name).write_text("x")
    (tmp_path / ".processed.e5f6.tmp").mkdir()
    (tmp_path / ".processed.e5f6.tmp" / "train_ids.npy").write_text("partial")
    remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".part", "keep.tmp"]


def test_a_failed_write_names_the_target_not_its_temporary(tmp_path):
    target = tmp_path / "checkpoint.pt"
    with pytest.raises(OSError) as error, atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a failed write() has none
    assert error.value.errno == errno.ENOSPC and error.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OSError) as error, atomic_dir(tmp_path / "processed") as folder:
        raise PermissionError(errno.EACCES, "Permission denied", str(folder / "train_ids.npy"))
    assert error.value.filename == str(tmp_path / "processed" / "train_ids.npy")
    source = str(tmp_path / "input.csv")  # an input read meanwhile keeps its own name
    with pytest.raises(OSError) as error, naming_errors(tmp_path / "out", tmp_path / "tmp"):
        raise PermissionError(errno.EACCES, "Permission denied", source)
    assert error.value.filename == source


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{\n  "test_rmse": 0.3,\n')
    with pytest.raises(UnreadableFile, match=r"metrics.json: line 3, column 1: not valid JSON"):
        read_json(path)
