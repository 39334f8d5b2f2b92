"""Label scales: 1 / -1 for Frappe and MovieLens (NFM/AFM's), 0 / 1 for Criteo (Table 4).

The paper does not say which scale a table uses; its numbers do. Frappe and MovieLens come
from NFM's files, whose labels are 1 / -1 (``shared/datasets/README.md``), and AFM reports
the same ~0.31 / ~0.43 on them. Criteo's Table 4 RMSEs are only reachable on 0/1:
:func:`criteo_scale_evidence` computes why from Criteo's positive rate, and the report quotes it.

Where the labels are written (the builders) and where RMSE clips (the trainer) both take the
scale from here: the processed ``meta.json`` records it as ``"labels": [low, high]``; a build
without the key predates it and is ±1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

PM1 = (-1.0, 1.0)
ZERO_ONE = (0.0, 1.0)
LABEL_SCALES = {"frappe": PM1, "movielens": PM1, "criteo": ZERO_ONE}

# Kaggle's train.txt, whose rows the LIBSVM train file holds: 11,745,438 clicks in 45,840,617
# rows (the count public Criteo loaders record, e.g. as class sizes [34095179, 11745438]).
CRITEO_CLICKS, CRITEO_ROWS = 11_745_438, 45_840_617
CRITEO_POSITIVE_RATE = CRITEO_CLICKS / CRITEO_ROWS  # 0.2562


def label_scale(dataset: str) -> tuple[float, float]:
    """The (negative, positive) labels a build of ``dataset`` writes."""
    return LABEL_SCALES.get(dataset, PM1)


def scale_of(meta: Mapping) -> tuple[float, float]:
    """The label scale a processed ``meta.json`` declares (±1 when it predates the key)."""
    low, high = meta.get("labels", PM1)
    return float(low), float(high)


def constant_rmse(positive_rate: float, scale: tuple[float, float], value: float | None = None):
    """RMSE of predicting ``value`` (default: the mean label) for every row of binary labels
    with this share of positives, on ``scale`` = (negative, positive)."""
    if not 0.0 <= positive_rate <= 1.0:
        raise ValueError(f"positive rate {positive_rate}: expected a share in [0, 1]")
    low, high = scale
    if value is None:
        value = low + positive_rate * (high - low)
    squared = positive_rate * (high - value) ** 2 + (1 - positive_rate) * (low - value) ** 2
    return math.sqrt(squared)


def variance_explained(rmse: float, positive_rate: float, scale: tuple[float, float]) -> float:
    """1 - MSE / Var(label): the share of the label variance an RMSE accounts for."""
    return 1.0 - rmse**2 / constant_rmse(positive_rate, scale) ** 2


def scale_evidence(positive_rate: float, rmses: tuple[float, ...] = ()) -> dict:
    """Per scale: the mean and all-zero predictors' RMSE and the variance share each RMSE in
    ``rmses`` would explain there."""
    return {
        name: {
            "mean_rmse": constant_rmse(positive_rate, scale),
            "zero_rmse": constant_rmse(positive_rate, scale, 0.0),
            "variance_explained": [variance_explained(r, positive_rate, scale) for r in rmses],
        }
        for name, scale in (("0/1", ZERO_ONE), ("±1", PM1))
    }


def criteo_scale_evidence(table4_rmses: tuple[float, ...], built: Mapping | None = None) -> str:
    """The report's note deciding Table 4's label scale, computed from Criteo's positive rate
    (and, given the ``meta.json`` of a Criteo build, that build's)."""
    low, high = min(table4_rmses), max(table4_rmses)
    p = CRITEO_POSITIVE_RATE
    zero_one, pm1 = scale_evidence(p, (high, low)).values()
    entropy = -(p * math.log(p) + (1 - p) * math.log(1 - p))  # the constant's log-loss
    return (
        f"Criteo labels are 0/1 and RMSE clips to [0, 1] (Frappe and MovieLens stay ±1): Table "
        f"4's {low:.4f}-{high:.4f} decide it. At Criteo's {p:.2%} positives ({CRITEO_CLICKS:,} "
        f"of the {CRITEO_ROWS:,} rows of Kaggle's train.txt, which the LIBSVM train file "
        f"holds), predicting the mean gives {zero_one['mean_rmse']:.3f} on 0/1 and "
        f"{pm1['mean_rmse']:.3f} on ±1 (all zeros: {zero_one['zero_rmse']:.3f} and "
        f"{pm1['zero_rmse']:.3f}). On 0/1 the paper's RMSEs explain "
        f"{zero_one['variance_explained'][0]:.0%}-{zero_one['variance_explained'][1]:.0%} of "
        "the label variance, in line with the best published Criteo log-losses (about 0.44, "
        f"{1 - 0.44 / entropy:.0%} below the constant's {entropy:.3f}); on ±1 they would "
        f"explain {pm1['variance_explained'][0]:.0%}-{pm1['variance_explained'][1]:.0%}, which "
        "no published Criteo model approaches. The AFM code the paper builds on reads labels as "
        "the file gives them and clips predictions to their minimum and maximum, so Table 4 is "
        "on the LIBSVM file's own scale, 0/1 by these numbers (the builder reads 0/1 or ±1 and "
        "writes 0/1)." + (_built_rate(built) if built else "")
    )


def _built_rate(meta: Mapping) -> str:
    rate = meta["positives"] / meta["instances"]
    e = scale_evidence(rate)
    return (
        f" This run's Criteo ({meta.get('variant', '?')}): {meta['positives']:,} positives of "
        f"{meta['instances']:,} rows ({rate:.1%}), the mean predictor's RMSE "
        f"{e['0/1']['mean_rmse']:.3f} on 0/1 and {e['±1']['mean_rmse']:.3f} on ±1; its labels "
        "are {:g} / {:g}.".format(*scale_of(meta))
    )
