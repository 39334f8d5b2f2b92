"""MovieLens tags: fields user, movie, tag; 2 sampled negatives per distinct positive triple."""

from __future__ import annotations

import numpy as np
import pytest
from data_fixtures import all_rows, built, row_counts

from aoaffm.data import build_dataset, load_processed
from aoaffm.data.readers import read_movielens_tags


@pytest.fixture(scope="module")
def movielens(mirror_dir):
    return load_processed(built(mirror_dir, "movielens", "ml10m-tags"))


def _distinct_triples(path) -> set[tuple[str, str, str]]:
    """Brute force, independent of the reader: split each line on '::'."""
    with open(path, encoding="utf-8") as f:
        return {tuple(line.rstrip("\n").split("::")[:3]) for line in f}


def test_ml10m_tags_three_fields_three_instances_per_distinct_triple(mirror_dir, movielens):
    triples = _distinct_triples(mirror_dir / "movielens" / "ml-10m-tags.dat")
    meta = movielens.meta
    assert movielens.field_names == ["user", "movie", "tag"] and movielens.n_fields == 3
    assert meta["instances"] == 3 * len(triples)
    assert meta["positives"] == len(triples) and meta["negatives"] == 2 * len(triples)
    assert movielens.field_sizes == [
        len({t[0] for t in triples}),
        len({t[1] for t in triples}),
        len({t[2] for t in triples}),
    ]
    assert meta["sources"]["ml-10m-tags.dat"]["verified"]


def test_negatives_are_never_positive_triples_and_keep_user_and_movie(movielens):
    ids, labels = all_rows(movielens)
    positives = {tuple(r) for r in ids[labels == 1].tolist()}
    assert len(positives) == movielens.meta["positives"]
    negatives = ids[labels == -1]
    assert not any(tuple(r) in positives for r in negatives.tolist())
    # tag never applied by that user to that movie (same thing here, as positives are all
    # triples), and each positive's (user, movie) kept by exactly two negatives
    pos_pairs, neg_pairs = row_counts(ids[labels == 1][:, :2]), row_counts(negatives[:, :2])
    assert neg_pairs == {pair: 2 * n for pair, n in pos_pairs.items()}
    # tags stay inside the tag field
    tag_offset, tag_size = movielens.field_offsets[2], movielens.field_sizes[2]
    assert ((negatives[:, 2] >= tag_offset) & (negatives[:, 2] < tag_offset + tag_size)).all()


def test_tags_csv_format_and_duplicates(tmp_path):
    """The newer ``tags.csv`` (quoted tags) reads to the same triples; a repeated tag
    application counts once."""
    csv = tmp_path / "tags.csv"
    csv.write_text(
        "userId,movieId,tag,timestamp\n"
        '1,10,"funny, dark",100\n'
        "1,10,funny,101\n"
        "1,10,funny,102\n"
        "2,10,sci-fi,103\n"
        "2,20,funny,104\n"
        "3,30,drama,105\n"
        "3,20,Funny,106\n"
    )
    frame = read_movielens_tags(csv)
    assert frame["tag"].tolist()[:2] == ["funny, dark", "funny"]
    meta = build_dataset(
        "movielens",
        "ml-latest-small",
        {"tags": csv},
        tmp_path / "out",
        seed=1,
        progress=False,
    )
    assert meta["tag_applications"] == 7 and meta["duplicate_applications_dropped"] == 1
    assert meta["positives"] == 6 and meta["instances"] == 18
    assert meta["field_sizes"] == [3, 3, 5]  # tags are verbatim: 'Funny' != 'funny'
    ids, labels = all_rows(load_processed(tmp_path / "out"))
    positives = {tuple(r) for r in ids[labels == 1].tolist()}
    assert not any(tuple(r) in positives for r in ids[labels == -1].tolist())
    assert np.array_equal(np.sort(np.unique(ids[:, 0])), [0, 1, 2])
