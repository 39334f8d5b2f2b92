"""The training loop: Adagrad on half the summed squared error, early stopping, checkpoints.

Choices where the paper is silent (they follow the public AFM/NFM TensorFlow code):

- Loss per batch: ``0.5 * Σ (ŷ - y)² + λ1 * 0.5 * Σ‖W‖² + λ2 * 0.5 * Σ‖Q‖²`` (``tf.nn.l2_loss``
  and ``l2_regularizer`` both carry the 1/2), W and Q from ``model.regularized_parameters()``.
- Adagrad with ``initial_accumulator`` (1e-8 there). Embeddings get sparse gradients and sit
  in their own parameter group, so their step costs O(rows touched) (``optim.SparseAdagrad``:
  torch's arithmetic in fewer passes, or the CPU backend's C++ updates); dense parameters form a second group (foreach update
  on CUDA). torch adds
  eps = 1e-10 to the root of the accumulator (TensorFlow adds none): negligible beside
  sqrt(1e-8) = 1e-4.
- Each epoch visits every training row once in a seeded random order; a trailing batch with
  fewer than two rows per process is skipped (batch norm cannot train on one row).
- RMSE on predictions clipped to the data's label range (``data.label_range``: [-1, 1], or
  [0, 1] for Criteo; the AFM code clips to the labels' min and max). The per-epoch training
  RMSE is that of the whole training set in evaluation mode after the epoch (the AFM code's
  ``evaluate(Train_data)``), so that it is comparable with the validation RMSE in Figure 4
  (no dropout noise in it).
- Early stopping: after more than ``min_epochs`` epochs, stop once the validation RMSE rose
  ``patience`` epochs in a row. The best epoch (lowest validation RMSE) gives the weights
  kept and the test RMSE reported.

The model's code is chosen once per run, in ``train_model``: ``aoaffm.fast.select`` gives the
CPU backend's ``FastModel`` (same model, fused kernels; then also the C++ Adagrad updates
and, where they compute the same, whole fused steps), or None, and the run trains and
evaluates the reference ``forward`` of ``aoaffm.models``.
"""

from __future__ import annotations

