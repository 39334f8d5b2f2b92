"""build_report end to end on synthetic records: files, figures, REPORT.md, metrics summary."""

from __future__ import annotations

import json
import struct

import numpy as np
import pandas as pd
import pytest
from test_report_tables import FRAPPE_META

from aoaffm.io import write_json
from aoaffm.report import build_report, metrics_summary
from aoaffm.report.claims import NOT_EVALUABLE
from aoaffm.report.figures import DPI, FIGURE3_SIZE, FIGURE4_SIZE
from aoaffm.report.records import make_record, paper_as_records

SWEEPS = {
    "sweep_embedding_size": ({8: 0.36, 16: 0.34, 32: 0.33}, ("fm", "afm", "ffm", "aoaffm")),
    "sweep_dropout": ({0.0: 0.35, 0.2: 0.33, 0.5: 0.34}, ("fm", "afm", "ffm", "aoaffm")),
    "sweep_lambda": ({0.0: 0.34, 0.1: 0.33, 10.0: 0.35}, ("afm", "aoaffm")),
}
METAS = {
    "frappe": {
        **FRAPPE_META,
        "split_sizes": {"train": 202_026, "validation": 57_722, "test": 28_861},
        "seed": 2019,
        "positives": 96_203,
        "negatives": 192_406,
        "sources": {
            "Mobile_Frappe.zip": {
                "sha256": "4adc616de57170f282397f6e6e30215f97fa7ad1b7f40bd12ef5dceaaf3e9b4e",
                "url": "https://example.org/Mobile_Frappe.zip",
                "verified": True,
            }
        },
    }
}
ENVIRONMENT = {"profile": "quick", "git_revision": "abc123", "python": "3.11", "torch": "2.13.0"}


