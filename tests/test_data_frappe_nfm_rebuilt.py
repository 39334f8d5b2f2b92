"""Frappe `nfm-rebuilt`: NFM's validation and test files verbatim (the rows on which the paper
measured its Frappe RMSEs) and NFM's train split rebuilt from the raw log."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from data_fixtures import SEED, built, raw_files, row_counts

from aoaffm.data import DataError, build_dataset, load_processed
from aoaffm.data.readers import read_libfm

USER, ITEM = 0, 1
CONTEXT = [0, 2, 3, 4, 5, 6, 7, 8, 9]  # user and the 9 context fields: what a negative keeps


@pytest.fixture(scope="module")
def rebuilt(mirror_dir):
    return load_processed(built(mirror_dir, "frappe", "nfm-rebuilt"))


@pytest.fixture(scope="module")
def raw(mirror_dir):
    """The raw build: its positives are the log rows with NFM's ids."""
    return load_processed(built(mirror_dir, "frappe", "raw"))


def _nfm(mirror_dir, split):
    block = read_libfm(mirror_dir / "frappe-nfm" / f"frappe.{split}.libfm", 10)
    return block.ids, block.labels


def _log_positives(raw) -> np.ndarray:
    splits = [raw.split(name) for name in ("train", "validation", "test")]
    ids = np.concatenate([s.ids for s in splits])
    labels = np.concatenate([s.labels for s in splits])
    return ids[labels == 1]


def test_table1_row(rebuilt):
    meta = rebuilt.meta
    assert (meta["instances"], meta["features"], meta["fields"]) == (288_609, 5_382, 10)
    assert meta["split_sizes"] == {"train": 202_027, "validation": 57_722, "test": 28_860}
    assert meta["positives"] == 96_203 and meta["negatives"] == 192_406


@pytest.mark.parametrize("split", ["validation", "test"])
def test_validation_and_test_are_nfms_files_verbatim(mirror_dir, rebuilt, split):
    ids, labels = _nfm(mirror_dir, split)
    ours = rebuilt.split(split)
    np.testing.assert_array_equal(ours.ids, ids)  # same rows, same order
    np.testing.assert_array_equal(ours.labels, labels)


def test_train_positives_are_the_log_rows_not_in_validation_or_test(mirror_dir, rebuilt, raw):
    train = rebuilt.split("train")
    positives = train.ids[train.labels == 1]
    assert len(positives) == 67_604 == 96_203 - 19_063 - 9_536
    held = [
        ids[labels == 1] for ids, labels in (_nfm(mirror_dir, s) for s in ("validation", "test"))
    ]
    combined = row_counts(np.concatenate([positives, *held]))
    assert combined == row_counts(_log_positives(raw))  # multisets: train + held out = log


def test_train_negatives_follow_nfms_rule(rebuilt, raw):
    train = rebuilt.split("train")
    negatives = train.ids[train.labels == -1]
    assert len(negatives) == 202_027 - 67_604
    log = _log_positives(raw)
    used = {(u, i) for u, i in log[:, [USER, ITEM]].tolist()}
    assert not any((u, i) in used for u, i in negatives[:, [USER, ITEM]].tolist())
    contexts = {tuple(r) for r in log[:, CONTEXT].tolist()}
    assert all(tuple(r) in contexts for r in negatives[:, CONTEXT].tolist())
    # label balance of NFM's train split: about 1 positive to 2 negatives
    assert 0.32 < (train.labels == 1).mean() < 0.35


def test_same_seed_same_train_split(mirror_dir, tmp_path, rebuilt):
    again = tmp_path / "again"
    build_dataset(
        "frappe", "nfm-rebuilt", raw_files(mirror_dir, "frappe", "nfm-rebuilt"), again,
        seed=SEED, progress=False,
    )  # fmt: skip
    assert load_processed(again).digest == rebuilt.digest


def test_a_held_out_positive_missing_from_the_log_names_file_and_line(mirror_dir, tmp_path):
    paths = dict(raw_files(mirror_dir, "frappe", "nfm-rebuilt"))
    lines = paths["test"].read_text().splitlines(keepends=True)
    first_positive = next(i for i, line in enumerate(lines) if line.startswith("1 "))
    fields = lines[first_positive].split()
    fields[2] = "5038:1"  # another item: a row the log does not have
    lines[first_positive] = " ".join(fields) + "\n"
    bad = tmp_path / "frappe.test.libfm"
    bad.write_text("".join(lines))
    paths["test"] = bad
    with pytest.raises(
        DataError, match=rf"frappe.test.libfm, line {first_positive + 1}: .*not a row"
    ):
        build_dataset("frappe", "nfm-rebuilt", paths, tmp_path / "out", seed=SEED, progress=False)
    assert not (tmp_path / "out").exists()


def test_a_missing_input_is_one_clear_error(mirror_dir, tmp_path):
    paths = dict(raw_files(mirror_dir, "frappe", "nfm-rebuilt"))
    shutil.copy(paths["validation"], tmp_path / "v.libfm")
    paths["validation"] = tmp_path / "absent.libfm"
    with pytest.raises(DataError, match="absent.libfm: no such file"):
        build_dataset("frappe", "nfm-rebuilt", paths, tmp_path / "out", seed=SEED, progress=False)
