"""dvc.yaml's params and code deps are exact: each stage lists every params.yaml key its runs
read and the planted-redundancy section only where it is read, so that changing it re-runs
only the experiment's stages, evaluate and report (and a new profile key cannot be
forgotten); each training stage depends on exactly the package code its script imports."""

from __future__ import annotations

import ast

import pytest
import yaml
from conftest import REPO_ROOT
from test_import_graph import GRAPH, MODULES

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


def _code_of(script: str) -> set[str]:
    """The aoaffm modules ``script`` runs: its imports and theirs (inside functions too)."""
    tree = ast.parse((REPO_ROOT / script).read_text(encoding="utf-8"))
    todo = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        for name in names:
            parts = name.split(".")
            todo.update(".".join(parts[:end]) for end in range(1, len(parts) + 1))
    todo &= set(MODULES)
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo |= GRAPH[module]
    return seen


def _as_deps(modules: set[str]) -> set[str]:
    """Module names as dvc.yaml paths: a package whose every module is used as its folder."""
    deps = set()
    for module in modules:
        path = MODULES[module].relative_to(REPO_ROOT)
        package = ".".join(path.parent.parts)  # aoaffm, or a subpackage such as aoaffm.data
        inside = {m for m in MODULES if m == package or m.startswith(package + ".")}
        whole = package != "aoaffm" and inside <= modules
        deps.add(path.parent.as_posix() if whole else path.as_posix())
    return deps


@pytest.mark.parametrize("stage", TRAINED + REDUNDANCY)
def test_training_stages_depend_on_exactly_the_code_they_run(stages, stage):
    code = _as_deps(_code_of("stages/train.py"))
    assert not any(d.startswith("aoaffm/report") for d in code)  # the report re-trains nothing
    listed = {d for d in stages[stage]["deps"] if d.startswith(("aoaffm/", "stages/"))}
    scripts = {"stages/train.py"} | ({"stages/pretrain.py"} if stage == "pretrain" else set())
    assert listed == code | scripts
