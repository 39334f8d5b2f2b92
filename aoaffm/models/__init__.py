"""The nine models of the paper's comparison, behind one entry point: the reference.

    from aoaffm.models import create
    model = create("aoaffm", n_features, n_fields, embedding_size=256, dropout=0.2)
    predictions = model(ids, values)  # ids [B, F] long, values [B, F] float or None -> [B]

Models: fm, hofm, ffm (factorization.py), wide_deep, deepcross (deep.py) and the attention
family afm, aoafm, affm, aoaffm (attention.py, one module with two switches); shared blocks
in layers.py; names, alias and pre-training sources in registry.py (and attention.py for the
family). Each ``forward`` is its equation in plain PyTorch, at most two calls from
``create()`` (model -> layers), and nothing here knows of the CPU kernels: ``aoaffm.fast``
computes the same models faster and the trainer chooses it once per run.

A tenth model: a class here and a line in ``registry._REGISTRY`` (see registry.py).
"""

from aoaffm.models.attention import ATTENTION_MODELS, PRETRAINED_FROM, AttentionFM
from aoaffm.models.base import CTRModel
from aoaffm.models.deep import DeepCross, WideDeep
from aoaffm.models.factorization import FFM, FM, HOFM
from aoaffm.models.registry import (
    ALIASES,
    BASELINES_PRETRAINED_FROM,
    MODEL_NAMES,
    canonical_name,
    count_parameters,
    create,
    load_model,
    save_model,
)

__all__ = [
    "ALIASES",
    "ATTENTION_MODELS",
    "BASELINES_PRETRAINED_FROM",
    "FFM",
    "FM",
    "HOFM",
    "MODEL_NAMES",
    "PRETRAINED_FROM",
    "AttentionFM",
    "CTRModel",
    "DeepCross",
    "WideDeep",
    "canonical_name",
    "count_parameters",
    "create",
    "load_model",
    "save_model",
]
