"""The hand-written backward passes of ``aoaffm.fast.kernels`` against the reference.

Each function must give the values and gradients of the reference composition in
``aoaffm.models.layers`` it replaces (float64, to rounding) and pass gradcheck; every model's
forward in ``aoaffm.fast.models`` must give the reference model's outputs and gradients
(float64, where the C++ kernels stand aside and these functions compute); under autocast
the backend is not selected.
"""

from __future__ import annotations

import pytest
import torch

from aoaffm.fast import FastModel, kernels
from aoaffm.fast.models import FORWARDS
from aoaffm.models import create
from aoaffm.models.layers import AttentionPooling, FieldAwareEmbedding, field_pairs, fm_interaction

N_FEATURES, N_FIELDS, K, T, BATCH = 14, 4, 3, 5, 7
TOL = {"rtol": 1e-12, "atol": 1e-12}


def _randn(*shape, seed=0, grad=True):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=grad)


def _ids(seed=0, n_features=N_FEATURES, batch=BATCH):
    # repeated features within and across rows, so that gradient rows must be summed
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, n_features // 2, (batch, N_FIELDS), generator=gen)


def field_aware_reference(table, ids, sparse=True):
    """``FieldAwareEmbedding.pair_products`` with ``table`` as its weights."""
    embedding = FieldAwareEmbedding(N_FEATURES, N_FIELDS, K).double()
    del embedding.table.weight
    embedding.table.weight = table  # a plain tensor: gradients flow to the caller's
    embedding.table.sparse = sparse
    return embedding.pair_products(ids, None)


def _grads(output, inputs, seed=9):
    upstream = _randn(*output.shape, seed=seed, grad=False)
    grads = torch.autograd.grad(output, inputs, upstream)
    return [g.to_dense() if g.is_sparse else g for g in grads]


def test_fm_interaction_matches_autograd_and_gradcheck():
    vectors = _randn(BATCH, N_FIELDS, K)
    fused = kernels.fm_interaction(vectors)
    plain = fm_interaction(vectors)
    torch.testing.assert_close(fused, plain, **TOL)
    torch.testing.assert_close(_grads(fused, [vectors]), _grads(plain, [vectors]), **TOL)
    assert torch.autograd.gradcheck(kernels.fm_interaction, (vectors,))


def test_fm_terms_match_autograd_with_coalesced_gradients():
    ids = _ids(seed=13)
    tables = [_randn(N_FEATURES, K, seed=14), _randn(N_FEATURES, 1, seed=15)]
    interaction, linear = kernels.fm_terms(*tables, ids)
    plain_interaction = fm_interaction(tables[0][ids])
    plain_linear = tables[1][ids].squeeze(-1).sum(dim=1)
    torch.testing.assert_close((interaction, linear), (plain_interaction, plain_linear), **TOL)
    upstream = _randn(BATCH, K, seed=16, grad=False), _randn(BATCH, seed=17, grad=False)
    fused = torch.autograd.grad((interaction, linear), tables, upstream)
    plain = torch.autograd.grad((plain_interaction, plain_linear), tables, upstream)
    assert all(g.is_sparse and g.is_coalesced() for g in fused)
    # (the reference's gradient is gradchecked in test_models_equations)
    torch.testing.assert_close([g.to_dense() for g in fused], list(plain), **TOL)


def test_pair_products_match_autograd_and_gradcheck():
    left, right = field_pairs(N_FIELDS)
    vectors = _randn(BATCH, N_FIELDS, K)
    fused = kernels.pair_products(vectors, left, right)
    plain = vectors[:, left] * vectors[:, right]
    torch.testing.assert_close(fused, plain, **TOL)
    torch.testing.assert_close(_grads(fused, [vectors]), _grads(plain, [vectors]), **TOL)
    assert torch.autograd.gradcheck(lambda v: kernels.pair_products(v, left, right), (vectors,))


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
def test_field_aware_pair_products_match_autograd(sparse):
    left, right = field_pairs(N_FIELDS)
    ids = _ids()
    table = _randn(N_FEATURES * N_FIELDS, K)
    fused = kernels.field_aware_pair_products(table, ids, left, right, sparse=sparse)
    plain = field_aware_reference(table, ids, sparse=sparse)
    torch.testing.assert_close(fused, plain, **TOL)
    torch.testing.assert_close(_grads(fused, [table]), _grads(plain, [table]), **TOL)