def synthetic_records(root, seeds=(2019, 2020)) -> list[dict]:
    """The paper's cells over two seeds, Figure 3 sweeps, and histories under ``root``."""
    rng = np.random.default_rng(0)
    records = []
    for base in paper_as_records():
        for seed in seeds if base["group"] == "table2" else seeds[:1]:
            run_dir = f"runs/{base['group']}/{base['dataset']}/{base['model']}-s{seed}"
            noise = float(rng.normal(0, 0.002))
            records.append(
                {
                    **base,
                    "seed": seed,
                    "validation_rmse": (base["validation_rmse"] or 0.35) + noise,
                    "test_rmse": base["test_rmse"] and base["test_rmse"] + noise,
                    "device": "cpu",
                    "run_dir": run_dir,
                    "history": f"{run_dir}/history.json",
                }
            )
            history = [
                {"epoch": e, "train_rmse": 0.5 / e, "validation_rmse": 0.3 + 0.2 / e, "time_s": 1.0}
                for e in range(1, 6)
            ]
            write_json(root / run_dir / "history.json", history)
    for dataset in ("movielens", "frappe"):
        for group, (curve, models) in SWEEPS.items():
            for i, model in enumerate(models):
                for value, rmse in curve.items():
                    records.append(
                        make_record(
                            group,
                            dataset,
                            model,
                            sweep_value=value,
                            validation_rmse=rmse + 0.01 * i,
                        )
                    )
    return records


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    records = synthetic_records(root)
    paths = build_report(
        records,
        METAS,
        root / "reports",
        profile="quick",
        environment=ENVIRONMENT,
        param_rows=[  # as aoaffm.models.parameter_rows gives them
            {
                "dataset": "frappe",
                "model": "fm",
                "params": 1_377_583,
                "params_batch_norm": 1_377_583,
                "paper": "1.38",
                "ours": "1.38",
                "agrees": True,
                "note": "",
            }
        ],
        notes=["Learning rate fixed at 0.05 (the paper searched four values)."],
        root=root,
    )
    return paths, records


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_every_artifact_is_written(built):
    paths, _ = built
    names = {f"table{i}_{ext}" for i in range(1, 5) for ext in ("md", "csv")}
    names |= {"figure3", "figure4", "figure3_data", "figure4_data", "claims", "params", "report"}
    names |= {"pretrained_start", "pretrained_start_md", "pretrained_start_csv"}
    for name in ("redundancy", "redundancy_weights"):  # the planted-redundancy experiment
        names |= {name, f"{name}_md", f"{name}_csv"}
    assert set(paths) == names
    for path in paths.values():
        assert path.is_file() and path.stat().st_size > 0
    leftovers = [p for p in paths["report"].parent.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers


@pytest.mark.parametrize(("name", "size"), [("figure3", FIGURE3_SIZE), ("figure4", FIGURE4_SIZE)])
def test_figures_are_pngs_of_the_declared_size(built, name, size):
    paths, _ = built
    assert png_size(paths[name]) == (round(size[0] * DPI), round(size[1] * DPI))
    assert paths[name].stat().st_size > 20_000  # six panels with lines, not a blank canvas


def test_figure_data_is_what_was_plotted(built):
    paths, _ = built
    fig3 = pd.read_csv(paths["figure3_data"])
    frappe_k = fig3[
        (fig3.dataset == "frappe") & (fig3.sweep == "embedding_size") & (fig3.model == "ffm")
    ]
    assert list(frappe_k.value) == [8, 16, 32]
    assert list(frappe_k.validation_rmse_mean) == pytest.approx([0.38, 0.36, 0.35])
    fig4 = pd.read_csv(paths["figure4_data"])
    assert set(zip(fig4.dataset, fig4.model, strict=True)) == {
        (d, m) for d in ("movielens", "frappe") for m in ("aoaffm", "afm", "ffm")
    }
    assert set(fig4[fig4.model == "afm"].seed) == {2019}  # the lowest seed's run
    assert set(fig4.profile) == {"quick"}


def test_report_has_every_section_and_the_quick_banner(built):
    paths, records = built
    text = paths["report"].read_text()
    assert text.startswith("# AoAFFM reproduction report — profile: quick")
    assert "NOT the paper's protocol numbers" in text.splitlines()[2]
    for heading in (
        "## Table 1",
        "## Table 2",
        "## Table 3",
        "## Table 4",
        "## Figure 3",
        "## Figure 4",
        "## Claims checklist",
        "## Parameter counts",
        "## Protocol choices where the paper is silent",
        "## Environment",
        "## Data provenance",
        "## Gaps",
    ):
        assert f"\n{heading}" in text, heading
    assert "](figures/figure3.png)" in text and "](figures/figure4.png)" in text
    assert "no numbers" in text  # Figures 3/4 have none in the paper
    assert "| Frappe    | raw       | 288,909            | 288,609" in text
    assert "4adc616de57170f282397f6e6e30215f97fa7ad1b7f40bd12ef5dceaaf3e9b4e" in text
    assert "abc123" in text and "cpu (" in text
    assert "Learning rate fixed at 0.05" in text
    protocol = text.split("## Protocol choices where the paper is silent")[1].split("\n## ")[0]
    assert "Criteo labels are 0/1" in protocol and "0.437 on 0/1 and 0.873 on ±1" in protocol
    params = paths["params"].read_text()
    assert "| FM      | Frappe    | 1,377,583 " in params and "| 1.38M  | 1.38M   | yes" in params
    table_lines = [line for line in params.splitlines() if line.startswith("|")]
    assert "\n".join(table_lines) in text  # REPORT.md holds the same table

    assert "|Δmean| > std₁ + std₂" in text
    assert f"Built from {len(records)} run records" in text
    for table in ("table1", "table4"):
        assert "NOT the paper's protocol numbers" in paths[f"{table}_md"].read_text()


def test_claims_json_format(built):
    paths, _ = built
    claims = json.loads(paths["claims"].read_text())
    assert claims["profile"] == "quick"
    entry = next(c for c in claims["claims"] if c["id"] == "rq2_aoafm_beats_afm")
    assert set(entry) == {"id", "rq", "claim", "source", "status", "beyond_seed_spread", "evidence"}
    assert entry["status"] in {"reproduced", "not reproduced"}
    assert entry["beyond_seed_spread"] in {"yes", "no", "yes (where seeds exist)"}
    assert len(entry["evidence"]) == 2
    embedding = next(c for c in claims["claims"] if c["id"] == "rq1_embedding_size")
    assert embedding["status"] == "reproduced"  # every synthetic curve is best at K = 32
    assert any("not the paper's 256" in e for e in embedding["evidence"])


def test_missing_groups_give_no_runs_panels_and_gaps(tmp_path):
    records = [make_record("table3", "frappe", "fm", test_rmse=0.33)]
    paths = build_report(records, {}, tmp_path / "reports", profile="paper")
    text = paths["report"].read_text()
    assert "NOT the paper's protocol" not in text
    assert "Figure 3: no sweep of embedding size K on MovieLens" in text
    assert "Figure 4: no table2 run of Frappe AoAFFM" in text
    assert "Table2: no runs for MovieLens AFM" in text
    assert png_size(paths["figure3"]) == (
        round(FIGURE3_SIZE[0] * DPI),
        round(FIGURE3_SIZE[1] * DPI),
    )
    claims = json.loads(paths["claims"].read_text())["claims"]
    assert {c["status"] for c in claims} == {NOT_EVALUABLE}
    assert "No processed dataset was described" in text


def test_malformed_history_names_the_file(tmp_path):
    (tmp_path / "h.json").write_text('[{"epoch": 1, "train_rmse": 0.3}]')
    records = [make_record("table3", "frappe", "ffm", test_rmse=0.33, history="h.json")]
    with pytest.raises(ValueError, match=r"h.json: entry 0: missing \['validation_rmse'\]"):
        build_report(records, {}, tmp_path / "reports", profile="quick", root=tmp_path)


def test_metrics_summary_is_flat_numbers(tmp_path):
    records = synthetic_records(tmp_path)
    summary = metrics_summary(records)
    assert set(summary) == {"movielens", "frappe", "criteo"}
    for metrics in summary.values():
        assert all(isinstance(v, float) for v in metrics.values())
    aoaffm = [
        r["test_rmse"]
        for r in records
        if r["group"] == "table2" and r["dataset"] == "frappe" and r["model"] == "aoaffm"
    ]
    assert summary["frappe"]["aoaffm_test_rmse"] == pytest.approx(np.mean(aoaffm), abs=1e-6)
    assert "affm_test_rmse" not in summary["frappe"]  # not a Table 3 cell
    assert set(summary["criteo"]) == {f"{m}_test_rmse" for m in ("fm", "ffm", "afm", "aoaffm")}
    assert metrics_summary([]) == {}
