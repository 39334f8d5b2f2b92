"""Frappe from the original archive, checked against the paper's Table 1 and NFM's files."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from data_fixtures import SEED, all_rows, built, frappe_raw, row_counts

from aoaffm.data import load_processed
from aoaffm.data.build import nfm_layout
from aoaffm.data.readers import read_libfm

FIELD_SIZES = {
    "user": 957,
    "item": 4082,
    "daytime": 7,
    "weekday": 7,
    "isweekend": 2,
    "homework": 3,
    "cost": 2,
    "weather": 9,
    "country": 80,
    "city": 233,
}
USER, ITEM = 0, 1
CONTEXT = [0, 2, 3, 4, 5, 6, 7, 8, 9]  # user and the 9 context fields: what a negative keeps


@pytest.fixture(scope="module")
def frappe(mirror_dir):
    return frappe_raw(mirror_dir)


@pytest.fixture(scope="module")
def rows(frappe):
    ids, labels = all_rows(frappe)
    return ids, labels


def test_table1_row_and_field_sizes(frappe):
    meta = frappe.meta
    assert meta["instances"] == 288_609
    assert meta["features"] == 5_382 == frappe.n_features
    assert meta["fields"] == 10 == frappe.n_fields
    assert meta["avg_features_per_field"] == 538.2
    assert dict(zip(frappe.field_names, frappe.field_sizes, strict=True)) == FIELD_SIZES
    assert meta["positives"] == 96_203 and meta["negatives"] == 192_406
    assert meta["seed"] == SEED
    source = meta["sources"]["Mobile_Frappe.zip"]
    assert source["verified"] and source["sha256"].startswith("4adc616de571")


def test_every_row_has_one_feature_in_each_fields_range(frappe, rows):
    ids, labels = rows
    offsets = np.asarray(frappe.field_offsets)
    local = ids - offsets
    assert (local >= 0).all() and (local < np.asarray(frappe.field_sizes)).all()
    assert (labels == 1).sum() == 96_203 and (labels == -1).sum() == 192_406
    # every feature id of the layout occurs (items unused by anyone cannot be features)
    assert len(np.unique(ids)) == 5_382


def test_no_negative_pairs_a_user_with_an_item_the_user_used(rows):
    ids, labels = rows
    used = {tuple(p) for p in ids[labels == 1][:, [USER, ITEM]].tolist()}
    negative_pairs = ids[labels == -1][:, [USER, ITEM]].tolist()
    assert not any(tuple(p) in used for p in negative_pairs)


def test_every_negative_keeps_a_positives_user_and_context(rows):
    ids, labels = rows
    # as multisets: each positive's (user, context) occurs exactly twice among the negatives
    positives = row_counts(ids[labels == 1][:, CONTEXT])
    negatives = row_counts(ids[labels == -1][:, CONTEXT])
    assert negatives == {key: 2 * count for key, count in positives.items()}


def test_split_sizes_within_one_row_of_70_20_10(frappe):
    n = frappe.meta["instances"]
    sizes = frappe.meta["split_sizes"]
    for name, fraction in (("train", 0.7), ("validation", 0.2), ("test", 0.1)):
        assert abs(sizes[name] - fraction * n) <= 1, (name, sizes[name])
        assert len(frappe.split(name)) == sizes[name]


def _digests(folder):
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.npy"))
    }


def test_same_seed_byte_identical_other_seed_different(mirror_dir, tmp_path):
    first = built(mirror_dir, "frappe", "raw")
    from data_fixtures import raw_files

    from aoaffm.data import build_dataset

    paths = raw_files(mirror_dir, "frappe", "raw")
    build_dataset("frappe", "raw", paths, tmp_path / "again", seed=SEED, progress=False)
    build_dataset("frappe", "raw", paths, tmp_path / "other", seed=SEED + 1, progress=False)
    assert _digests(tmp_path / "again") == _digests(first)
    other = _digests(tmp_path / "other")
    assert (
        other.keys()
        == _digests(first).keys()
        == {f"{s}_{k}.npy" for s in ("train", "validation", "test") for k in ("ids", "labels")}
    )
    assert all(other[name] != digest for name, digest in _digests(first).items())


def test_nfm_files_share_field_sizes_and_id_ranges_with_the_raw_build(mirror_dir, frappe):
    nfm = {
        path: read_libfm(path, 10)
        for path in sorted((mirror_dir / "frappe-nfm").glob("frappe.*.libfm"))
    }
    assert [p.name for p in nfm] == ["frappe.test.libfm", "frappe.validation.libfm"]
    assert [len(b.labels) for b in nfm.values()] == [28_860, 57_722]
    offsets, sizes = nfm_layout({path: block.ids for path, block in nfm.items()})
    assert offsets == frappe.field_offsets
    assert sizes == frappe.field_sizes
    # every NFM id lies in its field's range of the raw build, and each range's first id
    # occurs (a few last ids, e.g. users 955-956, occur only in NFM's unmirrored train file)
    nfm_ids = np.concatenate([b.ids for b in nfm.values()])
    ends = np.asarray(offsets) + np.asarray(sizes)
    assert ((nfm_ids >= offsets) & (nfm_ids < ends)).all()
    assert (nfm_ids.min(axis=0) == offsets).all()


def test_nfm_positives_are_rows_of_the_raw_build_with_the_same_ids(mirror_dir, rows):
    """Stronger than equal ranges: our ids are NFM's (values numbered by first appearance)."""
    ids, labels = rows
    ours = {tuple(r) for r in ids[labels == 1].tolist()}
    contexts = {tuple(r) for r in ids[labels == 1][:, CONTEXT].tolist()}
    for name in ("frappe.validation.libfm", "frappe.test.libfm"):
        block = read_libfm(mirror_dir / "frappe-nfm" / name, 10)
        nfm_positives = block.ids[block.labels == 1].tolist()
        assert all(tuple(r) in ours for r in nfm_positives)
        nfm_negatives = block.ids[block.labels == -1][:, CONTEXT].tolist()
        assert all(tuple(r) in contexts for r in nfm_negatives)


def test_load_processed_gives_memory_mapped_one_hot_splits(frappe):
    reopened = load_processed(frappe.path)
    train = reopened.split("train")
    assert isinstance(train.ids, np.memmap) and train.ids.dtype == np.int32
    assert train.ids.shape == (202_026, 10) and train.labels.dtype == np.float32
    assert set(np.unique(train.labels)) == {-1.0, 1.0}
    assert train.values is None