def test_field_aware_sparse_gradient_is_coalesced_and_names_only_batch_features():
    """The kernel hands autograd a coalesced gradient with one row per (feature, field) of
    the batch's distinct features (autograd may drop the flag when it stores ``.grad``)."""
    left, right = field_pairs(N_FIELDS)
    ids = _ids(seed=1)
    table = torch.nn.Parameter(_randn(N_FEATURES * N_FIELDS, K, grad=False))
    handed = []
    table.register_hook(handed.append)
    kernels.field_aware_pair_products(table, ids, left, right).square().sum().backward()
    (grad,) = handed
    assert grad.is_sparse and grad.is_coalesced()
    features = sorted(set(ids.flatten().tolist()))
    expected = [f * N_FIELDS + field for f in features for field in range(N_FIELDS)]
    assert grad.indices()[0].tolist() == expected
    torch.testing.assert_close(grad.to_dense(), table.grad.to_dense(), **TOL)


def test_field_aware_pair_products_gradcheck():
    left, right = field_pairs(N_FIELDS)
    ids = _ids(seed=2)

    def products(table):
        return kernels.field_aware_pair_products(table, ids, left, right, sparse=False)

    assert torch.autograd.gradcheck(products, (_randn(N_FEATURES * N_FIELDS, K),))


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
def test_field_aware_pair_dots_match_the_summed_products(sparse):
    left, right = field_pairs(N_FIELDS)
    ids = _ids(seed=11)
    table = _randn(N_FEATURES * N_FIELDS, K)
    dots = kernels.field_aware_pair_dots(table, ids, left, right, sparse=sparse)
    plain = field_aware_reference(table, ids, sparse=sparse).sum(-1)
    assert dots.shape == (BATCH, left.numel())
    torch.testing.assert_close(dots, plain, **TOL)
    torch.testing.assert_close(_grads(dots, [table]), _grads(plain, [table]), **TOL)


def test_field_aware_pair_dots_gradcheck_and_coalesced_gradient():
    left, right = field_pairs(N_FIELDS)
    ids = _ids(seed=12)

    def dots(table):
        return kernels.field_aware_pair_dots(table, ids, left, right, sparse=False)

    assert torch.autograd.gradcheck(dots, (_randn(N_FEATURES * N_FIELDS, K),))
    table = torch.nn.Parameter(_randn(N_FEATURES * N_FIELDS, K, grad=False))
    handed = []
    table.register_hook(handed.append)
    kernels.field_aware_pair_dots(table, ids, left, right).square().sum().backward()
    assert handed[0].is_sparse and handed[0].is_coalesced()


@pytest.mark.parametrize("interaction_attention", [False, True], ids=["afm", "aoa"])
def test_attention_pooling_matches_autograd_and_gradcheck(interaction_attention):
    n_pairs = 6
    layer = AttentionPooling(K, T, n_pairs, interaction_attention).double()
    with torch.no_grad():  # random, not initial, values: every term of the gradient matters
        for i, param in enumerate(layer.parameters()):
            param.copy_(_randn(*param.shape, seed=10 + i, grad=False))
    pairs = _randn(BATCH, n_pairs, K)
    inputs = [pairs, *layer.parameters()]
    q = (layer.pair_weights,) if interaction_attention else ()
    fused = kernels.attention_pooling(
        pairs, layer.project.weight, layer.project.bias, layer.score, q[0] if q else None
    )
    plain = layer(pairs)
    torch.testing.assert_close(fused, plain, **TOL)
    torch.testing.assert_close(_grads(fused, inputs), _grads(plain, inputs), **TOL)

    def pooled(pairs, weight, bias, score, *q):
        return kernels.attention_pooling(pairs, weight, bias, score, q[0] if q else None)

    args = (pairs, layer.project.weight, layer.project.bias, layer.score, *q)
    assert torch.autograd.gradcheck(pooled, args)


