"""Criteo: the raw Kaggle sample, the LIBSVM reader on generated files, bounded memory."""

from __future__ import annotations

import csv
import importlib.util
import math
from collections import Counter

import numpy as np
import pytest
from conftest import REPO_ROOT
from data_fixtures import all_rows, row_counts

from aoaffm.data import build_dataset, load_processed

N_FIELDS = 39


def _expected_kaggle_rows(path, min_count=10) -> list[tuple]:
    """The documented feature engineering, written the slow obvious way."""
    with open(path, newline="") as f:
        records = list(csv.DictReader(f))
    names = [f"I{j}" for j in range(1, 14)] + [f"C{j}" for j in range(1, 27)]

    def token(name, cell):
        if cell == "":
            return ("missing",)
        if name.startswith("I"):
            v = float(cell)
            return ("bin", math.floor(math.log(v) ** 2)) if v > 2 else ("small", math.floor(v))
        return ("value", int(cell, 16))

    tokens = [[token(n, r[n]) for n in names] for r in records]
    rows = [[] for _ in records]
    offset = 0
    for j, name in enumerate(names):
        counts = Counter(t[j] for t in tokens)
        threshold = min_count if name.startswith("C") else 1

        def kind(t, counts=counts, threshold=threshold):
            if t == ("missing",):
                return "missing"
            return "kept" if counts[t] >= threshold else "rare"

        kinds = {kind(t) for t in counts}
        kept = sorted(
            (t for t in counts if kind(t) == "kept"),
            key=lambda t: t[1] - 3 if t[0] == "small" else t[1],
        )
        layout = [k for k in ("missing", "rare") if k in kinds] + kept
        for row, t in zip(rows, tokens, strict=True):
            key = kind(t[j])
            row.append(offset + layout.index(t[j] if key == "kept" else key))
        offset += len(layout)
    labels = [1.0 if r["label"] == "1" else 0.0 for r in records]
    return [(*row, label) for row, label in zip(rows, labels, strict=True)], offset


def test_kaggle_sample_becomes_39_fields(mirror_dir, tmp_path):
    from data_fixtures import raw_files

    paths = raw_files(mirror_dir, "criteo", "kaggle-sample")
    meta = build_dataset(
        "criteo", "kaggle-sample", paths, tmp_path / "out", seed=3, progress=False, block_bytes=4096
    )
    ds = load_processed(tmp_path / "out")
    assert ds.n_fields == N_FIELDS and len(ds.field_names) == N_FIELDS
    assert meta["instances"] == 200 and meta["split_sizes"] == {
        "train": 140,
        "validation": 40,
        "test": 20,
    }
    assert meta["positives"] + meta["negatives"] == 200 and meta["positives"] == 49
    assert meta["labels"] == [0.0, 1.0] and ds.label_range == (0.0, 1.0)  # Table 4's scale
    expected, n_features = _expected_kaggle_rows(paths["train"])
    assert meta["features"] == n_features
    ids, labels = all_rows(ds)
    ours = row_counts(np.concatenate([ids, labels[:, None].astype(np.int64)], axis=1))
    assert ours == dict(Counter(tuple(int(x) for x in row) for row in expected))


def _write_libsvm(path, rows, rng, values=None, pm1=False):
    """Random 39-field lines with 0/1 labels (``pm1``: written as -1/1); field j draws from a
    pool of hashed indices in 1..500, so fields share indices (as hashing does)."""
    pools = [rng.choice(np.arange(1, 501), size=3 + 4 * j, replace=False) for j in range(N_FIELDS)]
    raw = np.stack([pool[rng.integers(0, len(pool), rows)] for pool in pools], axis=1)
    labels = rng.integers(0, 2, rows)
    vals = np.ones(raw.shape) if values is None else values
    with open(path, "w") as f:
        for label, line, vline in zip(labels, raw, vals, strict=True):
            f.write(
                f"{2 * label - 1 if pm1 else label} "
                + " ".join(f"{i}:{v:g}" for i, v in zip(line, vline, strict=True))
            )
            f.write("\n")
    return raw, labels


