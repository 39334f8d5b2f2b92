"""Label scales: the constant predictors' RMSE on 0/1 and ±1, and the evidence that decides
Table 4's scale (aoaffm.labels)."""

from __future__ import annotations

import math

import pytest

from aoaffm.labels import (
    CRITEO_POSITIVE_RATE,
    PM1,
    ZERO_ONE,
    constant_rmse,
    criteo_scale_evidence,
    label_scale,
    scale_of,
    variance_explained,
)
from aoaffm.report.paper import TABLE2, TABLE3, TABLE4


@pytest.mark.parametrize("p", [0.0, 0.2562, 1 / 3, 0.5, 1.0])
def test_constant_rmse_closed_forms(p):
    spread = math.sqrt(p * (1 - p))
    assert constant_rmse(p, ZERO_ONE) == pytest.approx(spread, abs=1e-12)
    assert constant_rmse(p, PM1) == pytest.approx(2 * spread, abs=1e-12)
    assert constant_rmse(p, ZERO_ONE, 0.0) == pytest.approx(math.sqrt(p), abs=1e-12)
    assert constant_rmse(p, PM1, 0.0) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="positive rate"):
        constant_rmse(1.2, ZERO_ONE)


def test_criteo_rate_puts_table4_on_0_1():
    """At Criteo's 25.6 % positives the mean predictor scores 0.437 on 0/1 and 0.873 on ±1:
    Table 4's 0.381-0.397 beat the 0/1 constant by a CTR model's margin and would explain
    ~80 % of the variance on ±1."""
    assert CRITEO_POSITIVE_RATE == pytest.approx(0.2562, abs=1e-4)
    assert constant_rmse(CRITEO_POSITIVE_RATE, ZERO_ONE) == pytest.approx(0.4365, abs=1e-4)
    assert constant_rmse(CRITEO_POSITIVE_RATE, PM1) == pytest.approx(0.8731, abs=1e-4)
    for row in TABLE4:
        on_01 = variance_explained(row.test_rmse, CRITEO_POSITIVE_RATE, ZERO_ONE)
        on_pm1 = variance_explained(row.test_rmse, CRITEO_POSITIVE_RATE, PM1)
        assert 0.1 < on_01 < 0.3 and on_pm1 > 0.75, row
    note = criteo_scale_evidence(tuple(r.test_rmse for r in TABLE4))
    assert "0.437 on 0/1 and 0.873 on ±1" in note and "17%-24%" in note and "79%-81%" in note


def test_frappe_and_movielens_numbers_sit_on_pm1():
    """One positive to two negatives: the mean predictor scores 0.471 on 0/1 and 0.943 on ±1.
    Every Frappe and MovieLens RMSE the paper prints beats the ±1 constant, while MovieLens'
    DeepCross (0.5130) would lose to the 0/1 one; with NFM's files' 1 / -1 labels, they stay
    ±1."""
    assert label_scale("frappe") == label_scale("movielens") == PM1
    published = [r.validation_rmse for r in TABLE2] + [r.test_rmse for r in TABLE3]
    assert max(published) < constant_rmse(1 / 3, PM1) == pytest.approx(0.9428, abs=1e-4)
    assert max(published) > constant_rmse(1 / 3, ZERO_ONE) == pytest.approx(0.4714, abs=1e-4)


def test_scale_of_meta_and_the_built_rate_in_the_note():
    assert label_scale("criteo") == ZERO_ONE
    assert scale_of({}) == PM1  # a build from before the key
    meta = {"variant": "kaggle-sample", "positives": 49, "instances": 200, "labels": [0.0, 1.0]}
    assert scale_of(meta) == ZERO_ONE
    note = criteo_scale_evidence((0.3808, 0.3971), meta)
    assert "49 positives of 200 rows (24.5%)" in note
    assert "RMSE 0.430 on 0/1 and 0.860 on ±1; its labels are 0 / 1." in note
