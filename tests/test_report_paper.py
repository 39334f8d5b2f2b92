"""The paper's numbers as data: transcription checks and the claims' encoding."""

from __future__ import annotations

import pytest

from aoaffm.report import evaluate_claims
from aoaffm.report.claims import NOT_EVALUABLE, REPRODUCED
from aoaffm.report.paper import (
    CLAIMS,
    TABLE1,
    TABLE2,
    TABLE3,
    TABLE3_FROM_TABLE2,
    TABLE4,
    paper_cells,
)
from aoaffm.report.records import paper_as_records

TABLE_KINDS = ("compare", "gain_order")  # claims decided by Tables 2-4 alone


def test_table1_records_the_printed_frappe_count_and_the_real_one():
    frappe = {s.dataset: s for s in TABLE1}["frappe"]
    assert frappe.instances == 288_909  # as printed
    assert frappe.data_instances == 288_609 == 96_203 * 3
    assert "288,609" in frappe.note and "misprint" in frappe.note


@pytest.mark.parametrize("stats", TABLE1, ids=lambda s: s.dataset)
def test_table1_average_is_features_per_field_rounded(stats):
    assert stats.avg_printed == round(stats.features / stats.fields)


def test_tables_have_every_published_cell_once():
    cells = paper_cells()
    assert len(cells) == len(TABLE2) + len(TABLE3) + len(TABLE4) == 8 + 16 + 4
    assert len({c[:3] for c in cells}) == len(cells)
    assert {(r.dataset, r.model) for r in TABLE2} == {
        (d, m) for d in ("movielens", "frappe") for m in ("afm", "aoafm", "affm", "aoaffm")
    }


@pytest.mark.parametrize(
    ("table", "dataset", "model", "value"),
    [
        ("table2", "movielens", "aoaffm", 0.4128),
        ("table2", "frappe", "afm", 0.3089),
        ("table3", "movielens", "deepcross", 0.5130),
        ("table3", "frappe", "hofm", 0.331),
        ("table3", "frappe", "aoaffm", 0.3141),
        ("table4", "criteo", "aoaffm", 0.3808),
    ],
)
def test_spot_values(table, dataset, model, value):
    assert {c[:3]: c[3] for c in paper_cells()}[table, dataset, model] == value


def test_table2_settings_are_the_papers():
    settings = {(r.dataset, r.model): (r.dropout, r.lam) for r in TABLE2}
    assert settings["movielens", "affm"] == (0.3, 0.1)
    assert settings["frappe", "afm"] == (0.6, 10.0)
    assert all(r.embedding_size == 256 for r in TABLE2)


@pytest.mark.parametrize(("printed", "unit"), [("23.24M", 1e4), ("1.38M", 1e4), ("2.76M", 1e4)])
def test_params_unit_is_one_unit_of_the_last_printed_digit(printed, unit):
    row = next(r for r in TABLE3 if r.params_printed == printed)
    assert row.params_unit == pytest.approx(unit)
    assert row.params == pytest.approx(float(printed[:-1]) * 1e6)


def test_paper_as_records_puts_attention_test_rmse_in_table2():
    records = paper_as_records()
    table3_models = {r["model"] for r in records if r["group"] == "table3"}
    assert not table3_models & set(TABLE3_FROM_TABLE2)
    aoaffm = next(
        r
        for r in records
        if r["group"] == "table2" and r["dataset"] == "frappe" and r["model"] == "aoaffm"
    )
    assert (aoaffm["validation_rmse"], aoaffm["test_rmse"]) == (0.3116, 0.3141)


def test_claim_ids_are_unique_and_cover_every_research_question():
    assert len({c.id for c in CLAIMS}) == len(CLAIMS)
    # the research questions, the setup's claim about the pre-trained start, and the
    # mechanism the paper argues from, tested on planted redundancy (issue 16)
    assert {c.rq for c in CLAIMS} == {"RQ1", "RQ2", "RQ3", "RQ4", "Setup", "Mechanism"}


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.id)
def test_each_claim_is_encoded_as_the_papers_own_numbers_support_it(claim):
    """Brute-force check of the encoding: the paper's tables satisfy its table claims; claims
    about figures have no published numbers, so they cannot be decided from the tables."""
    (result,) = evaluate_claims(paper_as_records(), [claim])
    expected = REPRODUCED if claim.kind in TABLE_KINDS else NOT_EVALUABLE
    assert result.status == expected, result.to_dict()
