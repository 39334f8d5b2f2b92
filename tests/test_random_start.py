"""The effect of the pre-trained start: the random_start group trains Table 3's pre-trained
baselines (HOFM, Wide&Deep, DeepCross) again from random embeddings, everything else the
same, and the report sets the two side by side."""

from __future__ import annotations

import copy

import pytest
from test_identity import _params, _tiny
from test_lr_search import GRID, _finish, _searching
from test_train_units import make_synthetic

from aoaffm.config import ConfigError, resolve
from aoaffm.experiments import plan, run_group


def _with_random_start(params: dict, models=("hofm", "wide_deep")) -> dict:
    params = copy.deepcopy(_tiny(params))
    params["quick"]["table3"] = {"datasets": ["frappe"], "models": ["fm", *models]}
    params["quick"]["random_start"] = {"datasets": ["frappe"], "models": list(models)}
    return params


def test_random_start_runs_are_the_table3_runs_without_the_pretrained_start():
    cfg = resolve(_with_random_start(_params()))
    table3 = {r.model: r for r in plan(cfg, "table3", "frappe")}
    runs = plan(cfg, "random_start", "frappe")
    assert [r.model for r in runs] == ["hofm", "wide_deep"]
    for run in runs:
        twin = table3[run.model]
        assert twin.pretrained is not None and run.pretrained is None
        differing = {k for k, v in run.settings().items() if twin.settings()[k] != v}
        assert differing == {"pretrained"}
        assert run.run_id != twin.run_id


def test_nothing_to_compare_when_the_baselines_start_at_random_anyway():
    params = _with_random_start(_params())
    params["model"]["pretrained_baselines"] = False
    cfg = resolve(params)
    assert plan(cfg, "random_start", "frappe") == []
    assert all(r.pretrained is None for r in plan(cfg, "table3", "frappe") if r.model != "fm")


def test_random_start_takes_its_table3_twins_searched_rate(tmp_path):
    params = _searching(_with_random_start(_params()))
    params["quick"]["table3"] = {"datasets": ["frappe"], "models": ["fm", "wide_deep"]}
    params["quick"]["random_start"] = {"datasets": ["frappe"], "models": ["wide_deep"]}
    cfg = resolve(params)
    tune = plan(cfg, "tune", "frappe")
    assert {r.model for r in tune} == {"afm", "fm", "wide_deep"}  # nothing tuned for it alone
    for spec in tune:  # wide_deep's validation RMSE is lowest at 0.1
        _finish(spec, tmp_path, 1.0 - spec.learning_rate if spec.model == "wide_deep" else 0.5)
    (twin,) = [r for r in plan(cfg, "table3", "frappe", tmp_path) if r.model == "wide_deep"]
    (run,) = plan(cfg, "random_start", "frappe", tmp_path)
    assert run.learning_rate == twin.learning_rate == GRID[-1]


def test_only_baselines_with_a_pretrained_start_can_be_compared():
    params = _with_random_start(_params(), models=("afm",))
    with pytest.raises(ConfigError, match=r"random_start\.models = 'afm'; expected a baseline"):
        resolve(params)


def test_random_start_trains_without_pretrain_runs(tmp_path):
    """The stage needs no pre-trained FM: its runs start from the seeded random init."""
    make_synthetic(tmp_path / "data" / "frappe")
    cfg = resolve(_with_random_start(_params()))
    kw = {"data_root": tmp_path / "data", "runs_root": tmp_path / "runs", "progress": False}
    results = run_group(cfg, "random_start", "frappe", **kw)
    assert [s.model for s, _ in results] == ["hofm", "wide_deep"]
    assert not (tmp_path / "runs" / "pretrain").exists()
    assert all(m["validation_rmse"] > 0 for _, m in results)