import contextlib
import math
import platform
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from aoaffm import fast
from aoaffm.errors import AoaffmError, ConfigError, UnreadableFile
from aoaffm.io import naming_errors, read_json, remove_stale_temporaries, write_json
from aoaffm.metrics import sum_squared_error
from aoaffm.train import distributed as dist_utils
from aoaffm.train.allocator import keep_freed_memory
from aoaffm.train.checkpoint import (
    capture_rng,
    check_resumable,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from aoaffm.train.config import TrainConfig, resolve_device
from aoaffm.train.optim import SparseAdagrad
from aoaffm.train.penalty import L2Penalty
from aoaffm.train.stopping import best_epoch, should_stop

SPLITS = ("train", "validation", "test")
CHECKPOINT_FILE = "checkpoint.pt"
HISTORY_FILE = "history.json"
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.json"
DVCLIVE_DIR = "dvclive"
TRAIN_RMSE_SPLIT = "train_rmse_rows"  # the training rows the per-epoch training RMSE uses
# On one CPU thread the forward pass runs in chunks of this many rows: an eval batch of
# 8,192 Frappe rows makes [8192 x 45, 256] intermediates (377 MB each) that stream through
# memory, while training's 128-row batches stay in cache. On one thread each row's
# prediction does not depend on the rows computed with it (tests/test_train_units.py checks
# this bit for bit for every model), and the squared errors are still summed per eval batch,
# so the RMSE is unchanged. With more threads the matrix products split the work by batch
# shape (the MLPs' rows then round differently), so batches stay whole there.
CPU_FORWARD_ROWS = 256


class RunMismatch(UnreadableFile):
    """A run folder holds a result computed on other data or with other CPU code."""


class TrainingDiverged(AoaffmError, RuntimeError):
    """The validation or training RMSE became NaN or infinite (lower the learning rate)."""


@dataclass
class SplitTensors:
    """One split on the training device: ids [N, F] (int32 or int64), labels [N], values."""

    ids: torch.Tensor
    labels: torch.Tensor
    values: torch.Tensor | None

    def __len__(self) -> int:
        return self.labels.shape[0]

    def rows(self, index) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """ids (int64, as embeddings want), values and labels of the rows ``index`` selects."""
        values = None if self.values is None else self.values[index]
        return self.ids[index].long(), values, self.labels[index]


def train_model(
    model: nn.Module,
    data,
    config: TrainConfig,
    run_dir: str | Path | None = None,
    *,
    progress: bool = True,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``data`` (a ``ProcessedDataset``) and return the run's metrics.

    On return ``model`` holds the best epoch's weights. With ``run_dir`` the run writes
    ``checkpoint.pt`` and ``history.json`` after every epoch (from a copy, on a thread of
    their own while the next epoch trains; a kill during that write leaves the previous
    epoch's checkpoint), dvclive logs under ``dvclive/``,
    then ``model.pt`` (best weights) and, last, ``metrics.json``; the checkpoint is removed
    once ``metrics.json`` exists. Calling again with the same ``run_dir`` resumes after the last
    checkpointed epoch, or returns the stored metrics of a finished run without training.
    Under torchrun (WORLD_SIZE > 1) the model trains with DistributedDataParallel and only rank
    0 writes files. ``on_epoch_end(entry)`` is called after each epoch's checkpoint (tests use
    it to simulate a kill).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    run_dir = Path(run_dir) if run_dir is not None else None
    device = resolve_device(config.device, dist_utils.local_rank_from_env())
    if device.type == "cpu":
        keep_freed_memory()  # a CPU step's large temporaries: no page faults step after step
        flush_denormals()  # an attention W shrinking under λ's L2 turns subnormal: 100x slower
    model_spec = dict(getattr(model, "spec", {}) or {})
    _check_data_fits_model(data, model_spec)
    ctx = dist_utils.init_distributed(device)
    dist_utils.barrier(ctx)  # every rank sees the same files before deciding what to do
    if run_dir is not None and ctx.is_main:
        remove_stale_temporaries(run_dir)  # what writes killed at an earlier start left
    fast_model = fast.select(model, device, bf16=config.bf16)  # the one choice of the code
    if config.bf16_products and fast_model is None:
        raise ConfigError(
            f"train.bf16_products = true needs the CPU backend, which does not take this run "
            f"(device {device.type}, bf16 autocast {config.bf16}, AOAFFM_NATIVE=0 or no C++ "
            f"compiler); on CUDA use train.bf16"
        )
    facts = run_facts(data, device, fast_model)
    if run_dir is not None and (run_dir / METRICS_FILE).is_file():
        metrics = read_json(run_dir / METRICS_FILE)
        check_same_facts(run_dir / METRICS_FILE, metrics, facts)
        _load_weights(model, run_dir / MODEL_FILE)
        return metrics
    trainer = _Trainer(
        model, fast_model, data, config, run_dir, device, ctx, model_spec, progress, facts
    )
    with fast.bf16_products(config.bf16_products):  # training and evaluation alike
        return trainer.run(on_epoch_end)


def flush_denormals() -> None:
    """Subnormal floats (below 1.2e-38) become zero in CPU arithmetic, in every worker thread
    where the C++ kernels are there to reach them, else in this thread only. The products
    of an attention model whose W decays under a large λ (Frappe AFM: λ = 10) otherwise
    run ~100x slower once W's entries turn subnormal."""
    torch.set_flush_denormal(True)
    fast.flush_denormals()


def run_facts(data, device: torch.device, fast_model: fast.FastModel | None) -> dict[str, Any]:
    """What changes a run's numbers besides its settings, known only where it runs: the
    processed data's content digest and the code that computes a step (the CPU backend's
    kernels round differently and draw other dropout masks than torch). Stored with the run;
    a finished or checkpointed run is reused only under the same facts."""
    return {
        "data_digest": data.digest if hasattr(data, "digest") else None,
        "step_code": fast.STEP_CODE if fast_model is not None else f"torch-{device.type}",
    }


def check_same_facts(path: Path, stored: dict[str, Any], facts: dict[str, Any]) -> None:
    for key, value in facts.items():
        if stored.get(key) != value:
            raise RunMismatch(
                f"{path}: this run was computed with {key} = {stored.get(key)!r}, but now "
                f"{key} = {value!r} (other data, or AOAFFM_NATIVE / the C++ compiler changed); "
                f"restore what changed, or delete {path.parent} to train it again"
            )


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, numpy and torch (call before building the model: it fixes the init).

    With ``deterministic`` torch is asked for deterministic kernels (warning, not failing,
    where an op has none); on CPU this costs next to nothing.
    """
    import os
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (third-party code may use the global RNG)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS determinism
        torch.use_deterministic_algorithms(True, warn_only=True)


# --------------------------------------------------------------------------- the run


class _Trainer:
    def __init__(
        self, model, fast_model, data, config, run_dir, device, ctx, model_spec, progress, facts
    ):
        self.model = model.to(device)
        self.fast_model = fast_model
        self.computed = fast_model if fast_model is not None else self.model  # what runs
        self.facts = facts
        self.config = config
        self.run_dir = run_dir
        self.device = device
        self.ctx = ctx
        self.model_spec = model_spec
        self.progress = progress and ctx.is_main
        self.writes = run_dir is not None and ctx.is_main
        self.splits = {
            name: _split_to_device(data, name, device, model_spec.get("n_features"))
            for name in SPLITS
        }
        self.label_range = data.label_range  # what RMSE clips predictions to
        self.splits[TRAIN_RMSE_SPLIT] = _train_rmse_rows(
            self.splits["train"], config.train_rmse_rows, config.seed
        )
        self.sparse_params = sparse_parameters(model)
        self.optimizer = build_optimizer(model, self.sparse_params, config, fast_model)
        self.penalty = L2Penalty.for_model(
            model, config.lambda_attention, config.lambda_interaction
        )  # λ1 * 0.5 * Σ‖W‖² + λ2 * 0.5 * Σ‖Q‖², or None
        self.generator = torch.Generator()  # batch order; on the CPU so every device agrees
        self.history: list[dict[str, Any]] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.checkpoints = _BackgroundWriter()
        self.elapsed_s = 0.0
        self.finished = False
        if not torch.sparse.check_sparse_tensor_invariants.is_enabled():
            # Say explicitly what torch does by default (and warns about on every sparse step).
            torch.sparse.check_sparse_tensor_invariants.disable()
        self.autocast = (
            (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
            if config.bf16
            else nullcontext
        )

    # ..................................................................... orchestration

    def run(self, on_epoch_end) -> dict[str, Any]:
        self._restore_or_seed()
        self.net = dist_utils.wrap_model(self.computed, self.ctx, self.device)
        live = _DvcLiveLog(self.run_dir / DVCLIVE_DIR, self.history) if self.writes else None
        try:
            metrics = self._train(on_epoch_end, live)
        except BaseException:
            self.checkpoints.finish()  # an interrupted run leaves its last epoch's checkpoint
            if live is not None:
                live.end(failed=True)
            raise
        if live is not None:
            live.end()
        return metrics

    def _train(self, on_epoch_end, live: _DvcLiveLog | None) -> dict[str, Any]:
        epochs = tqdm(
            range(len(self.history) + 1, self.config.epochs + 1),
            desc=self.model_spec.get("name", "training"),
            unit="epoch",
            initial=len(self.history),
            total=self.config.epochs,
            disable=not self.progress or self.finished,
        )
        for epoch in epochs:
            if self.finished:
                break
            entry = self._epoch(epoch)
            epochs.set_postfix(
                train=f"{entry['train_rmse']:.4f}", val=f"{entry['validation_rmse']:.4f}"
            )
            if live is not None:
                live.log_epoch(entry)
            if on_epoch_end is not None:
                on_epoch_end(entry)
        epochs.close()
        metrics = self._final_metrics()
        if self.writes:
            self._write_outputs(metrics, live)
        return metrics

    def _epoch(self, epoch: int) -> dict[str, Any]:
        started = time.perf_counter()
        self._train_one_epoch(epoch)
        _synchronize(self.device)
        trained = time.perf_counter()
        dist_utils.broadcast_buffers(self.model, self.ctx)
        train_rmse = self._rmse(TRAIN_RMSE_SPLIT)
        train_evaluated = time.perf_counter()
        validation_rmse = self._rmse("validation")
        evaluated = time.perf_counter()
        # The epoch's phases in seconds (benchmarks/protocol_time.py splits an epoch with
        # them): training pass, evaluation (both splits, and each), and the checkpoint
        # written after the entry (added once written, so in history.json from the next
        # write on; the run's last history.json has every epoch's).
        entry = {
            "epoch": epoch,
            "train_rmse": train_rmse,
            "validation_rmse": validation_rmse,
            "time_s": trained - started,
            "eval_time_s": evaluated - trained,
            "train_rmse_time_s": train_evaluated - trained,
            "validation_time_s": evaluated - train_evaluated,
        }
        for key in ("train_rmse", "validation_rmse"):
            if not math.isfinite(entry[key]):
                where = f"{self.run_dir}: " if self.run_dir is not None else ""
                raise TrainingDiverged(
                    f"{where}epoch {epoch}: {key} is {entry[key]} (learning rate "
                    f"{self.config.learning_rate}); training diverged, lower the learning rate"
                )
        self.history.append(entry)
        validation = [h["validation_rmse"] for h in self.history]
        if best_epoch(validation) == epoch:
            self.best_state = _copy_state(self.model, into=self.best_state)
        self.finished = epoch >= self.config.epochs or should_stop(
            validation, self.config.min_epochs, self.config.patience, self.config.stop_rule
        )
        self.elapsed_s += time.perf_counter() - started
        checkpointing = time.perf_counter()
        self._checkpoint()
        entry["checkpoint_time_s"] = time.perf_counter() - checkpointing
        return entry

    def _final_metrics(self) -> dict[str, Any]:
        started = time.perf_counter()
        self.model.load_state_dict(self.best_state)
        best = best_epoch([h["validation_rmse"] for h in self.history])
        at_best = self.history[best - 1]
        metrics = {
            "validation_rmse": at_best["validation_rmse"],
            "test_rmse": self._rmse("test"),
            "train_rmse": at_best["train_rmse"],
            "best_epoch": best,
            "epochs": len(self.history),
            "stopped_early": len(self.history) < self.config.epochs,
            "params": _count_parameters(self.model),
            "epoch_time_s": float(np.mean([h["time_s"] for h in self.history])),
            "wall_time_s": self.elapsed_s + time.perf_counter() - started,
            "device": str(self.device),
            "device_name": _device_name(self.device),
            "world_size": self.ctx.world_size,
            "bf16": self.config.bf16,
            # only when on, so that float32 runs keep the metrics they were published with
            **({"bf16_products": True} if self.config.bf16_products else {}),
            "seed": self.config.seed,
            **self.facts,
        }
        return metrics

    def _write_outputs(self, metrics: dict[str, Any], live: _DvcLiveLog) -> None:
        from aoaffm.models import save_model

        self.checkpoints.finish()  # before the checkpoint is removed below
        write_json(self.run_dir / HISTORY_FILE, self.history)  # in case a kill came before
        save_model(self.model, self.run_dir / MODEL_FILE)
        live.log_summary(metrics)
        write_json(self.run_dir / METRICS_FILE, metrics)  # last: the run is complete
        (self.run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)

    # ..................................................................... one epoch

    def _train_one_epoch(self, epoch: int) -> None:
        train = self.splits["train"]
        self.net.train()
        order = torch.randperm(len(train), generator=self.generator).to(self.device)
        batches = list(order.split(self.config.batch_size))
        if len(batches) > 1 and len(batches[-1]) < 2 * self.ctx.world_size:
            batches.pop()  # too few rows for batch norm on every process
        step = training_step(
            self.model,
            self.optimizer,
            fast_model=self.fast_model,
            net=self.net,
            penalty=self.penalty,
            autocast=self.autocast,
            ctx=self.ctx,
            sparse_params=self.sparse_params,
        )
        for batch in tqdm(
            batches,
            desc=f"epoch {epoch}",
            unit="batch",
            leave=False,
            disable=not self.progress,
        ):
            if self.ctx.enabled:
                batch = batch.tensor_split(self.ctx.world_size)[self.ctx.rank]
            step(*train.rows(batch))

    @torch.inference_mode()
    def _rmse(self, split: str) -> float:
        """RMSE of a whole split in evaluation mode, in large batches (sharded over ranks)."""
        data = self.splits[split]
        self.model.eval()
        start, end = dist_utils.shard_bounds(len(data), self.ctx)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for low in range(start, end, self.config.eval_batch_size):
            ids, values, labels = data.rows(slice(low, min(low + self.config.eval_batch_size, end)))
            with self.autocast():
                predictions = forward_in_chunks(self.computed, ids, values, self.device)
            total += sum_squared_error(
                predictions.float(), labels, self.config.clip, self.label_range
            )
        dist_utils.all_reduce_sum(total, self.ctx)
        return math.sqrt(total.item() / len(data))

    # ..................................................................... checkpoints

    def _restore_or_seed(self) -> None:
        path = self.run_dir / CHECKPOINT_FILE if self.run_dir is not None else None
        if path is None or not path.is_file():
            self.generator.manual_seed(self.config.seed)
            torch.manual_seed(_dropout_seed(self.config.seed, self.ctx.rank))
            return
        state = load_checkpoint(path)
        check_resumable(path, state, self.config.to_dict(), self.model_spec, self.ctx.world_size)
        check_same_facts(path, state.get("facts", {}), self.facts)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = state["history"]
        if state["best_state"] is None:  # the last epoch was the best: its weights are "model"
            self.best_state = _copy_state(self.model)
        else:
            self.best_state = {k: v.to(self.device) for k, v in state["best_state"].items()}
        self.elapsed_s = state["elapsed_s"]
        self.finished = state["finished"]
        restore_rng(state["rng"][self.ctx.rank], self.generator, self.device)

    def _last_epoch_is_best(self) -> bool:
        return best_epoch([h["validation_rmse"] for h in self.history]) == len(self.history)

    def _checkpoint(self) -> None:
        """A copy of the state after this epoch, written by ``self.checkpoints`` while the
        next epoch trains."""
        rng = dist_utils.gather_objects(capture_rng(self.generator, self.device), self.ctx)
        if not self.writes:
            return
        history = [dict(entry) for entry in self.history]
        state = {
            "config": self.config.to_dict(),
            "model_spec": self.model_spec,
            "world_size": self.ctx.world_size,
            "facts": self.facts,
            "history": history,
            "finished": self.finished,
            "elapsed_s": self.elapsed_s,
            "model": _copied(self.model.state_dict()),
            "optimizer": _copied(self.optimizer.state_dict()),
            # When this epoch is the best, the best weights are the model's: writing them
            # twice made the field-aware tables' checkpoint half again as large (FFM's
            # pre-training spent 16 % of its training pass writing 3 x 55 MB an epoch).
            "best_state": None if self._last_epoch_is_best() else _copied(self.best_state),
            "rng": rng,
        }
        self.checkpoints.write(self._write_checkpoint, state, history)

    def _write_checkpoint(self, state: dict[str, Any], history: list[dict]) -> None:
        save_checkpoint(self.run_dir / CHECKPOINT_FILE, state)
        write_json(self.run_dir / HISTORY_FILE, history)


# --------------------------------------------------------------------------- helpers


class _BackgroundWriter:
    """Runs each write on a thread of its own, one at a time: the next epoch trains while the
    last one's checkpoint goes to disk (FFM's pre-training wrote its 110 MB in 0.08-0.3 s,
    as the page cache allowed, against a 2-second epoch). A write waits for the one before
    it; a failed write raises at the next ``write`` or at ``finish``."""

    def __init__(self):
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def write(self, function: Callable[..., None], *args: Any) -> None:
        self.finish()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending = self._pool.submit(function, *args)

    def finish(self) -> None:
        """Wait for the pending write (and raise its error)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __del__(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _copied(state: Any) -> Any:
    """``state`` (a state dict, nested) with every tensor copied: training goes on changing
    the originals in place while the copy is written."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {key: _copied(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_copied(value) for value in state)
    return state


def _check_data_fits_model(data, model_spec: dict) -> None:
    source = data.meta.get("dataset", "the data set") if hasattr(data, "meta") else "the data"
    for attribute, key in (("n_features", "n_features"), ("n_fields", "n_fields")):
        if key in model_spec and model_spec[key] != getattr(data, attribute):
            raise ValueError(
                f"{source} has {getattr(data, attribute)} {key[2:]}, but the model was built "
                f"for {model_spec[key]}"
            )


def _split_to_device(data, name: str, device: torch.device, n_features: int | None) -> SplitTensors:
    """Copy one split into memory on ``device`` once (ids stay int32 to halve their size)."""
    split = data.split(name)
    ids = torch.from_numpy(np.array(split.ids)).to(device)
    labels = torch.from_numpy(np.array(split.labels, dtype=np.float32)).to(device)
    values = None
    if split.values is not None:
        values = torch.from_numpy(np.array(split.values, dtype=np.float32)).to(device)
    if ids.ndim != 2 or labels.shape != (ids.shape[0],) or len(labels) == 0:
        raise ValueError(
            f"{name} split: expected ids [N, F] and labels [N] with N > 0, got ids "
            f"{tuple(ids.shape)} and labels {tuple(labels.shape)}"
        )
    if values is not None and values.shape != ids.shape:
        raise ValueError(
            f"{name} split: values {tuple(values.shape)} do not match ids {tuple(ids.shape)}"
        )
    if n_features is not None and (int(ids.min()) < 0 or int(ids.max()) >= n_features):
        raise ValueError(
            f"{name} split: feature ids span [{int(ids.min())}, {int(ids.max())}], but the "
            f"model has {n_features} features (ids 0..{n_features - 1})"
        )
    return SplitTensors(ids, labels, values)


def forward_in_chunks(model, ids, values, device: torch.device) -> torch.Tensor:
    """``model(ids, values)``, computed CPU_FORWARD_ROWS rows at a time on one CPU thread."""
    if device.type != "cpu" or torch.get_num_threads() != 1 or len(ids) <= CPU_FORWARD_ROWS:
        return model(ids, values)
    return torch.cat(
        [
            model(
                ids[i : i + CPU_FORWARD_ROWS],
                None if values is None else values[i : i + CPU_FORWARD_ROWS],
            )
            for i in range(0, len(ids), CPU_FORWARD_ROWS)
        ]
    )


def _train_rmse_rows(train: SplitTensors, rows: int | None, seed: int) -> SplitTensors:
    """The rows of Figure 4's training RMSE: all of them, or ``rows`` drawn once from the
    run's seed (an unbiased estimate at a fraction of a full pass; same rows every epoch)."""
    if rows is None or rows >= len(train):
        return train
    chosen = np.sort(np.random.default_rng([seed, rows]).choice(len(train), rows, replace=False))
    index = torch.from_numpy(chosen).to(train.labels.device)
    values = None if train.values is None else train.values[index]
    return SplitTensors(train.ids[index], train.labels[index], values)


def training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    fast_model: fast.FastModel | None = None,
    net: nn.Module | None = None,
    penalty: L2Penalty | Callable[[], torch.Tensor] | None = None,
    autocast: Callable[[], Any] = nullcontext,
    ctx: dist_utils.DistributedContext | None = None,
    sparse_params: list[nn.Parameter] = (),
    fuse: bool = True,
) -> Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], None]:
    """``step(ids, values, labels)``: one optimisation step on a batch, as the trainer takes it
    (public: the benchmarks time this very step).

    Forward through ``net`` (``fast_model`` if given, else ``model``, or its DDP wrapper),
    ½ Σ (ŷ - y)² (+ ``penalty``), backward, the sparse gradients' all-reduce under DDP,
    Adagrad. With ``fast_model`` (``aoaffm.fast.select``) and where it computes the same,
    FFM's and the attention models' whole steps run as C++ kernels without autograd instead
    (``aoaffm.fast.steps``; ``fuse=False`` keeps it off, for the ablation benchmark).
    """
    if net is None:
        net = fast_model if fast_model is not None else model
    world_size = 1 if ctx is None else ctx.world_size
    distributed = ctx is not None and ctx.enabled
    fused = None
    if fast_model is not None and fuse and not distributed and autocast is nullcontext:
        # the fused steps compute SparseAdagrad's update and an L2 penalty's gradient only
        strengths = None  # another penalty: its gradient is autograd's
        if penalty is None or isinstance(penalty, L2Penalty):
            strengths = penalty.strengths() if penalty is not None else {}
        if type(optimizer) is SparseAdagrad and strengths is not None:
            fused = fast_model.fused_step(optimizer, strengths)

    def step(ids: torch.Tensor, values: torch.Tensor | None, labels: torch.Tensor) -> None:
        if fused is not None and values is None:
            fused(ids, labels)
            return
        with autocast():
            predictions = net(ids, values)
        # Summed (not averaged) error, scaled so that the ranks' mean gradient is the
        # gradient of the global batch's sum.
        loss = 0.5 * (predictions.float() - labels).square().sum() * world_size
        if penalty is not None:
            loss = loss + penalty()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if distributed:
            dist_utils.sync_sparse_gradients(sparse_params, ctx)
        optimizer.step()

    return step


