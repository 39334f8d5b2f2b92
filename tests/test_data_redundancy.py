"""Planted redundancy: variants that only add columns, each a stated function of a field."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_train_units import FIELD_SIZES, make_synthetic

from aoaffm.data import DataError, load_processed
from aoaffm.data.processed import SPLITS
from aoaffm.data.redundancy import plant_redundancy

PLANTS = [
    {"kind": "exact", "field": "field0"},
    {"kind": "noisy", "field": "field1", "epsilon": 0.3},
    {"kind": "coarse", "field": "field2", "values": 2},
    {"kind": "exact", "field": "field1"},
]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("source"), n_rows=20_000)


@pytest.fixture(scope="module")
def planted(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("planted") / "r4"
    plant_redundancy(source, PLANTS, out, seed=7)
    return load_processed(out)


def _local(data, split, field):
    j = data.field_names.index(field)
    return np.asarray(data.split(split).ids[:, j]) - data.field_offsets[j]


def test_rows_labels_and_split_are_the_sources(source, planted):
    n = len(FIELD_SIZES)
    assert planted.field_names[:n] == source.field_names
    assert planted.n_fields == n + len(PLANTS)
    assert planted.meta["split_sizes"] == source.meta["split_sizes"]
    for split in SPLITS:
        ours, theirs = planted.split(split), source.split(split)
        np.testing.assert_array_equal(ours.ids[:, :n], theirs.ids)
        np.testing.assert_array_equal(ours.labels, theirs.labels)
    # each planted field has its own ids, after the source's
    assert planted.field_offsets[n] == source.n_features
    assert planted.n_features == source.n_features + sum(planted.field_sizes[n:])


def test_an_exact_copy_maps_one_to_one_onto_its_field(planted):
    for split in SPLITS:
        copy = _local(planted, split, "field0~exact1")
        np.testing.assert_array_equal(copy, _local(planted, split, "field0"))
    assert planted.field_sizes[planted.field_names.index("field0~exact1")] == FIELD_SIZES[0]


def test_the_noise_rate_is_within_its_binomial_tolerance(planted):
    """A row differs from its source value when it was replaced (probability ε) by another
    value than its own (1 - 1/n): p = ε (1 - 1/n); 4 binomial standard deviations."""
    source = np.concatenate([_local(planted, s, "field1") for s in SPLITS])
    noisy = np.concatenate([_local(planted, s, "field1~noisy2") for s in SPLITS])
    n_values = FIELD_SIZES[1]
    p = 0.3 * (1 - 1 / n_values)
    rate = (noisy != source).mean()
    assert abs(rate - p) <= 4 * math.sqrt(p * (1 - p) / len(source))
    assert noisy.min() >= 0 and noisy.max() < n_values


def test_the_coarsening_is_the_stated_function(planted):
    for split in SPLITS:
        coarse = _local(planted, split, "field2~coarse3")
        np.testing.assert_array_equal(
            coarse, _local(planted, split, "field2") * 2 // FIELD_SIZES[2]
        )
    assert planted.field_sizes[planted.field_names.index("field2~coarse3")] == 2


def test_same_seed_same_variant_and_r_is_r_minus_one_plus_a_column(source, planted, tmp_path):
    again = tmp_path / "again"
    plant_redundancy(source, PLANTS, again, seed=7)
    assert load_processed(again).digest == planted.digest
    fewer = tmp_path / "r2"
    plant_redundancy(source, PLANTS[:2], fewer, seed=7)
    r2 = load_processed(fewer)
    for split in SPLITS:
        np.testing.assert_array_equal(r2.split(split).ids, planted.split(split).ids[:, :6])


@pytest.mark.parametrize(
    ("plant", "message"),
    [
        ({"kind": "exact", "field": "nope"}, "field 'nope'; expected one of"),
        ({"kind": "mirror", "field": "field0"}, "kind 'mirror'; expected one of"),
        ({"kind": "noisy", "field": "field0", "epsilon": 1.5}, r"epsilon = 1.5; expected"),
        (
            {"kind": "coarse", "field": "field3", "values": 4},
            r"values = 4; expected 1 <= values < 4",
        ),
    ],
)
def test_bad_plants_are_clear_errors(source, tmp_path, plant, message):
    with pytest.raises(DataError, match=message):
        plant_redundancy(source, [plant], tmp_path / "out", seed=0)
    assert not (tmp_path / "out").exists()
