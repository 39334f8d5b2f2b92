"""Early stopping and the best epoch.

Two rules, chosen by ``TrainConfig.stop_rule``:

- ``"rises"``: the AFM/NFM code's ``eva_termination``: after more than ``min_epochs`` epochs,
  stop once the validation RMSE rose ``patience`` epochs in a row. It never fires on a
  plateau (a flat or slowly wandering curve), so such runs go on to the epoch cap.
- ``"plateau"``: after more than ``min_epochs`` epochs, stop once ``patience`` epochs passed
  without a new best validation RMSE. It fires no later than ``"rises"`` with the same
  ``patience`` (rises are epochs without a new best), and keeps the same best epoch whenever
  ``"rises"`` would have stopped first.
"""

from __future__ import annotations

from collections.abc import Sequence

STOP_RULES = ("rises", "plateau")


def should_stop(
    validation_rmse: Sequence[float], min_epochs: int = 5, patience: int = 4, rule: str = "rises"
) -> bool:
    """True when the run should stop after the last epoch of ``validation_rmse``.

    With the defaults this is the AFM code's rule: ``len(valid) > 5`` and
    ``valid[-1] > valid[-2] > valid[-3] > valid[-4] > valid[-5]``.
    """
    if rule not in STOP_RULES:
        raise ValueError(f"stop rule {rule!r}; expected one of {list(STOP_RULES)}")
    history = list(validation_rmse)
    if len(history) <= min_epochs or len(history) <= patience:
        return False
    if rule == "plateau":
        return len(history) - best_epoch(history) >= patience
    window = history[-(patience + 1) :]
    return all(later > earlier for earlier, later in zip(window, window[1:], strict=False))


def best_epoch(validation_rmse: Sequence[float]) -> int:
    """The 1-based epoch of the lowest validation RMSE; the first one on ties (AFM code)."""
    history = list(validation_rmse)
    if not history:
        raise ValueError("best_epoch of an empty history")
    return history.index(min(history)) + 1
