"""Builds shared by the data tests (and usable by others): each is built once per session.

Import the helpers, not fixtures: ``frappe_raw(mirror_dir)`` returns the processed Frappe
(from the raw archive, seed 2019) in a session-wide temporary folder.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np

from aoaffm.data import build_dataset, fetch_sources, load_processed

SEED = 2019
_ROOT = Path(tempfile.mkdtemp(prefix="aoaffm-data-tests-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)


@functools.cache
def raw_files(mirror: Path, dataset: str, variant: str) -> dict[str, Path]:
    return fetch_sources(dataset, variant, _ROOT / "raw" / dataset / variant, mirror, False)


@functools.cache
def built(mirror: Path, dataset: str, variant: str, seed: int = SEED) -> Path:
    out = _ROOT / "processed" / f"{dataset}-{variant}-{seed}"
    build_dataset(
        dataset, variant, raw_files(mirror, dataset, variant), out, seed=seed, progress=False
    )
    return out


def frappe_raw(mirror: Path, seed: int = SEED):
    return load_processed(built(mirror, "frappe", "raw", seed))


def all_rows(ds) -> tuple[np.ndarray, np.ndarray]:
    """Every split's ids and labels, concatenated (train, validation, test)."""
    splits = [ds.split(name) for name in ("train", "validation", "test")]
    return np.concatenate([s.ids for s in splits]), np.concatenate([s.labels for s in splits])


def row_counts(rows: np.ndarray) -> dict[tuple, int]:
    """Multiset of rows."""
    unique, counts = np.unique(rows, axis=0, return_counts=True)
    return {tuple(r): int(c) for r, c in zip(unique.tolist(), counts, strict=True)}
