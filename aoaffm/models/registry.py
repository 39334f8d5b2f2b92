"""One entry point: ``create(name, ...)``; plus parameter counting, saving and loading.

The registry owns the model names: the nine models, the ``aofm`` alias, and which trained
model starts which (the attention family's are in ``aoaffm.models.attention``).

A tenth model: write its class (a ``CTRModel`` whose ``forward`` is its equation, from the
blocks in ``layers.py``) and add one line to ``_REGISTRY`` below; the trainer, the experiment
plan and the benchmarks then know it by name. It trains through autograd until a fast path is
registered for its class in ``aoaffm.fast.models``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from aoaffm.errors import UnreadableFile
from aoaffm.io import load_torch, save_torch
from aoaffm.models.attention import ATTENTION_MODELS, AttentionFM
from aoaffm.models.base import CTRModel
from aoaffm.models.deep import DeepCross, WideDeep
from aoaffm.models.factorization import FFM, FM, HOFM


def _attention(field_aware: bool, interaction_attention: bool) -> Callable[..., AttentionFM]:
    return functools.partial(
        AttentionFM, field_aware=field_aware, interaction_attention=interaction_attention
    )


# name -> (constructor, the hyper-parameters it takes)
_BASIC = ("dropout", "batch_norm")
_ATTENTION = ("attention_size", "dropout", "batch_norm")
_DEEP = ("hidden_sizes", "dropout", "batch_norm")
_REGISTRY: dict[str, tuple[Callable[..., CTRModel], tuple[str, ...]]] = {
    "fm": (FM, _BASIC),
    "hofm": (HOFM, _BASIC),
    "ffm": (FFM, _BASIC),
    "wide_deep": (WideDeep, _DEEP),
    "deepcross": (DeepCross, _DEEP),
    "afm": (_attention(False, False), _ATTENTION),
    "aoafm": (_attention(False, True), _ATTENTION),
    "affm": (_attention(True, False), _ATTENTION),
    "aoaffm": (_attention(True, True), _ATTENTION),
}
ALIASES = {"aofm": "aoafm"}  # the paper's name for AoAFM
MODEL_NAMES = tuple(_REGISTRY)
# Which trained model starts each run of a model: the attention family always (the paper);
# the baselines from FM's embeddings when ``model.pretrained_baselines`` is on ("to boost the
# performances of compared algorithms"); FM and FFM themselves start at random.
BASELINES_PRETRAINED_FROM = {"hofm": "fm", "wide_deep": "fm", "deepcross": "fm"}
HPARAMS = ("attention_size", "dropout", "batch_norm", "hidden_sizes")


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


# Each model setting's rule, written once (``aoaffm.config`` checks params.yaml with it).
HPARAM_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "embedding_size": (_positive_int, "an integer >= 1"),
    "attention_size": (_positive_int, "an integer >= 1"),
    "dropout": (
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1,
        "a number in [0, 1)",
    ),
    "batch_norm": (lambda v: isinstance(v, bool), "true or false"),
    "hidden_sizes": (
        lambda v: isinstance(v, list | tuple) and len(v) > 0 and all(_positive_int(h) for h in v),
        "a non-empty list of integers >= 1",
    ),
}


def canonical_name(name: str) -> str:
    """The registry name of ``name``: lower case, the alias resolved (not checked)."""
    key = str(name).lower()
    return ALIASES.get(key, key)


def create(name: str, n_features: int, n_fields: int, embedding_size: int, **hparams) -> CTRModel:
    """Build a model by name (case-insensitive; ``aofm`` is an alias of ``aoafm``).

    hparams: ``attention_size`` (t, attention models, default 256), ``dropout`` (default 0),
    ``batch_norm`` (default False), ``hidden_sizes`` (wide_deep, deepcross). A known
    hyper-parameter that a model does not have (say attention_size for fm) is ignored, so
    one set of settings can build every model; an unknown name is an error.
    """
    key = canonical_name(name)
    if key not in _REGISTRY:
        aliases = ", ".join(ALIASES)
        raise ValueError(
            f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)} (alias: {aliases})"
        )
    for arg, value in (
        ("n_features", n_features),
        ("n_fields", n_fields),
        ("embedding_size", embedding_size),
    ):
        if not _positive_int(value):
            raise ValueError(f"{key}: {arg} must be an integer >= 1, got {value!r}")
    if n_fields < 2 and key in ATTENTION_MODELS:
        raise ValueError(
            f"{key}: attends over field pairs, so it needs n_fields >= 2, got {n_fields}"
        )
    unknown = sorted(set(hparams) - set(HPARAMS))
    if unknown:
        raise ValueError(f"{key}: unknown hyper-parameter(s) {unknown}; known: {list(HPARAMS)}")
    constructor, accepted = _REGISTRY[key]
    used = {k: v for k, v in hparams.items() if k in accepted}
    for arg, value in used.items():
        ok, expected = HPARAM_RULES[arg]
        if not ok(value):
            raise ValueError(f"{key}: {arg} must be {expected}, got {value!r}")
    return constructor(n_features, n_fields, embedding_size, **used)


def count_parameters(model: nn.Module) -> int:
    """Trainable scalars (batch norm's running statistics are buffers and do not count)."""
    return sum(p.numel() for p in model.parameters())


_FORMAT = "aoaffm-model/1"


def save_model(model: CTRModel, path: str | os.PathLike) -> None:
    """Store the spec and the weights atomically; ``load_model`` rebuilds the model."""
    save_torch(path, {"format": _FORMAT, "spec": model.spec, "state_dict": model.state_dict()})


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> CTRModel:
    remedy = f"delete its run folder {Path(path).parent} and rerun the stage that trains it"
    checkpoint = load_torch(path, "model file", remedy, map_location)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != _FORMAT:
        raise UnreadableFile(
            f"{path}: not a model file written by aoaffm.models.save_model; {remedy}"
        )
    spec = dict(checkpoint["spec"])
    model = create(spec.pop("name"), **spec)
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(map_location)
