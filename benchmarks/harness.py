"""What ``throughput.py`` and ``gpu_check.py`` share: in-memory index batching, one training
step of our models (the trainer's optimizer, the trainer's loss), alternating timed windows,
peak-memory and memory-bandwidth probes.

A training step here is the trainer's own (``aoaffm.train.loop.training_step``: 0.5 * Σ (ŷ - y)²,
Adagrad with the embedding tables in their own sparse group, FFM's fused step where it
applies) on rows picked by index from tensors already in memory.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere, without an editable install
    sys.path.insert(0, str(REPO))

from aoaffm import fast  # noqa: E402
from aoaffm.train import TrainConfig  # noqa: E402
from aoaffm.train.allocator import keep_freed_memory  # noqa: E402
from aoaffm.train.loop import build_optimizer, sparse_parameters, training_step  # noqa: E402

# --------------------------------------------------------------------------- batching


class IndexBatches:
    """Endless seeded random batches of row indices over ``n`` rows (a new permutation per
    pass), the trainer's order: ``torch.randperm`` on a CPU generator, split in order."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, device="cpu"):
        self.n, self.batch_size, self.device = n, batch_size, torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self._batches: list[torch.Tensor] = []

    def __next__(self) -> torch.Tensor:
        if not self._batches:
            order = torch.randperm(self.n, generator=self.generator).to(self.device)
            self._batches = [b for b in order.split(self.batch_size) if len(b) == self.batch_size]
            self._batches.reverse()
        return self._batches.pop()

    def __iter__(self):
        return self


@dataclass
class Rows:
    """One split in memory: ids [N, F] (int32, as stored), labels [N] (±1), values or None."""

    ids: torch.Tensor
    labels: torch.Tensor
    values: torch.Tensor | None = None

    @classmethod
    def from_split(cls, split, device="cpu") -> Rows:
        values = None if split.values is None else torch.from_numpy(np.array(split.values))
        return cls(
            torch.from_numpy(np.array(split.ids)).to(device),
            torch.from_numpy(np.array(split.labels, dtype=np.float32)).to(device),
            None if values is None else values.to(device),
        )

    def __len__(self) -> int:
        return self.labels.shape[0]


# --------------------------------------------------------------------------- our step


