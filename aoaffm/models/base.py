"""What every model shares: its spec, input checks, regularized parameters, pre-training hook."""

from __future__ import annotations

import torch
from torch import nn


class CTRModel(nn.Module):
    """Base of the nine models: ``forward(ids [B, F], values [B, F] | None) -> [B]``.

    ``spec`` holds the ``create()`` arguments that rebuild the model (``save_model`` stores it).
    """

    name: str = ""

    def __init__(self, n_features: int, n_fields: int, embedding_size: int, **hparams):
        super().__init__()
        self.n_features = n_features
        self.n_fields = n_fields
        self.embedding_size = embedding_size
        self.hparams = dict(hparams)

    @property
    def spec(self) -> dict:
        return {
            "name": self.name,
            "n_features": self.n_features,
            "n_fields": self.n_fields,
            "embedding_size": self.embedding_size,
            **self.hparams,
        }

    def check_input(self, ids: torch.Tensor, values: torch.Tensor | None) -> None:
        """Shape checks that turn a wrong batch into a clear error, not a deep traceback."""
        if ids.dim() != 2 or ids.shape[1] != self.n_fields:
            raise ValueError(
                f"{self.name}: ids must be [batch, {self.n_fields}] (one feature id per field), "
                f"got shape {tuple(ids.shape)}"
            )
        if ids.dtype.is_floating_point:
            raise ValueError(f"{self.name}: ids must be an integer tensor, got {ids.dtype}")
        if values is not None and values.shape != ids.shape:
            raise ValueError(
                f"{self.name}: values must have the shape of ids {tuple(ids.shape)}, "
                f"got {tuple(values.shape)}"
            )

    def regularized_parameters(self) -> dict[str, list[nn.Parameter]]:
        """The parameters the loss adds L2 on: λ1 on "attention" (W), λ2 on "interaction" (Q)."""
        return {"attention": [], "interaction": []}

    def load_pretrained(self, source: nn.Module) -> CTRModel:
        raise ValueError(f"{self.name} is not initialised from a pre-trained model")

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.spec.items() if k != "name")


def copy_parameter(target: torch.Tensor, source: torch.Tensor, what: str) -> None:
    """Copy ``source`` into ``target`` in place; a shape mismatch names both shapes."""
    if target.shape != source.shape:
        raise ValueError(
            f"pre-trained {what} has shape {tuple(source.shape)}, "
            f"but this model expects {tuple(target.shape)}"
        )
    with torch.no_grad():
        target.copy_(source)


def load_fm_start(model: CTRModel, source: nn.Module) -> CTRModel:
    """Start a baseline from a trained FM: its embeddings, and the linear part where the model
    has one (HOFM: the order-2 embeddings; Wide&Deep: the wide part too). The paper: "we also
    utilized the pretrained feature embedding vectors of FM ... to boost the performances of
    compared algorithms"."""
    if getattr(source, "name", None) != "fm":
        got = getattr(source, "name", type(source).__name__)
        raise ValueError(f"{model.name} is initialised from a trained fm, got {got}")
    copy_parameter(model.embedding.table.weight, source.embedding.table.weight, "embedding [n, K]")
    if hasattr(model, "linear"):
        copy_parameter(
            model.linear.weights.weight, source.linear.weights.weight, "linear weights [n, 1]"
        )
        copy_parameter(model.linear.bias, source.linear.bias, "bias")
    return model
