"""The loss's L2 term on the attention network, as a value and as its gradient."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class L2Penalty:
    """Σ over ``terms`` (λ, parameters) of λ * 0.5 * Σ‖p‖² (``tf.nn.l2_loss`` carries the 1/2):
    called, the value to add to the loss (autograd takes its gradient); ``strengths`` gives
    each parameter's λ, for the fused step, which adds the gradient λ p itself."""

    terms: list[tuple[float, list[nn.Parameter]]]

    @classmethod
    def for_model(
        cls, model: nn.Module, lambda_attention: float, lambda_interaction: float
    ) -> L2Penalty | None:
        """λ1 on the model's "attention" parameters (W), λ2 on its "interaction" ones (Q), from
        ``model.regularized_parameters()``; None when nothing is penalised."""
        groups = model.regularized_parameters() if hasattr(model, "regularized_parameters") else {}
        terms = [
            (strength, params)
            for strength, params in (
                (lambda_attention, groups.get("attention", [])),
                (lambda_interaction, groups.get("interaction", [])),
            )
            if strength > 0 and params
        ]
        return cls(terms) if terms else None

    def __call__(self) -> torch.Tensor:
        return sum(
            0.5 * strength * sum(p.square().sum() for p in params)
            for strength, params in self.terms
        )

    def strengths(self) -> dict[int, float]:
        """λ by ``id`` of each penalised parameter."""
        return {id(p): strength for strength, params in self.terms for p in params}
