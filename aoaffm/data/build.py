"""``build_dataset``: raw files -> the processed folder, written atomically as a whole.

Feature ids are contiguous per field in the dataset's field order. Within a field, Frappe
and MovieLens number their values in order of first appearance in the source file: for
Frappe this reproduces NFM's published ids exactly (user, item and city are their raw ids,
context values are numbered as they first occur in ``frappe.csv``), which a test checks.
Criteo's streamed builds number values in ascending order (see :mod:`aoaffm.data.criteo`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aoaffm.io import atomic_dir, write_json

from .criteo import build_kaggle, build_libsvm
from .errors import DataError
from .processed import (
    SPLITS,
    built_summary,
    content_digest,
    dataset_meta,
    field_layout,
    split_sizes,
    write_arrays,
)
from .readers import (
    BLOCK_BYTES,
    FRAPPE_FIELDS,
    labels_to_pm1,
    read_frappe_log,
    read_libfm,
    read_movielens_tags,
)
from .sampling import rngs, sample_negatives, split_permutation
from .sources import provenance, sources_for

MOVIELENS_FIELDS = ("user", "movie", "tag")
NFM_FIELDS = {"frappe": FRAPPE_FIELDS, "movielens": MOVIELENS_FIELDS}
FORMAT_VERSION = 1


def first_appearance_codes(frame: pd.DataFrame) -> tuple[np.ndarray, list[int]]:
    """Per column, values numbered 0.. in order of first appearance; and the field sizes."""
    codes = np.empty(frame.shape, dtype=np.int64)
    sizes = []
    for j, column in enumerate(frame.columns):
        codes[:, j], uniques = pd.factorize(frame[column])
        sizes.append(len(uniques))
    return codes, sizes


def build_with_negatives(
    out: Path,
    positives: np.ndarray,
    field_names: tuple[str, ...],
    field_sizes: list[int],
    options: dict,
    *,
    swap: str,
    keep: str,
    **extra: Any,
) -> dict[str, Any]:
    """Positives (field codes) + sampled negatives, split at random and written.

    Each positive gets ``negatives_per_positive`` negatives that copy it and replace field
    ``swap`` by a value its group (the fields named in ``keep``) never had in the data.
    """
    swap_field = field_names.index(swap)
    group_fields = [field_names.index(name) for name in keep.split("+")]
    per_positive = options["negatives_per_positive"]
    sample_rng, split_rng = rngs(options["seed"])
    groups = np.zeros(len(positives), dtype=np.int64)
    for j in group_fields:  # mixed-radix code of the group's field values
        groups = groups * field_sizes[j] + positives[:, j]
    used = np.stack([groups, positives[:, swap_field]], axis=1)
    swapped = sample_negatives(
        groups, used, field_sizes[swap_field], per_positive, sample_rng, group_name=keep
    )
    negatives = np.repeat(positives, per_positive, axis=0)
    negatives[:, swap_field] = swapped.ravel()
    ids = np.concatenate([positives, negatives]) + np.asarray(field_layout(field_sizes))
    labels = np.concatenate(
        [np.ones(len(positives), np.float32), -np.ones(len(negatives), np.float32)]
    )
    sizes = split_sizes(len(ids), options["split"])
    for name, rows in zip(SPLITS, split_permutation(len(ids), sizes, split_rng), strict=True):
        write_arrays(out, name, ids[rows], labels[rows], None)
    return built_summary(
        field_names,
        field_sizes,
        dict(zip(SPLITS, sizes, strict=True)),
        len(positives),
        negatives_per_positive=per_positive,
        split_fractions=list(options["split"]),
        negative_sampling=f"{per_positive} per positive: {swap} replaced by one this {keep} "
        f"never had in the data; {keep} and every other field kept",
        **extra,
    )


# --------------------------------------------------------------------------- builders


def build_frappe_raw(out: Path, paths: dict[str, Path], options: dict) -> dict[str, Any]:
    frame, _ = read_frappe_log(paths["log"])
    for column in ("user", "item", "city"):  # numeric values: '7' and '07' are one value
        frame[column] = frame[column].astype(np.int64)
    codes, field_sizes = first_appearance_codes(frame)
    return build_with_negatives(
        out, codes, FRAPPE_FIELDS, field_sizes, options, swap="item", keep="user",
        id_order="first appearance in frappe.csv (= NFM's ids)",
    )  # fmt: skip


def build_movielens_tags(out: Path, paths: dict[str, Path], options: dict) -> dict[str, Any]:
    frame = read_movielens_tags(paths["tags"])
    distinct = frame.drop_duplicates(subset=list(frame.columns), keep="first")
    codes, field_sizes = first_appearance_codes(distinct)
    return build_with_negatives(
        out, codes, MOVIELENS_FIELDS, field_sizes, options, swap="tag", keep="user+movie",
        id_order="first appearance in the tags file",
        tag_applications=len(frame),
        duplicate_applications_dropped=len(frame) - len(distinct),
    )  # fmt: skip


def nfm_layout(path_ids: dict[Path, np.ndarray]) -> tuple[list[int], list[int]]:
    """Offsets and sizes of the per-field id ranges of NFM's files (field j = position j).

    Field j's range starts at its smallest id (field 0 at 0) and ends where field j + 1's
    starts; ranges that overlap or ids outside their field's range are an error.
    """
    lows = np.min([ids.min(axis=0) for ids in path_ids.values()], axis=0)
    highs = np.max([ids.max(axis=0) for ids in path_ids.values()], axis=0)
    offsets = [0, *[int(x) for x in lows[1:]]]
    ends = [*offsets[1:], int(highs[-1]) + 1]
    for j in range(len(offsets) - 1):
        if highs[j] >= lows[j + 1]:
            path = next(p for p, ids in path_ids.items() if ids[:, j].max() == highs[j])
            raise DataError(
                f"{path.name}: field {j + 1}'s ids reach {int(highs[j])} but field {j + 2}'s start "
                f"at {int(lows[j + 1])}; expected contiguous, non-overlapping id ranges per field"
            )
    return offsets, [e - o for o, e in zip(offsets, ends, strict=True)]


def build_nfm(out: Path, paths: dict[str, Path], options: dict) -> dict[str, Any]:
    names = NFM_FIELDS[options["dataset"]]
    data = {}
    for split in SPLITS:
        path = Path(paths[split])
        block = read_libfm(path, len(names), progress=options["progress"])
        labels = labels_to_pm1(path, block.labels, 1, {1.0: 1.0, -1.0: -1.0})
        data[split] = (path, block, labels)
    offsets, field_sizes = nfm_layout({path: block.ids for path, block, _ in data.values()})
    for split, (_, block, labels) in data.items():
        write_arrays(out, split, block.ids, labels, block.values)
    return built_summary(
        names,
        field_sizes,
        {split: len(labels) for split, (_, _, labels) in data.items()},
        sum(int((labels == 1).sum()) for _, _, labels in data.values()),
        split_fractions="as published by NFM",
        id_order="NFM's ids, as published",
    )


BUILDERS: dict[tuple[str, str], Callable[[Path, dict[str, Path], dict], dict[str, Any]]] = {
    ("frappe", "raw"): build_frappe_raw,
    ("frappe", "nfm"): build_nfm,
    ("movielens", "ml10m-tags"): build_movielens_tags,
    ("movielens", "ml-latest-small"): build_movielens_tags,
    ("movielens", "nfm"): build_nfm,
    ("criteo", "libsvm"): build_libsvm,
    ("criteo", "kaggle"): build_kaggle,
    ("criteo", "kaggle-sample"): build_kaggle,
}


def build_dataset(
    dataset: str,
    variant: str,
    raw_paths: dict[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    seed: int,
    negatives_per_positive: int = 2,
    split: tuple[float, ...] | list[float] = (0.7, 0.2, 0.1),
    progress: bool = True,
    min_count: int = 10,
    block_bytes: int = BLOCK_BYTES,
) -> dict[str, Any]:
    """Build ``out_dir`` (the processed format) from the files of one dataset variant.

    ``raw_paths`` maps each role of the variant (see :data:`aoaffm.data.sources.REGISTRY`) to
    its file. The folder appears only complete (built in a temporary folder, renamed); its
    ``meta.json`` is returned. ``min_count`` applies to raw Kaggle Criteo only.
    """
    registry = sources_for(dataset, variant)
    paths = {}
    for role in registry:
        if role not in raw_paths:
            raise DataError(f"{dataset}/{variant}: no input given for {role!r}")
        paths[role] = Path(raw_paths[role])
        if not paths[role].is_file():
            raise DataError(f"{paths[role]}: no such file (run the download stage first)")
    if not isinstance(negatives_per_positive, int) or negatives_per_positive < 1:
        raise DataError(f"negatives_per_positive = {negatives_per_positive!r}; expected >= 1")
    split = tuple(float(f) for f in split)
    split_sizes(0, split)  # validates the fractions
    options = {
        "dataset": dataset,
        "variant": variant,
        "seed": int(seed),
        "negatives_per_positive": negatives_per_positive,
        "split": split,
        "progress": progress,
        "min_count": min_count,
        "block_bytes": block_bytes,
    }
    out_dir = Path(out_dir)
    for stale in out_dir.parent.glob(f".{out_dir.name}.*.tmp"):  # left by a killed build
        shutil.rmtree(stale, ignore_errors=True)
    with atomic_dir(out_dir) as tmp:
        built = BUILDERS[(dataset, variant)](tmp, paths, options)
        meta = dataset_meta(
            dataset=dataset,
            variant=variant,
            field_names=built.pop("field_names"),
            field_sizes=built.pop("field_sizes"),
            split_rows=built.pop("split_rows"),
            positives=built.pop("positives"),
            negatives=built.pop("negatives"),
            seed=seed,
            sources=provenance(paths, registry),
            format_version=FORMAT_VERSION,
            content_digest=content_digest(tmp),
            **built,
        )
        write_json(tmp / "meta.json", meta)  # last: its presence marks a complete build
    return meta
