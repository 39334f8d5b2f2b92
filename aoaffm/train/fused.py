"""A whole FFM training step in one C++ call, where nothing stands between the kernels.

FFM without dropout and batch norm (its pre-training for AFFM/AoAFFM, "the paper pre-trains
FM and FFM without dropout", and Criteo's FFM at K = 4 on 45M rows) is pair dot products,
their gradient rows and Adagrad's row update. On the CPU, at batch 128, the autograd graph,
the loss's tensor operations and the optimizer's bookkeeping around those three kernels
cost as much as the kernels themselves. ``fused_ffm_step`` returns a step that calls them
back to back in C++ (``native.ffm_train_step``) on the model's own parameters and the
optimizer's own state, so checkpoints, ``state_dict`` and evaluation see nothing different.

The numbers are those of the unfused step up to float rounding of the bias gradient (summed
in sample order here; the tests compare the two). It is used only when it computes exactly
that step: an ``FFM`` (not a subclass) with no batch norm and dropout 0, one-hot rows, the
fused CPU kernels built, ``SparseAdagrad`` holding exactly the table, the linear weights and
the bias with no weight decay, maximize or differentiable option, no L2 penalty, no autocast
and a single process. Anything else trains through autograd as before.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from aoaffm.models import native
from aoaffm.models.factorization import FFM
from aoaffm.train.optim import SparseAdagrad

Step = Callable[[torch.Tensor, torch.Tensor], float]


def fused_ffm_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> Step | None:
    """``step(ids, labels) -> loss`` doing forward, backward and the optimizer step of an FFM
    in one call, or None when the model or optimizer is not the case it computes exactly."""
    if type(model) is not FFM or type(optimizer) is not SparseAdagrad:
        return None
    if not isinstance(model.norm, nn.Identity) or model.dropout.p != 0:
        return None
    params = (model.embedding.table.weight, model.linear.weights.weight, model.linear.bias)
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    if len(group_of) != len(params) or any(id(p) not in group_of for p in params):
        return None
    groups = [group_of[id(p)] for p in params]
    if any(
        g["weight_decay"] != 0 or g["maximize"] or g["differentiable"] for g in groups
    ) or not all(p.is_contiguous() and p.requires_grad for p in params):
        return None
    if not native.usable(*params):
        return None
    embedding = model.embedding

    def step(ids: torch.Tensor, labels: torch.Tensor) -> float:
        if not model.training:
            raise RuntimeError("the fused FFM step trains: call model.train() first")
        states = [optimizer.state[p]["sum"] for p in params]
        torch._foreach_add_([optimizer.state[p]["step"] for p in params], 1)  # as torch counts
        rates = [optimizer.learning_rate(p, g) for p, g in zip(params, groups, strict=True)]
        eps = [g["eps"] for g in groups]
        return native.ffm_train_step(
            params, states, ids, labels, embedding.left, embedding.right, rates, eps
        )

    return step
