"""The processed format (DESIGN §2): per split an int32 id matrix, float32 labels (1/-1, or
0/1 for Criteo: ``meta.json``'s ``labels``, see :mod:`aoaffm.labels`), optional float32 values,
and one ``meta.json``; plus the writers the builders share.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aoaffm.io import read_json
from aoaffm.labels import PM1, scale_of

from .errors import DataError

SPLITS = ("train", "validation", "test")
ID_DTYPE = np.int32
LABEL_DTYPE = np.float32
VALUE_DTYPE = np.float32
REQUIRED_META = (
    "dataset",
    "variant",
    "instances",
    "features",
    "fields",
    "field_names",
    "field_sizes",
    "field_offsets",
    "split_sizes",
    "seed",
    "sources",
    "positives",
    "negatives",
    "avg_features_per_field",
)


@dataclass(frozen=True)
class Split:
    ids: np.ndarray  # int32 [N, F] global feature ids
    labels: np.ndarray  # float32 [N], on the dataset's label scale (ProcessedDataset.label_range)
    values: np.ndarray | None  # float32 [N, F]; None means every active feature has value 1

    def __len__(self) -> int:
        return len(self.labels)


class ProcessedDataset:
    """A processed folder; splits load lazily with ``mmap_mode="r"`` (no RAM copy)."""

    def __init__(self, path: str | os.PathLike, meta: dict[str, Any]):
        self.path = Path(path)
        self.meta = meta
        self._splits: dict[str, Split] = {}

    @property
    def n_features(self) -> int:
        return int(self.meta["features"])

    @property
    def n_fields(self) -> int:
        return int(self.meta["fields"])

    @property
    def digest(self) -> str:
        """The content digest of the arrays (written at build time), which runs record."""
        if "content_digest" in self.meta:
            return str(self.meta["content_digest"])
        # a build older than the digest: its meta.json stands in (sources, seed, counts)
        encoded = json.dumps(self.meta, sort_keys=True).encode()
        return "meta-sha256:" + hashlib.sha256(encoded).hexdigest()

    @property
    def label_range(self) -> tuple[float, float]:
        """(negative, positive) label: what RMSE clips predictions to (±1 for older builds)."""
        return scale_of(self.meta)

    @property
    def field_names(self) -> list[str]:
        return list(self.meta["field_names"])

    @property
    def field_sizes(self) -> list[int]:
        return list(self.meta["field_sizes"])

    @property
    def field_offsets(self) -> list[int]:
        return list(self.meta["field_offsets"])

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; expected one of {list(SPLITS)}")
        if name not in self._splits:
            self._splits[name] = self._load(name)
        return self._splits[name]

    def _load(self, name: str) -> Split:
        rows = int(self.meta["split_sizes"][name])
        ids = _load_npy(self.path / f"{name}_ids.npy", (rows, self.n_fields), ID_DTYPE)
        labels = _load_npy(self.path / f"{name}_labels.npy", (rows,), LABEL_DTYPE)
        values_path = self.path / f"{name}_values.npy"
        values = (
            _load_npy(values_path, (rows, self.n_fields), VALUE_DTYPE)
            if values_path.exists()
            else None
        )
        return Split(ids, labels, values)

    def __repr__(self) -> str:
        m = self.meta
        return (
            f"ProcessedDataset({m['dataset']}/{m['variant']}: {m['instances']} instances, "
            f"{m['features']} features, {m['fields']} fields, splits {m['split_sizes']})"
        )


def _load_npy(path: Path, shape: tuple[int, ...], dtype) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: missing from the processed folder (rerun preprocess)")
    array = np.load(path, mmap_mode="r")
    if array.shape != shape or array.dtype != dtype:
        raise DataError(
            f"{path}: expected shape {shape} and dtype {np.dtype(dtype)} as meta.json says, "
            f"found {array.shape} {array.dtype}"
        )
    return array


def load_processed(path: str | os.PathLike) -> ProcessedDataset:
    """Open ``data/processed/<dataset>/``; its ``meta.json`` exists only once a build finished."""
    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise DataError(
            f"{path}: not a processed dataset (no meta.json); run "
            f"`python stages/preprocess.py <dataset>` first"
        )
    meta = read_json(meta_path)
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise DataError(f"{meta_path}: missing keys {missing}")
    return ProcessedDataset(path, meta)


# --------------------------------------------------------------------------- writing


def split_sizes(n: int, fractions: tuple[float, ...] | list[float]) -> list[int]:
    """Rows per split: all but the last rounded from the fractions, the last takes the rest
    (so each is within one row of its fraction)."""
    fractions = [float(f) for f in fractions]
    if len(fractions) < 1 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise DataError(f"split fractions {fractions}: expected non-negative numbers summing to 1")
    sizes = [round(n * f) for f in fractions[:-1]]
    sizes.append(n - sum(sizes))
    return sizes


def field_layout(field_sizes: list[int]) -> list[int]:
    """Offsets of the contiguous per-field id ranges (field order = order of ``field_sizes``)."""
    return [int(x) for x in np.concatenate([[0], np.cumsum(field_sizes)[:-1]])]


def dataset_meta(
    *,
    dataset: str,
    variant: str,
    field_names: list[str],
    field_sizes: list[int],
    split_rows: dict[str, int],
    positives: int,
    negatives: int,
    seed: int,
    sources: dict[str, Any],
    labels: tuple[float, float] = PM1,
    **extra: Any,
) -> dict[str, Any]:
    """meta.json, Table 1's statistics included (features = sum of the field sizes);
    ``labels`` is the (negative, positive) label of the arrays."""
    features = int(sum(field_sizes))
    fields = len(field_names)
    instances = int(sum(split_rows.values()))
    return {
        "dataset": dataset,
        "variant": variant,
        "instances": instances,
        "features": features,
        "fields": fields,
        "avg_features_per_field": round(features / fields, 1),
        "field_names": list(field_names),
        "field_sizes": [int(s) for s in field_sizes],
        "field_offsets": field_layout(field_sizes),
        "split_sizes": {name: int(split_rows[name]) for name in SPLITS},
        "positives": int(positives),
        "negatives": int(negatives),
        "labels": [float(x) for x in labels],
        "seed": int(seed),
        "sources": sources,
        **extra,
    }


def built_summary(
    field_names: list[str] | tuple[str, ...],
    field_sizes: list[int],
    split_rows: dict[str, int],
    positives: int,
    **extra: Any,
) -> dict[str, Any]:
    """What a builder hands back to ``build_dataset`` (negatives = all rows - positives)."""
    return {
        "field_names": list(field_names),
        "field_sizes": [int(s) for s in field_sizes],
        "split_rows": {name: int(rows) for name, rows in split_rows.items()},
        "positives": int(positives),
        "negatives": int(sum(split_rows.values()) - positives),
        **extra,
    }


def content_digest(folder: Path) -> str:
    """sha256 over the folder's split arrays (names and bytes, in name order)."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.npy")):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def write_arrays(
    folder: Path, name: str, ids: np.ndarray, labels: np.ndarray, values: np.ndarray | None
) -> None:
    """One split held in memory; ``folder`` is the build's temporary folder (atomic as a whole)."""
    np.save(folder / f"{name}_ids.npy", np.ascontiguousarray(ids, dtype=ID_DTYPE))
    np.save(folder / f"{name}_labels.npy", np.ascontiguousarray(labels, dtype=LABEL_DTYPE))
    if values is not None and not np.all(values == 1):
        np.save(folder / f"{name}_values.npy", np.ascontiguousarray(values, dtype=VALUE_DTYPE))


