"""The attention family AFM, AoAFM, AFFM, AoAFFM: one module, two independent switches.

    ŷ = w0 + Σ w_i x_i + pᵀ Σ_{i<j} q_ij α_ij (v_{i,f_j} ⊙ v_{j,f_i}) x_i x_j        (eq. 5)

- ``field_aware``: pair products from a field-aware table [n, F, K] (AFFM, AoAFFM), else from
  one vector per feature, v_i ⊙ v_j (AFM, AoAFM).
- ``interaction_attention``: the interaction-level weights Q, one scalar per field pair
  (AoAFM, AoAFFM), else q_ij = 1.

α is the feature-level attention of eq. 4, a softmax over pairs of hᵀ ReLU(W P_r + b).
The pooled vector Σ q α P [B, K] -> batch norm (when on, as NFM normalises its pooled
Bi-Interaction vector before the prediction layer) -> dropout (the AFM code's dropout after
pooling, "dropout on the attention network" in the paper) -> pᵀ. The prediction vector p
starts at ones as in the AFM code; in eval mode with batch norm off this is eq. 5 literally.
``forward`` is the plain PyTorch reference; ``aoaffm.fast.models.attention_fm`` computes the
same with C++ kernels on the CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from aoaffm.models.base import CTRModel, copy_parameter
from aoaffm.models.factorization import FFM, FM
from aoaffm.models.layers import (
    AttentionPooling,
    FeatureEmbedding,
    FieldAwareEmbedding,
    LinearPart,
    batch_norm_or_identity,
)

# (field_aware, interaction_attention) -> registry name; the family's one list of names
VARIANTS = {
    (False, False): "afm",
    (False, True): "aoafm",
    (True, False): "affm",
    (True, True): "aoaffm",
}
ATTENTION_MODELS = tuple(VARIANTS.values())
# The paper starts each from trained FM (AFM, AoAFM) or FFM (AFFM, AoAFFM) embeddings.
PRETRAINED_FROM = {
    name: "ffm" if field_aware else "fm" for (field_aware, _), name in VARIANTS.items()
}


class AttentionFM(CTRModel):
    """AFM, AoAFM, AFFM or AoAFFM by its two switches (see the module docstring)."""

    def __init__(
        self,
        n_features,
        n_fields,
        embedding_size,
        *,
        field_aware: bool,
        interaction_attention: bool,
        attention_size=256,
        dropout=0.0,
        batch_norm=False,
    ):
        super().__init__(
            n_features,
            n_fields,
            embedding_size,
            attention_size=attention_size,
            dropout=dropout,
            batch_norm=batch_norm,
        )
        self.field_aware = field_aware
        self.interaction_attention = interaction_attention
        self.name = VARIANTS[(field_aware, interaction_attention)]
        self.linear = LinearPart(n_features)
        embedding = FieldAwareEmbedding if field_aware else FeatureEmbedding
        self.embedding = embedding(n_features, n_fields, embedding_size)
        n_pairs = n_fields * (n_fields - 1) // 2
        self.attention = AttentionPooling(
            embedding_size, attention_size, n_pairs, interaction_attention
        )
        self.norm = batch_norm_or_identity(embedding_size, batch_norm)
        self.dropout = nn.Dropout(dropout)
        self.prediction = nn.Parameter(torch.ones(embedding_size))  # p

    def forward(self, ids: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(ids, values)
        pairs = self.embedding.pair_products(ids, values)  # (v_{i,f_j} ⊙ v_{j,f_i}) x_i x_j
        pooled = self.attention(pairs)  # Σ q_ij α_ij (...): [B, K]
        interaction = self.dropout(self.norm(pooled)) @ self.prediction.to(pooled.dtype)  # pᵀ
        return self.linear(ids, values) + interaction

    def regularized_parameters(self) -> dict[str, list[nn.Parameter]]:
        q = self.attention.pair_weights
        return {
            "attention": [self.attention.project.weight],
            "interaction": [q] if q is not None else [],
        }

    def load_pretrained(self, source: nn.Module) -> AttentionFM:
        """Take embeddings, linear weights and bias from a trained FM (AFM, AoAFM) or FFM
        (AFFM, AoAFFM), e.g. ``load_model(path)``."""
        expected = FFM if self.field_aware else FM
        if not isinstance(source, expected):
            got = getattr(source, "name", type(source).__name__)
            raise ValueError(
                f"{self.name} is initialised from a trained {expected.name}, got {got}"
            )
        if self.field_aware:  # compare [n, F, K], not the flat table
            copy_parameter(
                self.embedding.vectors, source.embedding.vectors, "field-aware embedding [n, F, K]"
            )
        else:
            copy_parameter(
                self.embedding.table.weight, source.embedding.table.weight, "embedding [n, K]"
            )
        copy_parameter(
            self.linear.weights.weight, source.linear.weights.weight, "linear weights [n, 1]"
        )
        copy_parameter(self.linear.bias, source.linear.bias, "bias")
        return self


@torch.no_grad()
def attention_weights(model: AttentionFM, split, batch_size: int = 8192) -> dict:
    """The learned weights of each field pair (a, b), a < b, over a data split: the
    feature-level attention α of eq. 4 averaged over the split's rows, and the
    interaction-level q of eq. 5 (None for AFM and AFFM, whose q is 1).

    ``split`` has ``ids`` [N, F] and ``values`` (None: one-hot), as a processed split.
    Returns {"left", "right", "alpha", "q", "rows"}, lists indexed by pair.
    """
    import numpy as np

    was_training = model.training
    model.eval()
    total = torch.zeros(len(model.embedding.left), dtype=torch.float64)
    rows = len(split.ids)
    for start in range(0, rows, batch_size):
        ids = torch.from_numpy(np.asarray(split.ids[start : start + batch_size], dtype=np.int64))
        values = None
        if split.values is not None:
            values = torch.from_numpy(np.array(split.values[start : start + batch_size]))
        alpha = model.attention.attention(model.embedding.pair_products(ids, values))  # [B, P]
        total += alpha.sum(dim=0, dtype=torch.float64)
    model.train(was_training)
    q = model.attention.pair_weights
    return {
        "left": model.embedding.left.tolist(),
        "right": model.embedding.right.tolist(),
        "alpha": (total / max(rows, 1)).tolist(),
        "q": None if q is None else q.detach().double().tolist(),
        "rows": rows,
    }
