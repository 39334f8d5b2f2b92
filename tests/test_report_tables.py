"""Tables 1-4: paper beside ours, seed statistics, difference signs; record validation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from aoaffm.report import read_records, table_cell, validate_records
from aoaffm.report.records import make_record, paper_as_records
from aoaffm.report.tables import markdown, table1, table2, table3, table4, write_table

FRAPPE_META = {
    "dataset": "frappe",
    "variant": "raw",
    "instances": 288_609,
    "features": 5_382,
    "fields": 10,
    "avg_features_per_field": 538.2,
}


def row(table, **match) -> dict:
    frame = table.data
    for key, value in match.items():
        frame = frame[frame[key] == value]
    assert len(frame) == 1, match
    return frame.iloc[0].to_dict()


def test_table1_frappe_row_reads_our_counts_beside_the_printed_ones():
    table = table1({"frappe": FRAPPE_META})
    frappe = row(table, dataset="frappe")
    assert (frappe["instances_ours"], frappe["features_ours"], frappe["fields_ours"]) == (
        288_609,
        5_382,
        10,
    )
    assert frappe["avg_ours"] == 538.2
    assert (frappe["instances_paper"], frappe["instances_diff"]) == (288_909, -300)
    assert "misprint" in frappe["note"] and "not the paper's" not in frappe["note"]
    md = markdown(table)
    line = next(x for x in md.splitlines() if x.startswith("| Frappe"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1:12] == [
        "raw", "288,909", "288,609", "-300", "5,382", "5,382", "+0", "10", "10", "538", "538.2",
    ]  # fmt: skip
    assert "not processed" in row(table, dataset="movielens")["note"]


def test_table1_flags_data_that_is_not_the_papers():
    meta = {
        "dataset": "movielens",
        "variant": "ml10m-tags",
        "instances": 286_740,
        "features": 30_000,
        "fields": 3,
    }
    movielens = row(table1({"movielens": meta}), dataset="movielens")
    assert movielens["avg_ours"] == 10_000.0  # computed when meta has no average
    assert "variant 'ml10m-tags'" in movielens["note"]


def test_table1_names_the_dataset_of_an_incomplete_meta():
    with pytest.raises(ValueError, match="'criteo'.*'features'"):
        table1({"criteo": {"dataset": "criteo", "instances": 1, "fields": 39}})


def seeded_table2(offset: float, values=(0.0, 0.004, -0.002)) -> list[dict]:
    """Table 2 runs over three seeds: the paper's value + offset + per-seed noise."""
    records = []
    for r in paper_as_records():
        if r["group"] == "table2":
            for seed, noise in enumerate(values):
                records.append(
                    {
                        **r,
                        "seed": seed,
                        "validation_rmse": r["validation_rmse"] + offset + noise,
                        "test_rmse": r["test_rmse"] and r["test_rmse"] + offset + noise,
                        "learning_rate": 0.05,
                    }
                )
    return records


@pytest.mark.parametrize("offset", [0.01, -0.01])
def test_table2_mean_std_and_difference_sign(offset):
    noise = (0.0, 0.004, -0.002)
    table = table2(seeded_table2(offset, noise))
    cell = row(table, dataset="frappe", model="aoafm")
    values = [0.3068 + offset + n for n in noise]
    assert cell["rmse_ours_mean"] == pytest.approx(np.mean(values))
    assert cell["rmse_ours_std"] == pytest.approx(np.std(values, ddof=1))
    assert cell["n_runs"] == 3
    assert cell["diff"] == pytest.approx(np.mean(values) - 0.3068)
    assert np.sign(cell["diff"]) == np.sign(offset)
    assert (cell["dropout_ours"], cell["lambda_ours"], cell["learning_rate_ours"]) == (
        "0.3",
        "1",
        "0.05",
    )
    shown = table.display.iloc[5]
    assert shown["RMSE ours"].endswith("(n=3)") and "±" in shown["RMSE ours"]
    assert shown["Δ (ours − paper)"].startswith("+" if offset > 0 else "-")


