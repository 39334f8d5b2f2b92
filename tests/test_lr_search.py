"""The learning-rate search as a step of the protocol: the tune group trains each model at each
rate of the grid (first seed); every later run of the model takes the rate with the lowest
validation RMSE."""

from __future__ import annotations

import copy

import pytest
from test_identity import _params, _tiny
from test_train_units import make_synthetic

from aoaffm.config import resolve
from aoaffm.errors import MissingInput
from aoaffm.experiments import plan, run_group, searched_models
from aoaffm.io import write_json

GRID = [0.005, 0.01, 0.05, 0.1]


def _searching(params: dict, **quick_train) -> dict:
    params = copy.deepcopy(_tiny(params))
    params["quick"]["lr_search"] = {"enabled": True, "grid": GRID}
    params["quick"]["table3"] = {"datasets": ["frappe"], "models": ["fm", "afm"]}
    params["quick"]["table2"] = {"datasets": ["frappe"], "models": ["afm"], "seeds": 2}
    params["quick"]["sweeps"] = {"datasets": []}
    params["quick"]["train"].update(quick_train)
    return params


def _finish(spec, runs_root, validation_rmse: float) -> None:
    write_json(spec.run_dir(runs_root) / "metrics.json", {"validation_rmse": validation_rmse})


def test_tune_plans_every_later_trained_model_at_every_rate_with_the_first_seed():
    cfg = resolve(_searching(_params()))
    tune = plan(cfg, "tune", "frappe")
    assert searched_models(cfg, "frappe") == ["afm", "fm"]  # table2's, then table3's
    assert [(r.model, r.learning_rate) for r in tune] == [
        (m, lr) for m in ("afm", "fm") for lr in GRID
    ]
    assert {r.seed for r in tune} == {cfg["seed"]}
    assert all(r.pretrained for r in tune if r.model == "afm")  # from the pre-trained FM
    assert plan(cfg, "pretrain", "frappe")  # pre-training needs no search result


def test_later_runs_wait_for_the_search(tmp_path):
    cfg = resolve(_searching(_params()))
    with pytest.raises(MissingInput, match=r"learning-rate search of afm .* tune@frappe"):
        plan(cfg, "table2", "frappe", tmp_path)
    unsearched = plan(cfg, "table2", "frappe", tmp_path, searched=False)
    assert {r.learning_rate for r in unsearched} == {0.05}  # the profile's default


def test_each_model_takes_its_lowest_validation_rate_first_on_ties(tmp_path):
    cfg = resolve(_searching(_params()))
    scores = {"afm": [0.40, 0.31, 0.33, 0.31], "fm": [0.50, 0.45, 0.44, 0.46]}
    for spec in plan(cfg, "tune", "frappe"):
        _finish(spec, tmp_path, scores[spec.model][GRID.index(spec.learning_rate)])
    table2 = plan(cfg, "table2", "frappe", tmp_path)
    table3 = plan(cfg, "table3", "frappe", tmp_path)
    assert {r.learning_rate for r in table2} == {0.01}  # tie 0.31: the first in the grid
    assert {r.model: r.learning_rate for r in table3} == {"fm": 0.05, "afm": 0.01}
    assert len({r.seed for r in table2}) == 2  # every seed of Table 2 takes it


def test_a_fixed_learning_rate_turns_the_search_off(tmp_path):
    params = _searching(_params())
    params["train"]["learning_rate"] = 0.02
    cfg = resolve(params)
    assert plan(cfg, "tune", "frappe") == []
    assert {r.learning_rate for r in plan(cfg, "table3", "frappe", tmp_path)} == {0.02}


def test_the_tune_stage_feeds_the_winner_to_training(tmp_path):
    """Tiny end to end: pretrain, tune (8 runs), then Table 3 trains FM at FM's winner."""
    make_synthetic(tmp_path / "data" / "frappe")
    cfg = resolve(_searching(_params()))
    kw = {"data_root": tmp_path / "data", "runs_root": tmp_path / "runs", "progress": False}
    run_group(cfg, "pretrain", "frappe", **kw)
    tuned = run_group(cfg, "tune", "frappe", **kw)
    best = min((m["validation_rmse"], s.learning_rate) for s, m in tuned if s.model == "fm")[1]
    table3 = run_group(cfg, "table3", "frappe", **kw)
    assert {s.model: s.learning_rate for s, _ in table3}["fm"] == best


def test_the_report_shows_each_rate_and_the_winner(tmp_path):
    from test_report_build import synthetic_records

    from aoaffm.report import build_report

    records = synthetic_records(tmp_path)
    tune = [dict(records[0], group="tune", model="fm", learning_rate=lr) for lr in GRID]
    for r, score in zip(tune, (0.5, 0.4, 0.45, 0.6), strict=True):
        r["validation_rmse"] = score
    paths = build_report(records + tune, {}, tmp_path / "reports", profile="quick")
    text = paths["report"].read_text()
    section = text.split("## Learning-rate search", 1)[1].split("\n## ", 1)[0]
    assert "| **0.4000** |" in section and "0.6000" in section


def test_a_table_run_equal_to_a_tune_run_takes_its_result(tmp_path):
    """The first seed's Table 2 run at the winning rate is the tune run of that rate: the
    same identity, so its result is copied, not trained again."""
    make_synthetic(tmp_path / "data" / "frappe")
    cfg = resolve(_searching(_params()))
    kw = {"data_root": tmp_path / "data", "runs_root": tmp_path / "runs", "progress": False}
    run_group(cfg, "pretrain", "frappe", **kw)
    tuned = {s.run_id: m for s, m in run_group(cfg, "tune", "frappe", **kw)}
    table2 = run_group(cfg, "table2", "frappe", **kw)
    first_seed = [(s, m) for s, m in table2 if s.seed == cfg["seed"]]
    assert first_seed and all(tuned[s.run_id] == m for s, m in first_seed)
    copied = first_seed[0][0].run_dir(tmp_path / "runs") / "history.json"
    assert copied.is_file()
