"""Paper-profile verdicts: each reproduced RMSE of Tables 2-4 against the paper's value.

Runs only on results of the paper profile (``results/runs.json`` and
``results/environment.json`` with ``profile: paper``, as the evaluate stage writes them after a
full `dvc repro` on a GPU); otherwise every case is skipped with the reason. Select with
``pytest -m paper``. One test per published cell, so a user gets a pass/fail per cell.
"""

from __future__ import annotations

import math

import pytest
from conftest import REPO_ROOT

from aoaffm.io import read_json
from aoaffm.report import read_records, table_cell
from aoaffm.report.paper import paper_cells

pytestmark = pytest.mark.paper

RUNS = REPO_ROOT / "results" / "runs.json"
ENVIRONMENT = REPO_ROOT / "results" / "environment.json"

# Tolerances on |our mean RMSE − the paper's|, per table.
#
# Table 2 (mean validation RMSE over 10 seeds): max(3 × our seed std, 0.005). The paper gives
# no spread, so our own run-to-run standard deviation measures the noise a different set of
# seeds (and initialisations) alone produces; 3 std covers that noise with ~99.7% margin. The
# floor 0.005 (1.2-1.6% of these RMSEs) absorbs what the seeds cannot show: the paper's
# TensorFlow code vs our PyTorch (Adagrad accumulators, initialisers, batch-norm momentum) and
# the learning rates the paper searched but did not publish.
TABLE2_FLOOR = 0.005
# Table 3 (test RMSE at K = 256): 0.010, or 3 std where the cell has seeds (AFM, AoAFM,
# AoAFFM come from the Table 2 runs). The baselines are single runs, so no seed spread can be
# measured, and the paper publishes neither their learning rates nor their dropout (we take
# Figure 3's text), and HOFM / Wide&Deep / DeepCross follow their own papers, not the authors'
# code: a wider absolute band (2-3% of the RMSE) than Table 2's.
TABLE3_FLOOR = 0.010
# Table 4 (Criteo test RMSE, single runs): 0.010. The test set is large (millions of rows), so
# sampling noise is negligible, but Criteo's λ, learning rates and epoch budget are not
# published, and the paper's validation split of the LIBSVM release is not described.
TABLE4_FLOOR = 0.010
FLOORS = {"table2": TABLE2_FLOOR, "table3": TABLE3_FLOOR, "table4": TABLE4_FLOOR}


def tolerance(table: str, stat) -> float:
    spread = 3 * stat.std if stat.has_spread else 0.0
    return max(FLOORS[table], spread)


def _skip_all(reason: str) -> list:
    return [
        pytest.param(
            None, None, None, None, marks=pytest.mark.skip(reason=reason), id="no-paper-results"
        )
    ]


def _cases() -> list:
    """One case per published cell of Tables 2-4, read when the module is collected."""
    if not RUNS.is_file() or not ENVIRONMENT.is_file():
        return _skip_all(
            f"no paper-profile results: {RUNS.relative_to(REPO_ROOT)} and "
            f"{ENVIRONMENT.relative_to(REPO_ROOT)} appear after `dvc repro` with profile: paper"
        )
    profile = read_json(ENVIRONMENT).get("profile")
    if profile != "paper":
        return _skip_all(f"results/ holds profile {profile!r} output; these checks need 'paper'")
    records = read_records(RUNS)
    cases = []
    for table, dataset, model, paper in paper_cells():
        cell = table_cell(records, table, dataset, model)
        marks = () if cell else pytest.mark.skip(reason=f"no {table} runs of {model} on {dataset}")
        cases.append(
            pytest.param(table, dataset, paper, cell, marks=marks, id=f"{table}-{dataset}-{model}")
        )
    return cases


@pytest.mark.parametrize(("table", "dataset", "paper", "cell"), _cases())
def test_reproduced_rmse_matches_the_paper(table, dataset, paper, cell):
    stat = cell.stat
    assert math.isfinite(stat.mean), f"non-finite RMSE {stat.mean} in {cell.group}"
    tol = tolerance(table, stat)
    diff = stat.mean - paper
    assert abs(diff) <= tol, (
        f"{table} {dataset}: ours {stat.format()} vs paper {paper:.4f}: "
        f"|Δ| = {abs(diff):.4f} > tolerance {tol:.4f}"
    )


def test_tolerance_rule():
    """The rule itself (runs without results): the floor, or 3 std when that is wider."""
    from aoaffm.report.records import Stat

    assert tolerance("table2", Stat(0.3, 0.001, 10)) == TABLE2_FLOOR
    assert tolerance("table2", Stat(0.3, 0.004, 10)) == pytest.approx(0.012)
    assert tolerance("table4", Stat(0.3, math.nan, 1)) == TABLE4_FLOOR