def sparse_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The embedding tables that receive sparse gradients (and train)."""
    params = dict(model.named_parameters())
    return [params[n] for n in dist_utils.sparse_parameter_names(model) if params[n].requires_grad]


def build_optimizer(
    model: nn.Module,
    sparse: list[nn.Parameter],
    config: TrainConfig,
    fast_model: fast.FastModel | None = None,
) -> torch.optim.Adagrad:
    """Adagrad with sparse tables and dense parameters in separate groups: torch falls back to
    its per-tensor loop for a whole group once one gradient in it is sparse; with
    ``fast_model``, its updates are the CPU backend's C++ ones. (Public: the benchmarks time
    the trainer's own step.)"""
    sparse_ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if p.requires_grad and id(p) not in sparse_ids]
    groups = [{"params": params} for params in (sparse, dense) if params]
    return SparseAdagrad(
        groups,
        lr=config.learning_rate,
        initial_accumulator_value=config.initial_accumulator,
        kernels=fast_model.optimizer_kernels if fast_model is not None else None,
    )


def _dropout_seed(seed: int, rank: int) -> int:
    """The global RNG's seed for dropout: from the run's seed, distinct per rank."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _copy_state(
    model: nn.Module, into: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The model's weights, copied into ``into``'s tensors when given: fresh copies of FFM's
    55 MB table took 80-150 ms an epoch (page faults), a copy into the same memory 12 ms."""
    if into is None:
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    for key, value in model.state_dict().items():
        into[key].copy_(value)
    return into


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def _count_parameters(model: nn.Module) -> int:
    from aoaffm.models import count_parameters

    return int(count_parameters(model))