def test_table3_attention_rows_come_from_table2_with_exact_params():
    records = seeded_table2(0.0) + [r for r in paper_as_records() if r["group"] == "table3"]
    for r in records:
        if r["model"] == "aoaffm" and r["dataset"] == "movielens":
            r["params"] = 69_620_001  # beyond one unit of the printed 69.61M
    table = table3(records)
    afm = row(table, dataset="frappe", model="afm")
    assert (afm["source_group"], afm["n_runs"]) == ("table2", 3)
    assert afm["rmse_ours_mean"] == pytest.approx(0.3126 + np.mean([0.0, 0.004, -0.002]))
    fm = row(table, dataset="movielens", model="fm")
    assert (fm["source_group"], fm["n_runs"], fm["params_agree"]) == ("table3", 1, True)
    assert pd.isna(fm["rmse_ours_std"])
    aoaffm = row(table, dataset="movielens", model="aoaffm")
    assert (aoaffm["params_ours"], aoaffm["params_agree"]) == (69_620_001, False)
    assert "69,620,001 (69.62M)" in markdown(table)
    small = table3([dict(r, embedding_size=16) for r in records])
    assert row(small, dataset="movielens", model="fm")["params_agree"] is None  # K = 16


def test_table3_falls_back_to_table3_runs_of_attention_models():
    records = [make_record("table3", "frappe", "aoafm", test_rmse=0.30)]
    cell = table_cell(records, "table3", "frappe", "aoafm")
    assert (cell.group, cell.stat.mean) == ("table3", 0.30)
    assert table_cell(records, "table2", "frappe", "aoafm") is None


def test_table4_missing_runs_read_not_run(tmp_path):
    table = table4([])
    assert (table.data.n_runs == 0).all() and table.data.rmse_ours_mean.isna().all()
    assert set(table.display["RMSE ours"]) == {"not run"}
    paths = write_table(table, tmp_path, profile="quick", banner="> quick banner")
    text = paths["table4_md"].read_text()
    assert text.startswith("# Table 4") and "> quick banner" in text
    csv = pd.read_csv(paths["table4_csv"])
    assert list(csv.model) == ["fm", "ffm", "afm", "aoaffm"]
    assert set(csv.profile) == {"quick"}
    assert list(csv.rmse_paper) == [0.3971, 0.3851, 0.3892, 0.3808]


def test_table4_settings_and_values():
    records = [r for r in paper_as_records() if r["group"] == "table4"]
    records = [dict(r, test_rmse=r["test_rmse"] + 0.002, learning_rate=0.01) for r in records]
    table = table4(records)
    ffm = row(table, model="ffm")
    assert ffm["diff"] == pytest.approx(0.002)
    assert table.display.iloc[1]["Settings ours"] == "K=4, bs=128, lr=0.01"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"test_rmse": KeyError},
            r"record 1 \(run_dir runs/x\): missing field\(s\) \['test_rmse'\]",
        ),
        ({"group": "table9"}, "unknown group 'table9'"),
        ({"validation_rmse": "0.3"}, "'validation_rmse' must be a number or null"),
        ({"group": "sweep_dropout"}, "needs a numeric sweep_value"),
    ],
)
def test_bad_records_name_the_record_and_the_problem(change, message):
    bad = make_record(
        "table2", "frappe", "afm", validation_rmse=0.3, test_rmse=0.31, run_dir="runs/x"
    )
    for key, value in change.items():
        bad.pop(key) if value is KeyError else bad.__setitem__(key, value)
    with pytest.raises(ValueError, match=message):
        validate_records([make_record("table3", "frappe", "fm"), bad], "runs.json")


def test_records_are_canonicalised():
    (record,) = validate_records([make_record("table2", "Frappe", "AoFM", validation_rmse=0.3)])
    assert (record["dataset"], record["model"]) == ("frappe", "aoafm")


def test_read_records_names_the_line_of_malformed_json(tmp_path):
    path = tmp_path / "runs.json"
    path.write_text('[\n  {"group": "table2",\n  oops}\n]\n')
    with pytest.raises(ValueError, match=r"runs.json: line 3, column 3: not valid JSON"):
        read_records(path)
    path.write_text(json.dumps({"group": "table2"}))
    with pytest.raises(ValueError, match="expected a JSON list"):
        read_records(path)
