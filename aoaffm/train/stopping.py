"""Early stopping as in the AFM/NFM code (``eva_termination``) and the best epoch."""

from __future__ import annotations

from collections.abc import Sequence


def should_stop(validation_rmse: Sequence[float], min_epochs: int = 5, patience: int = 4) -> bool:
    """True once more than ``min_epochs`` epochs ran and validation RMSE rose ``patience``
    epochs in a row (strictly: each of the last ``patience`` values above the one before).

    With the defaults this is the AFM code's rule: ``len(valid) > 5`` and
    ``valid[-1] > valid[-2] > valid[-3] > valid[-4] > valid[-5]``.
    """
    history = list(validation_rmse)
    if len(history) <= min_epochs or len(history) <= patience:
        return False
    window = history[-(patience + 1) :]
    return all(later > earlier for earlier, later in zip(window, window[1:], strict=False))


def best_epoch(validation_rmse: Sequence[float]) -> int:
    """The 1-based epoch of the lowest validation RMSE; the first one on ties (AFM code)."""
    history = list(validation_rmse)
    if not history:
        raise ValueError("best_epoch of an empty history")
    return history.index(min(history)) + 1