class NpyRows:
    """A preallocated ``.npy`` filled block by block with positioned writes.

    ``open_memmap`` lays out the header and the (sparse) file; the blocks then go through
    ``os.pwrite`` rather than a memory map, so the written pages never count in this
    process's resident memory and a Criteo-sized matrix needs only one block of RAM.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype):
        self.path = Path(path)
        self.shape = shape
        self.dtype = np.dtype(dtype)
        header = np.lib.format.open_memmap(self.path, mode="w+", dtype=self.dtype, shape=shape)
        self.offset = header.offset
        del header
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.fd = os.open(self.path, os.O_RDWR)

    def write(self, start_row: int, block: np.ndarray) -> None:
        data = np.ascontiguousarray(block, dtype=self.dtype)
        if data.shape[1:] != self.shape[1:] or start_row + len(data) > self.shape[0]:
            raise ValueError(f"block {data.shape} at row {start_row} does not fit {self.shape}")
        os.pwrite(self.fd, data.tobytes(), self.offset + start_row * self.row_bytes)

    def read(self, start_row: int, stop_row: int) -> np.ndarray:
        count = (stop_row - start_row) * self.row_bytes
        raw = os.pread(self.fd, count, self.offset + start_row * self.row_bytes)
        return np.frombuffer(raw, dtype=self.dtype).reshape((stop_row - start_row, *self.shape[1:]))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
