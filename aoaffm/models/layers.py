"""Building blocks shared by the nine models: one place per concept.

- ``LinearPart``: w0 + Σ_i w_i x_i.
- ``FeatureEmbedding``: one vector per feature, a table [n, K] (FM, HOFM, AFM, the deep models).
- ``FieldAwareEmbedding``: one vector per (feature, field), a table [n, F, K] stored flat as
  [n * F, K] so that each side of every field pair is one lookup (FFM, AFFM, AoAFFM).
- ``field_pairs``: the fixed left/right field index of the P = F(F-1)/2 pairs (a, b), a < b.
- ``fm_interaction`` / ``anova3``: the order-2 and order-3 ANOVA kernels in O(FK).
- ``AttentionPooling``: eq. 4 (feature-level attention) and, switched on, eq. 5's Q.

Tables are ``nn.Embedding(..., sparse=True)``: a backward pass yields a sparse gradient that
holds only the rows a batch touched, so an Adagrad step costs O(rows touched), not O(table).
Every input id tensor is [B, F] with one global feature id per field; values are [B, F]
(None means one-hot, all ones).

This is plain PyTorch, the reference: ``aoaffm.fast`` computes the same with hand-written
backward passes and C++ kernels, and its tests hold it equal to what is written here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

EMBEDDING_STD = 0.01  # N(0, 0.01) as in the AFM/NFM TensorFlow code


def field_pairs(n_fields: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left and right field of each pair (a, b), a < b, in row-major order: (0,1), (0,2), ..."""
    left, right = torch.triu_indices(n_fields, n_fields, offset=1)
    return left, right


