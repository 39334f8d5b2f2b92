"""Run-level parallelism: a group's independent training runs on local worker processes or Ray.

A run's numbers depend on its settings only: it is seeded, and the C++ kernels and torch's
products give the same bits on 1 and 2 threads. Where and beside what a run executes changes
its wall time, nothing else (tests/test_parallel.py holds 2 workers and Ray to one worker).

- ``local``: ``train.workers`` processes (spawned: a forked child of a process that ran
  OpenMP can hang). On CUDA one worker per visible GPU, each pinned to its GPU through
  ``CUDA_VISIBLE_DEVICES``; on the CPU each worker takes a share of the parent's threads
  (``torch.get_num_threads()``, which honours ``OMP_NUM_THREADS``).
- ``ray``: each run is a Ray task asking for one GPU (CUDA runs) or one CPU; Ray places them on
  its cluster (``RAY_ADDRESS``) or on a local instance. The run folders must be on a file
  system every node shares.

This module knows nothing of runs or DVC: it calls a picklable function per task.
"""

from __future__ import annotations

import os
import queue as queue_module
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aoaffm.cli import os_problem
from aoaffm.errors import AoaffmError, ConfigError


class RunFailed(AoaffmError):
    """One or more runs of a group failed with a problem the user fixes (the others finished)."""


@dataclass(frozen=True)
class Task:
    """One call ``function(*args)``; ``label`` names it in progress and errors."""

    label: str
    function: Callable[..., Any]
    args: tuple
    epochs: int = 0  # the progress bar's length
    gpu: bool = False  # Ray: ask for a GPU


@dataclass(frozen=True)
class Slot:
    """What one local worker process gets: its index, threads and (CUDA) GPU."""

    index: int
    threads: int
    gpu: str | None = None  # its CUDA_VISIBLE_DEVICES


# --------------------------------------------------------------------------- planning


