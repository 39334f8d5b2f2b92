"""Evaluation metrics.

RMSE follows the public AFM/NFM code: predictions are clipped to the label range before the
error is taken (a prediction of 1.7 for a positive costs nothing there). The AFM code clips to
the smallest and largest label of the evaluated set; here the range is the dataset's label
scale (``label_range``: [-1, 1] by default, [0, 1] for Criteo, see :mod:`aoaffm.labels`), the
same on every batch of a split. The sums run in float64 so that the metric does not depend on
how a split is cut into batches beyond float64 rounding.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from aoaffm.labels import PM1


def _as_vector(values, name: str) -> torch.Tensor:
    tensor = values if isinstance(values, torch.Tensor) else torch.from_numpy(np.array(values))
    if tensor.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {tuple(tensor.shape)}")
    return tensor.detach().to(torch.float64)


def clip_predictions(predictions: torch.Tensor, low: float = PM1[0], high: float = PM1[1]):
    """Predictions bounded to [low, high] (the AFM/NFM evaluation does this before RMSE)."""
    if not low < high:
        raise ValueError(f"clip range: expected low < high, got [{low}, {high}]")
    return predictions.clamp(low, high)


def sum_squared_error(
    predictions, labels, clip: bool = True, label_range: tuple[float, float] = PM1
) -> torch.Tensor:
    """Σ (ŷ - y)² as a float64 scalar tensor on the predictions' device (no host sync); with
    ``clip`` the predictions are first bounded to ``label_range``."""
    pred = _as_vector(predictions, "predictions")
    target = _as_vector(labels, "labels").to(pred.device)
    if pred.shape != target.shape:
        raise ValueError(
            f"predictions and labels differ in length: {pred.shape[0]} vs {target.shape[0]}"
        )
    if clip:
        pred = clip_predictions(pred, *label_range)
    return (pred - target).square().sum()


def rmse(predictions, labels, clip: bool = True, label_range: tuple[float, float] = PM1) -> float:
    """Root mean squared error; with ``clip`` the predictions are first bounded to
    ``label_range`` ([-1, 1] unless given).

    Accepts numpy arrays, torch tensors or sequences of equal length. A NaN prediction gives
    a NaN result (it is not clipped away), so divergence stays visible.
    """
    total = sum_squared_error(predictions, labels, clip, label_range)
    count = _as_vector(labels, "labels").shape[0]
    if count == 0:
        raise ValueError("rmse of an empty set of predictions is undefined")
    return math.sqrt(total.item() / count)
