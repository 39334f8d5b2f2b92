"""``build_dataset``: raw files -> the processed folder, written atomically as a whole.

Feature ids are contiguous per field in the dataset's field order. Within a field, Frappe
and MovieLens number their values in order of first appearance in the source file: for
Frappe this reproduces NFM's published ids exactly (user, item and city are their raw ids,
context values are numbered as they first occur in ``frappe.csv``), which a test checks.
Criteo's streamed builds number values in ascending order (see :mod:`aoaffm.data.criteo`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aoaffm.io import atomic_dir, remove_stale_temporaries, write_json
from aoaffm.labels import label_scale

from .criteo import build_kaggle, build_libsvm
from .errors import DataError
from .errors import at_line
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
    map_labels,
    read_frappe_log,
    read_libfm,
    read_movielens_tags,
)
from .sampling import rngs, sample_negatives, split_permutation
from .sources import provenance, sources_for

MOVIELENS_FIELDS = ("user", "movie", "tag")
NFM_FIELDS = {"frappe": FRAPPE_FIELDS, "movielens": MOVIELENS_FIELDS}
FORMAT_VERSION = 2  # 2: meta.json names the label scale; Criteo's labels are 0/1 (were ±1)


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
    source: str,
    **extra: Any,
) -> dict[str, Any]:
    """Positives (field codes) + sampled negatives, split at random and written.

    Each positive gets ``negatives_per_positive`` negatives that copy it and replace field
    ``swap`` by a value its group (the fields named in ``keep``) never had in the data.
    ``source`` names the input in messages.
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
        groups, used, field_sizes[swap_field], per_positive, sample_rng, group_name=keep,
        candidate_name=swap, source=source,
    )  # fmt: skip
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


def frappe_log_codes(path: Path) -> tuple[np.ndarray, list[int], str]:
    """The raw log's rows as per-field codes (NFM's numbering), the field sizes and the
    log's label for messages."""
    frame, label = read_frappe_log(path)
    for column in ("user", "item", "city"):  # numeric values: '7' and '07' are one value
        frame[column] = frame[column].astype(np.int64)
    codes, field_sizes = first_appearance_codes(frame)
    return codes, field_sizes, label


def build_frappe_raw(out: Path, paths: dict[str, Path], options: dict) -> dict[str, Any]:
    codes, field_sizes, label = frappe_log_codes(paths["log"])
    return build_with_negatives(
        out, codes, FRAPPE_FIELDS, field_sizes, options, swap="item", keep="user", source=label,
        id_order="first appearance in frappe.csv (= NFM's ids)",
    )  # fmt: skip


def _occurrences(codes: np.ndarray) -> np.ndarray:
    """For each element, how many equal elements come before it (0 for a first one)."""
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(codes)]))
    occurrence = np.empty(len(codes), dtype=np.int64)
    occurrence[order] = np.arange(len(codes)) - run_start
    return occurrence


def build_frappe_nfm_rebuilt(out: Path, paths: dict[str, Path], options: dict) -> dict[str, Any]:
    """NFM's validation and test files verbatim + NFM's train split rebuilt from the raw log.

    Every positive of NFM's validation and test files is a row of the raw log (NFM's ids are
    the raw build's), so NFM's train positives are the raw positives minus those, as
    multisets. NFM drew ``negatives_per_positive`` negatives for every log row and split all
    rows at random; its train negatives are therefore a uniform share of all negatives:
    here every log row gets its negatives with NFM's rule (user and context kept, the item
    swapped for one this user never used) and as many of them as NFM's train split holds
    (all rows minus validation and test minus train positives) are drawn at random.
    """
    log_codes_by_field, field_sizes, _ = frappe_log_codes(paths["log"])
    offsets = np.asarray(field_layout(field_sizes))
    log_ids = log_codes_by_field + offsets  # global ids, as NFM's files hold them
    n_fields = len(FRAPPE_FIELDS)
    published = {}
    for split in ("validation", "test"):
        path = Path(paths[split])
        block = read_libfm(path, n_fields, progress=options["progress"])
        labels = map_labels(path, block.labels, 1, {1.0: 1.0, -1.0: -1.0})
        published[split] = (path, block.ids, labels)
    held_out = [(split, np.flatnonzero(labels == 1)) for split, (_, _, labels) in published.items()]
    held_ids = np.concatenate([published[split][1][rows] for split, rows in held_out])
    # Rows as codes of one np.unique over log and held-out positives: equal rows, equal codes.
    _, codes = np.unique(np.concatenate([log_ids, held_ids]), axis=0, return_inverse=True)
    codes = codes.ravel()
    log_codes, held_codes = codes[: len(log_ids)], codes[len(log_ids) :]
    in_log = np.bincount(log_codes, minlength=codes.max() + 1)
    missing = np.flatnonzero(_occurrences(held_codes) >= in_log[held_codes])
    if len(missing):
        offsets = np.cumsum([0, *[len(rows) for _, rows in held_out]])
        part = int(np.searchsorted(offsets, missing[0], side="right")) - 1
        split, rows = held_out[part]
        line = int(rows[missing[0] - offsets[part]]) + 1
        raise at_line(
            published[split][0],
            line,
            "this positive is not a row of the Frappe log (or appears more often in the "
            f"validation and test files than in {Path(paths['log']).name}); expected NFM's "
            "published split of the same log",
        )
    taken = np.bincount(held_codes, minlength=len(in_log))
    train_positives = log_ids[_occurrences(log_codes) >= taken[log_codes]]

    per_positive = options["negatives_per_positive"]
    sample_rng, split_rng = rngs(options["seed"])
    item = FRAPPE_FIELDS.index("item")
    users = log_codes_by_field[:, FRAPPE_FIELDS.index("user")]
    swapped = sample_negatives(
        users, log_codes_by_field[:, [FRAPPE_FIELDS.index("user"), item]],
        field_sizes[item], per_positive, sample_rng, group_name="user", candidate_name="item",
        source=Path(paths["log"]).name,
    )  # fmt: skip
    negatives = np.repeat(log_ids, per_positive, axis=0)
    negatives[:, item] = swapped.ravel() + offsets[item]
    all_rows = len(log_ids) * (1 + per_positive)
    train_rows = all_rows - sum(len(ids) for _, ids, _ in published.values())
    n_negatives = train_rows - len(train_positives)
    if n_negatives < 0 or n_negatives > len(negatives):
        raise DataError(
            f"{Path(paths['validation']).name}, {Path(paths['test']).name}: they hold more rows "
            f"than {Path(paths['log']).name} with {per_positive} negatives per positive allows; "
            "expected NFM's validation and test files of the Frappe log"
        )
    chosen = np.sort(split_rng.choice(len(negatives), n_negatives, replace=False))
    train_ids = np.concatenate([train_positives, negatives[chosen]])
    train_labels = np.r_[np.ones(len(train_positives)), -np.ones(n_negatives)].astype(np.float32)
    order = split_rng.permutation(len(train_ids))
    write_arrays(out, "train", train_ids[order], train_labels[order], None)
    for split, (_, ids, labels) in published.items():
        write_arrays(out, split, ids, labels, None)
    split_rows = {"train": len(train_ids), **{s: len(v[1]) for s, v in published.items()}}
    positives = len(train_positives) + sum(int((v[2] == 1).sum()) for v in published.values())
    return built_summary(
        FRAPPE_FIELDS,
        field_sizes,
        split_rows,
        positives,
        split_fractions="validation and test as published by NFM; train rebuilt",
        id_order="first appearance in frappe.csv (= NFM's ids)",
        train_positives=len(train_positives),
        negative_sampling=f"train negatives: {n_negatives} drawn at random from {per_positive} "
        "per log row, each replacing the item by one this user never used in the log",
    )


