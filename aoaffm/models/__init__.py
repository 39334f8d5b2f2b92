"""The nine models of the paper's comparison, behind one entry point.

    from aoaffm.models import create
    model = create("aoaffm", n_features, n_fields, embedding_size=256, dropout=0.2)
    predictions = model(ids, values)  # ids [B, F] long, values [B, F] float or None -> [B]

Models: fm, hofm, ffm (factorization.py), wide_deep, deepcross (deep.py) and the attention
family afm, aoafm, affm, aoaffm (attention.py, one module with two switches); shared blocks
in layers.py; parameter counts against the paper's Table 3 in params.py. The training hot
path: hand-written backward passes in kernels.py and, on the CPU, fused C++ kernels in
native.cpp (built and loaded by native.py).
"""

from aoaffm.models.attention import AttentionFM
from aoaffm.models.base import CTRModel
from aoaffm.models.deep import DeepCross, WideDeep
from aoaffm.models.factorization import FFM, FM, HOFM
from aoaffm.models.params import parameter_rows, parameter_table
from aoaffm.models.registry import (
    MODEL_NAMES,
    count_parameters,
    create,
    load_model,
    save_model,
)

__all__ = [
    "FFM",
    "FM",
    "HOFM",
    "MODEL_NAMES",
    "AttentionFM",
    "CTRModel",
    "DeepCross",
    "WideDeep",
    "count_parameters",
    "create",
    "load_model",
    "parameter_rows",
    "parameter_table",
    "save_model",
]
