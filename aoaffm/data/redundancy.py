"""Planted redundancy (the paper's mechanism, isolated): a processed dataset with r fields
added that repeat information an existing field already carries.

The paper argues that redundant features (Frappe's ``weekday=sunday`` and
``isweekend=weekend``) get similar embeddings, that AFM's feature-level attention then gives
their interactions similar, too large weights, and that AoAFFM's interaction-level weights Q
correct this. Planting the redundancy makes it a controlled variable: every variant keeps the
source's rows, labels and split (only columns are added, each a new field with its own
feature ids after the source's), so RMSEs compare across r.

Three kinds of planted field, each derived from a source field's local value v (0..n-1):

- ``exact``: v itself (a copy: the new ids map one-to-one onto the source's);
- ``noisy``: v, replaced with probability ``epsilon`` by a value drawn uniformly from the
  field's n values (seeded; a row may draw its own value back);
- ``coarse``: ``v * values // n``, a deterministic function of v onto ``values`` < n classes
  (consecutive source values share a class, as isweekend groups weekdays).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from aoaffm.io import atomic_dir, write_json

from .errors import DataError
from .processed import SPLITS, ProcessedDataset, content_digest, dataset_meta, write_arrays

KINDS = ("exact", "noisy", "coarse")


def planted_size(kind: str, size: int, **options) -> int:
    """The number of values of a planted field of ``kind`` on a field of ``size`` values
    (checks the kind's options)."""
    if kind in ("exact", "noisy"):
        epsilon = float(options.get("epsilon", 0.0))
        if kind == "noisy" and not 0 <= epsilon <= 1:
            raise DataError(f"noisy copy: epsilon = {epsilon}; expected a number in [0, 1]")
        return size
    if kind == "coarse":
        values = int(options.get("values", 0))
        if not 1 <= values < size:
            raise DataError(f"coarsening: values = {values}; expected 1 <= values < {size}")
        return values
    raise DataError(f"planted field kind {kind!r}; expected one of {list(KINDS)}")


def planted_values(kind: str, local: np.ndarray, size: int, rng, **options) -> np.ndarray:
    """The planted field's local values for source values ``local`` (of a field of ``size``
    values); ``rng`` draws the noise of a noisy copy."""
    planted_size(kind, size, **options)
    if kind == "exact":
        return local.copy()
    if kind == "noisy":
        replaced = rng.random(len(local)) < float(options["epsilon"])
        out = local.copy()
        out[replaced] = rng.integers(0, size, int(replaced.sum()))
        return out
    return local.astype(np.int64) * int(options["values"]) // size


def plant_redundancy(
    source: ProcessedDataset,
    plants: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    *,
    seed: int,
) -> dict[str, Any]:
    """Write ``source`` with one added field per entry of ``plants`` ({kind, field, epsilon
    | values}) to ``out_dir`` (atomically) and return its meta.json.

    The noise of each planted field is drawn from its own stream of ``seed``, split by split,
    so a variant with r fields is the variant with r - 1 plus one column.
    """
    names, sizes, offsets = source.field_names, source.field_sizes, source.field_offsets
    new_names, new_sizes, derived = [], [], []
    for k, plant in enumerate(plants):
        field = plant.get("field")
        if field not in names:
            raise DataError(f"planted field {k + 1}: field {field!r}; expected one of {names}")
        j = names.index(field)
        kind = plant.get("kind")
        options = {key: v for key, v in plant.items() if key not in ("kind", "field")}
        derived.append((j, kind, options))
        new_names.append(f"{field}~{kind}{k + 1}")
        new_sizes.append(planted_size(kind, sizes[j], **options))
    all_sizes = [*sizes, *new_sizes]
    new_offsets = np.cumsum([0, *all_sizes])[len(sizes) : -1]
    streams = np.random.SeedSequence(seed).spawn(len(plants))
    with atomic_dir(out_dir) as tmp:
        for split in SPLITS:
            data = source.split(split)
            ids = np.asarray(data.ids)
            columns = [ids]
            for k, (j, kind, options) in enumerate(derived):
                rng = np.random.default_rng([*streams[k].generate_state(2), SPLITS.index(split)])
                local = planted_values(kind, ids[:, j] - offsets[j], sizes[j], rng, **options)
                columns.append((local + new_offsets[k])[:, None])
            values = None
            if data.values is not None:  # planted features are one-hot: value 1
                ones = np.ones((len(ids), len(plants)), np.float32)
                values = np.concatenate([np.asarray(data.values), ones], axis=1)
            write_arrays(
                tmp, split, np.concatenate(columns, axis=1), np.asarray(data.labels), values
            )
        meta = source.meta
        planted = dataset_meta(
            dataset=meta["dataset"],
            variant=f"{meta['variant']}+planted{len(plants)}",
            field_names=[*names, *new_names],
            field_sizes=all_sizes,
            split_rows=dict(meta["split_sizes"]),
            positives=meta["positives"],
            negatives=meta["negatives"],
            seed=seed,
            sources=meta["sources"],
            labels=tuple(meta.get("labels", (-1.0, 1.0))),
            source_digest=source.digest,
            planted=[dict(p) for p in plants],
            content_digest=content_digest(tmp),
        )
        write_json(tmp / "meta.json", planted)
    return planted


def plant_variants(
    source: ProcessedDataset,
    variants: Mapping[str, Sequence[Mapping[str, Any]]],
    out_dir: str | os.PathLike,
    *,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """Write every variant ({name: plants}) of ``source`` to ``out_dir/<name>``, replacing
    ``out_dir`` whole and atomically (a variant no longer asked for goes); returns the metas."""
    metas = {}
    with atomic_dir(out_dir) as tmp:
        for name, plants in variants.items():
            try:
                metas[name] = plant_redundancy(source, plants, tmp / name, seed=seed)
            except DataError as error:
                raise DataError(f"{source.path}: variant {name}: {error}") from None
    return metas
