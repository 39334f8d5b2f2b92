"""The CPU speed backend: the models of ``aoaffm.models`` computed by fused kernels.

On the CPU a training step of these models at batch 128 is dozens of small tensor
operations, each costing more in dispatch than in arithmetic. This package computes the
same models, values and gradients up to float rounding, in fewer passes:

- ``native.cpp`` / ``native.py``: C++ kernels (lookups, interactions, attention pooling,
  their gradient rows, Adagrad's row and dense updates, dropout masks, distinct ids),
  compiled on first use with ``g++`` and called through ctypes (the build is cached).
- ``kernels.py``: hand-written autograd functions around them.
- ``models.py``: each model class's forward through the kernels (``FORWARDS``).
- ``steps.py``: whole training steps without autograd (FFM; the attention family).

It is chosen in one place: the trainer calls ``select`` once per run and, given a
``FastModel``, trains and evaluates through it; an Adagrad built with ``kernels=native``
(``aoaffm.train.optim``, with ``FastModel.optimizer_kernels``) updates the parameters in C++. ``select`` declines (and the run
uses the reference models) off the CPU, under bf16 autocast, for a model class without a
registered forward, for parameters that are not float32, and when the kernels are off
(``AOAFFM_NATIVE=0``) or could not be built. The tests hold each forward, its gradients
and the fused steps equal to the reference. Under ``bf16_products`` (``train.bf16_products``)
the dense matrix products are computed from bf16 factors, everything else in float32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from aoaffm.fast import native
from aoaffm.fast.kernels import bf16_products
from aoaffm.fast.models import FORWARDS, Forward
from aoaffm.fast.steps import Step, fused_step

STEP_CODE = "cpu-kernels"  # a run's "step_code" fact when it trains here (aoaffm.train.loop)


class FastModel(nn.Module):
    """``model`` computed by the kernels: same parameters (it holds the model itself), same
    ``forward(ids, values)`` signature and result up to float rounding."""

    # the C++ Adagrad updates (``adagrad_rows``, ``adagrad_dense_many``) for
    # ``aoaffm.train.optim.SparseAdagrad(kernels=...)``; the fused steps assume them
    optimizer_kernels = native

    def __init__(self, model: nn.Module, forward: Forward):
        super().__init__()
        self.model = model
        self._forward = forward

    def forward(self, ids: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        return self._forward(self.model, ids, values)

    def fused_step(
        self, optimizer: torch.optim.Optimizer, strengths: dict[int, float]
    ) -> Step | None:
        """The whole training step in kernels, or None (see ``aoaffm.fast.steps``)."""
        return fused_step(self.model, optimizer, strengths)


def select(model: nn.Module, device: torch.device, *, bf16: bool = False) -> FastModel | None:
    """The fast path for a run of ``model`` on ``device``, or None: the reference trains it."""
    forward: Callable | None = FORWARDS.get(type(model))
    if forward is None or bf16 or torch.device(device).type != "cpu":
        return None
    if any(p.dtype != torch.float32 for p in model.parameters()):
        return None
    if native.library() is None:  # AOAFFM_NATIVE=0, or no compiler
        return None
    return FastModel(model, forward)


def flush_denormals() -> bool:
    """Subnormal floats become zero in every OpenMP worker thread the kernels use (see
    ``native.flush_denormals``); False when the kernels are unavailable."""
    return native.flush_denormals()


__all__ = ["STEP_CODE", "FastModel", "bf16_products", "flush_denormals", "select"]
