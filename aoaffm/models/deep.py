"""Wide&Deep (Cheng et al. 2016) and DeepCross (Shan et al. 2016), as the paper's baselines.

Both take the embeddings of the F active features, scaled by their values, concatenated to
one [B, F*K] vector. Parameter counts match the paper's Table 3 exactly with these choices
(see ``aoaffm.report.params``):

- Wide&Deep: ŷ = w0 + Σ w_i x_i + MLP(e); MLP = [Linear -> (batch norm) -> ReLU -> dropout]
  per hidden size (default [1024, 512, 256]) then a bias-free Linear to one output, because
  Cheng et al.'s model has a single bias b shared by the wide and the deep part (here w0).
- DeepCross: no linear part; residual units x <- ReLU(x + W2 (ReLU(W1 x + b1)) + b2) with
  hidden sizes [512, 512, 256, 128, 64] (batch norm after W1 when on, dropout after each
  unit), then a scoring Linear with bias. The ReLU after the sum follows Shan et al.'s Fig. 2.
"""

from __future__ import annotations

import torch
from torch import nn

from aoaffm.models.base import CTRModel, load_fm_start
from aoaffm.models.layers import FeatureEmbedding, LinearPart, batch_norm_or_identity

WIDE_DEEP_HIDDEN = (1024, 512, 256)
DEEPCROSS_HIDDEN = (512, 512, 256, 128, 64)


class _Deep(CTRModel):
    """What both deep models share: hyper-parameters and the concatenated embeddings."""

    default_hidden: tuple[int, ...] = ()

    def __init__(
        self,
        n_features,
        n_fields,
        embedding_size,
        *,
        hidden_sizes=None,
        dropout=0.0,
        batch_norm=False,
    ):
        hidden_sizes = [int(h) for h in (hidden_sizes or self.default_hidden)]
        super().__init__(
            n_features,
            n_fields,
            embedding_size,
            hidden_sizes=hidden_sizes,
            dropout=dropout,
            batch_norm=batch_norm,
        )
        self.embedding = FeatureEmbedding(n_features, n_fields, embedding_size)
        self.build(n_fields * embedding_size, hidden_sizes, dropout, batch_norm)

    def load_pretrained(self, source: nn.Module) -> CTRModel:
        return load_fm_start(self, source)

    def build(self, width: int, hidden_sizes: list[int], dropout: float, batch_norm: bool) -> None:
        raise NotImplementedError

    def concatenated(self, ids: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
        """[v_1 x_1, ..., v_F x_F]: [B, F*K]."""
        self.check_input(ids, values)
        return self.embedding(ids, values).flatten(1)


class WideDeep(_Deep):
    name = "wide_deep"
    default_hidden = WIDE_DEEP_HIDDEN

    def build(self, width, hidden_sizes, dropout, batch_norm):
        self.linear = LinearPart(self.n_features)
        layers: list[nn.Module] = []
        for hidden in hidden_sizes:
            layers += [
                nn.Linear(width, hidden),
                batch_norm_or_identity(hidden, batch_norm),
                nn.ReLU(),
                nn.Dropout(dropout),
            ]
            width = hidden
        layers.append(nn.Linear(width, 1, bias=False))
        self.deep = nn.Sequential(*layers)

    def forward(self, ids: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        deep = self.deep(self.concatenated(ids, values)).squeeze(1)
        return self.linear(ids, values) + deep


class ResidualUnit(nn.Module):
    """x -> ReLU(x + W2 ReLU(W1 x + b1) + b2): output size = input size (Shan et al. 2016)."""

    def __init__(self, width: int, hidden: int, batch_norm: bool):
        super().__init__()
        self.inner = nn.Linear(width, hidden)
        self.norm = batch_norm_or_identity(hidden, batch_norm)
        self.outer = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.outer(torch.relu(self.norm(self.inner(x)))))


class DeepCross(_Deep):
    name = "deepcross"
    default_hidden = DEEPCROSS_HIDDEN

    def build(self, width, hidden_sizes, dropout, batch_norm):
        units: list[nn.Module] = []
        for hidden in hidden_sizes:
            units += [ResidualUnit(width, hidden, batch_norm), nn.Dropout(dropout)]
        self.units = nn.Sequential(*units)
        self.output = nn.Linear(width, 1)

    def forward(self, ids: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        return self.output(self.units(self.concatenated(ids, values))).squeeze(1)
