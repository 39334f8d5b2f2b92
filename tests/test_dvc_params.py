"""dvc.yaml's params are exact: each stage lists every params.yaml key its runs read and the
planted-redundancy section only where it is read, so that changing it re-runs only the
experiment's stages, evaluate and report (and a new profile key cannot be forgotten)."""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO_ROOT

from aoaffm.config import PROFILES

TRAINED = ("pretrain", "tune", "table2", "table3", "table4", "sweeps", "random_start")
REDUNDANCY = ("redundancy_pretrain", "redundancy")
# the profile sections that reach a redundancy run's settings (aoaffm.experiments._settings)
RUN_SECTIONS = ("data", "model", "train", "datasets", "tuned", "redundancy")
TOP = {"seed", "profile", "model", "train"}


@pytest.fixture(scope="module")
def stages() -> dict:
    dvc = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    return {name: stage.get("do", stage) for name, stage in dvc.items()}


@pytest.fixture(scope="module")
def profiles() -> dict:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    return {p: params[p] for p in PROFILES}


@pytest.mark.parametrize("stage", TRAINED)
def test_training_stages_read_every_profile_key_but_the_experiments(stages, profiles, stage):
    expected = TOP | {f"{p}.{k}" for p, keys in profiles.items() for k in keys if k != "redundancy"}
    assert set(stages[stage]["params"]) == expected


@pytest.mark.parametrize("stage", REDUNDANCY)
def test_redundancy_stages_read_their_runs_settings(stages, profiles, stage):
    expected = TOP | {f"{p}.{k}" for p, keys in profiles.items() for k in keys if k in RUN_SECTIONS}
    assert set(stages[stage]["params"]) == expected
    assert "data/planted/${item}" in stages[stage]["deps"]


def test_plant_reads_only_the_section_and_the_seed(stages, profiles):
    assert set(stages["plant"]["params"]) == {"seed", "profile"} | {
        f"{p}.redundancy" for p in profiles
    }
    assert set(stages["plant"]["outs"][0]) == {"data/planted/${item}"}


def test_evaluate_collects_the_experiments_runs(stages):
    deps = set(stages["evaluate"]["deps"])
    for group in REDUNDANCY:
        assert {f"runs/{group}/frappe", f"runs/{group}/movielens"} <= deps
