"""Each model's forward pass against a brute-force float64 reference with explicit loops.

The references loop over samples, field pairs (i < j) and, for HOFM, triples (i < j < l),
reading the model's parameters but none of its code. Parameters are random (not the small
initial values) and values are non-one, so every term of each equation matters. Batch norm
is checked in eval mode with random running statistics.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import functional_call

from aoaffm.models import MODEL_NAMES, create
from aoaffm.models.deep import ResidualUnit
from aoaffm.models.layers import (
    AttentionPooling,
    FieldAwareEmbedding,
    anova3,
    fm_interaction,
)

FIELD_SIZES = (3, 4, 2, 5)  # n = 14 features in 4 fields, ids contiguous per field
N_FEATURES, N_FIELDS, K, T, BATCH = sum(FIELD_SIZES), len(FIELD_SIZES), 3, 5, 7
REL_TOL = 1e-10


def random_batch(seed: int, with_values: bool):
    gen = torch.Generator().manual_seed(seed)
    offsets = np.cumsum((0, *FIELD_SIZES[:-1]))
    ids = torch.stack(
        [
            torch.randint(size, (BATCH,), generator=gen) + int(off)
            for size, off in zip(FIELD_SIZES, offsets, strict=True)
        ],
        dim=1,
    )
    values = (
        torch.rand(BATCH, N_FIELDS, generator=gen, dtype=torch.float64) * 1.5 + 0.25
        if with_values
        else None
    )
    return ids, values


def randomized(name: str, seed: int = 0, **hparams):
    """A float64 model in eval mode whose every parameter and BN statistic is random."""
    hp = {"attention_size": T, **hparams}
    if name in ("wide_deep", "deepcross"):
        hp["hidden_sizes"] = [6, 4]
    model = create(name, N_FEATURES, N_FIELDS, K, **hp).double().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.7)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.copy_(
                    torch.randn(module.num_features, generator=gen, dtype=torch.float64)
                )
                module.running_var.copy_(
                    torch.rand(module.num_features, generator=gen, dtype=torch.float64) + 0.5
                )
    return model


def numpy_params(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def bn(prm: dict, prefix: str, z: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    if f"{prefix}.running_mean" not in prm:  # batch norm off
        return z
    mean, var = prm[f"{prefix}.running_mean"], prm[f"{prefix}.running_var"]
    return (z - mean) / np.sqrt(var + eps) * prm[f"{prefix}.weight"] + prm[f"{prefix}.bias"]


def linear_part(prm, ids_b, x_b) -> float:
    total = prm["linear.bias"][0]
    for f in range(N_FIELDS):
        total += prm["linear.weights.weight"][ids_b[f], 0] * x_b[f]
    return total


def pairwise_vector(table, ids_b, x_b, field_aware: bool) -> list[np.ndarray]:
    """The rows of eq. 3, one per pair i < j: (v_{i,f_j} ⊙ v_{j,f_i}) x_i x_j (or v_i ⊙ v_j)."""
    rows = []
    for i in range(N_FIELDS):
        for j in range(i + 1, N_FIELDS):
            if field_aware:
                vi, vj = table[ids_b[i] * N_FIELDS + j], table[ids_b[j] * N_FIELDS + i]
            else:
                vi, vj = table[ids_b[i]], table[ids_b[j]]
            rows.append(vi * vj * x_b[i] * x_b[j])
    return rows


def reference(name: str, model, ids: torch.Tensor, values: torch.Tensor | None) -> np.ndarray:
    prm = numpy_params(model)
    ids = ids.numpy()
    xs = np.ones(ids.shape) if values is None else values.numpy()
    out = []
    for ids_b, x_b in zip(ids, xs, strict=True):
        if name == "fm":
            vec = sum(pairwise_vector(prm["embedding.table.weight"], ids_b, x_b, False))
            y = linear_part(prm, ids_b, x_b) + bn(prm, "norm", vec).sum()
        elif name == "hofm":
            order2 = sum(pairwise_vector(prm["embedding.table.weight"], ids_b, x_b, False))
            u = prm["embedding3.table.weight"]
            order3 = np.zeros(K)
            for i in range(N_FIELDS):
                for j in range(i + 1, N_FIELDS):
                    for m in range(j + 1, N_FIELDS):
                        order3 += u[ids_b[i]] * u[ids_b[j]] * u[ids_b[m]] * x_b[i] * x_b[j] * x_b[m]
            y = (
                linear_part(prm, ids_b, x_b)
                + bn(prm, "norm", np.concatenate([order2, order3])).sum()
            )
        elif name == "ffm":
            vec = sum(pairwise_vector(prm["embedding.table.weight"], ids_b, x_b, True))
            y = linear_part(prm, ids_b, x_b) + bn(prm, "norm", vec).sum()
        elif name in ("afm", "aoafm", "affm", "aoaffm"):
            y = reference_attention(name, prm, ids_b, x_b)
        elif name == "wide_deep":
            z = np.concatenate(
                [prm["embedding.table.weight"][ids_b[f]] * x_b[f] for f in range(N_FIELDS)]
            )
            for layer in (0, 4):  # Linear, BN, ReLU, Dropout per hidden layer
                z = prm[f"deep.{layer}.weight"] @ z + prm[f"deep.{layer}.bias"]
                z = np.maximum(bn(prm, f"deep.{layer + 1}", z), 0.0)
            y = linear_part(prm, ids_b, x_b) + (prm["deep.8.weight"] @ z)[0]
        elif name == "deepcross":
            z = np.concatenate(
                [prm["embedding.table.weight"][ids_b[f]] * x_b[f] for f in range(N_FIELDS)]
            )
            for unit in (0, 2):  # ResidualUnit, Dropout per unit
                p = f"units.{unit}"
                hidden = np.maximum(
                    bn(prm, f"{p}.norm", prm[f"{p}.inner.weight"] @ z + prm[f"{p}.inner.bias"]), 0.0
                )
                z = np.maximum(z + prm[f"{p}.outer.weight"] @ hidden + prm[f"{p}.outer.bias"], 0.0)
            y = (prm["output.weight"] @ z + prm["output.bias"])[0]
        out.append(y)
    return np.array(out)


def reference_attention(name, prm, ids_b, x_b) -> float:
    """Eq. 5 literally: w0 + Σ w_i x_i + pᵀ Σ_{i<j} q_ij α_ij (v_{i,f_j} ⊙ v_{j,f_i}) x_i x_j."""
    rows = pairwise_vector(prm["embedding.table.weight"], ids_b, x_b, name in ("affm", "aoaffm"))
    w, b, h = prm["attention.project.weight"], prm["attention.project.bias"], prm["attention.score"]
    scores = [h @ np.maximum(w @ row + b, 0.0) for row in rows]  # eq. 4
    alphas = np.exp(scores) / np.sum(np.exp(scores))
    q = prm.get("attention.pair_weights", np.ones(len(rows)))
    pooled = sum(q[r] * alphas[r] * rows[r] for r in range(len(rows)))
    return linear_part(prm, ids_b, x_b) + prm["prediction"] @ bn(prm, "norm", pooled)


def assert_close(actual: torch.Tensor, expected: np.ndarray) -> None:
    actual = actual.detach().numpy()
    assert actual.shape == expected.shape
    rel = np.abs(actual - expected) / np.abs(expected)
    assert rel.max() < REL_TOL, f"max relative error {rel.max():.3e}"


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "batchnorm"])
@pytest.mark.parametrize("with_values", [False, True], ids=["onehot", "values"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_matches_brute_force(name, with_values, batch_norm):
    model = randomized(name, seed=len(name), dropout=0.5, batch_norm=batch_norm)  # eval: no dropout
    ids, values = random_batch(seed=1, with_values=with_values)
    assert_close(model(ids, values), reference(name, model, ids, values))


def test_dropout_is_active_in_training_only():
    model = randomized("aoaffm", dropout=0.5)
    ids, values = random_batch(seed=2, with_values=True)
    expected = reference("aoaffm", model, ids, values)
    model.train()
    torch.manual_seed(0)
    assert not np.allclose(model(ids, values).detach().numpy(), expected)
    model.eval()
    assert_close(model(ids, values), expected)


# --------------------------------------------------------------------- gradcheck, float64


def _double(*shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True)


def test_gradcheck_fm_interaction_and_anova3():
    vectors = _double(2, 4, 3)
    assert torch.autograd.gradcheck(fm_interaction, (vectors,))
    assert torch.autograd.gradcheck(anova3, (vectors,))


def test_gradcheck_field_aware_pair_products():
    table = _double(N_FEATURES * N_FIELDS, K)
    ids, values = random_batch(seed=3, with_values=True)
    values.requires_grad_(True)
    embedding = FieldAwareEmbedding(N_FEATURES, N_FIELDS, K).double()
    embedding.table.sparse = False  # gradcheck compares dense gradients
    del embedding.table.weight  # the table below stands in for it

    def products(table, values):
        embedding.table.weight = table
        return embedding.pair_products(ids, values)

    assert torch.autograd.gradcheck(products, (table, values))


@pytest.mark.parametrize("interaction_attention", [False, True], ids=["afm", "aoa"])
def test_gradcheck_attention_pooling(interaction_attention):
    n_pairs = 6
    layer = AttentionPooling(K, T, n_pairs, interaction_attention).double()
    names = [n for n, _ in layer.named_parameters()]
    params = [_double(*p.shape, seed=i + 1) for i, (_, p) in enumerate(layer.named_parameters())]

    def pooled(pairs, *params):
        return functional_call(layer, dict(zip(names, params, strict=True)), (pairs,))

    assert torch.autograd.gradcheck(pooled, (_double(2, n_pairs, K), *params))


def test_gradcheck_residual_unit():
    unit = ResidualUnit(4, 3, batch_norm=False).double()
    names = [n for n, _ in unit.named_parameters()]
    params = [_double(*p.shape, seed=i + 1) for i, (_, p) in enumerate(unit.named_parameters())]

    def forward(x, *params):
        return functional_call(unit, dict(zip(names, params, strict=True)), (x,))

    assert torch.autograd.gradcheck(forward, (_double(3, 4), *params))


# --------------------------------------------------------------------- switch semantics


def _copy_shared(target, state: dict):
    """Load every tensor of ``state`` that ``target`` has; return the names left out."""
    missing, unexpected = target.load_state_dict(state, strict=False)
    return set(missing) | set(unexpected)


def test_aoaffm_with_unit_q_equals_affm():
    aoaffm = randomized("aoaffm", seed=5, batch_norm=True)
    with torch.no_grad():
        aoaffm.attention.pair_weights.fill_(1.0)
    affm = (
        create("affm", N_FEATURES, N_FIELDS, K, attention_size=T, batch_norm=True).double().eval()
    )
    assert _copy_shared(affm, aoaffm.state_dict()) == {"attention.pair_weights"}
    ids, values = random_batch(seed=6, with_values=True)
    torch.testing.assert_close(aoaffm(ids, values), affm(ids, values), rtol=1e-13, atol=0)
    with torch.no_grad():  # and Q matters once it is not all ones
        aoaffm.attention.pair_weights[0] = 3.0
    assert not torch.allclose(aoaffm(ids, values), affm(ids, values))


def test_affm_with_identical_field_copies_equals_afm():
    afm = randomized("afm", seed=7, batch_norm=True)
    affm = (
        create("affm", N_FEATURES, N_FIELDS, K, attention_size=T, batch_norm=True).double().eval()
    )
    state = {k: v for k, v in afm.state_dict().items() if k != "embedding.table.weight"}
    assert _copy_shared(affm, state) == {"embedding.table.weight"}
    with torch.no_grad():  # the field-aware table: F identical copies of AFM's vectors
        affm.embedding.vectors.copy_(
            afm.embedding.table.weight.unsqueeze(1).expand(-1, N_FIELDS, -1)
        )
        affm.embedding.vectors.copy_(
            afm.embedding.table.weight.unsqueeze(1).expand(-1, N_FIELDS, -1)
        )
    ids, values = random_batch(seed=8, with_values=True)
    torch.testing.assert_close(affm(ids, values), afm(ids, values), rtol=1e-13, atol=0)
