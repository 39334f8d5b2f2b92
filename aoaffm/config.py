"""The effective configuration: params.yaml's profile merged with the user's overrides.

params.yaml holds the paper's protocol under ``paper:``, a scaled-down profile under
``quick:`` that replaces the keys it names, and top-level ``model:`` / ``train:`` / ``data:``
overrides whose non-null values win over both (``dvc exp run -S model.dropout=0.4``). This
module only reads and checks a dict; it knows nothing of DVC.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from aoaffm.errors import ConfigError, first_line

__all__ = ["ConfigError", "load_config", "validate"]  # ConfigError lives in aoaffm.errors

PROFILES = ("paper", "frappe", "quick")
DATASETS = ("frappe", "movielens", "criteo")
OVERRIDE_SECTIONS = ("model", "train", "data")


def deep_merge(base: dict, update: dict) -> dict:
    """``base`` with ``update``'s keys replaced recursively (lists are replaced whole)."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _non_null(section: dict | None) -> dict:
    return {k: v for k, v in (section or {}).items() if v is not None}


def resolve(params: dict, source: str = "params.yaml", text: str | None = None) -> dict:
    """Merge a params dict into the effective configuration and check every key and value.

    The result has the keys of ``paper:`` plus ``profile``, ``seed`` and ``overrides`` (the
    user's non-null top-level values, kept apart so that per-model tuned values can sit
    between the profile and them). ``text``, the file's YAML, lets errors name a line.
    """
    check_keys(params, source, text)
    profile = params.get("profile", "paper")
    if profile not in PROFILES:
        raise ConfigError(f"{source}: profile is {profile!r}; expected one of {list(PROFILES)}")
    if "paper" not in params:
        raise ConfigError(f"{source}: no `paper:` section (the protocol's defaults)")
    cfg = copy.deepcopy(params["paper"])
    if profile != "paper":
        cfg = deep_merge(cfg, params.get(profile) or {})
    overrides = {name: _non_null(params.get(name)) for name in OVERRIDE_SECTIONS}
    # Data and train overrides that have no per-model tuned value apply straight away.
    cfg["data"] = deep_merge(cfg.get("data", {}), overrides["data"])
    cfg["data"].setdefault("mirror", None)
    cfg["train"] = deep_merge(cfg.get("train", {}), overrides["train"])
    # So does the one model switch that is no per-model setting (it picks pretrained runs).
    if "pretrained_baselines" in overrides["model"]:
        cfg["model"] = {
            **cfg.get("model", {}),
            "pretrained_baselines": overrides["model"]["pretrained_baselines"],
        }
    cfg["train"].setdefault("device", "auto")
    cfg["train"].setdefault("bf16", False)
    cfg["train"].setdefault("bf16_products", False)
    cfg["train"].setdefault("gpus", 1)
    cfg["train"].setdefault("workers", "auto")
    cfg["train"].setdefault("backend", "local")
    cfg["profile"] = profile
    cfg["seed"] = params.get("seed", 0)
    cfg["overrides"] = overrides
    validate(cfg, source)
    return cfg


def load_config(path: str | os.PathLike = "params.yaml", profile: str | None = None) -> dict:
    """Read and resolve a params file (see :func:`resolve`); ``profile`` replaces its own."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such params file (run from the repository root)")
    try:
        text = path.read_text(encoding="utf-8")
        tree = yaml.compose(text)
        params = yaml.safe_load(text) or {}
    except UnicodeDecodeError as error:
        line = text_line(path.read_bytes(), error.start)
        raise ConfigError(f"{path}, line {line}: not UTF-8 text; save it as UTF-8") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}, {yaml_problem(error)}") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    _check_duplicate_keys(tree, str(path))
    if profile is not None:
        params["profile"] = profile
    return resolve(params, str(path), text)


def yaml_problem(error: yaml.YAMLError) -> str:
    """``line N: not valid YAML (...)`` and what to do, from PyYAML's error and its marks."""
    mark, context = getattr(error, "problem_mark", None), getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or first_line(error)
    if context is not None and getattr(error, "context", None):
        problem += f"; {error.context} on line {context.line + 1}"
    line = f"line {mark.line + 1}: " if mark is not None else ""
    return f"{line}not valid YAML ({problem}); fix it (`git diff` shows what changed)"


def text_line(data: bytes, offset: int) -> int:
    """The 1-based line of byte ``offset`` in ``data``."""
    return data.count(b"\n", 0, offset) + 1


def _check_duplicate_keys(node: yaml.Node | None, source: str) -> None:
    """YAML keeps the last of two equal keys and drops the first without a word."""
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key, value in node.value:
            if key.value in seen:
                raise ConfigError(
                    f"{source}, line {key.start_mark.line + 1}: key {key.value!r} appears a "
                    "second time in the same section, which would silently replace the first; "
                    "keep one"
                )
            seen.add(key.value)
            _check_duplicate_keys(value, source)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicate_keys(item, source)


