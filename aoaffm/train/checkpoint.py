"""The per-epoch checkpoint: everything needed to continue a run as if never stopped.

It holds the model and optimizer state, the history, the best epoch's weights and every random
state (each rank's global torch RNG, which drives dropout, and the batch-order generator), so
a resumed run repeats the uninterrupted one bit for bit on the same machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.serialization import config as serialization

from aoaffm.errors import UnreadableFile
from aoaffm.io import load_torch, save_torch

FORMAT_VERSION = 1
# Settings that change numbers; a checkpoint written under others cannot be continued.
# (device and eval_batch_size may change between calls.)
RESUME_INVARIANT_SETTINGS = (
    "learning_rate",
    "batch_size",
    "epochs",
    "min_epochs",
    "patience",
    "initial_accumulator",
    "lambda_attention",
    "lambda_interaction",
    "seed",
    "bf16",
    "bf16_products",
    "clip",
    "stop_rule",
    "train_rmse_rows",
)


def capture_rng(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "batch_order": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    generator.set_state(state["batch_order"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Written without the zip records' CRC-32: for FFM's 110 MB checkpoint the checksum was
    half the write time. A file cut short still fails to load (no central directory), and the
    atomic rename never leaves one under this name; a checkpoint lives until its run ends."""
    computed = serialization.save.compute_crc32
    serialization.save.compute_crc32 = False
    try:
        save_torch(path, {"format": FORMAT_VERSION, **state})
    finally:
        serialization.save.compute_crc32 = computed


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load onto the CPU (tensors move to the device when loaded into model and optimizer)."""
    state = load_torch(path, "training checkpoint", "delete it to start the run over")
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise UnreadableFile(
            f"{path}: not a checkpoint of format {FORMAT_VERSION}; delete it to start over"
        )
    return state


def check_resumable(
    path: Path, state: dict[str, Any], config: dict, model_spec: Any, world_size: int
) -> None:
    """A checkpoint continues only the run that wrote it: same settings, model and world size."""
    for key in RESUME_INVARIANT_SETTINGS:
        if state["config"].get(key) != config[key]:
            raise UnreadableFile(
                f"{path}: written with {key} = {state['config'].get(key)!r}, but this run has "
                f"{key} = {config[key]!r}; use another run directory or delete the checkpoint"
            )
    if state["model_spec"] != model_spec:
        raise UnreadableFile(
            f"{path}: written for model {state['model_spec']}, but this run trains "
            f"{model_spec}; use another run directory or delete the checkpoint"
        )
    if state["world_size"] != world_size:
        raise UnreadableFile(
            f"{path}: written by {state['world_size']} process(es), but this run has "
            f"{world_size}; resume with the same number of processes or delete the checkpoint"
        )
