"""Each model's forward through the backend's kernels, registered by model class.

A function here computes what the class's ``forward`` in ``aoaffm.models`` computes (the
same equation, the same parameters, dropout on the same units with the same keep rate),
in fewer passes: FM's two lookups and its interaction in one kernel, FFM's pair dots without
a [B, P, K] tensor, the attention family's products, scores, softmax and pooling in one
autograd node, the linear part's lookups and dropout masks in C++. Each falls back to the
hand-written autograd of ``kernels`` where the C++ kernels cannot take the tensors (the
tests' float64), so it is compared with the reference to float64 rounding as well as in
float32. ``tests/test_fast_native.py`` (float32, C++) and ``tests/test_fast_kernels.py`` (float64) hold every one
equal to its reference, values and gradients.

A fast path for a tenth model: write ``def my_model(model, ids, values)`` here from the
kernels and blocks below, add it to ``FORWARDS`` under the model's class, and add the model
to the comparisons in ``tests/test_fast_native.py``. A class without an entry trains
through its reference ``forward``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from aoaffm.fast import kernels, native
from aoaffm.models import FFM, FM, HOFM, AttentionFM, DeepCross, WideDeep
from aoaffm.models.deep import ResidualUnit
from aoaffm.models.layers import LinearPart, anova3

Forward = Callable[[nn.Module, torch.Tensor, torch.Tensor | None], torch.Tensor]


# --------------------------------------------------------------------------- blocks


def linear_part(linear: LinearPart, ids: torch.Tensor, values: torch.Tensor | None):
    """``linear(ids, values)``; for one-hot rows one C++ pass with a coalesced gradient."""
    if values is None and native.usable(linear.weights.weight):
        return linear.bias + kernels.linear_terms(linear.weights.weight, ids)
    return linear(ids, values)


def dropout_mask(module: nn.Dropout, x: torch.Tensor) -> torch.Tensor | None:
    """The mask ``dropout`` multiplies ``x`` by when C++ draws it (training, 0 < p < 1, CPU
    float32), else None. torch's CPU ``bernoulli_`` costs ~20 ns a number: 30 ms a step for
    FFM's [128, 45, 256] pair products, more than the rest of the step. Same distribution
    and scaling (kept units times 1 / (1 - p)); the masks themselves differ from torch's for
    the same seed. (Public for ``aoaffm.fast.steps``, which applies it itself.)"""
    if module.training and 0 < module.p < 1 and not module.inplace and native.usable(x):
        return native.dropout_mask(x.shape, 1.0 - module.p)
    return None


def dropout(module: nn.Dropout, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` with the mask drawn by ``dropout_mask``."""
    if not module.training or module.p == 0:  # what nn.Dropout returns, without its call
        return x
    mask = dropout_mask(module, x)
    return module(x) if mask is None else x * mask


def residual_unit(unit: ResidualUnit, x: torch.Tensor, inner: torch.Tensor | None = None):
    """``unit(x)`` = ReLU(x + W2 ReLU(W1 x + b1) + b2); ``inner``: W1 x + b1 if computed."""
    if inner is None:
        inner = kernels.linear(unit.inner, x)
    return torch.relu(x + kernels.linear(unit.outer, torch.relu(unit.norm(inner))))