# --------------------------------------------------------------------------- keys


def _keys(*names: str) -> dict:
    return dict.fromkeys(names)


# Per-model settings, as `datasets:` and `tuned:` spell them.
HPARAM_KEYS = ("dropout", "lambda", "learning_rate", "batch_size", "embedding_size",
               "attention_size", "batch_norm")  # fmt: skip
# The top-level overrides the code applies (aoaffm.experiments._settings and resolve above).
OVERRIDE_KEYS = {
    "model": ("dropout", "lambda", "embedding_size", "attention_size", "batch_norm",
              "pretrained_baselines"),
    "train": ("learning_rate", "batch_size", "epochs", "min_epochs", "patience", "stop_rule",
              "train_rmse_rows", "initial_accumulator", "eval_batch_size", "device", "bf16",
              "bf16_products", "gpus", "workers", "backend"),
}  # fmt: skip


# The hyper-parameters a Figure 3 sweep can vary (each has its sweeps.<param> section).
SWEEP_PARAMS = ("embedding_size", "dropout", "lambda")
# The models the planted-redundancy experiment trains: FM and FFM (its pre-training and
# baselines) and the attention family.
REDUNDANCY_MODELS = ("fm", "afm", "aoafm", "ffm", "affm", "aoaffm")
# The planted-redundancy experiment's section (aoaffm.experiments._redundancy_plan).
REDUNDANCY_KEYS = ("datasets", "fields", "kinds", "r", "epsilon", "coarse_values", "seeds",
                   "models", "embedding_size", "attention_size", "epochs")  # fmt: skip


def params_schema() -> dict:
    """Every key params.yaml may hold, by section (None: a value, not a section).

    Any other key (a typo such as ``dropuot``) would be ignored without a word (DVC's ``-S``
    checks only the keys it is given), so :func:`check_keys` refuses it. What each setting
    does to a run's identity is decided in ``aoaffm.experiments.SETTING_DECISIONS`` (a test
    keeps the two in step).
    """
    from aoaffm.models import MODEL_NAMES

    data = {**_keys("mirror", "negatives_per_positive", "split"),
            **{d: _keys("source") for d in DATASETS}}  # fmt: skip
    profile = {
        "data": data,
        "model": {**_keys("embedding_size", "attention_size", "batch_norm", "pretrained_baselines"),
                  "hidden_sizes": _keys("wide_deep", "deepcross")},
        "train": _keys("epochs", "min_epochs", "patience", "stop_rule", "train_rmse_rows",
                       "initial_accumulator", "eval_batch_size", "device", "bf16",
                       "bf16_products", "gpus", "workers", "backend"),
        "datasets": {d: _keys(*HPARAM_KEYS, "eval_batch_size") for d in DATASETS},
        "tuned": {d: {m: _keys(*HPARAM_KEYS) for m in MODEL_NAMES} for d in DATASETS},
        "lr_search": _keys("enabled", "grid"),
        "table2": _keys("datasets", "models", "seeds"),
        "table3": _keys("datasets", "models"),
        "table4": _keys("datasets", "models"),
        "random_start": _keys("datasets", "models"),
        "sweeps": {"datasets": None, **{p: _keys("models", "values") for p in SWEEP_PARAMS}},
        "redundancy": {**_keys(*REDUNDANCY_KEYS), "fields": _keys(*DATASETS)},
    }  # fmt: skip
    return {
        **_keys("profile", "seed"),
        **{name: _keys(*keys) for name, keys in OVERRIDE_KEYS.items()},
        "data": data,
        **{name: profile for name in PROFILES},
    }


def check_keys(params: dict, source: str = "params.yaml", text: str | None = None) -> None:
    """Refuse a key :func:`params_schema` does not know (naming its line, given ``text``)."""
    _check_section(params, params_schema(), (), source, text)


def _check_section(node: Any, schema: dict, path: tuple, source: str, text: str | None) -> None:
    dotted = ".".join(map(str, path))
    if node is None:
        return
    if not isinstance(node, dict):
        raise ConfigError(
            f"{_where(source, text, path)}: {dotted} = {node!r}; expected a section with the "
            f"keys {list(schema)}"
        )
    for key, value in node.items():
        inner = (*path, key)
        if key not in schema:
            raise ConfigError(
                f"{_where(source, text, inner)}: unknown key {'.'.join(map(str, inner))!r}; "
                f"expected one of {list(schema)} (a misspelt key would be ignored)"
            )
        if isinstance(schema[key], dict):
            _check_section(value, schema[key], inner, source, text)


