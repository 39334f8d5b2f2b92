"""Adagrad whose sparse-gradient step costs a few tensor operations on the rows touched.

torch's Adagrad handles a sparse gradient with about a dozen operations (coalesce, square,
a sparse add into the state, ``sparse_mask`` to read it back, root, divide, a sparse add into
the weights), each with its own pass and dispatch. ``SparseAdagrad.step`` does the same
arithmetic on the touched rows directly: read their sums, add g², write them back, and add
-lr g / (√sum + eps) to the weights. Results are bit-for-bit those of ``torch.optim.Adagrad``
(the tests compare them), its state and ``state_dict`` are the same, and dense gradients
still take torch's own (foreach) step.

Built with ``kernels=aoaffm.fast.native`` (``FastModel.optimizer_kernels``: the trainer does so for the runs the CPU backend
takes, all of whose parameters are CPU float32), the row update is one C++ pass instead of
six operations, and dense gradients take the same C++ update instead of torch's step (whose
per-step bookkeeping costs more than the update for these small tensors). Its every
operation is IEEE correctly rounded; torch's vectorized square root is not (about 0.6 % of
its results are one unit in the last place off), so the weights may differ from torch's by
that unit while the sums stay identical.
"""

from __future__ import annotations

from types import ModuleType

import torch


class SparseAdagrad(torch.optim.Adagrad):
    """``torch.optim.Adagrad`` with a leaner step for sparse gradients (same results).

    ``kernels``: the C++ updates (``aoaffm.fast.native``: ``adagrad_rows`` and
    ``adagrad_dense_many``) for parameters that are all CPU float32; None: torch's arithmetic.
    """

    def __init__(self, params, *args, kernels: ModuleType | None = None, **kwargs):
        super().__init__(params, *args, **kwargs)
        self.kernels = kernels

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        hidden = []
        dense = []  # (param, group): dense gradients for the C++ update, all in one call
        deferred = False  # dense gradients left for torch's own step
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    self._sparse_step(param, group)
                elif self._native_dense(param, group):
                    dense.append((param, group))
                else:
                    deferred = True
                    continue
                hidden.append((param, param.grad))
        if dense:
            torch._foreach_add_([self.state[p]["step"] for p, _ in dense], 1)  # as torch counts
            self.kernels.adagrad_dense_many(
                [p for p, _ in dense],
                [self.state[p]["sum"] for p, _ in dense],
                [-p.grad if g["maximize"] else p.grad for p, g in dense],
                [self.learning_rate(p, g) for p, g in dense],
                [g["eps"] for _, g in dense],
            )
        for param, _ in hidden:
            param.grad = None  # torch's step below then sees only what is left
        try:
            if deferred:
                super().step()
        finally:
            for param, grad in hidden:
                param.grad = grad
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's ``zero_grad`` groups gradients by device and dtype for a foreach zeroing; with
        ``set_to_none`` (the trainer's call) a plain loop is all it takes, for a fraction of
        the per-step cost."""
        if not set_to_none:
            return super().zero_grad(set_to_none=False)
        for group in self.param_groups:
            for param in group["params"]:
                param.grad = None

    def _native_dense(self, param: torch.Tensor, group: dict) -> bool:
        """A dense gradient the C++ update can take (no weight decay, nothing differentiable)."""
        return (
            self.kernels is not None
            and group["weight_decay"] == 0
            and not group["differentiable"]
            and param.is_contiguous()
        )

    def learning_rate(self, param: torch.Tensor, group: dict) -> float:
        """The learning rate of ``param``'s step just counted: lr / (1 + (step - 1) lr_decay).
        (Public for ``aoaffm.fast.steps``, which counts the step and updates the parameters
        itself.)"""
        if group["lr_decay"] == 0:  # the trainer's case: no need to read the step back
            return group["lr"]
        return group["lr"] / (1 + (float(self.state[param]["step"]) - 1) * group["lr_decay"])

    def _sparse_step(self, param: torch.Tensor, group: dict) -> None:
        if group["weight_decay"] != 0:
            raise RuntimeError("weight_decay option is not compatible with sparse gradients")
        state = self.state[param]
        state["step"] += 1
        lr = self.learning_rate(param, group)
        grad = param.grad
        if self.kernels is not None and param.is_contiguous():
            # the kernel takes the rows as they come when strictly increasing (the fused
            # kernels' gradients); otherwise it changes nothing and they are coalesced first
            if not self._native_rows(param, grad, lr, group):
                self._native_rows(param, grad.coalesce(), lr, group)
            return
        rows, values = coalesced_rows(grad)
        if group["maximize"]:
            values = -values
        sums = state["sum"].index_select(0, rows).add_(values * values)
        state["sum"].index_copy_(0, rows, sums)
        param.index_add_(0, rows, values / sums.sqrt_().add_(group["eps"]), alpha=-lr)

    def _native_rows(self, param: torch.Tensor, grad: torch.Tensor, lr: float, group: dict):
        values = -grad._values() if group["maximize"] else grad._values()
        return self.kernels.adagrad_rows(
            param, self.state[param]["sum"], grad._indices()[0], values, lr, group["eps"]
        )


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