def sequential(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``layers(x)`` with each dropout's mask drawn by ``dropout_mask`` and the linear layers'
    products through ``kernels.linear`` (bf16 under ``kernels.bf16_products``)."""
    for layer in layers:
        if isinstance(layer, nn.Dropout):
            x = dropout(layer, x)
        elif isinstance(layer, nn.Linear):
            x = kernels.linear(layer, x)
        elif isinstance(layer, ResidualUnit):
            x = residual_unit(layer, x)
        else:
            x = layer(x)
    return x


def field_aware_products(table, ids, values, left, right) -> torch.Tensor:
    """``FieldAwareEmbedding.pair_products``: the C++ gather and gradient rows."""
    products = kernels.field_aware_pair_products(table, ids, left, right)
    if values is not None:
        values = values.to(products.dtype)
        products = products * (values[:, left] * values[:, right]).unsqueeze(-1)
    return products


# --------------------------------------------------------------------------- the models


def fm(model: FM, ids: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
    model.check_input(ids, values)
    if values is None:  # both lookups and the interaction in one kernel
        table, linear_table = model.embedding.table.weight, model.linear.weights.weight
        interaction, linear = kernels.fm_terms(table, linear_table, ids)
        linear = model.linear.bias + linear
    else:
        interaction = kernels.fm_interaction(model.embedding(ids, values))
        linear = linear_part(model.linear, ids, values)
    return linear + dropout(model.dropout, model.norm(interaction)).sum(dim=1)


def hofm(model: HOFM, ids: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
    model.check_input(ids, values)
    order2 = kernels.fm_interaction(model.embedding(ids, values))
    order3 = anova3(model.embedding3(ids, values))
    interaction = torch.cat([order2, order3], dim=1)
    linear = linear_part(model.linear, ids, values)
    return linear + dropout(model.dropout, model.norm(interaction)).sum(dim=1)


def ffm(model: FFM, ids: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
    model.check_input(ids, values)
    embedding = model.embedding
    table, left, right = embedding.table.weight, embedding.left, embedding.right
    dropout_active = model.training and model.dropout.p > 0
    if isinstance(model.norm, nn.Identity) and not dropout_active:
        # nothing acts between the products and their sum: Σ_pairs <v, v>, no [B, P, K]
        if values is None and native.usable(table):  # one C++ pass
            interaction = kernels.field_aware_interaction(table, ids, left, right)
        else:
            dots = kernels.field_aware_pair_dots(table, ids, left, right)  # [B, P]
            if values is not None:
                values = values.to(dots.dtype)
                dots = dots * values[:, left] * values[:, right]
            interaction = dots.sum(dim=1)
        return linear_part(model.linear, ids, values) + interaction
    pairs = dropout(model.dropout, field_aware_products(table, ids, values, left, right))
    return linear_part(model.linear, ids, values) + model.norm(pairs.sum(dim=1)).sum(dim=1)


def attention_fm(model: AttentionFM, ids: torch.Tensor, values: torch.Tensor | None):
    model.check_input(ids, values)
    attention, embedding = model.attention, model.embedding
    table, q = embedding.table.weight, attention.pair_weights
    layer = (attention.project.weight, attention.project.bias, attention.score)
    if values is None and native.usable(table, *layer, *([] if q is None else [q])):
        # pair products and attention pooling in one node of C++ passes around torch's
        # matrix products
        pooled = kernels.attention_interaction(
            table, ids, embedding.left, embedding.right, model.field_aware, *layer, q
        )
    else:
        if model.field_aware:
            pairs = field_aware_products(table, ids, values, embedding.left, embedding.right)
        else:
            pairs = kernels.pair_products(embedding(ids, values), embedding.left, embedding.right)
        pooled = kernels.attention_pooling(pairs, *layer, q)
    interaction = dropout(model.dropout, model.norm(pooled)) @ model.prediction.to(pooled.dtype)
    return linear_part(model.linear, ids, values) + interaction


def wide_deep(model: WideDeep, ids: torch.Tensor, values: torch.Tensor | None):
    model.check_input(ids, values)
    table, first = model.embedding.table.weight, model.deep[0]
    if values is None and native.usable(table, first.weight):  # the first layer by distinct ids
        hidden = kernels.lookup_linear(table, first.weight, first.bias, ids)
        deep = sequential(model.deep[1:], hidden)
    else:
        deep = sequential(model.deep, model.concatenated(ids, values))
    return linear_part(model.linear, ids, values) + deep.squeeze(1)


def deepcross(model: DeepCross, ids: torch.Tensor, values: torch.Tensor | None):
    model.check_input(ids, values)
    table, unit = model.embedding.table.weight, model.units[0]
    if values is None and native.usable(table, unit.inner.weight):
        # the first residual unit's W1 x by distinct ids; x itself for its skip connection
        inner, x = kernels.lookup_linear(
            table, unit.inner.weight, unit.inner.bias, ids, with_inputs=True
        )
        x = sequential(model.units[1:], residual_unit(unit, x, inner))
    else:
        x = sequential(model.units, model.concatenated(ids, values))
    return kernels.linear(model.output, x).squeeze(1)


# The class itself, not a subclass: a subclass may compute something else in its forward.
FORWARDS: dict[type, Forward] = {
    FM: fm,
    HOFM: hofm,
    FFM: ffm,
    AttentionFM: attention_fm,
    WideDeep: wide_deep,
    DeepCross: deepcross,
}