def _where(source: str, text: str | None, path: tuple) -> str:
    """``source, line N`` for the key at ``path`` in the YAML ``text``; ``source`` alone if
    the text is not given (a dict from code) or the key is not found."""
    node, line = yaml.compose(text) if text else None, None
    for key in path:
        if not isinstance(node, yaml.MappingNode):
            return source
        match = next((kv for kv in node.value if kv[0].value == str(key)), None)
        if match is None:
            return source
        line, node = match[0].start_mark.line + 1, match[1]
    return f"{source}, line {line}" if line else source


# --------------------------------------------------------------------------- validation


def _check(ok: bool, source: str, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{source}: {key} = {value!r}; expected {expected}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_hparams(hp: dict, source: str, where: str) -> None:
    """Range checks shared by every place a model setting can come from, by the rules of
    their owners: the model's (``aoaffm.models.registry``) and the trainer's
    (``aoaffm.train.config``); ``lambda`` is λ1 or λ2 (``lambda_attention``'s rule)."""
    from aoaffm.models.registry import HPARAM_RULES
    from aoaffm.train.config import RULES

    rules = {
        **{key: HPARAM_RULES[key] for key in ("dropout", "embedding_size", "attention_size")},
        **{key: RULES[key] for key in ("learning_rate", "batch_size", "epochs")},
        "lambda": RULES["lambda_attention"],
    }
    for key, value in hp.items():
        if key in rules and value is not None:
            ok, expected = rules[key]
            _check(ok(value), source, f"{where}.{key}", value, expected)


def check_train_settings(train: dict, source: str, where: str) -> None:
    """The ``train`` keys that are TrainConfig settings, by TrainConfig's own rules."""
    from aoaffm.train.config import RULES, setting_problem

    for key, value in train.items():
        if key in RULES:
            expected = setting_problem(key, value)
            _check(expected is None, source, f"{where}.{key}", value, expected)


BACKENDS = ("local", "ray")  # where a group's runs execute (aoaffm.parallel)


def _check_run_placement(train: dict, source: str) -> None:
    """``train.workers`` and ``train.backend``, and how they combine with ``train.gpus``."""
    workers, backend = train["workers"], train["backend"]
    _check(
        workers == "auto" or (type(workers) is int and workers >= 1),
        source,
        "train.workers",
        workers,
        "auto or an integer >= 1",
    )
    _check(backend in BACKENDS, source, "train.backend", backend, f"one of {list(BACKENDS)}")
    if train["gpus"] > 1 and (workers not in ("auto", 1) or backend != "local"):
        raise ConfigError(
            f"{source}: train.gpus = {train['gpus']} trains each run on {train['gpus']} "
            f"processes (DDP), one run at a time; set train.workers: auto and train.backend: "
            f"local, or train.gpus: 1 to train several runs at once"
        )


def validate(cfg: dict, source: str = "params.yaml") -> None:
    from aoaffm.models import MODEL_NAMES

    seed = cfg["seed"]
    _check(
        isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**32,
        source,
        "seed",
        seed,
        "an integer in [0, 2**32 - 1] (numpy and torch take no negative seed)",
    )
    for name in ("model", "train"):
        check_hparams(cfg["overrides"][name], source, name)
    check_hparams(cfg.get("model", {}), source, f"{cfg['profile']}.model")
    train = cfg["train"]
    check_hparams(train, source, "train")
    check_train_settings(train, source, "train")
    _check(
        isinstance(train["gpus"], int) and train["gpus"] >= 1,
        source,
        "train.gpus",
        train["gpus"],
        "an integer >= 1",
    )
    _check_run_placement(train, source)
    split = cfg["data"].get("split")
    _check(
        isinstance(split, list)
        and len(split) == 3
        and all(_is_number(s) and s > 0 for s in split)
        and abs(sum(split) - 1) < 1e-9,
        source,
        "data.split",
        split,
        "three positive fractions summing to 1",
    )
    for dataset, settings in cfg.get("datasets", {}).items():
        _check(dataset in DATASETS, source, "datasets", dataset, f"one of {list(DATASETS)}")
        check_hparams(settings, source, f"datasets.{dataset}")
    for dataset, models in cfg.get("tuned", {}).items():
        _check(dataset in DATASETS, source, "tuned", dataset, f"one of {list(DATASETS)}")
        for model, hp in models.items():
            _check(
                model in MODEL_NAMES,
                source,
                f"tuned.{dataset}",
                model,
                f"one of {list(MODEL_NAMES)}",
            )
            check_hparams(hp, source, f"tuned.{dataset}.{model}")
    for group in ("table2", "table3", "table4", "random_start"):
        for model in cfg.get(group, {}).get("models", []):
            _check(
                model in MODEL_NAMES,
                source,
                f"{group}.models",
                model,
                f"one of {list(MODEL_NAMES)}",
            )
        for dataset in cfg.get(group, {}).get("datasets", []):
            _check(
                dataset in DATASETS,
                source,
                f"{group}.datasets",
                dataset,
                f"one of {list(DATASETS)}",
            )
    from aoaffm.models import BASELINES_PRETRAINED_FROM

    for model in cfg.get("random_start", {}).get("models", []):
        _check(
            model in BASELINES_PRETRAINED_FROM,
            source,
            "random_start.models",
            model,
            f"a baseline that model.pretrained_baselines starts from FM: "
            f"{list(BASELINES_PRETRAINED_FROM)}",
        )
    switch = cfg.get("model", {}).get("pretrained_baselines")
    _check(
        switch is None or isinstance(switch, bool),
        source,
        "model.pretrained_baselines",
        switch,
        "true or false",
    )
    for model, sizes in cfg.get("model", {}).get("hidden_sizes", {}).items():
        _check(
            model in ("wide_deep", "deepcross"),
            source,
            "model.hidden_sizes",
            model,
            "wide_deep or deepcross",
        )
        _check(
            isinstance(sizes, list) and sizes and all(isinstance(h, int) and h >= 1 for h in sizes),
            source,
            f"model.hidden_sizes.{model}",
            sizes,
            "a list of integers >= 1",
        )
    search = cfg.get("lr_search") or {}
    _check(
        isinstance(search.get("enabled", False), bool),
        source,
        "lr_search.enabled",
        search.get("enabled"),
        "true or false",
    )
    grid = search.get("grid", [])
    _check(
        isinstance(grid, list)
        and all(_is_number(lr) and lr > 0 for lr in grid)
        and (grid or not search.get("enabled")),
        source,
        "lr_search.grid",
        grid,
        "a non-empty list of learning rates > 0",
    )
    validate_redundancy(cfg.get("redundancy") or {}, source)
    seeds = cfg.get("table2", {}).get("seeds", 1)
    _check(isinstance(seeds, int) and seeds >= 1, source, "table2.seeds", seeds, "an integer >= 1")
    for param in ("embedding_size", "dropout", "lambda"):
        sweep = cfg.get("sweeps", {}).get(param, {})
        for model in sweep.get("models", []):
            _check(
                model in MODEL_NAMES,
                source,
                f"sweeps.{param}.models",
                model,
                f"one of {list(MODEL_NAMES)}",
            )
        for value in sweep.get("values", []):
            check_hparams({param: value}, source, f"sweeps.{param}.values")


def validate_redundancy(red: dict, source: str = "params.yaml") -> None:
    """The planted-redundancy section: what to plant, on which data, for which models."""
    from aoaffm.data.redundancy import KINDS

    def names(key: str, allowed, required: bool) -> None:
        value = red.get(key, [])
        _check(
            isinstance(value, list)
            and all(v in allowed for v in value)
            and (value or not required),
            source,
            f"redundancy.{key}",
            value,
            f"a {'non-empty ' if required else ''}list of {list(allowed)}",
        )

    names("datasets", DATASETS, False)
    if not red.get("datasets"):
        return
    for dataset in red["datasets"]:
        fields = (red.get("fields") or {}).get(dataset)
        _check(
            isinstance(fields, list) and fields and all(isinstance(f, str) and f for f in fields),
            source,
            f"redundancy.fields.{dataset}",
            fields,
            "a non-empty list of the dataset's field names to plant copies of (e.g. [item])",
        )
    names("kinds", KINDS, True)
    names("models", REDUNDANCY_MODELS, True)
    r = red.get("r")
    _check(
        isinstance(r, list)
        and r
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in r),
        source,
        "redundancy.r",
        r,
        "a non-empty list of integers >= 0 (planted fields per variant; 0: the data as built)",
    )
    seeds = red.get("seeds")
    _check(isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1, source,
           "redundancy.seeds", seeds, "an integer >= 1")  # fmt: skip
    if "noisy" in red["kinds"]:
        eps = red.get("epsilon")
        _check(_is_number(eps) and 0 <= eps <= 1, source, "redundancy.epsilon", eps,
               "a number in [0, 1] (the noisy copy's replacement rate)")  # fmt: skip
    if "coarse" in red["kinds"]:
        values = red.get("coarse_values")
        _check(isinstance(values, int) and not isinstance(values, bool) and values >= 1, source,
               "redundancy.coarse_values", values, "an integer >= 1 (the coarsening's classes)")  # fmt: skip
    check_hparams(
        {k: red.get(k) for k in ("embedding_size", "attention_size", "epochs")},
        source,
        "redundancy",
    )
