"""Multi-process data parallelism (torchrun): process group, batch shards, gradient sync.

Every rank holds the whole data set and draws the same seeded permutation; each global batch
is cut into ``world_size`` contiguous shards, one per rank. The per-rank loss is scaled by
``world_size`` so that averaging gradients over ranks gives the gradient of the loss summed
over the global batch: one step equals a single process's step on the same batch.

Dense parameters are averaged by DistributedDataParallel. Sparse embedding gradients are
excluded from DDP and averaged here with an all-gather of each rank's touched rows: NCCL has
no sparse all-reduce, and one code path for gloo and NCCL is one path to test. Batch norm
statistics stay per rank (the usual DDP behaviour): with batch norm the equivalence to one
process holds for the gradients of everything but the normalisation statistics.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from aoaffm.errors import AoaffmError, ConfigError


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def local_rank_from_env() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_distributed(device: torch.device) -> DistributedContext:
    """The process group of this run: the caller's if it made one, else one from torchrun's
    environment (WORLD_SIZE > 1; gloo on CPU, NCCL on CUDA); a single process otherwise."""
    if not (dist.is_available() and dist.is_initialized()):
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return DistributedContext()
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_destroy_process_group)
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank_from_env())


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard_bounds(n_rows: int, ctx: DistributedContext) -> tuple[int, int]:
    """This rank's contiguous slice [start, end) of ``n_rows`` (as ``tensor_split`` cuts)."""
    base, extra = divmod(n_rows, ctx.world_size)
    start = ctx.rank * base + min(ctx.rank, extra)
    return start, start + base + (1 if ctx.rank < extra else 0)


def sparse_parameter_names(module: nn.Module) -> list[str]:
    """Names of the parameters that receive sparse gradients (``sparse=True`` embeddings)."""
    names = []
    for prefix, child in module.named_modules():
        if isinstance(child, nn.Embedding | nn.EmbeddingBag) and child.sparse:
            names.append(f"{prefix}.weight" if prefix else "weight")
    return names


def wrap_model(module: nn.Module, ctx: DistributedContext, device: torch.device) -> nn.Module:
    """``module`` under DistributedDataParallel for its dense parameters (sparse ones are
    synchronised by ``sync_sparse_gradients``); the module itself when not distributed."""
    if not ctx.enabled:
        return module
    sparse_names = set(sparse_parameter_names(module))
    params = dict(module.named_parameters())
    for name in sorted(sparse_names):  # DDP broadcasts only what it manages
        dist.broadcast(params[name].data, src=0)
    if not any(p.requires_grad for n, p in params.items() if n not in sparse_names):
        return module
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        module, sorted(sparse_names)
    )
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def sync_sparse_gradients(params: list[nn.Parameter], ctx: DistributedContext) -> None:
    """Average sparse gradients over ranks: gather every rank's rows, divide by world size.

    The result is an uncoalesced sparse tensor (rows touched on several ranks appear once per
    rank); Adagrad coalesces it, summing the duplicates.
    """
    if not params:
        return
    device = params[0].device
    local = [_rows_and_values(param) for param in params]
    counts = torch.tensor([rows.shape[0] for rows, _ in local], device=device)
    all_counts = [torch.empty_like(counts) for _ in range(ctx.world_size)]
    dist.all_gather(all_counts, counts)  # one collective for every table's row count
    all_counts = torch.stack(all_counts).tolist()  # [rank][param]
    for i, (param, (rows, values)) in enumerate(zip(params, local, strict=True)):
        kept = [rank_counts[i] for rank_counts in all_counts]
        longest = max(kept)
        padded_rows = rows.new_zeros(longest)
        padded_values = values.new_zeros(longest, *values.shape[1:])
        padded_rows[: rows.shape[0]] = rows
        padded_values[: rows.shape[0]] = values
        gathered_rows = [torch.empty_like(padded_rows) for _ in range(ctx.world_size)]
        gathered_values = [torch.empty_like(padded_values) for _ in range(ctx.world_size)]
        dist.all_gather(gathered_rows, padded_rows)
        dist.all_gather(gathered_values, padded_values)
        indices = torch.cat([r[:k] for r, k in zip(gathered_rows, kept, strict=True)])
        merged = torch.cat([v[:k] for v, k in zip(gathered_values, kept, strict=True)])
        param.grad = torch.sparse_coo_tensor(
            indices.unsqueeze(0), merged / ctx.world_size, param.shape
        )


def _rows_and_values(param: nn.Parameter) -> tuple[torch.Tensor, torch.Tensor]:
    """The touched rows and their gradient rows (none when the parameter got no gradient)."""
    if param.grad is None:
        rows = torch.empty(0, dtype=torch.long, device=param.device)
        return rows, param.new_empty(0, *param.shape[1:])
    grad = param.grad.coalesce()
    return grad.indices()[0], grad.values()


def all_reduce_sum(tensor: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(module: nn.Module, ctx: DistributedContext) -> None:
    """Rank 0's buffers (batch-norm running statistics) everywhere, so evaluation agrees."""
    if ctx.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def gather_objects(obj, ctx: DistributedContext) -> list:
    """``obj`` from every rank, in rank order (a one-element list when not distributed)."""
    if not ctx.enabled:
        return [obj]
    gathered = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(ctx: DistributedContext) -> None:
    if ctx.enabled:
        dist.barrier()


# --------------------------------------------------------------------------- launching


def check_world(gpus: int, device: str, source: str = "params.yaml") -> str | None:
    """Refuse ``gpus`` (train.gpus) processes this machine cannot place on GPUs; return the
    notice to print when they run on the CPU instead (``train.device: cpu``), else None."""
    if gpus <= 1:
        return None
    if device == "cpu":
        return (
            f"train.gpus = {gpus} with train.device = cpu: {gpus} CPU processes "
            "(DistributedDataParallel over gloo), no GPU"
        )
    if ":" in str(device):  # every rank would take that one GPU
        raise ConfigError(
            f"{source}: train.device = {device!r} names one GPU, but train.gpus = {gpus} needs "
            "one per process; set train.device: cuda (or auto)"
        )
    present = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if present < gpus:
        raise ConfigError(
            f"{source}: train.gpus = {gpus}, but this machine has {present} CUDA device(s); "
            f"set train.gpus to at most {max(present, 1)}, or train.device: cpu to run {gpus} "
            "CPU processes (DDP over gloo)"
        )
    return None


def launch(script: str, args: list[str], nprocs: int) -> None:
    """Run ``script args`` in ``nprocs`` processes, one per rank, as torchrun would, but from
    this interpreter (no ``torchrun`` on PATH needed: an unactivated venv works).

    Each process reports its own error; a failure here is one line that counts them.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    options = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nprocs}", script, *args]
    )
    try:
        run(options)
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()  # the others were stopped because of it
        raise AoaffmError(
            f"training process {rank} of {nprocs} failed (exit status {failure.exitcode}); "
            "its message is above"
        ) from None