@pytest.mark.parametrize("with_inputs", [False, True], ids=["hidden", "hidden+inputs"])
@pytest.mark.parametrize("fields", ["own ids", "shared ids"])
def test_lookup_linear_matches_the_concatenated_layer(with_inputs, fields):
    """The deep models' first layer by distinct (field, feature): W [e_1 .. e_F] + b and its
    gradients, with each field's own id range (the data sets) and with one feature in
    several fields (the models accept it: its gradient rows are summed)."""
    hidden = 6
    ids = _ids(seed=21)
    if fields == "own ids":
        ids = ids % (N_FEATURES // N_FIELDS) + torch.arange(N_FIELDS) * (N_FEATURES // N_FIELDS)
    table, weight, bias = (
        _randn(N_FEATURES, K, seed=1),
        _randn(hidden, N_FIELDS * K, seed=2),
        _randn(hidden, seed=3),
    )
    inputs = table[ids].flatten(1)
    plain = [inputs @ weight.t() + bias] + ([inputs] if with_inputs else [])
    fused = kernels.lookup_linear(table, weight, bias, ids, with_inputs=with_inputs)
    fused = list(fused) if with_inputs else [fused]
    torch.testing.assert_close(fused, plain, **TOL)
    upstream = [_randn(*out.shape, seed=9 + i, grad=False) for i, out in enumerate(plain)]
    grads = torch.autograd.grad(fused, [table, weight, bias], upstream)
    assert grads[0].is_sparse and grads[0].is_coalesced()
    expected = torch.autograd.grad(plain, [table, weight, bias], upstream)
    torch.testing.assert_close([grads[0].to_dense(), *grads[1:]], list(expected), **TOL)


@pytest.mark.parametrize("name", ["afm", "aoafm", "affm", "aoaffm", "ffm", "fm", "hofm"])
@pytest.mark.parametrize("with_values", [False, True], ids=["one-hot", "values"])
@pytest.mark.parametrize("regularized", [True, False], ids=["dropout+bn", "plain"])
def test_fast_models_train_as_the_reference(name, with_values, regularized):
    """Outputs and every parameter's gradient in training mode, with dropout and batch norm
    (FFM's pair products) and without (FFM's pair dots), through the hand-written backward
    passes (float64: the C++ kernels stand aside) and through the reference."""
    hparams = {"dropout": 0.3, "batch_norm": True} if regularized else {}

    def run(fast: bool):
        torch.manual_seed(3)
        model = create(name, N_FEATURES, N_FIELDS, K, attention_size=T, **hparams)
        model = model.double().train()
        computed = FastModel(model, FORWARDS[type(model)]) if fast else model
        values = _randn(BATCH, N_FIELDS, seed=4, grad=False) if with_values else None
        torch.manual_seed(5)  # the same dropout masks in both runs
        output = computed(_ids(seed=6), values)
        grads = _grads(output, list(model.parameters()))
        return output.detach(), grads

    torch.testing.assert_close(run(fast=True), run(fast=False), **TOL)


def test_autocast_trains_the_reference():
    from aoaffm import fast

    model = create("aoaffm", N_FEATURES, N_FIELDS, 8, attention_size=8)
    assert fast.select(model, torch.device("cpu"), bf16=True) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(_ids(seed=7))
    output.float().sum().backward()
    assert torch.isfinite(output.float()).all()
    assert model.embedding.table.weight.grad.is_sparse
