"""Building blocks shared by the nine models: one place per concept.

- ``LinearPart``: w0 + Σ_i w_i x_i.
- ``FeatureEmbedding``: one vector per feature, a table [n, K] (FM, HOFM, AFM, the deep models).
- ``FieldAwareEmbedding``: one vector per (feature, field), a table [n, F, K] stored flat as
  [n * F, K] so that each side of every field pair is one lookup (FFM, AFFM, AoAFFM).
- ``field_pairs``: the fixed left/right field index of the P = F(F-1)/2 pairs (a, b), a < b.
- ``fm_interaction`` / ``anova3``: the order-2 and order-3 ANOVA kernels in O(FK).
- ``AttentionPooling``: eq. 4 (feature-level attention) and, switched on, eq. 5's Q.
- ``Dropout``: ``nn.Dropout`` with its CPU mask drawn in C++.

Tables are ``nn.Embedding(..., sparse=True)``: a backward pass yields a sparse gradient that
holds only the rows a batch touched, so an Adagrad step costs O(rows touched), not O(table).
Every input id tensor is [B, F] with one global feature id per field; values are [B, F]
(None means one-hot, all ones).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from aoaffm.models import kernels, native

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
        if values is None and native.usable(self.weights.weight):  # one pass, coalesced grad
            return self.bias + kernels.linear_terms(self.weights.weight, ids)
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
        if kernels.fused_enabled(vectors):
            return kernels.pair_products(vectors, self.left, self.right)
        return vectors[:, self.left] * vectors[:, self.right]


def field_aware_pair_products(
    table: torch.Tensor,
    ids: torch.Tensor,
    values: torch.Tensor | None,
    left: torch.Tensor,
    right: torch.Tensor,
    *,
    sparse: bool = True,
) -> torch.Tensor:
    """(v_{i,f_j} ⊙ v_{j,f_i}) x_i x_j for every field pair: [B, P, K].

    ``table`` is the flat [n * F, K] field-aware table: row ``id * F + f`` is the vector of
    feature ``id`` for interactions with field ``f``. Both sides of all pairs are gathered in
    one lookup, so the backward pass yields one sparse gradient.
    """
    if kernels.fused_enabled(table):
        products = kernels.field_aware_pair_products(table, ids, left, right, sparse=sparse)
    else:
        products = field_aware_pair_products_reference(table, ids, left, right, sparse=sparse)
    if values is not None:
        values = values.to(products.dtype)
        products = products * (values[:, left] * values[:, right]).unsqueeze(-1)
    return products


def field_aware_pair_products_reference(table, ids, left, right, *, sparse=True):
    """The plain autograd composition behind ``kernels.field_aware_pair_products``."""
    rows = kernels.field_aware_rows(ids, torch.cat([left, right]), torch.cat([right, left]))
    vectors = F.embedding(rows, table, sparse=sparse)  # [B, 2P, K]
    n_pairs = left.numel()
    return vectors[:, :n_pairs] * vectors[:, n_pairs:]


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
        return field_aware_pair_products(self.table.weight, ids, values, self.left, self.right)

    def interaction(self, ids: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
        """FFM's Σ_pairs <v_{i,f_j}, v_{j,f_i}> x_i x_j: [B]."""
        if values is None and native.usable(self.table.weight):  # one C++ pass
            return kernels.field_aware_interaction(self.table.weight, ids, self.left, self.right)
        return self.pair_dots(ids, values).sum(dim=1)

    def pair_dots(self, ids: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
        """<v_{i,f_j}, v_{j,f_i}> x_i x_j for every field pair: [B, P] (FFM's terms)."""
        table = self.table.weight
        if kernels.cpu_fused_enabled(table):
            dots = kernels.field_aware_pair_dots(table, ids, self.left, self.right)
            if values is not None:
                values = values.to(dots.dtype)
                dots = dots * values[:, self.left] * values[:, self.right]
            return dots
        return self.pair_products(ids, values).sum(dim=-1)


def fm_interaction(vectors: torch.Tensor) -> torch.Tensor:
    """Σ_{i<j} (v_i x_i) ⊙ (v_j x_j) in O(FK): ((Σ e)² - Σ e²) / 2 on e = [B, F, K] -> [B, K]."""
    if kernels.fused_enabled(vectors):
        return kernels.fm_interaction(vectors)
    return fm_interaction_reference(vectors)


def fm_interaction_reference(vectors: torch.Tensor) -> torch.Tensor:
    """The plain autograd composition behind ``kernels.fm_interaction``."""
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
        """The feature-level attention α: [B, P], rows summing to one."""
        return torch.softmax(F.relu(self.project(pairs)) @ self.score, dim=1)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        if kernels.fused_enabled(pairs):
            return kernels.attention_pooling(
                pairs, self.project.weight, self.project.bias, self.score, self.pair_weights
            )
        return self.forward_reference(pairs)

    def forward_reference(self, pairs: torch.Tensor) -> torch.Tensor:
        """The plain autograd composition behind ``kernels.attention_pooling``."""
        weights = self.attention(pairs)
        if self.pair_weights is not None:
            weights = weights * self.pair_weights
        return torch.bmm(weights.unsqueeze(1).to(pairs.dtype), pairs).squeeze(1)


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose mask, on the CPU with the fused kernels, comes from C++
    (``native.dropout_mask``: a counter-based generator seeded from torch's). torch's CPU
    ``bernoulli_`` costs ~20 ns a number: 30 ms a step for FFM's [128, 45, 256] pair products,
    more than the rest of the step. Same distribution and scaling (kept units times 1 / (1 - p));
    the masks themselves differ from torch's for the same seed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        mask = self.native_mask(x)
        return x * mask if mask is not None else super().forward(x)

    def native_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        """The mask ``forward`` multiplies ``x`` by when C++ draws it (training, 0 < p < 1,
        CPU float32), else None. (Public for ``aoaffm.train.fused``, which applies it itself.)"""
        if self.training and 0 < self.p < 1 and not self.inplace and native.usable(x):
            return native.dropout_mask(x.shape, 1.0 - self.p)
        return None


def batch_norm_or_identity(size: int, enabled: bool) -> nn.Module:
    """TensorFlow's batch_norm defaults as used by the NFM/AFM code: eps 1e-3, decay 0.9."""
    return nn.BatchNorm1d(size, eps=1e-3, momentum=0.1) if enabled else nn.Identity()