def _load_weights(model: nn.Module, path: Path) -> None:
    """Fill ``model`` with a finished run's best weights (model.pt)."""
    from aoaffm.models import load_model

    if not path.is_file():
        raise UnreadableFile(
            f"{path.parent}: metrics.json says the run finished, but {path.name} is missing; "
            "delete the run directory to train it again"
        )
    model.load_state_dict(load_model(path).state_dict())
    model.eval()


class _DvcLiveLog:
    """Per-epoch train/validation RMSE for ``dvc plots`` (steps are epochs).

    The log is rebuilt from the history on every (re)start, so an interrupted run never logs
    an epoch twice. dvclive is told to write no dvc.yaml, no report and no DVC experiment.
    """

    def __init__(self, directory: Path, history: list[dict[str, Any]]):
        from dvclive import Live

        self.directory = directory
        with naming_errors(directory):  # dvclive's failed writes name no file
            self.live = Live(
                dir=str(directory), resume=False, report=None, save_dvc_exp=False, dvcyaml=None
            )
        for entry in history:
            self.log_epoch(entry)

    def log_epoch(self, entry: dict[str, Any]) -> None:
        with naming_errors(self.directory):
            self.live.step = entry["epoch"]
            for key in ("train_rmse", "validation_rmse"):
                self.live.log_metric(key, entry[key])
            self.live.make_summary()

    def log_summary(self, metrics: dict[str, Any]) -> None:
        with naming_errors(self.directory):
            for key in ("test_rmse", "best_epoch"):
                self.live.log_metric(key, metrics[key], plot=False)
            self.live.make_summary()

    def end(self, failed: bool = False) -> None:
        """Close the log (its summary and the markers DVC's tools watch), also after a failure,
        so that no half-open log is left. After a failure an error while closing is dropped:
        the first one is what to report (a full disk would fail both)."""
        with contextlib.suppress(Exception) if failed else naming_errors(self.directory):
            self.live.end()
