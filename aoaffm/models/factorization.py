"""FM (eq. 1), HOFM of order 3 (Blondel et al. 2016) and FFM (eq. 2).

Dropout and batch normalization sit where the NFM/AFM TensorFlow code and DESIGN §4 put them:

- FM: the interaction vector Σ_{i<j} v_i ⊙ v_j x_i x_j ([B, K], the "Bi-Interaction" output)
  -> batch norm -> dropout -> summed over K (NFM's FM.py).
- HOFM: the same on the order-2 and order-3 interaction vectors, side by side ([B, 2K]).
- FFM: dropout on the field-aware interaction layer, the pair products [B, P, K] (paper:
  "the field-aware interaction layer for FFM"); their sum over pairs [B, K] -> batch norm ->
  summed over K.

With batch norm off and in eval mode each model is exactly its equation. Each ``forward`` is
the plain PyTorch reference; ``aoaffm.fast`` holds their CPU kernels (``aoaffm.fast.models``).
"""

from __future__ import annotations

import torch
from torch import nn

from aoaffm.models.base import CTRModel, load_fm_start
from aoaffm.models.layers import (
    FeatureEmbedding,
    FieldAwareEmbedding,
    LinearPart,
    anova3,
    batch_norm_or_identity,
    fm_interaction,
)


class _Factorization(CTRModel):
    """What FM, HOFM and FFM share: the linear part, batch norm over the interaction vector
    (``normalized_size`` units), dropout."""

    def __init__(self, n_features, n_fields, embedding_size, dropout, batch_norm, normalized_size):
        super().__init__(
            n_features, n_fields, embedding_size, dropout=dropout, batch_norm=batch_norm
        )
        self.linear = LinearPart(n_features)
        self.norm = batch_norm_or_identity(normalized_size, batch_norm)
        self.dropout = nn.Dropout(dropout)


class FM(_Factorization):
    """w0 + Σ w_i x_i + Σ_{i<j} <v_i, v_j> x_i x_j, the pair sum in its O(FK) form."""

    name = "fm"

    def __init__(self, n_features, n_fields, embedding_size, *, dropout=0.0, batch_norm=False):
        super().__init__(n_features, n_fields, embedding_size, dropout, batch_norm, embedding_size)
        self.embedding = FeatureEmbedding(n_features, n_fields, embedding_size)

    def forward(self, ids: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(ids, values)
        interaction = fm_interaction(self.embedding(ids, values))  # Σ_{i<j} v_i ⊙ v_j x_i x_j
        return self.linear(ids, values) + self.dropout(self.norm(interaction)).sum(dim=1)


class HOFM(_Factorization):
    """FM plus Σ_{i<j<l} Σ_k u_ik u_jk u_lk x_i x_j x_l with separate order-3 embeddings u.

    The order-3 ANOVA kernel uses the power-sum identity, O(FK), no loop over triples.
    """

    name = "hofm"

    def __init__(self, n_features, n_fields, embedding_size, *, dropout=0.0, batch_norm=False):
        super().__init__(
            n_features, n_fields, embedding_size, dropout, batch_norm, 2 * embedding_size
        )
        self.embedding = FeatureEmbedding(n_features, n_fields, embedding_size)
        self.embedding3 = FeatureEmbedding(n_features, n_fields, embedding_size)

    def load_pretrained(self, source: nn.Module) -> CTRModel:
        return load_fm_start(self, source)

    def forward(self, ids: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(ids, values)
        order2 = fm_interaction(self.embedding(ids, values))
        order3 = anova3(self.embedding3(ids, values))
        interaction = torch.cat([order2, order3], dim=1)
        return self.linear(ids, values) + self.dropout(self.norm(interaction)).sum(dim=1)


class FFM(_Factorization):
    """w0 + Σ w_i x_i + Σ_{i<j} <v_{i,f_j}, v_{j,f_i}> x_i x_j."""

    name = "ffm"

    def __init__(self, n_features, n_fields, embedding_size, *, dropout=0.0, batch_norm=False):
        super().__init__(n_features, n_fields, embedding_size, dropout, batch_norm, embedding_size)
        self.embedding = FieldAwareEmbedding(n_features, n_fields, embedding_size)

    def forward(self, ids: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(ids, values)
        pairs = self.dropout(self.embedding.pair_products(ids, values))  # [B, P, K]
        return self.linear(ids, values) + self.norm(pairs.sum(dim=1)).sum(dim=1)