def visible_gpus(device: str) -> list[str]:
    """The GPUs local workers are pinned to, one each (none: not on CUDA, or ``cuda:N``
    names one GPU for every run)."""
    import torch

    if device not in ("auto", "cuda") or not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed:  # pin within what the user made visible
        return [g.strip() for g in listed.split(",") if g.strip()][: torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


def worker_count(train: dict, gpus: Sequence[str]) -> int:
    """``train.workers`` resolved: ``auto`` is one per GPU on CUDA and one on the CPU.

    On the CPU one worker takes every thread: on this project's shared 2-core machine two
    workers of one thread took 1.6x as long as one (benchmarks/RESULTS.md, "Run-level
    parallelism"), every worker holds its own copy of the data, and the numbers of a run
    depend on its thread count. Ask for more with ``train.workers: N`` on many cores.
    """
    if train.get("gpus", 1) > 1:
        return 1  # DDP: each run already takes every GPU
    workers = train.get("workers", "auto")
    if workers == "auto":
        return max(1, len(gpus))
    return int(workers)


def plan_slots(n_workers: int, threads: int, gpus: Sequence[str] = ()) -> list[Slot]:
    """``n_workers`` slots sharing ``threads`` (the first ones take the remainder, each at
    least one), worker i pinned to GPU i modulo their number."""
    base, extra = divmod(threads, n_workers)
    return [
        Slot(i, max(1, base + (i < extra)), gpus[i % len(gpus)] if gpus else None)
        for i in range(n_workers)
    ]


# --------------------------------------------------------------------------- local workers

_worker: dict[str, Any] = {}  # in a worker process: its slot, the progress queue, its task


def _start_worker(slots, messages) -> None:
    slot = slots.get()
    if slot.gpu is not None:  # before anything initialises CUDA in this process
        os.environ["CUDA_VISIBLE_DEVICES"] = slot.gpu
    os.environ["OMP_NUM_THREADS"] = str(slot.threads)
    import torch

    torch.set_num_threads(slot.threads)
    _worker.update(slot=slot, messages=messages)


def _call(task: Task) -> Any:
    _worker["label"] = task.label
    _send(0, task.epochs, None)
    return task.function(*task.args)


def _send(epoch: int, total: int | None, validation: float | None) -> None:
    messages = _worker.get("messages")
    if messages is not None:
        messages.put((_worker["slot"].index, _worker["label"], epoch, total, validation))


def report_epoch(entry: dict[str, Any]) -> None:
    """The trainer's ``on_epoch_end``: tell the parent's progress bars (no-op elsewhere)."""
    _send(entry["epoch"], None, entry.get("validation_rmse"))


def run_local(
    tasks: Sequence[Task], slots: Sequence[Slot], *, progress: bool = True, desc: str = "runs"
) -> dict[str, Any]:
    """Each task's result by label, computed on ``len(slots)`` worker processes. A failing
    task does not stop the others; once all ended, the failures are raised (:func:`_raise`)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")
    slot_queue, messages = context.Queue(), context.Queue()
    for slot in slots:
        slot_queue.put(slot)
    bars = _Bars(desc, len(tasks), len(slots), progress)
    results, failures = {}, []
    pool = ProcessPoolExecutor(
        len(slots), mp_context=context, initializer=_start_worker, initargs=(slot_queue, messages)
    )
    try:
        futures = {pool.submit(_call, task): task.label for task in tasks}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            bars.drain(messages)
            for future in done:
                label = futures[future]
                try:
                    results[label] = future.result()
                except Exception as error:  # the others go on; reported once all ended
                    failures.append((label, error))
                    bars.write(f"{label}: failed: {_one_line(error)}")
                bars.finished(label)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bars.drain(messages)
        bars.close()
    _raise(failures, len(tasks))
    return results


class _Bars:
    """One overall bar (runs finished) and one per worker (its run's epochs)."""

    def __init__(self, desc: str, total: int, n_workers: int, enabled: bool):
        from tqdm import tqdm

        self.enabled = enabled
        self.overall = tqdm(total=total, desc=desc, unit="run", disable=not enabled)
        self.workers = [
            tqdm(total=0, desc=f"worker {i + 1}", unit="epoch", position=i + 1, disable=not enabled)
            for i in range(n_workers)
        ]

    def drain(self, messages) -> None:
        while True:
            try:
                index, label, epoch, total, validation = messages.get_nowait()
            except (queue_module.Empty, OSError, ValueError):
                return
            bar = self.workers[index]
            if total is not None:  # a run starts (a resumed one shows its epochs at the next)
                bar.reset(total=total)
                bar.set_description(f"worker {index + 1} {label.rsplit(' ', 1)[-1]}")
            else:
                bar.update(epoch - bar.n)
                bar.set_postfix(val=f"{validation:.4f}")

    def finished(self, label: str) -> None:
        self.overall.update(1)
        self.overall.set_postfix_str(label.rsplit(" ", 1)[-1])

    def write(self, line: str) -> None:
        from tqdm import tqdm

        if self.enabled:
            tqdm.write(line)

    def close(self) -> None:
        for bar in self.workers:
            bar.close()
        self.overall.close()


# --------------------------------------------------------------------------- Ray


def check_ray() -> None:
    """Fail before any training where the Ray backend is asked for but not installed."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ConfigError(
            "train.backend = ray, but Ray is not installed; pip install -e '.[ray]' (or set "
            "train.backend: local)"
        )


def _ray_call(threads: int, task: Task) -> Any:
    import torch

    torch.set_num_threads(threads)  # Ray sets OMP_NUM_THREADS only where it was unset
    return task.function(*task.args)


def run_on_ray(tasks: Sequence[Task], *, progress: bool = True, desc: str = "runs") -> dict:
    """Each task's result by label, one Ray task each (one GPU, or one CPU and one thread).
    Uses the Ray the caller initialised, else ``ray.init()`` (a cluster named by
    ``RAY_ADDRESS``, or a local instance on this machine's CPUs and GPUs)."""
    check_ray()
    import ray
    from tqdm import tqdm

    started = not ray.is_initialized()
    if started:
        ray.init()
    try:
        remote = ray.remote(_ray_call)
        refs = {
            remote.options(
                num_cpus=1, num_gpus=1 if task.gpu else 0, name=task.label.rsplit(" ", 1)[-1]
            ).remote(1, task): task.label
            for task in tasks
        }
        results, failures = {}, []
        with tqdm(total=len(tasks), desc=desc, unit="run", disable=not progress) as bar:
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                label = refs[done[0]]
                try:
                    results[label] = ray.get(done[0])
                except ray.exceptions.RayTaskError as error:
                    failures.append((label, _cause(error)))
                    if progress:
                        tqdm.write(f"{label}: failed: {_one_line(_cause(error))}")
                bar.update(1)
                bar.set_postfix_str(label.rsplit(" ", 1)[-1])
    finally:
        if started:
            ray.shutdown()
    _raise(failures, len(tasks))
    return results


def _cause(error) -> BaseException:
    """The task's own exception inside Ray's wrapper where it is one of ours (the user
    fixes it: one line), else the wrapper (its text carries the remote traceback)."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, AoaffmError | OSError) else error


# --------------------------------------------------------------------------- failures


def _one_line(error: BaseException) -> str:
    if isinstance(error, AoaffmError):
        return str(error)
    if isinstance(error, OSError) and os_problem(error):
        return os_problem(error)
    return f"{type(error).__name__}: {str(error).strip()}".splitlines()[0]


def _raise(failures: list, total: int) -> None:
    """A problem the user fixes (ours, or an OS error such as a full disk): one line naming
    the first failed run; a bug: its own exception, with the worker's traceback."""
    for _, error in failures:
        if not (
            isinstance(error, AoaffmError) or (isinstance(error, OSError) and os_problem(error))
        ):
            raise error
    if failures:
        label, error = failures[0]
        more = (
            f" ({len(failures)} of {total} runs failed, the others finished)" if total > 1 else ""
        )
        raise RunFailed(f"{label}: {_one_line(error)}{more}") from error
