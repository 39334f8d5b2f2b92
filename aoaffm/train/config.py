"""The trainer's settings, checked when they are made (before any data is touched)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

import torch

from aoaffm.config import ConfigError
from aoaffm.train.stopping import STOP_RULES

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes one training run besides the model and the data.

    ``initial_accumulator`` is Adagrad's starting sum of squared gradients (1e-8 in the AFM/NFM
    code). ``lambda_attention`` (λ1) weighs L2 on the attention network's W, ``lambda_interaction``
    (λ2) on the interaction-level weights Q. ``seed`` fixes batch order and dropout (the caller
    seeds initialisation, see ``seed_everything``). ``clip`` bounds predictions to the data's
    label range before RMSE, as the AFM/NFM code does. ``stop_rule`` is ``"rises"`` (the AFM
    code's) or ``"plateau"`` (see ``aoaffm.train.stopping``). ``train_rmse_rows``: the
    per-epoch training RMSE (Figure 4) on this many training rows drawn once with ``seed``;
    None: all of them.
    """

    learning_rate: float
    batch_size: int
    epochs: int
    min_epochs: int = 5
    patience: int = 4
    initial_accumulator: float = 1e-8
    lambda_attention: float = 0.0
    lambda_interaction: float = 0.0
    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    eval_batch_size: int = 8192
    clip: bool = True
    stop_rule: str = "rises"
    train_rmse_rows: int | None = None

    def __post_init__(self) -> None:
        _require_number("learning_rate", self.learning_rate, "a finite number > 0", positive=True)
        _require_int("batch_size", self.batch_size, 1)
        _require_int("epochs", self.epochs, 1)
        _require_int("min_epochs", self.min_epochs, 0)
        _require_int("patience", self.patience, 1)
        _require_number("initial_accumulator", self.initial_accumulator, "a finite number >= 0")
        _require_number("lambda_attention", self.lambda_attention, "a finite number >= 0")
        _require_number("lambda_interaction", self.lambda_interaction, "a finite number >= 0")
        _require_int("seed", self.seed, 0)
        _require_int("eval_batch_size", self.eval_batch_size, 1)
        if self.stop_rule not in STOP_RULES:
            _fail("stop_rule", self.stop_rule, f"one of {list(STOP_RULES)}")
        if self.train_rmse_rows is not None:
            _require_int("train_rmse_rows", self.train_rmse_rows, 1)
        for name in ("bf16", "clip"):
            if not isinstance(getattr(self, name), bool):
                _fail(name, getattr(self, name), "true or false")
        if not _valid_device_name(self.device):
            _fail("device", self.device, DEVICE_CHOICES)

    @classmethod
    def from_dict(cls, settings: dict[str, Any]) -> TrainConfig:
        """Build from a mapping (e.g. a params section); an unknown key is an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"unknown training setting(s) {unknown}; known: {sorted(known)}")
        return cls(**settings)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _fail(name: str, value: Any, expected: str) -> None:
    raise ConfigError(f"TrainConfig.{name} = {value!r}; expected {expected}")


def _require_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        _fail(name, value, f"an integer >= {minimum}")


def _require_number(name: str, value: Any, expected: str, positive: bool = False) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        _fail(name, value, expected)


def _valid_device_name(device: Any) -> bool:
    if not isinstance(device, str):
        return False
    if device in ("auto", "cpu", "cuda"):
        return True
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """ "auto" -> CUDA if present, else CPU; a requested CUDA that is absent is an error.

    Under DistributedDataParallel on CUDA each process takes the GPU of its local rank.
    """
    if not _valid_device_name(device):
        _fail("device", device, DEVICE_CHOICES)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"TrainConfig.device = {device!r}, but this machine has no CUDA device; use "
            "device auto or cpu"
        )
    resolved = torch.device(device if ":" in device else f"cuda:{local_rank}")
    if resolved.index >= torch.cuda.device_count():
        raise ConfigError(
            f"TrainConfig.device = {device!r}, but only {torch.cuda.device_count()} CUDA "
            "device(s) are present"
        )
    return resolved
