"""Adagrad whose sparse-gradient step costs a few tensor operations on the rows touched.

torch's Adagrad handles a sparse gradient with about a dozen operations (coalesce, square,
a sparse add into the state, ``sparse_mask`` to read it back, root, divide, a sparse add into
the weights), each with its own pass and dispatch. ``SparseAdagrad.step`` does the same
arithmetic on the touched rows directly: read their sums, add g², write them back, and add
-lr g / (√sum + eps) to the weights. Results are bit-for-bit those of ``torch.optim.Adagrad``
(the tests compare them), its state and ``state_dict`` are the same, and dense gradients
still take torch's own (foreach) step.
"""

from __future__ import annotations

import torch


class SparseAdagrad(torch.optim.Adagrad):
    """``torch.optim.Adagrad`` with a leaner step for sparse gradients (same results)."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        hidden = []
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None and param.grad.is_sparse:
                    self._sparse_step(param, group)
                    hidden.append((param, param.grad))
                    param.grad = None  # torch's step below then sees only dense gradients
        try:
            super().step()
        finally:
            for param, grad in hidden:
                param.grad = grad
        return loss

    def _sparse_step(self, param: torch.Tensor, group: dict) -> None:
        if group["weight_decay"] != 0:
            raise RuntimeError("weight_decay option is not compatible with sparse gradients")
        state = self.state[param]
        state["step"] += 1
        step = float(state["step"])
        lr = group["lr"] / (1 + (step - 1) * group["lr_decay"])
        rows, values = coalesced_rows(param.grad)
        if group["maximize"]:
            values = -values
        sums = state["sum"].index_select(0, rows).add_(values * values)
        state["sum"].index_copy_(0, rows, sums)
        param.index_add_(0, rows, values / sums.sqrt_().add_(group["eps"]), alpha=-lr)


def coalesced_rows(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices (unique, ascending) and rows of a sparse gradient.

    A gradient built already coalesced loses torch's flag when autograd stores it; on the CPU
    a look at its indices (strictly increasing?) spares the coalesce, a sort of every row.
    """
    if not grad.is_coalesced():
        rows = grad._indices()[0]
        in_order = grad.device.type == "cpu" and (
            rows.numel() < 2 or bool((rows[1:] > rows[:-1]).all())
        )
        if not in_order:
            grad = grad.coalesce()
    return grad._indices()[0], grad._values()
