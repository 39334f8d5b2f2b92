"""Negative sampling and split sizes against brute-force checks."""

from __future__ import annotations

import numpy as np
import pytest

from aoaffm.data import DataError
from aoaffm.data.processed import split_sizes
from aoaffm.data.sampling import sample_negatives, split_assignment


def test_negatives_are_unused_distinct_and_in_order():
    rng = np.random.default_rng(0)
    n_groups, n_candidates = 30, 12
    used = np.unique(
        np.stack([rng.integers(0, n_groups, 200), rng.integers(0, n_candidates, 200)], 1), axis=0
    )
    groups = used[rng.integers(0, len(used), 500), 0]  # positives of groups that used things
    negatives = sample_negatives(groups, used, n_candidates, 3, np.random.default_rng(1))
    assert negatives.shape == (500, 3)
    used_set = {tuple(p) for p in used.tolist()}
    for group, drawn in zip(groups.tolist(), negatives.tolist(), strict=True):
        assert len(set(drawn)) == 3  # distinct for one positive
        assert all(0 <= c < n_candidates and (group, c) not in used_set for c in drawn)
    again = sample_negatives(groups, used, n_candidates, 3, np.random.default_rng(1))
    assert np.array_equal(negatives, again)


def test_group_without_enough_unused_candidates_is_an_error():
    used = np.array([[0, 0], [0, 1], [0, 2], [1, 0]])
    with pytest.raises(
        DataError, match="group 0 used 3 of the 4 candidate values; cannot draw 2 unused ones"
    ):
        sample_negatives(np.array([0, 1]), used, 4, 2, np.random.default_rng(0))


@pytest.mark.parametrize("fractions", [(0.7, 0.2, 0.1), (0.5, 0.5), (0.8, 0.1, 0.1)])
def test_split_sizes_within_one_row(fractions):
    for n in range(0, 400):
        sizes = split_sizes(n, fractions)
        assert sum(sizes) == n
        assert all(abs(s - f * n) <= 1 for s, f in zip(sizes, fractions, strict=True))
    assignment = split_assignment(1000, split_sizes(1000, fractions), np.random.default_rng(0))
    assert np.bincount(assignment).tolist() == split_sizes(1000, fractions)


def test_bad_fractions():
    with pytest.raises(DataError, match="expected non-negative numbers summing to 1"):
        split_sizes(10, (0.7, 0.2))