class OurStep:
    """One training step of an ``aoaffm.models`` model as the trainer takes it."""

    def __init__(
        self,
        model,
        rows: Rows,
        batch_size: int,
        learning_rate: float,
        *,
        seed=0,
        bf16: bool = False,
    ):
        self.model = model.train()
        self.rows = rows
        self.batches = IndexBatches(len(rows), batch_size, seed, rows.ids.device)
        config = TrainConfig(learning_rate=learning_rate, batch_size=batch_size, epochs=1)
        device = rows.ids.device
        self.fast_model = fast.select(model, device, bf16=bf16)  # the trainer's choice
        self.optimizer = build_optimizer(model, sparse_parameters(model), config, self.fast_model)
        autocast = (
            (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext
        )
        self.step = training_step(
            model, self.optimizer, fast_model=self.fast_model, autocast=autocast
        )

    def __call__(self) -> None:
        index = next(self.batches)
        values = None if self.rows.values is None else self.rows.values[index]
        self.step(self.rows.ids[index].long(), values, self.rows.labels[index])


# --------------------------------------------------------------------------- timing


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def alternate(
    sides: dict[str, Callable[[], None]],
    *,
    steps: int,
    windows: int,
    warmup: int,
    device="cpu",
) -> dict[str, list[float]]:
    """Seconds per step of each side in ``windows`` timed windows of ``steps`` steps, the
    sides taking turns window by window (so that a load change on a shared machine hits
    both), after ``warmup`` untimed steps each."""
    for step in sides.values():
        for _ in range(warmup):
            step()
    synchronize(device)
    timings: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(windows):
        for name, step in sides.items():
            started = time.perf_counter()
            for _ in range(steps):
                step()
            synchronize(device)
            timings[name].append((time.perf_counter() - started) / steps)
    return timings


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def spread(values: list[float]) -> float:
    """(max - min) / median of the window timings: how noisy the measurement was."""
    return float((max(values) - min(values)) / statistics.median(values))


# --------------------------------------------------------------------------- floors


def copy_bandwidth(megabytes: int = 512, repeats: int = 7, device="cpu") -> float:
    """Bytes per second of a large tensor copy (read + write counted), median of repeats.

    The buffers are larger than the last-level cache, so this is the main-memory rate."""
    n = megabytes * 2**20 // 4
    source = torch.ones(n, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        target.copy_(source)
        synchronize(device)
        times.append(time.perf_counter() - started)
    return 2 * n * 4 / median(times)


class AttentionMatmuls:
    """The attention network's matrix products of one step, nothing else: the forward
    W X ([B·P, K] x [K, t] + b) and the backward's two products (∂X = G W, ∂W = Gᵀ X)."""

    def __init__(
        self, rows: int, embedding_size: int, attention_size: int, device="cpu", dtype=torch.float32
    ):
        gen = torch.Generator().manual_seed(0)
        make = lambda *shape: torch.randn(*shape, generator=gen).to(device, dtype)  # noqa: E731
        self.x = make(rows, embedding_size)
        self.w = make(attention_size, embedding_size)
        self.b = make(attention_size)
        self.g = make(rows, attention_size)

    def __call__(self) -> None:
        torch.addmm(self.b, self.x, self.w.t())
        torch.mm(self.g, self.w)
        torch.mm(self.g.t(), self.x)

    @staticmethod
    def flops(rows: int, embedding_size: int, attention_size: int) -> int:
        return 3 * 2 * rows * embedding_size * attention_size


class DenseMatmuls:
    """A dense network's matrix products of one step, nothing else: per Linear layer
    (in, out) the forward X Wᵀ + b ([B, in] x [in, out]) and the backward's ∂X = G W and
    ∂W = Gᵀ X."""

    def __init__(self, batch: int, layers: list[tuple[int, int]], device="cpu"):
        gen = torch.Generator().manual_seed(0)
        make = lambda *shape: torch.randn(*shape, generator=gen).to(device)  # noqa: E731
        self.layers = [
            (make(batch, n_in), make(n_out, n_in), make(n_out), make(batch, n_out))
            for n_in, n_out in layers
        ]

    def __call__(self) -> None:
        for x, w, b, g in self.layers:
            torch.addmm(b, x, w.t())
            torch.mm(g, w)
            torch.mm(g.t(), x)


def field_aware_rows_touched(ids: torch.Tensor, batches: IndexBatches, count: int) -> float:
    """Mean number of distinct features per batch (each owns F rows of K in an FFM table)."""
    return float(np.mean([torch.unique(ids[next(batches)]).numel() for _ in range(count)]))


# --------------------------------------------------------------------------- memory


def rss_bytes(field: str = "VmRSS") -> int:
    """The process's resident set (VmRSS) or its peak since the last reset (VmHWM)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def in_child(target: Callable, *args):
    """``target(queue, *args)`` in a fresh spawned process; what it puts on the queue."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=target, args=(queue, *args))
    child.start()
    result = queue.get(timeout=600)
    child.join()
    return result


def emit(table: str, payload, as_json: bool) -> None:
    """The Markdown table on stdout, or with ``--json`` the JSON on stdout and the table on
    stderr."""
    if as_json:
        print(table, file=sys.stderr)
        print(json.dumps(payload, indent=1))
    else:
        print(table)


def env_threads(threads: int, keep_freed: bool = True) -> None:
    """Pin torch (and any BLAS it loads later) to ``threads`` threads, and keep freed memory
    for reuse as the trainer does on the CPU (``aoaffm.train.allocator``; every side of a
    comparison runs in this process, so all of them get it)."""
    if keep_freed:
        keep_freed_memory()
    torch.set_num_threads(threads)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
