"""Whole training steps without autograd, where nothing stands between the C++ kernels.

On the CPU, at batch 128, the autograd graph, the loss's tensor operations and the
optimizer's bookkeeping around the kernels of a step cost as much as the kernels of FFM and
a sixth of the attention models' step. ``fused_step`` returns, where it computes exactly
what the trainer's step computes (through ``aoaffm.fast.models`` and an Adagrad with these
kernels' updates), a step that calls the same kernels back to back on the
model's own parameters and the optimizer's own state (so checkpoints, ``state_dict`` and
evaluation see nothing different):

- FFM without dropout and batch norm (its pre-training for AFFM/AoAFFM, "the paper
  pre-trains FM and FFM without dropout", and Criteo's FFM at K = 4 on 45M rows): forward,
  gradient rows and Adagrad in one C++ call (``native.ffm_train_step``).
- The attention family (AFM, AoAFM, AFFM, AoAFFM) without batch norm, with or without
  dropout and the L2 penalty on W and Q: ``kernels.attention_interaction_forward`` /
  ``_backward`` (the autograd node's own two halves), the prediction layer, dropout, the
  linear part and the penalty's gradient λ p by hand, then Adagrad's row and dense updates,
  the batch's distinct ids found once for both tables.

The numbers are those of the unfused step up to float rounding (sums taken in another
order; the tests compare the two over several steps), and the dropout masks are the same
draws. Used only for that case: the model class itself (not a subclass), one-hot rows, the
kernels built, an Adagrad whose updates are these kernels (``SparseAdagrad(kernels=native)``
of ``aoaffm.train.optim``) holding exactly the model's parameters with no weight decay,
maximize or differentiable option, a single process and an L2 penalty (λ by parameter) on
the attention model's W and Q at most. The trainer asks only for runs ``aoaffm.fast.select``
accepted, and trains anything else through autograd.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from aoaffm.fast import kernels, native
from aoaffm.fast.models import dropout_mask
from aoaffm.models import FFM, AttentionFM

Step = Callable[[torch.Tensor, torch.Tensor], float]


def fused_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, strengths: dict[int, float]
) -> Step | None:
    """``step(ids, labels) -> loss`` (forward, backward and the optimizer step in one), or None
    when the model and optimizer are not a case it computes exactly. ``strengths``: the
    loss's L2 penalty, λ by ``id`` of each penalised parameter ({}: none)."""
    if not strengths and type(model) is FFM:
        return fused_ffm_step(model, optimizer)
    return fused_attention_step(model, optimizer, strengths)


def _groups(optimizer, params: list[nn.Parameter]) -> list[dict] | None:
    """Each parameter's group, when ``optimizer`` is an Adagrad updating with these kernels
    (``SparseAdagrad(kernels=native)``) that holds exactly ``params`` with options the
    kernels implement; else None."""
    if (
        not isinstance(optimizer, torch.optim.Adagrad)
        or getattr(optimizer, "kernels", None) is not native
    ):
        return None
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    if len(group_of) != len(params) or any(id(p) not in group_of for p in params):
        return None
    groups = [group_of[id(p)] for p in params]
    if any(g["weight_decay"] != 0 or g["maximize"] or g["differentiable"] for g in groups):
        return None
    if not all(p.is_contiguous() and p.requires_grad for p in params):
        return None
    return groups if native.usable(*params) else None


def _count_step(optimizer, params, groups) -> tuple[list[float], list[float]]:
    """Count the step in each parameter's state as torch does; (learning rates, eps)."""
    torch._foreach_add_([optimizer.state[p]["step"] for p in params], 1)
    rates = [optimizer.learning_rate(p, g) for p, g in zip(params, groups, strict=True)]
    return rates, [g["eps"] for g in groups]


def _check_training(model: nn.Module) -> None:
    if not model.training:
        raise RuntimeError(f"the fused {model.name} step trains: call model.train() first")


