"""The trainer: the paper's protocol (square loss, Adagrad, early stopping on validation RMSE)
with the AFM/NFM code's choices where the paper is silent; see ``aoaffm.train.loop`` (and
``optim``: Adagrad's sparse step). It picks the model's code once per run: the CPU backend
``aoaffm.fast`` where ``aoaffm.fast.select`` accepts the run, else ``aoaffm.models``."""

from aoaffm.train.config import TrainConfig, resolve_device
from aoaffm.train.loop import RunMismatch, TrainingDiverged, seed_everything, train_model
from aoaffm.train.stopping import best_epoch, should_stop

__all__ = [
    "RunMismatch",
    "TrainConfig",
    "TrainingDiverged",
    "best_epoch",
    "resolve_device",
    "seed_everything",
    "should_stop",
    "train_model",
]
