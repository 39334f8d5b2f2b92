"""Criteo on the 200-row sample at the quick profile's settings (a few seconds): the first
Adagrad step's size and where training ends against predicting 0 (PROTOCOL_NOTES' Criteo
notes)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from data_fixtures import SEED, built
from test_identity import _params

from aoaffm.config import resolve
from aoaffm.data import load_processed
from aoaffm.experiments import build_model, plan, train_config
from aoaffm.metrics import rmse
from aoaffm.train import train_model
from aoaffm.train.loop import build_optimizer, sparse_parameters, training_step


@pytest.fixture(scope="module")
def quick():
    cfg = resolve(_params("quick"))
    assert cfg["seed"] == SEED  # the sample built as the quick profile builds it
    return cfg


@pytest.fixture(scope="module")
def criteo(mirror_dir):
    return load_processed(built(mirror_dir, "criteo", "kaggle-sample"))


def _spec(cfg, model, **changes):
    spec = next(r for r in plan(cfg, "table4", "criteo") if r.model == model)
    return dataclasses.replace(spec, **changes)


def _zero_rmse(data, split: str) -> float:
    labels = data.split(split).labels
    return rmse(np.zeros_like(labels), labels, label_range=data.label_range)


@pytest.mark.parametrize(("lr", "mean"), [(0.005, 0.83), (0.01, 2.46), (0.05, 44.8)])
def test_first_adagrad_step_moves_the_fm_by_about_lr_squared(quick, criteo, lr, mean):
    """One step on the 140 training rows (Table 4's batch 4096 holds them all) moves every
    touched weight by ~lr, so the FM's mean prediction jumps to near F·lr + P·K·lr²."""
    spec = _spec(quick, "fm", learning_rate=lr)
    model = build_model(spec, criteo)
    train = criteo.split("train")
    ids, labels = torch.from_numpy(np.array(train.ids)).long(), torch.tensor(train.labels)
    optimizer = build_optimizer(model, sparse_parameters(model), train_config(spec, quick))
    training_step(model, optimizer, sparse_params=sparse_parameters(model))(ids, None, labels)
    with torch.inference_mode():
        predictions = model.eval()(ids, None)
    fields, pairs = criteo.n_fields, criteo.n_fields * (criteo.n_fields - 1) // 2
    bound = (fields + 1) * lr + pairs * spec.embedding_size * lr**2  # + 1: the bias
    assert predictions.mean().item() == pytest.approx(mean, rel=0.05)
    assert 0.5 * bound < mean < bound


@pytest.mark.parametrize(
    ("model", "lr", "below_zero"),
    [("fm", None, True), ("ffm", None, True), ("fm", 0.05, False)],
)
def test_quick_profile_criteo_ends_below_predicting_zero(quick, criteo, model, lr, below_zero):
    """At the quick profile's rate (0.005) FM and FFM end below the all-zero predictor on
    validation and test; at the former 0.05 the FM's first step leaves it above."""
    spec = _spec(quick, model, **({"learning_rate": lr} if lr else {}))
    assert spec.labels == criteo.label_range == (0.0, 1.0)
    metrics = train_model(
        build_model(spec, criteo), criteo, train_config(spec, quick), progress=False
    )
    for split in ("validation", "test"):
        assert (metrics[f"{split}_rmse"] < _zero_rmse(criteo, split)) == below_zero, split