def build_movielens_tags(out: Path, paths: dict[str, Path], options: dict) -> dict[str, Any]:
    frame = read_movielens_tags(paths["tags"])
    distinct = frame.drop_duplicates(subset=list(frame.columns), keep="first")
    codes, field_sizes = first_appearance_codes(distinct)
    return build_with_negatives(
        out, codes, MOVIELENS_FIELDS, field_sizes, options, swap="tag", keep="user+movie",
        source=paths["tags"].name, id_order="first appearance in the tags file",
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
        labels = map_labels(path, block.labels, 1, {1.0: 1.0, -1.0: -1.0})
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
    ("frappe", "nfm-rebuilt"): build_frappe_nfm_rebuilt,
    ("movielens", "ml10m-tags"): build_movielens_tags,
    ("movielens", "ml-latest-small"): build_movielens_tags,
    ("movielens", "nfm"): build_nfm,
    ("criteo", "libsvm"): build_libsvm,
    ("criteo", "kaggle"): build_kaggle,
    ("criteo", "kaggle-sample"): build_kaggle,
}


def check_usable(
    built: dict[str, Any], folder: Path, paths: dict[str, Path], labels: tuple[float, float]
) -> None:
    """A build that training cannot use is an error, not a dataset: it needs rows in every
    split, both ``labels`` (negative, positive) in the training split and at least one value
    in every field."""
    inputs = ", ".join(dict.fromkeys(path.name for path in paths.values()))
    rows = built["split_rows"]
    sizes = zip(built["field_names"], built["field_sizes"], strict=True)
    empty_fields = [name for name, size in sizes if size < 1]
    if sum(rows.values()) == 0:
        problem = (
            "no data rows (0 instances); expected the dataset's rows: if the file was cut "
            "short, delete it and run the download stage again"
        )
    elif empty_splits := [name for name in SPLITS if rows[name] == 0]:
        problem = (
            f"{sum(rows.values())} instances leave the {empty_splits[0]} split empty; expected "
            "rows in every split: use more data, or other data.split fractions"
        )
    elif empty_fields:
        problem = (
            f"field {empty_fields[0]!r} has no values; expected at least one per field: check "
            "that it is the right file"
        )
    else:
        train = np.load(folder / "train_labels.npy", mmap_mode="r")
        absent = [label for label in labels[::-1] if not (train == label).any()]
        if not absent:
            return
        shown = [f"{label:g}" for label in labels[::-1]]
        problem = (
            f"the train split has no rows labelled {absent[0]:g}; expected both labels, "
            f"{shown[0]} and {shown[1]} "
            "(a model trained on one label learns nothing): check that it is the right file"
        )
    raise DataError(f"{inputs}: {problem}")


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
    remove_stale_temporaries(out_dir.parent, out_dir.name)  # left by a killed build
    with atomic_dir(out_dir) as tmp:
        built = BUILDERS[(dataset, variant)](tmp, paths, options)
        check_usable(built, tmp, paths, label_scale(dataset))
        meta = dataset_meta(
            dataset=dataset,
            variant=variant,
            field_names=built.pop("field_names"),
            field_sizes=built.pop("field_sizes"),
            split_rows=built.pop("split_rows"),
            positives=built.pop("positives"),
            negatives=built.pop("negatives"),
            labels=label_scale(dataset),
            seed=seed,
            sources=provenance(paths, registry),
            format_version=FORMAT_VERSION,
            content_digest=content_digest(tmp),
            **built,
        )
        write_json(tmp / "meta.json", meta)  # last: its presence marks a complete build
    return meta