def _renumbered(raws):
    """Per field, raw indices in ascending order -> contiguous ids, fields one after another."""
    stacked = np.concatenate(raws)
    offset, columns = 0, []
    for j in range(N_FIELDS):
        uniques = np.unique(stacked[:, j])
        columns.append([offset + np.searchsorted(uniques, r[:, j]) for r in raws])
        offset += len(uniques)
    return [np.stack([c[k] for c in columns], axis=1) for k in range(len(raws))], offset


def _build_libsvm(folder, block_bytes):
    return build_dataset(
        "criteo",
        "libsvm",
        {"train": folder / "train.svm", "test": folder / "test.svm"},
        folder / "out",
        seed=0,
        progress=False,
        block_bytes=block_bytes,  # small: many blocks
    )


def test_libsvm_reader_and_renumbering_on_a_generated_file(tmp_path):
    rng = np.random.default_rng(0)
    train_raw, train_labels = _write_libsvm(tmp_path / "train.svm", 900, rng)
    test_raw, test_labels = _write_libsvm(tmp_path / "test.svm", 100, rng)
    meta = _build_libsvm(tmp_path, 4096)
    (train_ids, test_ids), n_features = _renumbered([train_raw, test_raw])
    assert meta["features"] == n_features and meta["fields"] == N_FIELDS
    assert meta["split_sizes"] == {"train": 700, "validation": 200, "test": 100}  # 2/9 carved
    ds = load_processed(tmp_path / "out")
    test = ds.split("test")  # the test file, in file order
    assert np.array_equal(test.ids, test_ids)
    assert np.array_equal(test.labels, test_labels)  # 0/1 as in the file: Table 4's scale
    assert meta["labels"] == [0.0, 1.0] and test.values is None
    carved = np.concatenate([ds.split("train").ids, ds.split("validation").ids])
    assert row_counts(carved) == row_counts(train_ids)
    assert meta["positives"] == int(train_labels.sum() + test_labels.sum())


def test_libsvm_labels_given_as_pm1_are_stored_as_0_1(tmp_path):
    rng = np.random.default_rng(2)
    _write_libsvm(tmp_path / "train.svm", 90, rng, pm1=True)
    _, test_labels = _write_libsvm(tmp_path / "test.svm", 30, rng, pm1=True)
    meta = _build_libsvm(tmp_path, 4096)
    ds = load_processed(tmp_path / "out")
    assert np.array_equal(ds.split("test").labels, test_labels)
    stacked = np.concatenate([ds.split(s).labels for s in ("train", "validation", "test")])
    assert set(np.unique(stacked)) == {0.0, 1.0} and meta["positives"] == int(stacked.sum())
    assert ds.label_range == (0.0, 1.0)


def test_libsvm_values_other_than_one_are_kept(tmp_path):
    rng = np.random.default_rng(1)
    values = np.ones((60, N_FIELDS))
    values[45, 3] = 0.5  # first non-1 value late: earlier rows are back-filled with ones
    train_raw, _ = _write_libsvm(tmp_path / "train.svm", 60, rng, values)
    _write_libsvm(tmp_path / "test.svm", 10, rng)
    _build_libsvm(tmp_path, 2048)
    ds = load_processed(tmp_path / "out")
    stacked = np.concatenate([ds.split("train").values, ds.split("validation").values])
    assert stacked.shape == (60, N_FIELDS)
    assert np.count_nonzero(stacked != 1) == 1 and stacked.min() == 0.5
    assert np.all(ds.split("test").values == 1)


@pytest.fixture(scope="module")
def criteo_memory():
    spec = importlib.util.spec_from_file_location(
        "criteo_memory", REPO_ROOT / "benchmarks" / "criteo_memory.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_criteo_memory_benchmark_small_version(criteo_memory, tmp_path):
    """The benchmark's machinery on 8,000 rows (RESULTS.md holds the >= 2M-row run)."""
    result = criteo_memory.measure(8_000, tmp_path)
    assert result["rows"] == 9_000
    assert sum(result["split_sizes"].values()) == 9_000
    assert result["build_peak_rss_mib"] >= result["import_only_peak_rss_mib"] > 0
    assert result["build_peak_rss_mib"] < result["id_matrix_mib"] + 1024
