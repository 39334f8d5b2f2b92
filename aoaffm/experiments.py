"""The experiment plan: which training runs each table and figure needs, and their settings.

A run's settings are resolved in one order everywhere: the profile's model/train values, the
dataset's defaults, the model's tuned values (Table 2 settings), the user's overrides, and
finally the swept parameter of a Figure 3 sweep. Runs are identified by their settings, so a
run that two sweeps share is trained once, and changing a setting gives a new run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from aoaffm.config import SWEEP_PARAMS
from aoaffm.errors import ConfigError, MissingInput
from aoaffm.labels import PM1, label_scale
from aoaffm.models import ATTENTION_MODELS, BASELINES_PRETRAINED_FROM, PRETRAINED_FROM


def pretrained_from(cfg: dict, model: str) -> str | None:
    """The pre-trained model whose embeddings start a run of ``model`` (None: random)."""
    if model in PRETRAINED_FROM:
        return PRETRAINED_FROM[model]
    if cfg["model"].get("pretrained_baselines"):
        return BASELINES_PRETRAINED_FROM.get(model)
    return None


GROUPS = (
    "pretrain",
    "tune",
    "table2",
    "table3",
    "table4",
    "sweeps",
    "random_start",
    "redundancy_pretrain",
    "redundancy",
)
# The groups the search tunes. random_start: Table 3's pre-trained baselines trained again
# from a random start, with everything else the same, to show what the paper's pre-trained
# start does (planned only while model.pretrained_baselines is on).
TRAINED_GROUPS = ("table2", "table3", "table4", "sweeps", "random_start")
# The planted-redundancy experiment (the paper's mechanism on controlled data, DESIGN §8): its
# own pre-training and runs on variants of a dataset, read from params' `redundancy:` only.
REDUNDANCY_GROUPS = ("redundancy_pretrain", "redundancy")


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one training run's result."""

    group: str
    dataset: str
    model: str
    seed: int
    embedding_size: int
    attention_size: int
    dropout: float
    lambda_: float
    learning_rate: float
    batch_size: int
    batch_norm: bool
    epochs: int
    min_epochs: int
    patience: int
    initial_accumulator: float
    stop_rule: str = "rises"
    train_rmse_rows: int | None = None  # Figure 4's training RMSE on a sample (None: all rows)
    eval_batch_size: int = 8192
    # The processed data: (variant, negatives per positive, split fractions, sampling seed).
    # Its content digest is checked where the run trains (aoaffm.train.loop.run_facts).
    data: tuple = ()
    # Its (negative, positive) labels, which RMSE clips to: ±1, or 0/1 for Criteo.
    labels: tuple = PM1
    # How the run executes: each changes the numbers (rounding, dropout masks, batch shards).
    device: str = "cpu"  # the device type (cpu | cuda); which GPU of a kind does not matter
    bf16: bool = False
    bf16_products: bool = False  # the CPU backend's dense products in bf16
    world_size: int = 1  # processes of one DDP run (train.gpus)
    hidden_sizes: tuple | None = None  # Wide&Deep's MLP / DeepCross's residual units
    pretrained: str | None = None  # run id of the pretrain run this one starts from
    # Planted redundancy: the added fields, ((kind, source field, epsilon or values), ...);
    # their noise is drawn with the data's sampling seed (in data). Empty: the data as built.
    planted: tuple = ()
    # Figure 3 memberships: ((param, value), ...); not part of the run's identity.
    sweeps: tuple = dataclasses.field(default=(), compare=False)
    # Where things are, not what they are: a planted variant's folder name (its content is
    # `planted`) and the group holding the pretrained run.
    variant: str = dataclasses.field(default="", compare=False)
    pretrain_group: str = dataclasses.field(default="pretrain", compare=False)

    def settings(self) -> dict:
        """The settings that define the result (the identity of the run)."""
        d = dataclasses.asdict(self)
        for key in ("group", "sweeps", "variant", "pretrain_group"):
            d.pop(key)
        d["lambda"] = d.pop("lambda_")
        if d["labels"] == PM1:  # every run had ±1 labels before they entered the identity:
            d.pop("labels")  # those runs keep their ids
        if not d["planted"]:  # likewise for runs on the data as built
            d.pop("planted")
        if not d["bf16_products"]:  # and for float32 products, the default
            d.pop("bf16_products")
        return d

    @property
    def run_id(self) -> str:
        digest = hashlib.sha1(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()
        return (
            f"{self.model}-k{self.embedding_size}-d{self.dropout:g}-l{self.lambda_:g}"
            f"-s{self.seed}-{digest[:8]}"
        )

    def run_dir(self, runs_root: str | Path = "runs") -> Path:
        return Path(runs_root) / self.group / self.dataset / self.run_id

    def pretrained_dir(self, runs_root: str | Path = "runs") -> Path | None:
        if self.pretrained is None:
            return None
        return Path(runs_root) / self.pretrain_group / self.dataset / self.pretrained

    def data_dir(self, data_root: str | Path = "data/processed") -> Path:
        """The processed folder the run trains on: a planted variant's lies in
        ``planted/<dataset>/<variant>`` beside ``data_root`` (data/planted/...)."""
        if self.planted:
            return planted_root(data_root) / self.dataset / self.variant
        return Path(data_root) / self.dataset


def planted_root(data_root: str | Path = "data/processed") -> Path:
    """Where the planted variants of the datasets under ``data_root`` live."""
    return Path(data_root).parent / "planted"


# Every setting that reaches the data, a model or the trainer (params.yaml's model / train /
# data / datasets / tuned keys and TrainConfig's fields), and what a run's identity does with
# it. tests/test_identity.py fails when a setting appears without an entry here.
IDENTITY = "in the identity: another value is another run"
SETTING_DECISIONS = {
    # the model
    "embedding_size": IDENTITY,
    "attention_size": IDENTITY,
    "dropout": IDENTITY,
    "lambda": IDENTITY,
    "lambda_attention": IDENTITY + " (as lambda, for the attention models)",
    "lambda_interaction": IDENTITY + " (as lambda, for the attention models)",
    "batch_norm": IDENTITY,
    "hidden_sizes": IDENTITY,
    "pretrained_baselines": IDENTITY + " (as the pretrained run's id)",
    # the optimisation
    "seed": IDENTITY + " (the run's seed; the data's sampling seed is part of data)",
    "learning_rate": IDENTITY + " (a tune run's candidate, or the search's winner)",
    "batch_size": IDENTITY,
    "epochs": IDENTITY,
    "min_epochs": IDENTITY,
    "patience": IDENTITY,
    "stop_rule": IDENTITY,
    "initial_accumulator": IDENTITY,
    "train_rmse_rows": IDENTITY + " (it changes the recorded training RMSE)",
    "eval_batch_size": IDENTITY + " (batched products may round differently)",
    "clip": "fixed: train_config always clips to the label range, as the AFM code",
    # how it executes
    "device": IDENTITY + " (its type: CPU and CUDA round differently and draw other "
    "dropout masks; which GPU of one machine does not matter)",
    "bf16": IDENTITY,
    "bf16_products": IDENTITY + " (only when on: float32 runs keep their ids)",
    "gpus": IDENTITY + " (as world_size: DDP shards every batch across processes)",
    # the data
    "frappe": IDENTITY + " (the variant, in data)",
    "movielens": IDENTITY + " (the variant, in data)",
    "criteo": IDENTITY + " (the variant, in data)",
    "negatives_per_positive": IDENTITY + " (in data)",
    "split": IDENTITY + " (in data)",
    "mirror": "no effect: where the files come from; their checksums are verified, and the "
    "processed arrays' digest is checked by the trainer (run_facts)",
    # where the runs execute
    "workers": "no effect: how many runs train at once; a run on a worker of T threads gives "
    "the bits of one trained alone on T (tests/test_parallel.py; the thread count: below)",
    "backend": "no effect: local worker processes or Ray tasks (one thread each) run the same "
    "code (tests/test_parallel.py: Ray gives the bits of one run after another on 1 thread)",
    # the planted-redundancy experiment (params' `redundancy:`; embedding_size, attention_size
    # and epochs there take the profile's place for its runs, as above)
    "fields": IDENTITY + " (the planted fields' source, in planted)",
    "kinds": IDENTITY + " (each planted field's kind, in planted)",
    "r": IDENTITY + " (the number of planted fields, in planted)",
    "epsilon": IDENTITY + " (a noisy copy's replacement rate, in planted)",
    "coarse_values": IDENTITY + " (a coarsening's classes, in planted)",
    "datasets": "selects runs: which datasets the experiment plants on",
    "models": "selects runs: which models train on each variant",
    "seeds": "selects runs: how many seeds; each run's own seed is in its identity",
}
# Not settings but facts of the machine, checked where a run trains (aoaffm.train.loop.
# run_facts): the processed data's content digest, and whether the C++ CPU kernels or torch
# compute the steps (AOAFFM_NATIVE, a compiler). The thread count is in neither, and that is
# a known gap: the C++ kernels (FM, FFM) give the same bits on 1 and 2 threads
# (tests/test_fast_native.py), but MKL's products (the attention models, Wide&Deep,
# DeepCross) round differently with it and the runs drift apart (Wide&Deep 2e-4, DeepCross
# 8e-4 in RMSE after 2 quick-profile epochs on Frappe, benchmarks/RESULTS.md "Run-level
# parallelism"), so a finished run is reused whatever the threads it trained on. Checking it
# needs the thread share a run would get on a worker (train.workers), not the stage's count.
# A run on T threads gives the same bits wherever it runs (tests/test_parallel.py).


def _settings(
    cfg: dict,
    dataset: str,
    model: str,
    *,
    seed: int,
    sweep: tuple | None = None,
    pretraining: bool = False,
    learning_rate: float | None = None,
) -> dict:
    """Resolve one model's settings on one dataset (see the module docstring for the order);
    ``learning_rate``: the search's value (a candidate, or the winner), between the model's
    tuned values and the user's overrides."""
    s = {"dropout": 0.0, "lambda": 0.0, "learning_rate": 0.05, "batch_size": 128}
    s.update({k: cfg["model"][k] for k in ("embedding_size", "attention_size")})
    s["batch_norm"] = bool(cfg["model"].get("batch_norm", True))
    s.update(cfg.get("datasets", {}).get(dataset, {}))
    s.update(cfg.get("tuned", {}).get(dataset, {}).get(model, {}))
    if learning_rate is not None:
        s["learning_rate"] = learning_rate
    overrides = {**cfg["overrides"]["model"], **cfg["overrides"]["train"]}
    s.update({k: v for k, v in overrides.items() if k in s})
    if sweep is not None:
        s[sweep[0]] = sweep[1]
    if pretraining:  # the paper pre-trains FM and FFM without dropout
        s["dropout"] = 0.0
    train = cfg["train"]
    hidden = cfg["model"].get("hidden_sizes", {}).get(model)
    data = cfg["data"]
    eval_batch_size = cfg.get("datasets", {}).get(dataset, {}).get("eval_batch_size")
    return {
        "stop_rule": str(train.get("stop_rule", "rises")),
        "train_rmse_rows": train.get("train_rmse_rows"),
        "eval_batch_size": int(eval_batch_size or train["eval_batch_size"]),
        "data": (
            str(data[dataset]["source"]),
            int(data["negatives_per_positive"]),
            tuple(float(f) for f in data["split"]),
            int(cfg["seed"]),
        ),
        "labels": label_scale(dataset),
        "device": device_type(train["device"]),
        "bf16": bool(train["bf16"]),
        "bf16_products": bool(train["bf16_products"]),
        "world_size": int(train["gpus"]),
        "hidden_sizes": tuple(hidden) if hidden else None,
        "seed": seed,
        "embedding_size": int(s["embedding_size"]),
        "attention_size": int(s["attention_size"]),
        "dropout": float(s["dropout"]),
        "lambda_": float(s["lambda"]),
        "learning_rate": float(s["learning_rate"]),
        "batch_size": int(s["batch_size"]),
        "batch_norm": s["batch_norm"],
        "epochs": int(train["epochs"]),
        "min_epochs": int(train["min_epochs"]),
        "patience": int(train["patience"]),
        "initial_accumulator": float(train["initial_accumulator"]),
    }


def device_type(device: str) -> str:
    """The type of device a run trains on: ``auto`` resolves as the trainer resolves it."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device).partition(":")[0]


def _run(
    cfg, group, dataset, model, *, seed, sweep=None, learning_rate=None, random_start=False
) -> RunSpec:
    settings = _settings(cfg, dataset, model, seed=seed, sweep=sweep, learning_rate=learning_rate)
    pretrained = None
    if pretrained_from(cfg, model) is not None and not random_start:
        pretrained = pretrain_spec(
            cfg, dataset, pretrained_from(cfg, model), settings["embedding_size"]
        ).run_id
    return RunSpec(
        group=group,
        dataset=dataset,
        model=model,
        pretrained=pretrained,
        sweeps=(sweep,) if sweep else (),
        **settings,
    )


def pretrain_spec(cfg: dict, dataset: str, model: str, embedding_size: int) -> RunSpec:
    """The FM or FFM run whose embeddings initialise the attention models at this K."""
    settings = _settings(cfg, dataset, model, seed=cfg["seed"], pretraining=True)
    settings["embedding_size"] = embedding_size
    return RunSpec(group="pretrain", dataset=dataset, model=model, **settings)


def _dedupe(runs: list[RunSpec]) -> list[RunSpec]:
    """One run per identity; a run that several sweeps share keeps all memberships."""
    by_id: dict[str, RunSpec] = {}
    for run in runs:
        if run.run_id in by_id:
            first = by_id[run.run_id]
            by_id[run.run_id] = dataclasses.replace(first, sweeps=first.sweeps + run.sweeps)
        else:
            by_id[run.run_id] = run
    return list(by_id.values())


def datasets_of(cfg: dict, group: str) -> list[str]:
    """The datasets a group runs on (pretrain: every dataset some attention run needs)."""
    if group in REDUNDANCY_GROUPS:
        return list((cfg.get("redundancy") or {}).get("datasets", []))
    if group in ("pretrain", "tune"):
        names = []
        for g in TRAINED_GROUPS:
            names += [d for d in datasets_of(cfg, g) if d not in names]
        return names
    return list(cfg.get(group, {}).get("datasets", []))


def datasets_used(cfg: dict) -> list[str]:
    """Every dataset some group of the profile trains on (the others need no data)."""
    names = datasets_of(cfg, "pretrain")
    return names + [d for d in datasets_of(cfg, "redundancy") if d not in names]


def redundancy_config(cfg: dict) -> dict:
    """``cfg`` with the experiment's K, t and epochs in the profile's place (null: the
    profile's); the user's top-level overrides still win, as for every run."""
    red = cfg["redundancy"]
    merged = {**cfg, "model": dict(cfg["model"]), "train": dict(cfg["train"])}
    for section, key in (
        ("model", "embedding_size"),
        ("model", "attention_size"),
        ("train", "epochs"),
    ):
        if red.get(key) is not None:
            merged[section][key] = red[key]
    return merged


def redundancy_variants(cfg: dict, dataset: str) -> dict[str, tuple]:
    """The planted variants of ``dataset`` by folder name: r = 0 ("r0", the data as built)
    and, per kind and r > 0, r fields ((kind, source field, option), ...) cycling over the
    dataset's source fields."""
    red = cfg.get("redundancy") or {}
    fields = redundancy_sources(cfg, dataset)
    options = {"exact": None, "noisy": red.get("epsilon"), "coarse": red.get("coarse_values")}
    variants: dict[str, tuple] = {}
    for r in sorted(set(red.get("r", []))):
        for kind in red.get("kinds", []):
            name = f"{kind}-r{r}" if r else "r0"
            variants[name] = tuple((kind, fields[i % len(fields)], options[kind]) for i in range(r))
    return variants


def redundancy_sources(cfg: dict, dataset: str) -> list[str]:
    """The fields the experiment plants copies of in ``dataset``."""
    return list(((cfg.get("redundancy") or {}).get("fields") or {}).get(dataset) or [])


def plants(planted: tuple) -> list[dict]:
    """A variant's planted fields as ``aoaffm.data.redundancy.plant_redundancy`` takes them."""
    names = {"noisy": "epsilon", "coarse": "values"}
    return [
        {"kind": kind, "field": field, **({names[kind]: option} if kind in names else {})}
        for kind, field, option in planted
    ]


def lr_search_grid(cfg: dict) -> list[float]:
    """The learning rates the search tries per model; empty when the search is off or the
    user fixed one rate for every model (``train.learning_rate``)."""
    search = cfg.get("lr_search") or {}
    if not search.get("enabled") or cfg["overrides"]["train"].get("learning_rate") is not None:
        return []
    return [float(lr) for lr in search["grid"]]


def searched_models(cfg: dict, dataset: str) -> list[str]:
    """The models the search tunes on ``dataset``: every model a later group trains there
    (random_start's runs take their Table 3 twin's rate: only the start differs)."""
    models: list[str] = []
    for group in TRAINED_GROUPS:
        if group == "random_start" or dataset not in datasets_of(cfg, group):
            continue
        if group == "sweeps":
            names = [m for p in SWEEP_PARAMS for m in cfg["sweeps"].get(p, {}).get("models", [])]
        else:
            names = list(cfg[group]["models"])
        models += [m for m in names if m not in models]
    return models


def searched_learning_rate(
    cfg: dict, dataset: str, model: str, runs_root: str | Path = "runs"
) -> float | None:
    """The search's winner for ``model`` on ``dataset``: the grid's rate with the lowest
    validation RMSE (the first one on ties); None when the search does not tune it."""
    from aoaffm.io import read_json

    candidates = [r for r in _plan(cfg, "tune", dataset) if r.model == model]
    if not candidates:
        return None
    results = []
    for spec in candidates:
        path = spec.run_dir(runs_root) / "metrics.json"
        if not path.is_file():
            raise MissingInput(
                f"{path}: the learning-rate search of {model} on {dataset} has not finished; "
                f"run the tune stage first (`dvc repro tune@{dataset}`)"
            )
        results.append((read_json(path)["validation_rmse"], spec.learning_rate))
    return min(results, key=lambda r: r[0])[1]


def plan(
    cfg: dict, group: str, dataset: str, runs_root: str | Path = "runs", *, searched: bool = True
) -> list[RunSpec]:
    """The runs of one group on one dataset, in a stable order.

    With the learning-rate search on, a trained group's runs take each model's winning rate
    from the finished tune runs under ``runs_root``; ``searched=False`` plans them at the
    default rates instead (for counting runs before the search has run).
    """
    searched_rate = None
    if searched and group in TRAINED_GROUPS and lr_search_grid(cfg):
        winners = {
            m: searched_learning_rate(cfg, dataset, m, runs_root)
            for m in searched_models(cfg, dataset)
        }
        searched_rate = winners.get
    return _plan(cfg, group, dataset, searched_rate)


def _plan(cfg: dict, group: str, dataset: str, searched_rate=None) -> list[RunSpec]:
    """``plan`` with ``searched_rate(model)`` giving the searched rates (None: defaults)."""
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}; expected one of {list(GROUPS)}")
    if dataset not in datasets_of(cfg, group):
        return []
    seed = cfg["seed"]

    def run(group, model, **kw):
        rate = searched_rate(model) if searched_rate is not None else None
        return _run(cfg, group, dataset, model, learning_rate=rate, **kw)

    if group in REDUNDANCY_GROUPS:
        return _redundancy_plan(cfg, group, dataset)
    if group == "pretrain":  # the pre-trained K of every later run (rates do not matter)
        needed = [
            r for g in ("tune", *TRAINED_GROUPS) for r in _plan(cfg, g, dataset) if r.pretrained
        ]
        specs = {}
        for r in needed:
            spec = pretrain_spec(cfg, dataset, pretrained_from(cfg, r.model), r.embedding_size)
            specs[spec.run_id] = spec
        return list(specs.values())
    if group == "tune":  # each model at each rate of the grid, first seed
        return [
            _run(cfg, group, dataset, m, seed=seed, learning_rate=lr)
            for m in searched_models(cfg, dataset)
            for lr in lr_search_grid(cfg)
        ]
    if group == "table2":
        seeds = range(seed, seed + int(cfg["table2"]["seeds"]))
        return [run(group, m, seed=s) for m in cfg["table2"]["models"] for s in seeds]
    if group in ("table3", "table4"):
        return [run(group, m, seed=seed) for m in cfg[group]["models"]]
    if group == "random_start":
        if not cfg["model"].get("pretrained_baselines"):
            return []  # the baselines already start at random: Table 3 is the comparison
        return [run(group, m, seed=seed, random_start=True) for m in cfg[group]["models"]]
    runs = []
    for param in SWEEP_PARAMS:
        sweep = cfg["sweeps"].get(param, {})
        for model in sweep.get("models", []):
            for value in sweep.get("values", []):
                runs.append(run(group, model, seed=seed, sweep=(param, value)))
    return _dedupe(runs)


def _redundancy_plan(cfg: dict, group: str, dataset: str) -> list[RunSpec]:
    """Every model of ``redundancy.models`` per variant and seed, the attention models from
    their variant's pre-trained FM / FFM (the protocol's start), at the models' tuned
    dropout and λ and their datasets' learning rates (no search: the variants are controlled
    copies of one dataset, the rate is held fixed across r)."""
    rcfg = redundancy_config(cfg)
    red, runs, pretrains = rcfg["redundancy"], [], {}
    seeds = range(cfg["seed"], cfg["seed"] + int(red["seeds"]))
    for variant, planted in redundancy_variants(cfg, dataset).items():
        where = {"planted": planted, "variant": variant}
        for model in red["models"]:
            source = PRETRAINED_FROM.get(model)
            pretrained = None
            if source is not None:
                spec = pretrain_spec(
                    rcfg, dataset, source, _settings(rcfg, dataset, model, seed=0)["embedding_size"]
                )
                spec = dataclasses.replace(spec, group="redundancy_pretrain", **where)
                pretrains[spec.run_id], pretrained = spec, spec.run_id
            for seed in seeds:
                spec = _run(rcfg, "redundancy", dataset, model, seed=seed, random_start=True)
                runs.append(
                    dataclasses.replace(
                        spec, pretrained=pretrained, pretrain_group="redundancy_pretrain", **where
                    )
                )
    return list(pretrains.values()) if group == "redundancy_pretrain" else runs


ATTENTION_FILE = "attention.json"  # a redundancy run's α and q per field pair


def record(
    spec: RunSpec, metrics: dict, runs_root: str | Path = "runs", sources: tuple = ()
) -> list[dict]:
    """The report's run records for one finished run (one per sweep membership);
    ``sources``: the fields a redundancy run's variant planted copies of."""
    run_dir = spec.run_dir(runs_root)
    base = {
        "group": spec.group,
        "dataset": spec.dataset,
        "model": spec.model,
        "seed": spec.seed,
        "embedding_size": spec.embedding_size,
        "attention_size": spec.attention_size,
        "dropout": spec.dropout,
        "lambda": spec.lambda_,
        "learning_rate": spec.learning_rate,
        "batch_size": spec.batch_size,
        "pretrained_from": spec.pretrained.split("-", 1)[0] if spec.pretrained else None,
        "sweep_param": None,
        "sweep_value": None,
        **{
            k: metrics.get(k)
            for k in (
                "validation_rmse",
                "test_rmse",
                "train_rmse",
                "best_epoch",
                "epochs",
                "params",
                "wall_time_s",
                "device",
            )
        },
        "run_dir": str(run_dir),
        "history": str(run_dir / "history.json"),
        **redundancy_fields(spec, runs_root, sources),
    }
    if spec.group != "sweeps":
        return [base]
    return [
        {**base, "group": f"sweep_{p}", "sweep_param": p, "sweep_value": v} for p, v in spec.sweeps
    ]


def redundancy_fields(spec: RunSpec, runs_root: str | Path = "runs", sources=()) -> dict:
    """A record's planted-redundancy fields: the variant's kind and r, and for an attention
    model the mean P·α and q per pair class (``aoaffm.mechanism``); None elsewhere."""
    from aoaffm.io import read_json
    from aoaffm.mechanism import PAIR_CLASSES, summarize

    fields = {"redundancy_kind": None, "redundancy_r": None}
    fields.update({f"{w}_{c}": None for w in ("alpha", "q") for c in PAIR_CLASSES})
    if spec.group not in REDUNDANCY_GROUPS:
        return fields
    fields["redundancy_kind"] = spec.planted[0][0] if spec.planted else None
    fields["redundancy_r"] = len(spec.planted)
    path = spec.run_dir(runs_root) / ATTENTION_FILE
    if path.is_file():
        w = read_json(path, "a run's attention weights")
        fields.update(summarize(w["fields"], w["left"], w["right"], w["alpha"], w["q"], sources))
    return fields


def write_attention(
    cfg: dict,
    dataset: str,
    *,
    data_root: str | Path = "data/processed",
    runs_root: str | Path = "runs",
    split: str = "validation",
) -> list[Path]:
    """Write each finished redundancy attention run's α (mean over ``split``'s rows) and q
    per field pair to its run folder, once; returns the files written."""
    from aoaffm.data import load_processed
    from aoaffm.io import write_json
    from aoaffm.models import load_model
    from aoaffm.models.attention import attention_weights
    from aoaffm.train.loop import MODEL_FILE

    written = []
    for spec in plan(cfg, "redundancy", dataset, runs_root):
        run_dir = spec.run_dir(runs_root)
        if spec.model not in ATTENTION_MODELS or (run_dir / ATTENTION_FILE).is_file():
            continue
        data = load_processed(spec.data_dir(data_root))
        model = load_model(run_dir / MODEL_FILE)
        weights = attention_weights(model, data.split(split), spec.eval_batch_size)
        write_json(
            run_dir / ATTENTION_FILE, {"fields": data.field_names, "split": split, **weights}
        )
        written.append(run_dir / ATTENTION_FILE)
    return written


# --------------------------------------------------------------------------- execution


def train_config(spec: RunSpec, cfg: dict):
    """The trainer's configuration for one run."""
    from aoaffm.train import TrainConfig

    is_attention = spec.model in ATTENTION_MODELS
    return TrainConfig(
        learning_rate=spec.learning_rate,
        batch_size=spec.batch_size,
        epochs=spec.epochs,
        min_epochs=spec.min_epochs,
        patience=spec.patience,
        initial_accumulator=spec.initial_accumulator,
        lambda_attention=spec.lambda_ if is_attention else 0.0,
        lambda_interaction=spec.lambda_ if is_attention else 0.0,
        seed=spec.seed,
        # auto: the type the run was planned on (a Ray worker may sit on another kind of node)
        device=spec.device if cfg["train"]["device"] == "auto" else str(cfg["train"]["device"]),
        bf16=spec.bf16,
        bf16_products=spec.bf16_products,
        eval_batch_size=spec.eval_batch_size,
        stop_rule=spec.stop_rule,
        train_rmse_rows=spec.train_rmse_rows,
    )


def build_model(spec: RunSpec, data, runs_root: str | Path = "runs"):
    """A freshly initialised model for the run (seeded), loaded from its pretrained run."""
    from aoaffm.models import create, load_model
    from aoaffm.train import seed_everything

    hparams = {"dropout": spec.dropout, "batch_norm": spec.batch_norm}
    if spec.model in ATTENTION_MODELS:
        hparams["attention_size"] = spec.attention_size
    if spec.hidden_sizes is not None:
        hparams["hidden_sizes"] = list(spec.hidden_sizes)
    seed_everything(spec.seed)
    model = create(spec.model, data.n_features, data.n_fields, spec.embedding_size, **hparams)
    if spec.pretrained is not None:
        source = spec.pretrained_dir(runs_root) / "model.pt"
        if not source.is_file():
            raise MissingInput(
                f"{spec.run_id}: pretrained model {source} is missing; run the pretrain stage "
                f"for {spec.dataset} first"
            )
        model.load_pretrained(load_model(source))
    return model


def run_group(
    cfg: dict,
    group: str,
    dataset: str,
    *,
    data_root: str | Path = "data/processed",
    runs_root: str | Path = "runs",
    progress: bool = True,
    is_main: bool = True,
) -> list:
    """Train every run of a group that has no metrics yet; remove runs no longer planned.

    Runs are resumable (the trainer checkpoints each epoch), so an interrupted stage picks up
    where it stopped instead of starting over.
    """
    import os
    import shutil

    from tqdm import tqdm

    from aoaffm.data import DataError, load_processed

    runs = plan(cfg, group, dataset, runs_root)
    group_dir = Path(runs_root) / group / dataset
    if is_main and group_dir.is_dir():  # settings changed: drop runs of the old settings
        planned = {r.run_id for r in runs}
        for stale in group_dir.iterdir():
            if stale.is_dir() and stale.name not in planned:
                shutil.rmtree(stale)
    if not runs:  # the profile does not use this dataset in this group (its data may be absent)
        if is_main:
            group_dir.mkdir(parents=True, exist_ok=True)
        return []
    # The processed data (the redundancy groups: each variant's), opened once per folder.
    folders = {spec.run_id: spec.data_dir(data_root) for spec in runs}
    datas = {folder: load_processed(folder) for folder in dict.fromkeys(folders.values())}
    # Fail before any training on a missing pretrained model or a bad setting.
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg["train"]["backend"] == "ray":
        from aoaffm.parallel import check_ray

        check_ray()
    for spec in runs:
        data = datas[folders[spec.run_id]]
        if data.label_range != spec.labels:
            raise DataError(
                f"{data.path}: labels {list(data.label_range)}, but {spec.run_id} is planned on "
                f"{list(spec.labels)}; rebuild it: python stages/preprocess.py {dataset}"
            )
        if spec.world_size != world_size:
            raise ConfigError(
                f"{spec.run_id}: planned for {spec.world_size} process(es) (train.gpus) but "
                f"running in {world_size}; launch it through stages/train.py"
            )
        if (
            spec.pretrained is not None
            and not (spec.pretrained_dir(runs_root) / "model.pt").is_file()
        ):
            raise MissingInput(
                f"{spec.run_id}: pretrained model {spec.pretrained_dir(runs_root) / 'model.pt'} "
                f"is missing; run the pretrain stage for {dataset} first"
            )
        train_config(spec, cfg)
    data_of = {spec.run_id: datas[folders[spec.run_id]] for spec in runs}
    concurrent = world_size == 1 and _run_concurrently(cfg, runs, data_of, runs_root, progress)
    if concurrent:
        results = [(spec, concurrent[spec.run_id]) for spec in runs]
    else:
        results = []
        for spec in tqdm(runs, desc=f"{group}/{dataset}", unit="run", disable=not progress):
            if is_main:
                copy_finished_twin(spec, runs_root)
            data = data_of[spec.run_id]
            results.append((spec, train_run(cfg, spec, data, runs_root, progress=progress)))
    if is_main:
        group_dir.mkdir(parents=True, exist_ok=True)
    return results


def train_run(cfg: dict, spec: RunSpec, data, runs_root: str | Path = "runs", *, progress=False):
    """Train one run (or read a finished one back); ``data``: a ``ProcessedDataset`` or its
    folder (a worker process opens it itself)."""
    from aoaffm import parallel
    from aoaffm.data import load_processed
    from aoaffm.train import train_model

    if isinstance(data, str | Path):
        data = load_processed(data)
    model = build_model(spec, data, runs_root)
    config = train_config(spec, cfg)
    return train_model(
        model,
        data,
        config,
        spec.run_dir(runs_root),
        progress=progress,
        on_epoch_end=parallel.report_epoch,
    )


def _run_concurrently(cfg, runs, data_of, runs_root, progress) -> dict | None:
    """The metrics of every run by id, its unfinished runs trained by several local workers
    or on Ray; None where ``train.workers`` gives one worker or at most one run is left
    (the caller trains them in this process, on all its threads)."""
    import torch

    from aoaffm import parallel

    train = cfg["train"]
    gpus = parallel.visible_gpus(str(train["device"]))
    workers = parallel.worker_count(train, gpus)
    if train["backend"] == "local" and workers == 1:
        return None
    for spec in runs:
        copy_finished_twin(spec, runs_root)
    todo = [s for s in runs if not (s.run_dir(runs_root) / "metrics.json").is_file()]
    if not todo or (train["backend"] == "local" and len(todo) == 1):
        return None
    group, dataset = runs[0].group, runs[0].dataset
    tasks = [
        parallel.Task(
            f"{group}/{dataset} {spec.run_id}",
            train_run,
            (cfg, spec, str(data_of[spec.run_id].path), str(runs_root)),
            epochs=spec.epochs,
            gpu=spec.device == "cuda",
        )
        for spec in todo
    ]
    desc = f"{group}/{dataset}"
    if train["backend"] == "ray":
        done = parallel.run_on_ray(tasks, progress=progress, desc=desc)
    else:
        threads = torch.get_num_threads()
        slots = parallel.plan_slots(min(workers, len(todo)), threads, gpus)
        done = parallel.run_local(tasks, slots, progress=progress, desc=desc)
    trained = {task.label.rsplit(" ", 1)[-1]: done[task.label] for task in tasks}
    return {  # finished before: read back here (their facts checked, as one worker does)
        spec.run_id: trained.get(spec.run_id)
        or train_run(cfg, spec, data_of[spec.run_id], runs_root)
        for spec in runs
    }


def copy_finished_twin(spec: RunSpec, runs_root: str | Path = "runs") -> Path | None:
    """Give an unfinished run the result of a finished run of another group with the same
    identity (same settings, so the same numbers: a tune run at the winning rate is the
    first seed's Table 2 run); the trainer then finds it finished. Returns the twin used."""
    import shutil

    run_dir = spec.run_dir(runs_root)
    if (run_dir / "metrics.json").is_file():
        return None
    for group in GROUPS:
        twin = Path(runs_root) / group / spec.dataset / spec.run_id
        if twin != run_dir and (twin / "metrics.json").is_file():
            if run_dir.exists():  # an interrupted attempt: the twin's result replaces it
                shutil.rmtree(run_dir)
            shutil.copytree(twin, run_dir)
            return twin
    return None


def collect_records(cfg: dict, runs_root: str | Path = "runs") -> list[dict]:
    """The run records of every planned run (a planned run without metrics is an error)."""
    from aoaffm.io import read_json

    records = []
    for group in GROUPS:
        for dataset in datasets_of(cfg, group):
            for spec in plan(cfg, group, dataset, runs_root):
                metrics_path = spec.run_dir(runs_root) / "metrics.json"
                if not metrics_path.is_file():
                    raise MissingInput(
                        f"{metrics_path}: run {spec.run_id} of {group}/{dataset} has not "
                        f"finished; run its stage first (`dvc repro`, or `python stages/"
                        f"{'pretrain.py' if group == 'pretrain' else 'train.py ' + group} "
                        f"{dataset}`)"
                    )
                sources = tuple(redundancy_sources(cfg, dataset))
                records += record(spec, read_json(metrics_path), runs_root, sources)
    return records


# Where the paper is silent we follow the public AFM/NFM code; the report lists these.
PROTOCOL_NOTES = (
    "Loss per mini-batch: half the sum of squared errors plus λ/2 times the squared L2 norm "
    "of the attention W (λ1) and of Q (λ2), as tf.nn.l2_loss / l2_regularizer in the AFM code; "
    "λ1 = λ2 = the λ of Table 2.",
    "RMSE on predictions clipped to the label range (AFM/NFM code): [-1, 1] on Frappe and "
    "MovieLens, [0, 1] on Criteo (meta.json's labels; the note on Criteo's labels gives the "
    "evidence).",
    "Adagrad with initial accumulator 1e-8 (the TensorFlow code's value).",
    "Criteo's first step: with that accumulator Adagrad's first step moves every weight a batch "
    "touches by about the whole learning rate η, whatever its gradient, and Criteo's rows share "
    "many features, so the FM's 741 pair products of K = 40 vectors grow together: one step "
    "raises its predictions by up to about F·η + P·K·η² (39 fields, 741 pairs). On the 200-row "
    "sample (0/1 labels) the mean prediction after it is 0.83 at η = 0.005, 2.5 at 0.01 and 45 "
    "at 0.05 (bounds 0.94, 3.4, 76); at 0.05 the quick profile's FM ended at test RMSE 0.894, worse than predicting 0 "
    "(0.447), and on ±1 labels at 1.789 (0 scores 1). The embeddings' N(0, 0.01) start (the "
    "AFM code's) is not the cause: 0.001 and 0.1 end the same at 0.05. The quick profile "
    "therefore trains Criteo at 0.005, the smallest rate of the paper's grid and the one the "
    "search picks for FM and FFM on the sample; all four Table 4 models then end below "
    "predicting 0 (test FM 0.414, FFM 0.393, AFM 0.399, AoAFFM 0.388). The paper profile "
    "searches the grid for the Table 4 runs; its FM/FFM pre-training runs at 0.01, where "
    "thousands of steps follow the first in each epoch of the full data (whether they undo it "
    "is not checked here).",
    "Batch normalization is off by default (model.batch_norm): the paper names it without a "
    "place, the public AFM code never applies it, and normalising the pooled interaction "
    "vector before the prediction vector p (initialised to ones) scales the initial output "
    "with K, undoing the pre-trained start.",
    "Dropout of the attention family sits on the attention-weighted pooled vector (the AFM "
    "code's keep[1], the one its README tunes); FM's on the interaction vector, FFM's on the "
    "field-aware pair products.",
    "Baselines' dropout: 0.1 on MovieLens and 0.4 on Frappe (the paper's Figure 3 text); "
    "Criteo's λ for AFM and AoAFFM is not published: 1.",
    "Table 3's AFM, AoAFM and AoAFFM cells are the Table 2 runs' test RMSE (mean ± std over "
    "seeds); the pretrained FM and FFM are trained without dropout with the same seed.",
    "Frappe `nfm-rebuilt`: NFM's published validation and test files verbatim (the rows the "
    "paper's Frappe RMSEs were measured on) and NFM's train split rebuilt from the raw log: "
    "its positives are exactly the log rows not in those files; its negatives (NFM's rule: "
    "user and context kept, the item replaced by one the user never used) are a fresh draw, "
    "as many as NFM's train file holds (202,027 rows in all).",
)


def protocol_notes(cfg: dict) -> list[str]:
    """The protocol choices of this configuration, for the report."""
    train = cfg["train"]
    grid = lr_search_grid(cfg)
    notes = list(PROTOCOL_NOTES)
    if train.get("stop_rule", "rises") == "plateau":
        notes.append(
            f"Early stopping: after more than {train['min_epochs']} epochs, stop once "
            f"{train['patience']} epochs brought no new best validation RMSE (the AFM code "
            "stops only after that many consecutive rises, which never happens on a plateau: "
            "runs then go on to the epoch cap). The best epoch's weights are kept and "
            "evaluated on the test set. Why a long patience: under dropout the runs keep finding "
            "new bests after several flat epochs. Replayed on the Frappe runs published at "
            "patience 10, stopping after 4 flat epochs would have kept a worse validation RMSE "
            "in 10 of their 18 runs, every compared algorithm among them "
            '(benchmarks/RESULTS.md, "Early-stopping rules").'
        )
    else:
        notes.append(
            f"Early stopping: after more than {train['min_epochs']} epochs, stop once the "
            f"validation RMSE rose {train['patience']} epochs in a row; the best epoch's "
            "weights are kept and evaluated on the test set (AFM code)."
        )
    rows = train.get("train_rmse_rows")
    notes.append(
        "The training RMSE of Figure 4 is measured in evaluation mode after each epoch (the "
        "AFM code's evaluate(Train_data)), so it is comparable with the validation RMSE, on "
        + (
            "the whole training set."
            if rows is None
            else f"{rows:,} training rows drawn once with the run's seed (an unbiased estimate "
            "of the whole set's at a fraction of a pass; it plays no part in selection)."
        )
    )
    if grid:
        notes.append(
            "Learning rates: searched in {" + ", ".join(f"{lr:g}" for lr in grid) + "} per "
            "model on the validation RMSE of its first seed, as the paper did; the winners "
            "are in the tables' lr column and the learning-rate search section."
        )
    else:
        notes.append(
            "Learning rates: the paper searched {0.005, 0.01, 0.05, 0.1} without publishing "
            "the winners; this profile skips the search (lr_search.enabled: false) and trains "
            "each model at the rate params.yaml gives it (the tables' lr column): 0.05, 0.01 "
            "for the deep baselines and Criteo (0.005 for Criteo in the quick profile, see "
            "its first step above)."
        )
    if cfg["model"].get("pretrained_baselines"):
        notes.append(
            "HOFM (its order-2 embeddings), Wide&Deep and DeepCross start from the pre-trained "
            "FM's embeddings and linear part (\"we also utilized the pretrained feature "
            "embedding vectors of FM and FFM to boost the performances of compared "
            'algorithms"); FM and FFM themselves start at random.'
        )
    return notes
