"""params.yaml resolution, value checks, and the experiment plan built from it."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import REPO_ROOT

from aoaffm.config import ConfigError, load_config, resolve
from aoaffm.experiments import GROUPS, datasets_of, plan, pretrain_spec
from aoaffm.models import ATTENTION_MODELS


@pytest.fixture(scope="module")
def params() -> dict:
    """The committed protocol, whatever profile or overrides the last `dvc exp run` left."""
    with open(REPO_ROOT / "params.yaml", encoding="utf-8") as f:
        p = yaml.safe_load(f)
    p["profile"] = "paper"
    p["paper"]["lr_search"]["enabled"] = False  # its winners need finished runs: test_lr_search
    for section in ("model", "train", "data"):
        p[section] = {k: None for k in p[section]} | {
            k: v for k, v in p[section].items() if k in ("device", "bf16", "gpus")
        }
    return p


def _cfg(params, **top):
    p = copy.deepcopy(params)
    for dotted, value in top.items():
        *path, key = dotted.split("__")
        node = p
        for part in path:
            node = node.setdefault(part, {})
        node[key] = value
    return resolve(p)


def test_paper_profile_is_the_protocol(params):
    cfg = _cfg(params)
    assert load_config(REPO_ROOT / "params.yaml", profile="paper")["profile"] == "paper"
    assert cfg["model"]["embedding_size"] == 256 and cfg["model"]["attention_size"] == 256
    assert cfg["datasets"]["frappe"]["batch_size"] == 128
    assert cfg["datasets"]["movielens"]["batch_size"] == 4096
    assert cfg["table2"]["seeds"] == 10
    # Table 2's tuned settings
    assert cfg["tuned"]["frappe"]["afm"] == {"dropout": 0.6, "lambda": 10}
    assert cfg["tuned"]["movielens"]["aoaffm"] == {"dropout": 0.4, "lambda": 1}


def test_quick_profile_replaces_only_its_keys(params):
    cfg = _cfg(params, profile="quick")
    assert cfg["model"]["embedding_size"] == 16
    assert cfg["model"]["attention_size"] == 16
    assert cfg["model"]["hidden_sizes"]["wide_deep"] == [64, 32, 16]
    assert cfg["train"]["patience"] == 4  # kept from the paper profile
    assert cfg["data"]["frappe"]["source"] == "nfm-rebuilt"
    assert cfg["table2"]["seeds"] == 2 and cfg["table2"]["models"] == list(ATTENTION_MODELS)


def test_dropout_override_reaches_every_trained_model_but_not_pretraining(params):
    cfg = _cfg(params, profile="quick", model__dropout=0.4)
    for group in GROUPS:
        for dataset in datasets_of(cfg, group):
            for run in plan(cfg, group, dataset):
                swept = {p for p, _ in run.sweeps}
                if group in ("pretrain", "redundancy_pretrain"):
                    assert run.dropout == 0.0
                elif "dropout" not in swept:
                    assert run.dropout == 0.4, (group, dataset, run.run_id)


def test_settings_order_profile_dataset_tuned_override_sweep(params):
    cfg = _cfg(params)
    afm = next(r for r in plan(cfg, "table2", "frappe") if r.model == "afm")
    assert (afm.dropout, afm.lambda_, afm.batch_size, afm.embedding_size) == (0.6, 10, 128, 256)
    ffm = next(r for r in plan(cfg, "table4", "criteo") if r.model == "ffm")
    assert (ffm.embedding_size, ffm.batch_size) == (4, 128)  # Table 4's per-model settings
    cfg = _cfg(params, model__embedding_size=32)
    ffm = next(r for r in plan(cfg, "table4", "criteo") if r.model == "ffm")
    assert ffm.embedding_size == 32  # the user's override wins over the tuned value
    sweep = plan(cfg, "sweeps", "frappe")
    assert {r.embedding_size for r in sweep if ("embedding_size", 8) in r.sweeps} == {8}


def test_attention_runs_point_at_a_planned_pretrain_run(params):
    cfg = _cfg(params)
    for dataset in datasets_of(cfg, "pretrain"):
        pretrain_ids = {r.run_id for r in plan(cfg, "pretrain", dataset)}
        for group in ("table2", "table4", "sweeps"):
            for run in plan(cfg, group, dataset):
                if run.model in ATTENTION_MODELS:
                    assert run.pretrained in pretrain_ids
    spec = pretrain_spec(cfg, "frappe", "ffm", 64)
    assert spec.embedding_size == 64 and spec.dropout == 0.0


def test_sweeps_share_identical_runs_and_keep_every_membership(params):
    cfg = _cfg(params)
    runs = plan(cfg, "sweeps", "frappe")
    assert len({r.run_id for r in runs}) == len(runs)
    # AoAFFM at K = 256 and its tuned dropout/λ belongs to all three sweeps
    shared = [r for r in runs if r.model == "aoaffm" and len(r.sweeps) == 3]
    assert len(shared) == 1
    assert {p for p, _ in shared[0].sweeps} == {"embedding_size", "dropout", "lambda"}


def test_table2_seeds_and_run_ids_are_stable(params):
    cfg = _cfg(params)
    runs = plan(cfg, "table2", "movielens")
    assert len(runs) == 4 * 10
    assert [r.run_id for r in runs] == [r.run_id for r in plan(cfg, "table2", "movielens")]
    assert len({r.seed for r in runs}) == 10


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("model__dropout", 1.0, "model.dropout = 1.0; expected a number in [0, 1)"),
        ("model__dropout", -0.1, "model.dropout"),
        (
            "train__learning_rate",
            -0.05,
            "train.learning_rate = -0.05; expected a finite number > 0",
        ),
        ("model__embedding_size", 0, "model.embedding_size"),
        ("profile", "fast", "profile is 'fast'; expected one of ['paper', 'frappe', 'quick']"),
        ("train__device", "tpu", "train.device"),
        ("train__gpus", 0, "train.gpus"),
        ("paper__table3__models", ["fm", "nfm"], "table3.models = 'nfm'; expected one of"),
        ("paper__data__split", [0.7, 0.2, 0.2], "data.split"),
        ("paper__model__hidden_sizes", {"wide_deep": [64, 0]}, "model.hidden_sizes.wide_deep"),
    ],
)
def test_bad_values_are_clear_errors(params, key, value, message):
    with pytest.raises(ConfigError) as err:
        _cfg(params, **{key: value})
    assert "params.yaml" in str(err.value) and message in str(err.value)


@pytest.mark.parametrize(
    ("key", "value", "valid"),
    [
        ("patience", 0, False),  # was accepted here while TrainConfig refused it
        ("patience", 1, True),
        ("min_epochs", 0, True),
        ("device", "cuda:1", True),
        ("device", "cuda:x", False),  # was accepted here while TrainConfig refused it
        ("eval_batch_size", 0, False),
        ("bf16", "yes", False),
        ("initial_accumulator", -1.0, False),
    ],
)
def test_train_settings_follow_the_trainers_rules(params, key, value, valid):
    """params.yaml's train section and TrainConfig share one rule per setting."""
    from aoaffm.train.config import TrainConfig

    def trainer_accepts() -> bool:
        try:
            TrainConfig(learning_rate=0.1, batch_size=1, epochs=1, **{key: value})
        except ConfigError:
            return False
        return True

    assert trainer_accepts() is valid
    if valid:
        _cfg(params, **{f"train__{key}": value})
    else:
        with pytest.raises(ConfigError, match=rf"params.yaml: train.{key} = "):
            _cfg(params, **{f"train__{key}": value})


