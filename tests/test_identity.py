"""A run's identity: every setting that changes its numbers either names another run or is
checked before a stored result is reused (issue: results reused under other settings).

The enumeration test fails when a new setting reaches the data, a model or the trainer
without a decision in ``aoaffm.experiments.SETTING_DECISIONS``; the state tests train a tiny
finished pipeline state and show that changing each such setting does not reuse it.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import yaml
from conftest import REPO_ROOT
from test_train_units import make_synthetic

from aoaffm.config import PROFILES, ConfigError, resolve
from aoaffm.data import DataError
from aoaffm.experiments import IDENTITY, SETTING_DECISIONS, plan, run_group
from aoaffm.fast import native
from aoaffm.labels import PM1, ZERO_ONE
from aoaffm.train import RunMismatch, TrainConfig


def _params(profile: str = "quick") -> dict:
    with open(REPO_ROOT / "params.yaml", encoding="utf-8") as f:
        params = yaml.safe_load(f)
    params["profile"] = profile
    for section in ("model", "train", "data"):  # what a `dvc exp run -S` may have left
        params[section] = {k: None for k in params[section]} | {
            k: v for k, v in params[section].items() if k in ("device", "bf16", "gpus")
        }
    params["train"].update(device="cpu", bf16=False, gpus=1)
    return params


def _setting_names(cfg: dict) -> set[str]:
    names = set(cfg["model"]) | set(cfg["train"]) | set(cfg["data"])
    for section in ("datasets",):
        for settings in cfg.get(section, {}).values():
            names |= set(settings)
    for models in cfg.get("tuned", {}).values():
        for settings in models.values():
            names |= set(settings)
    for section in ("model", "train", "data"):
        names |= set(cfg["overrides"][section])
    names |= set(cfg.get("redundancy", {}))  # the planted-redundancy experiment's section
    return names | {f.name for f in dataclasses.fields(TrainConfig)}


@pytest.mark.parametrize("profile", PROFILES)
def test_every_setting_has_an_identity_decision(profile):
    cfg = resolve(_params(profile))
    undecided = sorted(_setting_names(cfg) - set(SETTING_DECISIONS))
    assert not undecided, (
        f"settings without a decision in SETTING_DECISIONS: {undecided}; put each in the "
        "run's identity (RunSpec), or say why it cannot change the numbers"
    )


# One change per identity setting, as params.yaml would spell it: (section, key, value).
CHANGES = {
    "embedding_size": ("model", "embedding_size", 6),
    "attention_size": ("model", "attention_size", 6),
    "dropout": ("model", "dropout", 0.3),
    "lambda": ("model", "lambda", 3.0),
    "lambda_attention": ("model", "lambda", 3.0),
    "lambda_interaction": ("model", "lambda", 3.0),
    "batch_norm": ("model", "batch_norm", True),
    "hidden_sizes": ("quick", "model.hidden_sizes.wide_deep", [8]),
    "pretrained_baselines": ("quick", "model.pretrained_baselines", False),
    "seed": ("", "seed", 7),
    "learning_rate": ("train", "learning_rate", 0.02),
    "batch_size": ("quick", "datasets.frappe.batch_size", 256),
    "epochs": ("train", "epochs", 3),
    "min_epochs": ("quick", "train.min_epochs", 2),
    "patience": ("quick", "train.patience", 2),
    "stop_rule": ("quick", "train.stop_rule", "plateau"),
    "initial_accumulator": ("quick", "train.initial_accumulator", 0.1),
    "train_rmse_rows": ("quick", "train.train_rmse_rows", 500),
    "eval_batch_size": ("quick", "train.eval_batch_size", 100),
    "device": ("train", "device", "cuda"),
    "bf16": ("train", "bf16", True),
    "bf16_products": ("train", "bf16_products", True),
    "gpus": ("train", "gpus", 2),
    "frappe": ("data", "frappe", {"source": "nfm"}),
    "movielens": ("data", "movielens", {"source": "nfm"}),
    "criteo": ("data", "criteo", {"source": "libsvm"}),
    "negatives_per_positive": ("quick", "data.negatives_per_positive", 3),
    "split": ("quick", "data.split", [0.8, 0.1, 0.1]),
    "fields": ("quick", "redundancy.fields.frappe", ["weekday"]),
    "kinds": ("quick", "redundancy.kinds", ["exact"]),
    "r": ("quick", "redundancy.r", [0, 3]),
    "epsilon": ("quick", "redundancy.epsilon", 0.5),
    "coarse_values": ("quick", "redundancy.coarse_values", 3),
}
MODELS = ["fm", "wide_deep", "afm"]  # a factorization, a deep and an attention model


def _changed(params: dict, name: str) -> dict:
    section, dotted, value = CHANGES[name]
    params = copy.deepcopy(params)
    node = params if not section else params.setdefault(section, {})
    *path, key = dotted.split(".")
    for part in path:
        node = node.setdefault(part, {})
    node[key] = value
    return params


def _tiny(params: dict) -> dict:
    params = copy.deepcopy(params)
    quick = params["quick"]
    quick["train"] = {**quick.get("train", {}), "epochs": 1}
    quick["model"] = {**quick["model"], "embedding_size": 4, "attention_size": 4}
    quick["datasets"]["frappe"]["batch_size"] = 512
    quick["table3"] = {"datasets": ["frappe", "movielens", "criteo"], "models": MODELS}
    quick["redundancy"] = {
        **quick["redundancy"],
        "kinds": ["noisy", "coarse"],
        "r": [0, 2],
        "seeds": 1,
        "models": ["fm", "afm"],
    }
    return params


def _ids(params: dict) -> dict[str, str]:
    cfg = resolve(params)
    runs = [
        run
        for dataset in ("frappe", "movielens", "criteo")
        for group in ("table3", "pretrain", "redundancy_pretrain", "redundancy")
        for run in plan(cfg, group, dataset)
    ]
    return {f"{r.group}/{r.dataset}/{r.model}/{r.variant}/{r.seed}": r.run_id for r in runs}


@pytest.mark.parametrize("name", sorted(n for n, d in SETTING_DECISIONS.items() if IDENTITY in d))
def test_each_identity_setting_names_another_run(name):
    """Changing the setting changes the id of every run it applies to (the attention model's
    λ only; no pre-training dropout), so a finished result is never found under it."""
    assert name in CHANGES, f"no change defined for identity setting {name!r}"
    base = _tiny(_params())
    before, after = _ids(base), _ids(_changed(base, name))
    moved = {run for run in before if before[run] != after.get(run)}
    assert moved, f"changing {name} left every run id as it was"
    if name in (
        "device",
        "bf16",
        "bf16_products",
        "gpus",
        "seed",
        "learning_rate",
        "epochs",
        "split",
    ):
        unchanged = set(before) - moved
        assert not unchanged, f"{name} must apply to every run; unchanged: {unchanged}"
    if name in ("frappe", "movielens", "criteo"):
        assert {run.split("/")[1] for run in moved} == {name}


def _train(params: dict, kw: dict) -> list:
    """The pretrain group, then table3 (Wide&Deep starts from the pre-trained FM)."""
    cfg = resolve(params)
    run_group(cfg, "pretrain", "frappe", **kw)
    return run_group(cfg, "table3", "frappe", **kw)


@pytest.fixture
def finished_state(tmp_path):
    """A finished table3 group (FM, Wide&Deep) on a small dataset at the tiny quick profile."""
    make_synthetic(tmp_path / "data" / "frappe")
    params = _tiny(_params())
    params["quick"]["table3"] = {"datasets": ["frappe"], "models": ["fm", "wide_deep"]}
    kw = {"data_root": tmp_path / "data", "runs_root": tmp_path / "runs", "progress": False}
    first = _train(params, kw)
    return params, kw, {spec.model: (spec.run_dir(kw["runs_root"]), m) for spec, m in first}


@pytest.mark.parametrize(
    "name", ["bf16", "bf16_products", "stop_rule", "train_rmse_rows", "eval_batch_size"]
)
def test_a_changed_setting_trains_again(finished_state, name):
    params, kw, first = finished_state
    again = _train(_changed(params, name), kw)
    for spec, _ in again:
        old_dir, _ = first[spec.model]
        assert spec.run_dir(kw["runs_root"]) != old_dir
        assert (spec.run_dir(kw["runs_root"]) / "metrics.json").is_file()
    if name in ("bf16", "bf16_products"):
        assert all(m[name] is True for _, m in again)


def test_another_world_size_is_refused_in_one_process(finished_state):
    params, kw, _ = finished_state
    with pytest.raises(ConfigError, match=r"planned for 2 process\(es\).*running in 1"):
        run_group(resolve(_changed(params, "gpus")), "table3", "frappe", **kw)


def test_same_settings_reuse_the_finished_runs(finished_state):
    params, kw, first = finished_state
    again = _train(params, kw)
    assert {s.model: m for s, m in again} == {model: m for model, (_, m) in first.items()}


def test_other_data_under_the_same_settings_is_refused(finished_state, tmp_path):
    params, kw, _ = finished_state
    make_synthetic(tmp_path / "data" / "frappe", seed=1)  # same settings, other rows
    with pytest.raises(RunMismatch, match="data_digest"):
        run_group(resolve(params), "table3", "frappe", **kw)


def test_other_cpu_step_code_is_refused(finished_state):
    params, kw, _ = finished_state
    if native.library() is None:
        pytest.skip("the C++ kernels are not available here: nothing to switch")
    with native.enabled(False), pytest.raises(RunMismatch, match="step_code"):
        run_group(resolve(params), "table3", "frappe", **kw)


def test_the_label_scale_is_in_the_identity_of_criteo_runs_only():
    """Criteo's 0/1 labels name other runs than its ±1 labels did; runs on ±1 data keep the
    ids they had before the scale entered the identity."""
    cfg = resolve(_tiny(_params()))
    for dataset, scale in (("frappe", PM1), ("movielens", PM1), ("criteo", ZERO_ONE)):
        for run in plan(cfg, "table3", dataset):
            assert run.labels == scale
            assert ("labels" in run.settings()) == (scale != PM1), (dataset, run.run_id)
            other = ZERO_ONE if scale == PM1 else PM1
            assert dataclasses.replace(run, labels=other).run_id != run.run_id


def test_data_on_another_label_scale_is_refused_before_training(tmp_path):
    """A Criteo build from before its labels became 0/1 (±1 arrays) is not trained on."""
    make_synthetic(tmp_path / "data" / "criteo")  # ±1 labels
    kw = {"data_root": tmp_path / "data", "runs_root": tmp_path / "runs", "progress": False}
    with pytest.raises(DataError, match=r"labels \[-1.0, 1.0\].*planned on \[0.0, 1.0\].*rebuild"):
        run_group(resolve(_tiny(_params())), "table3", "criteo", **kw)
    assert not (tmp_path / "runs" / "table3" / "criteo").exists() or not any(
        (tmp_path / "runs" / "table3" / "criteo").iterdir()
    )


@pytest.mark.parametrize(
    ("key", "value"), [("embedding_size", 6), ("attention_size", 6), ("epochs", 3)]
)
def test_the_experiments_own_k_t_and_epochs_name_its_runs_only(key, value):
    """redundancy.embedding_size / attention_size / epochs take the profile's place for the
    planted-redundancy runs (and their pre-training) and for no other run."""
    base = _tiny(_params())
    changed = copy.deepcopy(base)
    changed["quick"]["redundancy"][key] = value
    before, after = _ids(base), _ids(changed)
    moved = {run for run in before if before[run] != after[run]}
    assert moved == {run for run in before if run.startswith("redundancy")}
    assert {r.embedding_size if key == "embedding_size" else r.attention_size if key ==
            "attention_size" else r.epochs
            for r in plan(resolve(changed), "redundancy", "frappe")} == {value}  # fmt: skip
