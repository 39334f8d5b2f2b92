"""Criteo, streamed: block by block into preallocated ``.npy`` files, in bounded memory.

**LIBSVM release** (the paper's): ``train`` and ``test`` as published, 39 features a line,
field j = position j. Its indices are hashed into one space shared by all fields, so each
field's indices are renumbered into the field's own contiguous range (ascending index order);
two fields hashing a value to the same index stay two features. The validation split is
carved from the train file: a seeded random ``split[1] / (split[0] + split[1])`` of its rows
(2/9 with 70/20/10), in file order; the test file stays the test split. Labels 0/1 (or -1/1)
become 0/1, Table 4's scale (:mod:`aoaffm.labels`). Values are stored only if some value is
not 1.

**Raw Kaggle** (``label, I1..I13, C1..C26``; ``train.txt`` or the 200-row CSV sample): the
winning solution's feature engineering. An integer v > 2 becomes the bin floor(ln(v)^2), a
smaller one keeps its own value (a separate token from the bins); a category seen fewer than
``min_count`` times (default 10) becomes the field's "rare" value; an empty cell is the
field's "missing" value. Each field's ids are [missing][rare][values in ascending order], the
first two only where they occur. All rows go 70/20/10 at random (seeded), file order kept
within a split (Kaggle's own test file has no labels). Labels 0/1 as in the file. No negative
sampling for Criteo.

Two passes either way: LIBSVM parses once (writing raw indices and noting which occur per
field) and renumbers the written matrix in place; Kaggle counts values first, then parses
again and writes final ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from aoaffm.labels import label_scale
from .errors import DataError
from .processed import (
    ID_DTYPE,
    LABEL_DTYPE,
    SPLITS,
    VALUE_DTYPE,
    NpyRows,
    built_summary,
    field_layout,
    split_sizes,
)
from .readers import (
    CRITEO_CAT_FIELDS,
    CRITEO_FIELDS,
    count_lines,
    iter_criteo_kaggle,
    iter_libfm,
    map_labels,
)
from .sampling import rngs, split_assignment

N_FIELDS = len(CRITEO_FIELDS)
MAX_RAW_INDEX = 1 << 28  # per-field occurrence bitmaps: 39 x 256 MB at most
REMAP_ROWS = 1 << 16  # rows renumbered at a time (10 MB of ids)
NEGATIVE, POSITIVE = label_scale("criteo")


class SplitWriter:
    """Appends rows of one split to its ids/labels ``.npy``; values only once needed."""

    def __init__(self, folder: Path, name: str, rows: int):
        self.folder, self.name, self.rows = folder, name, rows
        self.ids = NpyRows(folder / f"{name}_ids.npy", (rows, N_FIELDS), ID_DTYPE)
        self.labels = NpyRows(folder / f"{name}_labels.npy", (rows,), LABEL_DTYPE)
        self.values: NpyRows | None = None
        self.cursor = 0

    def append(self, ids: np.ndarray, labels: np.ndarray, values: np.ndarray | None) -> None:
        if values is not None and self.values is None:
            self.start_values()
        self.ids.write(self.cursor, ids)
        self.labels.write(self.cursor, labels)
        if self.values is not None:
            self.values.write(self.cursor, np.ones(ids.shape) if values is None else values)
        self.cursor += len(ids)

    def start_values(self) -> None:
        """The first value that is not 1: earlier rows were all ones, write them now."""
        self.values = NpyRows(
            self.folder / f"{self.name}_values.npy", (self.rows, N_FIELDS), VALUE_DTYPE
        )
        for start in range(0, self.cursor, REMAP_ROWS):
            stop = min(start + REMAP_ROWS, self.cursor)
            self.values.write(start, np.ones((stop - start, N_FIELDS), VALUE_DTYPE))

    def close(self) -> None:
        if self.cursor != self.rows:
            raise DataError(f"{self.name}: wrote {self.cursor} rows, expected {self.rows}")
        for part in (self.ids, self.labels, self.values):
            if part is not None:
                part.close()


def _route(writers: list[SplitWriter], assignment, ids, labels, values) -> None:
    for k, writer in enumerate(writers):
        rows = assignment == k
        if rows.any():
            writer.append(ids[rows], labels[rows], None if values is None else values[rows])


# --------------------------------------------------------------------------- LIBSVM


def build_libsvm(out: Path, paths: dict[str, Path], options: dict) -> dict[str, Any]:
    train_path, test_path = Path(paths["train"]), Path(paths["test"])
    progress, block_bytes = options["progress"], options["block_bytes"]
    train_lines = count_lines(train_path, progress=progress)
    test_lines = count_lines(test_path, progress=progress)
    f_train, f_validation, _ = options["split"]
    validation_share = f_validation / (f_train + f_validation)
    carved = split_sizes(train_lines, (1 - validation_share, validation_share))
    _, split_rng = rngs(options["seed"])
    assignment = split_assignment(train_lines, carved, split_rng)
    writers = [
        SplitWriter(out, name, rows)
        for name, rows in zip(SPLITS, [*carved, test_lines], strict=True)
    ]
    present = [np.zeros(0, dtype=bool) for _ in range(N_FIELDS)]
    positives = 0
    for path, routing in ((train_path, assignment), (test_path, None)):
        row = 0
        for block in iter_libfm(path, N_FIELDS, block_bytes=block_bytes, progress=progress):
            labels = map_labels(path, block.labels, block.first_line, LIBSVM_LABELS)
            positives += int((labels == POSITIVE).sum())
            _note_indices(path, block, present)
            values = None if (block.values == 1).all() else block.values
            n = len(labels)
            where = routing[row : row + n] if routing is not None else np.full(n, 2, np.uint8)
            _route(writers, where, block.ids, labels, values)
            row += n
    if any(w.values is not None for w in writers):  # values in one split: in all of them
        for writer in writers:
            if writer.values is None:
                writer.start_values()
    uniques = [np.flatnonzero(p) for p in present]
    field_sizes = [len(u) for u in uniques]
    offsets = np.asarray(field_layout(field_sizes))
    for writer in writers:
        _renumber(writer, uniques, offsets, progress)
        writer.close()
    return built_summary(
        CRITEO_FIELDS,
        field_sizes,
        {w.name: w.rows for w in writers},
        positives,
        split_fractions="train file -> train + validation "
        f"({validation_share:.4f} of its rows, seeded), test file -> test",
        id_order="per field, the LIBSVM indices in ascending order",
    )


LIBSVM_LABELS = {0.0: NEGATIVE, -1.0: NEGATIVE, 1.0: POSITIVE}


def _note_indices(path: Path, block, present: list[np.ndarray]) -> None:
    top = block.ids.max(axis=0)
    if top.max() >= MAX_RAW_INDEX:
        row, col = np.argwhere(block.ids >= MAX_RAW_INDEX)[0]
        raise DataError(
            f"{path.name}, line {block.first_line + int(row)}: expected feature indices below "
            f"{MAX_RAW_INDEX}, found {int(block.ids[row, col])}"
        )
    for j in range(N_FIELDS):
        if top[j] >= len(present[j]):
            grown = np.zeros(1 << int(top[j]).bit_length(), dtype=bool)  # power of 2 > top
            grown[: len(present[j])] = present[j]
            present[j] = grown
        present[j][block.ids[:, j]] = True


def _renumber(writer: SplitWriter, uniques, offsets, progress: bool) -> None:
    """Raw indices -> global ids, in place, one block of rows at a time."""
    bar = tqdm(total=writer.rows, unit="rows", desc=f"renumber {writer.name}", disable=not progress)
    with bar:
        for start in range(0, writer.rows, REMAP_ROWS):
            stop = min(start + REMAP_ROWS, writer.rows)
            raw = writer.ids.read(start, stop)
            ids = np.empty_like(raw)
            for j, values in enumerate(uniques):
                ids[:, j] = offsets[j] + np.searchsorted(values, raw[:, j])
            writer.ids.write(start, ids)
            bar.update(stop - start)


# --------------------------------------------------------------------------- raw Kaggle


def integer_tokens(values: np.ndarray) -> np.ndarray:
    """The winning solution's bins: v > 2 -> floor(ln(v)^2) (>= 0); v <= 2 -> floor(v) - 3
    (<= -1, so small values never share a token with a bin). NaN (missing) -> 0, masked."""
    with np.errstate(invalid="ignore", divide="ignore"):
        big = np.floor(np.log(np.where(values > 2, values, 3.0)) ** 2)
    tokens = np.where(values > 2, big, np.floor(values) - 3)
    return np.nan_to_num(tokens, nan=0.0).astype(np.int64)


def kaggle_tokens(block) -> tuple[np.ndarray, np.ndarray]:
    """Tokens [n, 39] (integer bins, then category hashes) and the missing mask."""
    integers = block.integers
    tokens = np.concatenate([integer_tokens(integers), block.categories], axis=1)
    missing = np.concatenate([np.isnan(integers), block.categories < 0], axis=1)
    return tokens, missing


class ValueCounter:
    """Counts of int64 tokens over a stream: per-block ``np.unique`` merged with amortized
    doubling, so memory follows the number of distinct tokens, not of rows."""

    def __init__(self):
        self.values = np.zeros(0, dtype=np.int64)
        self.counts = np.zeros(0, dtype=np.int64)
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.pending_size = 0

    def add(self, tokens: np.ndarray) -> None:
        values, counts = np.unique(tokens, return_counts=True)
        self.pending.append((values, counts))
        self.pending_size += len(values)
        if self.pending_size > max(len(self.values), 1 << 20):
            self._merge()

    def _merge(self) -> None:
        values = np.concatenate([self.values, *(v for v, _ in self.pending)])
        counts = np.concatenate([self.counts, *(c for _, c in self.pending)])
        self.values, inverse = np.unique(values, return_inverse=True)
        self.counts = np.bincount(inverse, weights=counts).astype(np.int64)
        self.pending, self.pending_size = [], 0

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        self._merge()
        return self.values, self.counts


def build_kaggle(out: Path, paths: dict[str, Path], options: dict) -> dict[str, Any]:
    path = Path(paths["train"])
    progress, block_bytes, min_count = (
        options["progress"],
        options["block_bytes"],
        options["min_count"],
    )
    if not isinstance(min_count, int) or min_count < 1:
        raise DataError(f"min_count = {min_count!r}; expected an integer >= 1")
    counters = [ValueCounter() for _ in range(N_FIELDS)]
    missing_counts = np.zeros(N_FIELDS, dtype=np.int64)
    n_rows = 0
    for block in iter_criteo_kaggle(path, block_bytes=block_bytes, progress=progress):
        tokens, missing = kaggle_tokens(block)
        for j in range(N_FIELDS):
            counters[j].add(tokens[~missing[:, j], j])
        missing_counts += missing.sum(axis=0)
        n_rows += len(tokens)
    if n_rows == 0:
        raise DataError(f"{path.name}: no data rows; expected label, I1..I13, C1..C26 lines")
    vocab = _kaggle_vocabulary(counters, missing_counts, min_count)
    sizes = split_sizes(n_rows, options["split"])
    _, split_rng = rngs(options["seed"])
    assignment = split_assignment(n_rows, sizes, split_rng)
    writers = [SplitWriter(out, name, rows) for name, rows in zip(SPLITS, sizes, strict=True)]
    offsets = np.asarray(field_layout([v["size"] for v in vocab]))
    row, positives = 0, 0
    for block in iter_criteo_kaggle(path, block_bytes=block_bytes, progress=progress):
        tokens, missing = kaggle_tokens(block)
        ids = np.empty(tokens.shape, dtype=np.int64)
        for j, v in enumerate(vocab):
            slot = np.minimum(np.searchsorted(v["kept"], tokens[:, j]), max(len(v["kept"]) - 1, 0))
            found = v["kept"][slot] == tokens[:, j] if len(v["kept"]) else np.zeros(len(ids), bool)
            local = np.where(found, v["first_kept"] + slot, v["rare"])
            ids[:, j] = offsets[j] + np.where(missing[:, j], v["missing"], local)
        labels = np.where(block.labels == 1, POSITIVE, NEGATIVE).astype(LABEL_DTYPE)
        positives += int((labels == POSITIVE).sum())
        _route(writers, assignment[row : row + len(ids)], ids, labels, None)
        row += len(ids)
    for writer in writers:
        writer.close()
    return built_summary(
        CRITEO_FIELDS,
        [v["size"] for v in vocab],
        dict(zip(SPLITS, sizes, strict=True)),
        positives,
        split_fractions=list(options["split"]),
        min_count=min_count,
        feature_engineering="integers: v > 2 -> floor(ln(v)^2), else v itself; categories "
        f"seen < {min_count} times -> rare; empty -> missing",
        id_order="per field: [missing][rare][values ascending]",
    )


def _kaggle_vocabulary(counters, missing_counts, min_count) -> list[dict[str, Any]]:
    vocab = []
    for j, counter in enumerate(counters):
        values, counts = counter.result()
        threshold = min_count if CRITEO_FIELDS[j] in CRITEO_CAT_FIELDS else 1
        kept = values[counts >= threshold]
        has_missing = bool(missing_counts[j])
        has_rare = bool((counts < threshold).any())
        vocab.append(
            {
                "kept": kept,
                "missing": 0 if has_missing else -1,
                "rare": int(has_missing) if has_rare else -1,
                "first_kept": int(has_missing) + int(has_rare),
                "size": int(has_missing) + int(has_rare) + len(kept),
            }
        )
    return vocab
