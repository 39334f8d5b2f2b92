"""The trainer's settings, checked when they are made (before any data is touched)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from aoaffm.errors import ConfigError
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
    None: all of them. ``bf16`` trains under bf16 autocast (the reference models, for CUDA);
    ``bf16_products`` keeps float32 but computes the CPU backend's dense matrix products (the
    attention's three, the deep models' linear layers) from bf16 factors
    (``aoaffm.fast.kernels.bf16_products``), in training and evaluation.
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
    bf16_products: bool = False
    eval_batch_size: int = 8192
    clip: bool = True
    stop_rule: str = "rises"
    train_rmse_rows: int | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            expected = setting_problem(field.name, getattr(self, field.name))
            if expected is not None:
                _fail(field.name, getattr(self, field.name), expected)

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


def _integer(minimum: int) -> tuple[Callable[[Any], bool], str]:
    def ok(value: Any) -> bool:
        return (
            isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum
        )

    return ok, f"an integer >= {minimum}"


def _number(positive: bool = False) -> tuple[Callable[[Any], bool], str]:
    def ok(value: Any) -> bool:
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            return False
        return math.isfinite(value) and (value > 0 if positive else value >= 0)

    return ok, f"a finite number {'>' if positive else '>='} 0"


def _flag() -> tuple[Callable[[Any], bool], str]:
    return (lambda value: isinstance(value, bool)), "true or false"


def _valid_device_name(device: Any) -> bool:
    if not isinstance(device, str):
        return False
    if device in ("auto", "cpu", "cuda"):
        return True
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()


# Every TrainConfig setting's rule, written once: TrainConfig checks itself with it and
# ``aoaffm.config.validate`` checks params.yaml's ``train`` section (same names) with it.
# patience >= 1: with 0 the "rises" rule would stop at the first epoch it may.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "learning_rate": _number(positive=True),
    "batch_size": _integer(1),
    "epochs": _integer(1),
    "min_epochs": _integer(0),
    "patience": _integer(1),
    "initial_accumulator": _number(),
    "lambda_attention": _number(),
    "lambda_interaction": _number(),
    "seed": _integer(0),
    "device": (_valid_device_name, DEVICE_CHOICES),
    "bf16": _flag(),
    "bf16_products": _flag(),
    "eval_batch_size": _integer(1),
    "clip": _flag(),
    "stop_rule": ((lambda value: value in STOP_RULES), f"one of {list(STOP_RULES)}"),
    "train_rmse_rows": (
        lambda value: value is None or _integer(1)[0](value),
        "null or an integer >= 1",
    ),
}


def setting_problem(name: str, value: Any) -> str | None:
    """What the setting ``name`` expects when ``value`` breaks its rule, else None."""
    ok, expected = RULES[name]
    return None if ok(value) else expected


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
