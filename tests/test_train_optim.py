"""``SparseAdagrad`` is torch's Adagrad with a leaner sparse step: bit for bit with the
PyTorch row update; with the CPU backend's C++ one (``kernels=aoaffm.fast.native``) every operation is
correctly rounded, which torch's vectorized square root is not (it may differ by one unit in
the last place)."""

from __future__ import annotations

import functools

import pytest
import torch

from aoaffm.fast import FastModel, native
from aoaffm.fast.models import FORWARDS
from aoaffm.models import create
from aoaffm.train.optim import SparseAdagrad, coalesced_rows

NativeAdagrad = functools.partial(SparseAdagrad, kernels=native)  # the C++ updates

# torch's own sparse step (the reference here) warns that it skips invariant checks
pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks")
N_FEATURES, N_FIELDS = 40, 5


def _groups(model):
    tables = [m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    ids = {id(t) for t in tables}
    return [{"params": tables}, {"params": [p for p in model.parameters() if id(p) not in ids]}]


def _train(optimizer_class, name, steps=6, **settings):
    torch.manual_seed(0)
    model = create(name, N_FEATURES, N_FIELDS, 6, attention_size=4, dropout=0.2)
    # the backend's forward: its hand-written backward passes hand some tables coalesced
    # gradients, the reference's nn.Embedding uncoalesced ones
    computed = FastModel(model, FORWARDS[type(model)])
    optimizer = optimizer_class(_groups(model), lr=0.05, initial_accumulator_value=1e-8, **settings)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        ids = torch.randint(0, N_FEATURES // N_FIELDS, (16, N_FIELDS), generator=gen)
        ids += torch.arange(N_FIELDS) * (N_FEATURES // N_FIELDS)
        labels = torch.randint(0, 2, (16,), generator=gen).float() * 2 - 1
        torch.manual_seed(100 + step)  # the same dropout masks for both optimizers
        loss = 0.5 * (computed(ids) - labels).square().sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model, optimizer


@pytest.mark.parametrize("name", ["fm", "ffm", "aoaffm"])  # uncoalesced and coalesced grads
@pytest.mark.parametrize(
    "settings", [{}, {"lr_decay": 0.1, "maximize": True}], ids=["plain", "decay+maximize"]
)
def test_same_weights_and_state_as_torch_adagrad(name, settings):
    with native.enabled(False):  # the PyTorch row update (and forward); the C++ one below
        ours, ours_opt = _train(SparseAdagrad, name, **settings)
        torch_model, torch_opt = _train(torch.optim.Adagrad, name, **settings)
    for (key, a), b in zip(
        ours.state_dict().items(), torch_model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), key
    ours_state, torch_state = ours_opt.state_dict(), torch_opt.state_dict()
    assert ours_state["param_groups"] == torch_state["param_groups"]
    for index, state in torch_state["state"].items():
        assert torch.equal(ours_state["state"][index]["sum"], state["sum"])
        assert torch.equal(ours_state["state"][index]["step"], state["step"])


def test_loads_a_torch_adagrad_checkpoint():
    _, torch_opt = _train(torch.optim.Adagrad, "fm", steps=2)
    model, _ = _train(torch.optim.Adagrad, "fm", steps=2)
    ours = SparseAdagrad(_groups(model), lr=0.05, initial_accumulator_value=1e-8)
    ours.load_state_dict(torch_opt.state_dict())
    assert ours.state_dict()["state"].keys() == torch_opt.state_dict()["state"].keys()


def test_weight_decay_with_sparse_gradients_is_an_error_as_in_torch():
    table = torch.nn.Embedding(5, 2, sparse=True)
    table(torch.tensor([1, 3])).sum().backward()
    optimizer = SparseAdagrad(table.parameters(), lr=0.1, weight_decay=0.01)
    with pytest.raises(RuntimeError, match="weight_decay"):
        optimizer.step()


def test_rows_in_order_are_used_as_they_are_and_others_coalesced():
    values = torch.arange(6.0).view(3, 2)
    in_order = torch.sparse_coo_tensor(
        torch.tensor([[0, 2, 4]]), values, (5, 2), check_invariants=False
    )
    rows, got = coalesced_rows(in_order)
    assert rows.tolist() == [0, 2, 4]
    assert got.data_ptr() == in_order._values().data_ptr()  # no copy, no sort
    repeated = torch.sparse_coo_tensor(
        torch.tensor([[4, 0, 4]]), values, (5, 2), check_invariants=False
    )
    rows, got = coalesced_rows(repeated)
    assert rows.tolist() == [0, 4] and got.tolist() == [[2.0, 3.0], [4.0, 6.0]]


def _one_sparse_step(optimizer_class, weight, rows, grad, steps=3, **settings):
    param = torch.nn.Parameter(weight.clone())
    optimizer = optimizer_class([param], lr=0.05, initial_accumulator_value=1e-8, **settings)
    for _ in range(steps):
        param.grad = torch.sparse_coo_tensor(rows.unsqueeze(0), grad, weight.shape)
        optimizer.step()
    return param.detach(), optimizer.state[param]["sum"]


@pytest.mark.parametrize("size", [1, 6, 40, 256])  # torch's scalar tail and vector bodies
def test_native_row_update_is_correctly_rounded_and_within_an_ulp_of_torch(size):
    if native.library() is None:
        pytest.skip("no C++ compiler: the fused kernels are not built")
    gen = torch.Generator().manual_seed(size)
    weight = torch.randn(300, size, generator=gen) * 0.01
    rows = torch.randperm(300, generator=gen)[:200].sort().values
    grad = torch.rand(200, size, generator=gen) * 0.05
    ours, ours_sum = _one_sparse_step(NativeAdagrad, weight, rows, grad, steps=1)
    # float32 IEEE operations one at a time (numpy), the update as one rounding (float64)
    import numpy as np

    g, w = grad.numpy(), weight[rows].numpy()
    total = np.float32(1e-8) + g * g
    quotient = g / (np.sqrt(total) + np.float32(1e-10))
    expected = (w.astype(np.float64) + quotient.astype(np.float64) * np.float32(-0.05)).astype(
        np.float32
    )
    assert np.array_equal(ours_sum[rows].numpy(), total)
    assert np.array_equal(ours[rows].numpy(), expected)
    untouched = torch.ones(300, dtype=torch.bool)
    untouched[rows] = False
    assert torch.equal(ours[untouched], weight[untouched])
    # and torch's own step agrees up to its square root's last bit, over several steps
    reference, reference_sum = _one_sparse_step(torch.optim.Adagrad, weight, rows, grad)
    ours, ours_sum = _one_sparse_step(NativeAdagrad, weight, rows, grad)
    assert torch.equal(ours_sum, reference_sum)
    torch.testing.assert_close(ours, reference, rtol=3e-7, atol=1e-9)


def test_native_row_update_coalesces_rows_out_of_order_or_repeated():
    if native.library() is None:
        pytest.skip("no C++ compiler: the fused kernels are not built")
    weight = torch.randn(10, 4, generator=torch.Generator().manual_seed(1))
    values = torch.rand(4, 4, generator=torch.Generator().manual_seed(2))
    rows = torch.tensor([7, 2, 7, 5])  # out of order, row 7 twice
    results = []
    for grad in (
        torch.sparse_coo_tensor(rows.unsqueeze(0), values, weight.shape),
        torch.sparse_coo_tensor(rows.unsqueeze(0), values, weight.shape).coalesce(),
    ):
        param = torch.nn.Parameter(weight.clone())
        optimizer = NativeAdagrad([param], lr=0.05, initial_accumulator_value=1e-8)
        param.grad = grad
        optimizer.step()
        results.append(param.detach())
    assert torch.equal(results[0], results[1])
    assert not torch.equal(results[0][7], weight[7]) and torch.equal(results[0][0], weight[0])