def scale_by_values(vectors: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
    """Multiply [B, F, K] (or [B, F]) by the feature values; None means one-hot."""
    if values is None:
        return vectors
    values = values.to(vectors.dtype)
    return vectors * (values.unsqueeze(-1) if vectors.dim() == 3 else values)


class LinearPart(nn.Module):
    """w0 + Σ_i w_i x_i; the weights are a sparse [n, 1] table, zero-initialised (AFM code)."""

    def __init__(self, n_features: int):
        super().__init__()
        self.weights = nn.Embedding(n_features, 1, sparse=True)
        self.bias = nn.Parameter(torch.zeros(1))
        nn.init.zeros_(self.weights.weight)

    def forward(self, ids: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
        weights = scale_by_values(self.weights(ids).squeeze(-1), values)  # [B, F]
        return self.bias + weights.sum(dim=1)


class FeatureEmbedding(nn.Module):
    """One K-vector per feature: a [n, K] table; lookups come back scaled by the values."""

    def __init__(self, n_features: int, n_fields: int, embedding_size: int):
        super().__init__()
        self.table = nn.Embedding(n_features, embedding_size, sparse=True)
        nn.init.normal_(self.table.weight, 0.0, EMBEDDING_STD)
        left, right = field_pairs(n_fields)
        self.register_buffer("left", left, persistent=False)
        self.register_buffer("right", right, persistent=False)

    def forward(self, ids: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
        """v_i x_i for each field's feature: [B, F, K]."""
        return scale_by_values(self.table(ids), values)

    def pair_products(self, ids: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
        """(v_i ⊙ v_j) x_i x_j for every field pair: [B, P, K]."""
        vectors = self(ids, values)
        return vectors[:, self.left] * vectors[:, self.right]


class FieldAwareEmbedding(nn.Module):
    """One K-vector per (feature, field): a [n, F, K] table stored flat as [n * F, K]."""

    def __init__(self, n_features: int, n_fields: int, embedding_size: int):
        super().__init__()
        self.n_fields = n_fields
        self.table = nn.Embedding(n_features * n_fields, embedding_size, sparse=True)
        nn.init.normal_(self.table.weight, 0.0, EMBEDDING_STD)
        left, right = field_pairs(n_fields)
        self.register_buffer("left", left, persistent=False)
        self.register_buffer("right", right, persistent=False)

    @property
    def vectors(self) -> torch.Tensor:
        """The table as [n, F, K] (a view): vectors[i, f] is v_{i,f}."""
        return self.table.weight.view(-1, self.n_fields, self.table.weight.shape[1])

    def pair_products(self, ids: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
        """(v_{i,f_j} ⊙ v_{j,f_i}) x_i x_j for every field pair: [B, P, K].

        Both sides of all pairs are gathered in one lookup (so the backward pass yields one
        sparse gradient): first v_{i_a, f_b} for every pair (a, b), then v_{i_b, f_a}.
        """
        left, right = self.left, self.right
        ids = ids.long()
        rows = torch.cat(
            [ids[:, left] * self.n_fields + right, ids[:, right] * self.n_fields + left], 1
        )
        vectors = self.table(rows)  # [B, 2P, K]: row id * F + f is v_{id, f}
        n_pairs = left.numel()
        products = vectors[:, :n_pairs] * vectors[:, n_pairs:]
        if values is None:
            return products
        values = values.to(products.dtype)
        return products * (values[:, left] * values[:, right]).unsqueeze(-1)


def fm_interaction(vectors: torch.Tensor) -> torch.Tensor:
    """Σ_{i<j} (v_i x_i) ⊙ (v_j x_j) in O(FK): ((Σ e)² - Σ e²) / 2 on e = [B, F, K] -> [B, K]."""
    total = vectors.sum(dim=1)
    return 0.5 * (total * total - (vectors * vectors).sum(dim=1))


def anova3(vectors: torch.Tensor) -> torch.Tensor:
    """Σ_{i<j<l} e_i ⊙ e_j ⊙ e_l by power sums: (p1³ - 3 p1 p2 + 2 p3) / 6 -> [B, K]."""
    p1 = vectors.sum(dim=1)
    p2 = (vectors * vectors).sum(dim=1)
    p3 = (vectors * vectors * vectors).sum(dim=1)
    return (p1 * p1 * p1 - 3.0 * p1 * p2 + 2.0 * p3) / 6.0


class AttentionPooling(nn.Module):
    """Σ_r q_r α_r P_r over the pair rows P_r of [B, P, K] -> [B, K] (eqs. 4 and 5).

    α = softmax over pairs of hᵀ ReLU(W P_r + b), W ∈ R^{t×K}. With ``interaction_attention``
    each pair also has a learnable scalar q_r (the paper's Q ∈ R^{|F|}); without it q_r = 1.
    Initialisation follows the AFM code: W and b ~ N(0, sqrt(2 / (K + t))), h ~ N(0, 1).
    Q ~ N(1, 0.01): "randomly initialised" (paper), centred on 1 so that a model warm-started
    from pre-trained embeddings begins as the plain attention model and Q departs from it
    only as training asks.
    """

    def __init__(
        self, embedding_size: int, attention_size: int, n_pairs: int, interaction_attention: bool
    ):
        super().__init__()
        glorot = math.sqrt(2.0 / (embedding_size + attention_size))
        self.project = nn.Linear(embedding_size, attention_size)  # W (weight) and b
        self.score = nn.Parameter(torch.randn(attention_size))  # h
        nn.init.normal_(self.project.weight, 0.0, glorot)
        nn.init.normal_(self.project.bias, 0.0, glorot)
        self.pair_weights = None  # Q
        if interaction_attention:
            self.pair_weights = nn.Parameter(torch.empty(n_pairs).normal_(1.0, 0.01))

    def attention(self, pairs: torch.Tensor) -> torch.Tensor:
        """The feature-level attention α of eq. 4 alone: [B, P], rows summing to one."""
        return torch.softmax(F.relu(self.project(pairs)) @ self.score, dim=1)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """Σ_r q_r α_r P_r over the pair rows P [B, P, K]: [B, K]."""
        alpha = torch.softmax(F.relu(self.project(pairs)) @ self.score, dim=1)  # eq. 4
        weights = alpha if self.pair_weights is None else alpha * self.pair_weights  # eq. 5
        return torch.bmm(weights.unsqueeze(1).to(pairs.dtype), pairs).squeeze(1)


def batch_norm_or_identity(size: int, enabled: bool) -> nn.Module:
    """TensorFlow's batch_norm defaults as used by the NFM/AFM code: eps 1e-3, decay 0.9."""
    return nn.BatchNorm1d(size, eps=1e-3, momentum=0.1) if enabled else nn.Identity()