def fused_ffm_step(model: FFM, optimizer: torch.optim.Optimizer) -> Step | None:
    """FFM's whole step in one C++ call, or None (dropout, batch norm, another optimizer)."""
    if type(model) is not FFM:
        return None
    if not isinstance(model.norm, nn.Identity) or model.dropout.p != 0:
        return None
    params = [model.embedding.table.weight, model.linear.weights.weight, model.linear.bias]
    groups = _groups(optimizer, params)
    if groups is None:
        return None
    embedding = model.embedding

    def step(ids: torch.Tensor, labels: torch.Tensor) -> float:
        _check_training(model)
        states = [optimizer.state[p]["sum"] for p in params]
        rates, eps = _count_step(optimizer, params, groups)
        return native.ffm_train_step(
            params, states, ids, labels, embedding.left, embedding.right, rates, eps
        )

    return step


def fused_attention_step(
    model: AttentionFM, optimizer: torch.optim.Optimizer, strengths: dict[int, float]
) -> Step | None:
    """An attention model's whole step without autograd, or None (batch norm, in-place or
    p = 1 dropout, a penalty on other parameters than its W and Q, another optimizer)."""
    if type(model) is not AttentionFM:
        return None
    dropout = model.dropout
    if not isinstance(model.norm, nn.Identity) or dropout.inplace or dropout.p >= 1:
        return None
    embedding, attention, linear = model.embedding, model.attention, model.linear
    table, weight, bias = embedding.table.weight, attention.project.weight, attention.project.bias
    score, pair_weights, prediction = attention.score, attention.pair_weights, model.prediction
    # the tables first (their updates are row updates), then the dense parameters
    params = [table, linear.weights.weight, linear.bias, weight, bias, score, prediction]
    if pair_weights is not None:
        params.append(pair_weights)
    if not set(strengths) <= {id(weight), id(pair_weights)}:
        return None
    groups = _groups(optimizer, params)
    if groups is None:
        return None
    layer = (weight, bias, score, pair_weights)

    def step(ids: torch.Tensor, labels: torch.Tensor) -> float:
        _check_training(model)
        model.check_input(ids, None)
        with torch.no_grad():
            predictions = native.linear_forward(linear.weights.weight, ids).add_(linear.bias)
            distinct = native.unique_ids(ids, model.n_features)  # for both tables' rows
            pooled, saved = kernels.attention_interaction_forward(
                table, ids, embedding.left, embedding.right, model.field_aware, *layer
            )
            mask = dropout_mask(dropout, pooled)  # the draw the unfused step makes
            dropped = pooled if mask is None else pooled * mask
            predictions.addmv_(dropped, prediction)
            error = predictions.sub_(labels)  # ∂ of ½ Σ (ŷ - y)² by ŷ
            loss = 0.5 * float(error.square().sum())
            grad_pooled = torch.outer(error, prediction)
            if mask is not None:
                grad_pooled.mul_(mask)
            rows, block, *grads = kernels.attention_interaction_backward(
                saved, grad_pooled, distinct
            )  # ∂W, ∂b, ∂h and ∂q (None without Q)
            grads = [g for g in grads if g is not None]
            features, local = distinct
            linear_block = native.linear_backward(local, features.numel(), error)
            # aligned with params[2:]: the linear bias, W, b, h, p (, q)
            dense = [error.sum().reshape(1), *grads[:3], dropped.t().mv(error), *grads[3:]]
            for param, grad in zip(params[2:], dense, strict=True):
                strength = strengths.get(id(param))
                if strength is not None:  # + ∂(λ ½ Σ p²)
                    grad.add_(param, alpha=strength)
                    loss += 0.5 * strength * float(param.square().sum())
            rates, eps = _count_step(optimizer, params, groups)
            sums = [optimizer.state[p]["sum"] for p in params]
            for param, state_sum, rows_, grad, rate, e in (
                (table, sums[0], rows, block, rates[0], eps[0]),
                (linear.weights.weight, sums[1], features, linear_block, rates[1], eps[1]),
            ):
                if not native.adagrad_rows(param, state_sum, rows_, grad, rate, e):
                    raise RuntimeError("fused step: gradient rows out of order")  # a kernel bug
            native.adagrad_dense_many(params[2:], sums[2:], dense, rates[2:], eps[2:])
        return loss

    return step