def test_run_records_have_exactly_the_fields_the_report_reads(params):
    from aoaffm.experiments import record
    from aoaffm.report.records import RECORD_FIELDS

    cfg = _cfg(params)
    run = plan(cfg, "sweeps", "frappe")[0]
    for rec in record(run, {"validation_rmse": 0.3, "test_rmse": 0.3}):
        assert tuple(rec) == RECORD_FIELDS


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("model__dropuot", "'dropout', 'lambda'"),
        ("train__learnig_rate", "'learning_rate', 'batch_size'"),
        ("paper__train__dropout", "'epochs', 'min_epochs'"),  # read by nothing in a profile
        ("quick__model__dropuot", "'embedding_size', 'attention_size'"),
        ("paper__tuned__frappe__afm__dropuot", "'dropout', 'lambda'"),
        ("paper__tuned__frappe__fmm", "'fm', 'hofm'"),
        ("sed", "'profile', 'seed'"),
    ],
)
def test_unknown_keys_are_errors_not_ignored(params, key, valid):
    with pytest.raises(ConfigError) as err:
        _cfg(params, **{key: 0.1})
    dotted = key.replace("__", ".")
    assert f"params.yaml: unknown key '{dotted}'; expected one of [{valid}" in str(err.value)


def test_unknown_key_and_repeated_key_name_their_line(params, tmp_path):
    path = tmp_path / "params.yaml"
    text = (REPO_ROOT / "params.yaml").read_text()
    lines = text.splitlines(keepends=True)
    # the first `  dropout:` is model.dropout (`dvc exp run -S` may have rewritten its value)
    index = next(i for i, t in enumerate(lines) if t.startswith("  dropout:"))
    lines[index] = "  dropuot: 0.3\n"
    path.write_text("".join(lines))
    line = index + 1
    with pytest.raises(
        ConfigError, match=rf"params.yaml, line {line}: unknown key 'model.dropuot'"
    ):
        load_config(path)
    path.write_text(text + "seed: 7\n")  # a second seed silently replaced the first
    last = len(text.splitlines()) + 1
    with pytest.raises(ConfigError, match=rf"line {last}: key 'seed' appears a second time"):
        load_config(path)


def test_every_allowed_setting_has_an_identity_decision():
    from aoaffm.config import params_schema
    from aoaffm.experiments import SETTING_DECISIONS

    schema = params_schema()
    names = set()
    for section in ("model", "train", "data"):
        names |= set(schema[section]) | set(schema["paper"][section])
    names |= set(schema["paper"]["datasets"]["frappe"]) | set(
        schema["paper"]["tuned"]["frappe"]["fm"]
    )
    assert "embedding_size" in names and "mirror" in names and "gpus" in names
    assert not sorted(names - set(SETTING_DECISIONS)), "add the key to SETTING_DECISIONS"


@pytest.mark.parametrize("seed", [-1, 2**32, True, 1.5])
def test_seed_must_be_one_numpy_and_torch_take(params, seed):
    with pytest.raises(ConfigError, match=r"seed = .*; expected an integer in \[0, 2\*\*32 - 1\]"):
        _cfg(params, seed=seed)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("profile: quick\nmodel:\n  dropout: 0.1\n   lambda: 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}, line 4: not valid YAML (mapping values are not")
    path.write_bytes(b"profile: quick\n# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"params.yaml, line 2: not UTF-8 text"):
        load_config(path)


def test_pretrained_baselines_override_is_applied_and_checked(params):
    def starts(**override):
        return {r.model: r.pretrained for r in plan(_cfg(params, **override), "table3", "frappe")}

    assert starts()["hofm"] is not None  # the paper profile's default: from the trained FM
    assert starts(model__pretrained_baselines=False)["hofm"] is None
    with pytest.raises(ConfigError, match="model.pretrained_baselines = 'no'; expected true"):
        _cfg(params, model__pretrained_baselines="no")
